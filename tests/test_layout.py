"""The code's shape, as claimed in the README: one definition, one direction.

- the sans-I/O core (matcher and what it uses) imports no configuration;
- the uploader uses only the sensor modules meant to be shared;
- benchmarks and tests edit no sys.path;
- the spool layout, file names, locks and state files are defined in spooldir.py alone.
"""

from __future__ import annotations

import ast
import glob
import os
import re

from sensor import spooldir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# sensor modules both programs use: configuration, service plumbing, the spool
SHARED_WITH_UPLOADER = {
    "sensor", "sensor.config", "sensor.daemon", "sensor.logs", "sensor.options", "sensor.spooldir",
    "sensor.state", "sensor.status",
}
CORE = ("matcher", "bpf", "fragments", "checksum", "dns", "record", "wire")


def imports(path: str) -> set[str]:
    """Modules a file imports, relative imports resolved inside sensor/."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    package = os.path.basename(os.path.dirname(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = f"{package}." if node.level else ""
            module = f"{base}{node.module}" if node.module else package
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names if not node.module}
    return found


def test_the_core_imports_no_configuration():
    for name in CORE:
        assert not {m for m in imports(f"{REPO}/sensor/{name}.py") if m.endswith("config")}, name


def test_the_uploader_uses_only_the_shared_sensor_modules():
    for path in glob.glob(f"{REPO}/uploader/*.py"):
        used = {m for m in imports(path) if m == "sensor" or m.startswith("sensor.")}
        assert used <= SHARED_WITH_UPLOADER, (path, used - SHARED_WITH_UPLOADER)


def test_no_sys_path_edits_in_tests_or_benchmarks():
    for path in glob.glob(f"{REPO}/tests/*.py") + glob.glob(f"{REPO}/bench/*.py"):
        with open(path) as handle:
            assert "sys.path.insert" not in handle.read() or path.endswith("test_layout.py"), path


def test_the_spool_layout_is_defined_once():
    """No folder, lock, state or table name of the spool spelt outside
    spooldir.py: as a path's part (`/ "waiting"`, `"waiting/..."`,
    `join(x, "waiting", ...)`, `.../waiting/...`) or a file's name. The
    package scripts are read against it in test_package.py."""
    names = "|".join((spooldir.NEW, spooldir.WAITING, spooldir.ARCHIVE, spooldir.LOCKS, spooldir.DAMAGED))
    kinds = "|".join((spooldir.LOCK, spooldir.STATE, spooldir.TABLE))
    spelt = re.compile(
        rf'/ "({names})"|"({names})/|/({names})/|join\([^()]*"({names})"|\.({kinds})"|-\{{channel\}}\.'
        r"|\\\.\(\\d\+\)\\\.\(\\d\{6\}\)"  # the time in a file's name, as a regular expression
    )
    sources = glob.glob(f"{REPO}/sensor/*.py") + glob.glob(f"{REPO}/uploader/*.py") + glob.glob(f"{REPO}/tests/*.py")
    for path in sources:
        if path.endswith(("spooldir.py", "test_layout.py")) or os.path.basename(path).startswith("test_collector"):
            continue  # the collector's spool has folders of its own (collector.incoming)
        with open(path) as handle:
            text = handle.read()
        assert not spelt.search(text), (path, spelt.search(text))

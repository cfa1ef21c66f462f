"""The code's shape, as the README's "Layout" draws it: rooms by concept,
imports in one direction, one definition of the spool's names.

- every sensor module lives in a room (records, matching, edges, spool,
  display, service) or is the program itself (cli, startup, pipeline);
- a room imports only the rooms below it (ROOM_MAY_IMPORT);
- the uploader and the collector import only the shared rooms, and
  importing all of them loads neither an edge nor the matcher;
- benchmarks and tests edit no sys.path;
- the spool layout, file names, locks and state files are defined in spooldir.py alone.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import subprocess
import sys

from sensor.spool import spooldir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOM_MAY_IMPORT = {
    "records": set(),
    "matching": {"records"},
    "spool": {"records"},
    "service": {"records", "spool"},
    "display": {"records", "spool", "matching"},  # render reassembles a fragmented response to show it
    "edges": {"records", "matching", "spool", "service"},
}
PROGRAM = {"__init__", "__main__", "cli", "startup", "pipeline"}  # sensor/ itself: may import every room
SHARED = {"records", "spool", "service", "display"}
PROGRAM_MAY_IMPORT = {"uploader": {"spool", "service"}, "collector": SHARED}
NEVER_LOADED_BY_THE_OTHER_PROGRAMS = ("sensor.edges", "sensor.matching.matcher", "sensor.pipeline", "pcapy")


def imports(path: str) -> set[str]:
    """Modules a file imports, absolute names (relative imports resolved)."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def rooms_used(path: str) -> set[str]:
    """The sensor rooms a file imports from (`sensor.spool.nmsg` -> spool)."""
    # cli, startup or pipeline counts as a room of its own name, which no room may import
    return {name.split(".")[1] for name in imports(path) if name.startswith("sensor.")}


def sources(folder: str) -> list[str]:
    return glob.glob(f"{REPO}/{folder}/**/*.py", recursive=True)


def test_every_sensor_module_is_in_a_room_or_the_program():
    for path in sources("sensor"):
        parts = os.path.relpath(path, f"{REPO}/sensor").split(os.sep)
        if len(parts) == 1:
            assert parts[0][:-3] in PROGRAM, path
        else:
            assert parts[0] in ROOM_MAY_IMPORT and len(parts) == 2, path


def test_each_room_imports_only_the_rooms_below_it():
    for room, allowed in ROOM_MAY_IMPORT.items():
        for path in sources(f"sensor/{room}"):
            assert rooms_used(path) - {room} <= allowed, (path, rooms_used(path) - {room} - allowed)


def test_the_command_line_hands_over_and_nothing_calls_back_up():
    """cli parses into a startup.Plan and hands it over; startup builds edge,
    matcher and writer for the pipeline; the pipeline knows neither."""
    above = {"cli": {"pipeline"}, "startup": {"cli"}, "pipeline": {"cli", "startup"}}
    for name, never in above.items():
        assert not rooms_used(f"{REPO}/sensor/{name}.py") & never, name
    assert "sensor.startup" in imports(f"{REPO}/sensor/cli.py")


def test_the_other_programs_import_only_the_shared_rooms():
    for program, allowed in PROGRAM_MAY_IMPORT.items():
        for path in sources(program):
            assert rooms_used(path) <= allowed, (path, rooms_used(path) - allowed)
            assert "sensor" not in imports(path), path  # `from sensor import x` names no room


def test_the_other_programs_load_no_edge_and_no_matcher():
    """Followed through every import they make, not only their own lines."""
    modules = sorted(
        os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        for program in PROGRAM_MAY_IMPORT for path in sources(program) if not path.endswith("__main__.py")
    )
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print('\\n'.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert len(loaded) > len(modules)
    assert not [m for m in loaded if m.startswith(NEVER_LOADED_BY_THE_OTHER_PROGRAMS)]


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
    for path in sources("sensor") + sources("uploader") + glob.glob(f"{REPO}/tests/*.py"):
        if path.endswith(("spooldir.py", "test_layout.py")) or os.path.basename(path).startswith("test_collector"):
            continue  # the collector's spool has folders of its own (collector.incoming)
        with open(path) as handle:
            text = handle.read()
        assert not spelt.search(text), (path, spelt.search(text))

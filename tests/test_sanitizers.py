"""The compiled parts under AddressSanitizer and UndefinedBehaviorSanitizer.

The C modules' own tests compare them with their Python statements; a
read one byte past a buffer or an overflowing shift can still give the
right answer there. Here the modules setup.py builds are built again with
`-fsanitize=address,undefined` into a copy of the package in a temporary
folder, and their tests, the ICMPv6 tests and the fuzz tests run against
that build: any invalid access or undefined behaviour aborts the run.
Python's allocator is switched to malloc (PYTHONMALLOC) so that the
sanitizer sees every object's true size, and the datagram tests also read
from buffers that end where the datagram does (test_udpdns.exact).
Leak checking is off: CPython leaves objects behind at exit by design.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _extensions() -> list[tuple[str, list[str]]]:
    """setup.py's extensions, (module, its sources), read from its text: one list of what is compiled."""
    with open(os.path.join(REPO, "setup.py")) as handle:
        tree = ast.parse(handle.read())
    return [(node.args[0].value, [source.value for k in node.keywords if k.arg == "sources" for source in k.value.elts])
            for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Extension"]


TESTS = ("test_udpdns.py", "test_cborpack.py", "test_nmsgpack.py", "test_compiled_layout.py", "test_icmp6.py",
         "test_fuzz.py", "test_collector_fast.py")
FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]


def _runtime(name: str) -> str | None:
    """The sanitizer runtime the compiler links against, if installed."""
    compiler = sysconfig.get_config_var("CC").split()[0]
    if shutil.which(compiler) is None:
        return None
    path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return os.path.realpath(path) if os.path.isabs(path) and os.path.exists(path) else None


def _copy(root: str) -> None:
    """The package, its tests and the benchmark's traffic generator, without built modules."""
    skip = shutil.ignore_patterns("*.so", "__pycache__", "out")
    for folder in ("sensor", "collector", "tests", "bench"):
        shutil.copytree(os.path.join(REPO, folder), os.path.join(root, folder), ignore=skip)
    shutil.copy(os.path.join(REPO, "pyproject.toml"), root)


def _build(root: str) -> None:
    compiler = sysconfig.get_config_var("CC").split()
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for module, files in _extensions():
        target = os.path.join(root, *module.split(".")[:-1], module.split(".")[-1] + suffix)
        sources = [os.path.join(root, name) for name in files]
        subprocess.run([*compiler, "-shared", "-fPIC", "-Wall", *FLAGS, f"-I{include}", *sources, "-o", target],
                       check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory) -> tuple[str, dict]:
    """(root of the sanitized copy, the environment to run it in)."""
    asan = _runtime("libasan.so")
    if asan is None or _runtime("libubsan.so") is None:
        pytest.skip("needs gcc's sanitizer runtimes (libasan, libubsan: Debian's gcc brings them)")
    root = str(tmp_path_factory.mktemp("sanitized"))
    _copy(root)
    _build(root)
    # reports to files: pytest's capture of fd 2 would swallow them with the process
    reports = os.path.join(root, "sanitizer")
    env = dict(os.environ, PYTHONPATH=root, LD_PRELOAD=asan, PYTHONMALLOC="malloc", PYTHONDONTWRITEBYTECODE="1",
               ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:log_path={reports}",
               UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:log_path={reports}")
    return root, env


def _reports(root: str) -> str:
    """What the sanitizers reported, if anything."""
    found = ""
    for name in sorted(os.listdir(root)):
        if name.startswith("sanitizer."):
            with open(os.path.join(root, name), errors="replace") as handle:
                found += handle.read()
    return found


def test_the_copy_imports_the_sanitized_build(sanitized):
    root, env = sanitized
    code = ("import sensor.matching._udpdns, sensor.spool.nmsg, sensor.spool.cbor, collector._ingest\n"
            "print(sensor.matching._udpdns.__file__)\n"
            "print(any('libasan' in line for line in open('/proc/self/maps')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr + _reports(root)
    where, sanitizer = result.stdout.split()
    assert where.startswith(root) and sanitizer == "True"


def test_the_c_modules_tests_and_the_fuzz_tests_pass_under_the_sanitizers(sanitized):
    root, env = sanitized
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(os.path.join("tests", t) for t in TESTS)],
        cwd=root, env=env, capture_output=True, text=True, timeout=3600,
    )
    assert _reports(root) == ""
    said = result.stdout[-6000:] + result.stderr[-6000:]
    assert result.returncode == 0, said
    assert " passed" in result.stdout and " failed" not in result.stdout, said

"""The pure selection needs neither the uploader's libraries nor the display's.

`pytest -m "not network and not slow and not package"` is the quick run
of the sensor's core (conftest.py); paramiko and cryptography are the
uploader's, dnspython the collector's and the tests' that build unusual
messages. Here they are refused by a meta-path finder in a fresh
interpreter, which then imports every sensor module and collects that
selection: a module-level import of any of them fails it. (The
collector's own tests are left out: dnspython is the collector's.)
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFUSED = ("paramiko", "cryptography", "dns")
PURE = "not network and not slow and not package"

_REFUSE = f"""
import sys

REFUSED = {REFUSED!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"refused: {{name}}", name=name)

sys.meta_path.insert(0, Refuse())
"""

_SENSOR_MODULES = _REFUSE + """
import importlib, pkgutil, sensor
for module in pkgutil.walk_packages(sensor.__path__, "sensor."):  # every room's modules
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.partition(".")[0] in REFUSED) or "none")
"""

_COLLECT = _REFUSE + f"""
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", {PURE!r},
                      "--ignore-glob=*/test_collector_*", "tests"]))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=300)


def test_every_sensor_module_imports_without_them():
    result = _run(_SENSOR_MODULES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


def test_the_pure_selection_collects_without_them():
    result = _run(_COLLECT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]  # 2: a module did not import
    assert " collected" in result.stdout.splitlines()[-1]

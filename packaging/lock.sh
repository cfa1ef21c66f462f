#!/bin/sh
# Regenerate the lock files the packages are built from (debian/rules and
# rpm/sie-dns-sensor.spec install exactly these versions, hash-checked):
#   packaging/requirements.lock        the runtime libraries (pyproject.toml's dependencies)
#   packaging/build-requirements.lock  what builds pcapy-ng and the sensor (setuptools, wheel)
# Run after changing a dependency in pyproject.toml, or to take newer
# releases; commit both files. Needs only python3 and PyPI.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet pip-tools
# PyPI only, whatever the local pip configuration adds (mirrors, find-links)
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT || true
compile() {
    "$work/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --index-url https://pypi.org/simple --upgrade "$@"
}
compile --output-file packaging/requirements.lock pyproject.toml
compile --output-file packaging/build-requirements.lock packaging/build-requirements.in

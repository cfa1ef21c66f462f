#!/bin/sh
# Regenerate the lock files the packages are built from (debian/rules and
# rpm/sie-dns-sensor.spec install exactly these versions, hash-checked):
#   requirements.lock        the runtime libraries (pyproject.toml's dependencies)
#   build-requirements.lock  what builds pcapy-ng and the sensor (setuptools, wheel)
# Run after changing a dependency in pyproject.toml, or to take newer
# releases; commit both files. Needs only python3 and PyPI.
set -eu
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet pip-tools
# the package index as pip is configured here; no local wheel folders
unset PIP_FIND_LINKS PIP_CONSTRAINT || true
compile() {
    "$work/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --no-emit-find-links --upgrade "$@"
}
compile --output-file requirements.lock pyproject.toml
compile --output-file build-requirements.lock debian/build-requirements.in

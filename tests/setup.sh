#!/bin/sh
# Everything the sensor and its tests need on a fresh Debian machine:
# Debian packages, then a virtualenv (.venv) with the sensor installed.
set -eu
cd "$(dirname "$0")/.."
packages="python3 python3-venv libpcap-dev iproute2 ethtool"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"

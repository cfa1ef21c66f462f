#!/bin/sh
# Set up (Debian packages, a virtualenv with the sensor) and replay the
# bundled example capture through the sensor, then show what it wrote.
set -eu
cd "$(dirname "$0")/.."
sh tests/setup.sh
spool="$PWD/example-spool"
rm -rf "$spool"
.venv/bin/sie-dns-sensor run -c examples/sie-dns-sensor --pcap examples/resolver.pcap --spooldir "$spool"
echo "spool files:"
find "$spool/waiting" -type f
echo "first records:"
.venv/bin/sie-dns-sensor read --format text "$spool"/waiting/ch202/* | head -n 8

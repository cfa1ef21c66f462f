#!/bin/sh
# Set up (Debian packages, a virtualenv with the sensor and the collector),
# replay the bundled example capture through the sensor, show what it
# wrote, then ingest its files into a passive DNS database in a temporary
# folder and ask it what it knows of one name and one zone.
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

# the collector's side: the files arrive as the sensor "example" uploads them
collector=$(mktemp -d)
trap 'rm -rf "$collector"' EXIT
mkdir -p "$collector/incoming/example/up/ch202"
cp "$spool"/waiting/ch202/* "$collector/incoming/example/up/ch202/"
printf 'collector_dir="%s"\nroot_hints="%s"\n' "$collector" "$PWD/examples/root.hints" > "$collector/config"
.venv/bin/sie-dns-collector ingest -c "$collector/config" --once --user "$(id -un)"
echo "what the passive DNS database knows of www.papanews3.pt, and who serves papanews3.pt:"
.venv/bin/sie-dns-collector query rrset -c "$collector/config" www.papanews3.pt
echo
.venv/bin/sie-dns-collector query rrset -c "$collector/config" papanews3.pt --type NS

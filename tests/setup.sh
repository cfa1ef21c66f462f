#!/bin/sh
# Everything the sensor and its tests need on a fresh Debian machine:
# Debian packages, then a virtualenv (.venv) with the sensor installed.
set -eu
cd "$(dirname "$0")/.."
# the sensor, its live and upload tests, packaging (deb, rpm, checks), the DNS lab, the collector's API client,
# the browser its search page is tested in (Selenium drives Debian's chromium through chromium-driver),
# the ClickHouse store's servers and the ZooKeeper of its replicas (tests start their own, never a service)
packages="python3 python3-venv python3-dev libpcap-dev iproute2 ethtool openssh-server openssh-client passwd procps
 build-essential debhelper dh-python dpkg-dev fakeroot lintian shellcheck rpm systemd git
 unbound nsd ldnsutils tshark dnsutils tcpreplay rsync fstrm-bin dnstap-ldns dnsdbq chromium chromium-driver
 clickhouse-server zookeeper"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    # install services without starting them (openssh-server would listen on :22)
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        policy=yes
    fi
    # shellcheck disable=SC2086 # $missing is a list of package names
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    [ -z "$policy" ] || $sudo rm -f /usr/sbin/policy-rc.d
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"

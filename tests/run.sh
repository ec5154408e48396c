#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian/Ubuntu machine, then runs them.
# Run as root (the namespace and raw-socket tests need it); otherwise apt-get goes
# through sudo and the root-only tests are skipped. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# Real components the tests start on free loopback ports, and fping for benchmarks.
# systemd for systemd-analyze (the unit's checks), util-linux for setpriv.
packages=(prometheus prometheus-alertmanager mosquitto fping iproute2 libcap2-bin systemd
          util-linux chromium chromium-driver)
packages+=(curl)  # a real HTTPS client against the TLS and basic-auth endpoints (tests/http/test_auth.py)
packages+=(sip-tester)  # sipp: the real SIP peer the sip probe tests talk to
packages+=(tcpdump)  # captures service probes on loopback to check their DSCP marking
packages+=(tshark)  # an independent decoder of the TWAMP-light packets (tests/probes/test_twamp_wire.py)
packages+=(prometheus-smokeping-prober)  # tests/bench/bench_scale.py compares vcmon with it
packages+=(mtr-tiny iptables)  # tests/lab/test_routed_trace.py: mtr as the reference, iptables for faults
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    "${sudo_cmd[@]}" apt-get update -qq
    # Debian starts these as system services on install; the tests never use those.
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the house's floors (pyproject.toml [tool.importlinter])
.venv/bin/deptry .                 # declared dependencies = imported ones
exec .venv/bin/pytest "$@"

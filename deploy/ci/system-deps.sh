#!/usr/bin/env bash
# Debian packages the end-to-end tests need: a real systemd in a container, a real load
# balancer, promtool to check the monitoring config, a real browser. Installed only when
# running as root and only when missing; otherwise the tests that need them skip and say why
# (unless XSWARM_REQUIRE_SYSTEMD=1).
set -euo pipefail
# systemd: systemd-analyze verify/security on the units; python3-venv: the container builds
# each release's venv with Debian's own python3, as a server would. prometheus: Debian ships
# promtool only in it (tests/ops/test_prometheus.py). chromium: the web client's browser test
# (tests/web/test_browser.py), headless, with a fake microphone. openssl: test certificates
# (tests/support/certs.py). iproute2: `ip netns`, the hosts of tests/fleet/test_three_hosts.py.
want=(systemd systemd-container haproxy iproute2 procps python3-venv prometheus chromium openssl)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root; missing ${missing[*]} (the tests that need them will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The tests need promtool, not a monitoring daemon: on a host booted with systemd the package
# enables and starts prometheus.service (port 9090); a CI host should not keep one running.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi

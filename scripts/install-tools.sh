#!/usr/bin/env bash
# Installs Prometheus (with promtool), Alertmanager (with amtool) and the Pushgateway (for batch
# jobs) from Debian's packages when their binaries are missing. Safe to run again: it does nothing when everything is present.
set -euo pipefail
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
echo "installing Debian packages: $packages"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    echo "need root or sudo to install: $packages (the stack tests will skip without them)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
# --no-install-recommends: the binaries are all we need; no services are enabled for the tests.
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends $packages
# The Debian packages start system services on install where an init system runs; the tests start
# their own servers on free ports, so stop these if they are running.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${sudo_cmd[@]}" systemctl stop prometheus prometheus-alertmanager prometheus-pushgateway 2>/dev/null || true
fi

#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for tests/test_html.py and benchmarks/bench_html.py:
# the HTML reports are opened in a real browser (console errors, network requests, screenshots).
# The package comes from the Debian mirrors; nothing is downloaded from anywhere else. Safe to
# re-run: skipped when chromium is already installed. Prints the browser's version.
set -euo pipefail
log() { printf '[install-chromium] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi

if ! command -v chromium >/dev/null 2>&1; then
  log "installing chromium from Debian"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # fonts-dejavu-core: readable text in screenshots (chromium's recommends are not installed).
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
command -v chromium >/dev/null 2>&1 || { log "chromium is not on PATH after apt-get install"; exit 1; }
# The real binary: /usr/bin/chromium is a wrapper whose /etc/chromium.d/dev-shm check prints a
# shell error where findmnt lists /dev/shm twice (harmless; tests/_chromium.py runs the binary).
if [ -x /usr/lib/chromium/chromium ]; then /usr/lib/chromium/chromium --version; else chromium --version; fi

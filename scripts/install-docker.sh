#!/usr/bin/env bash
# Install (when missing) and start a Docker engine that cannot carry traffic:
# no bridge, no iptables, no masquerading. Containers run with network_mode=none.
set -euo pipefail
log() { printf '[install-docker] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi

# The daemon config must exist BEFORE the package is installed: the package
# auto-starts a daemon that would otherwise create a bridge on a private range.
if [ ! -f /etc/docker/daemon.json ]; then  # dockerd refuses the same keys as flags too
  $SUDO mkdir -p /etc/docker
  echo '{"bridge": "none", "iptables": false, "ip-masq": false}' | $SUDO tee /etc/docker/daemon.json >/dev/null
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from Debian"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  $SUDO mkdir -p /var/log
  nohup $SUDO dockerd >/var/log/cwm-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi
docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/cwm-dockerd.log"; exit 1; }
log "docker engine ready: $(docker version --format '{{.Server.Version}}')"

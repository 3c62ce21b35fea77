#!/usr/bin/env bash
# Device check for `cwm-agent serve` on a real NVIDIA machine (no vLLM or weights needed):
# the plan it picks from the real nvidia-smi, and the memory a CUDA context leaves free,
# against the figures serve.py assumes (GPU_MEMORY_UTILIZATION, OVERHEAD_GIB).
# Usage: bash benchmarks/gpu_serve_check.sh   (from the repository root)
set -u
cli() { PYTHONPATH=. python3 -c 'from cwm_agent.cli.main import app; app()' "$@"; }
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits
echo "== detected"
PYTHONPATH=. python3 -c 'from cwm_agent.models.serve import detect_gpus; print(detect_gpus())'
echo "== serve --dry-run (default model)"
cli serve --dry-run; echo "exit $?"
echo "== serve facebook/cwm --dry-run --max-model-len 65536"
cli serve facebook/cwm --dry-run --max-model-len 65536; echo "exit $?"
echo "== serve facebook/cwm --dry-run --tensor-parallel-size 2 (must refuse on one GPU)"
cli serve facebook/cwm --dry-run --tensor-parallel-size 2; echo "exit $?"
echo "== CUDA context"
python3 - <<'PY'
import torch
free, total = torch.cuda.mem_get_info()
torch.ones(1, device="cuda")
free2, _ = torch.cuda.mem_get_info()
gib = 2**30
print(f"total {total/gib:.1f} GiB, free before tensors {free/gib:.1f} GiB, after first tensor {free2/gib:.1f} GiB")
print(f"context + runtime take {(total-free2)/gib:.2f} GiB of the {6.0} GiB overhead serve.py reserves")
PY

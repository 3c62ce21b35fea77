#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite, slow tiers included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CI="${CI:-true}"  # Docker tests fail instead of skipping
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Build (or reuse) the virtual environment of the official SWE-bench harness.
#
# The harness (PyPI `swebench`, about 490 MB with modal and datasets) gets its
# own environment so that cwm-agent's stays small. The agreement tests
# (tests/test_swebench_agreement.py) call this script and run
# `python -m swebench.harness.run_evaluation` with the python it prints.
#
#   scripts/swebench-venv.sh       # prints the environment's python on success
#
# Settings (environment variables):
#   CWM_SWEBENCH_VENV   where the environment lives (~/.cache/cwm-agent/swebench-venv)
#   CWM_SWEBENCH_SPEC   the requirement (swebench==5.0.2: the version the agreement
#                       tests were written against; its row format is read from its source)
#   PYTHON              the interpreter to build it from (python3)
set -euo pipefail

VENV="${CWM_SWEBENCH_VENV:-$HOME/.cache/cwm-agent/swebench-venv}"
SPEC="${CWM_SWEBENCH_SPEC:-swebench==5.0.2}"
PYTHON="${PYTHON:-python3}"

log() { echo "swebench-venv.sh: $*" >&2; }

# The check is the import the evaluation does, and the pinned version.
works() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" - "$SPEC" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
import swebench.harness.run_evaluation  # noqa: F401
spec = sys.argv[1]
if "==" in spec and version("swebench") != spec.split("==", 1)[1]:
    raise SystemExit(1)
EOF
}

if works; then
    log "reusing $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

if [ -e "$VENV" ]; then
    log "$VENV exists but does not import $SPEC: rebuilding it"
    rm -rf "$VENV"
fi

start=$(date +%s)
mkdir -p "$(dirname "$VENV")"
# An interrupted install fails the check above, so the next run rebuilds it.
"$PYTHON" -m venv "$VENV"
log "installing $SPEC (about a minute)"
"$VENV/bin/python" -m pip install --quiet --progress-bar off --disable-pip-version-check "$SPEC"

if ! works; then
    log "the new environment at $VENV does not import $SPEC; the error:"
    "$VENV/bin/python" -c "import swebench.harness.run_evaluation" >&2 || true
    exit 1
fi
log "installed in $(( $(date +%s) - start )) s"
echo "$VENV/bin/python"

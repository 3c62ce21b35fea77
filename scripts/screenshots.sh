#!/usr/bin/env bash
# Regenerate the README's screenshots of the HTML reports (docs/screenshots/trajectory.png and
# eval-report.png, 1280x800) from real small runs: `cwm-agent solve` and `cwm-agent eval` with the
# scripted model, photographed in headless Chromium. Needs what the tests need: scripts/setup.sh
# (Docker, the sandbox image, the venv) and scripts/install-chromium.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-chromium.sh >/dev/null
exec "${CWM_AGENT_VENV:-.venv}/bin/python" benchmarks/bench_html.py --screenshots docs/screenshots "$@"

"""Where the project's data lives: sandbox recipes, helper scripts, bundled tasks."""

from __future__ import annotations

from pathlib import Path

# The package is installed editable (see scripts/setup.sh), so the data folders
# sit beside it at the top of the checkout.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SANDBOX_DIR = PROJECT_ROOT / "sandbox"
TASKS_DIR = PROJECT_ROOT / "tasks"

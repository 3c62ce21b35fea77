"""Sandboxes: where the model's commands run. The agent sees only the Sandbox protocol."""

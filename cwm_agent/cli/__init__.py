"""The front ends people type: typer commands (main.py) and what draws on a terminal (ui, solve's
live view, the debugger, trace views). Nothing below this package draws on a screen."""

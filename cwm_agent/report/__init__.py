"""Reports people would rather look at: self-contained HTML pages (no network, inline CSS, JS
and SVG) for a trajectory (trajectory.py), an eval (eval.py) and a trace (trace.py); page.py
holds what they share."""

"""The world-model side of CWM: imagination (predicting a command's output), ground-truth
execution traces (trace, trace_runner), predicted traces and their metrics."""

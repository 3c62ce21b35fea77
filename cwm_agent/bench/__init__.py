"""Benchmarks of the agent: task sets (tasks), batch runs (runner), SWE-bench grading (grade),
task generation (generate, mutate, suites) and export to the official format."""

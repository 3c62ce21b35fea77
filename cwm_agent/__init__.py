"""cwm-agent: a bash-only coding agent harness for Meta FAIR's Code World Model."""

__version__ = "0.1.0"

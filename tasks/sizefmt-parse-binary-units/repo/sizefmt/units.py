"""Unit tables shared by formatting and parsing."""

SI_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")
IEC_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")

SI_BASE = 1000
IEC_BASE = 1024

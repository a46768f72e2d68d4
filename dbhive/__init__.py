"""dbhive: kernel type databases (BTF or DWARF -> SQLite), one per kernel, in a hive."""
__version__ = "0.1.0"

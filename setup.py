"""The compiled part: the DWARF scanner's hot path (dbhive/dwarf/_cscan.c).  Everything
else is in pyproject.toml.  The extension is optional: without a C compiler the package
installs with the pure-Python scanner (dbhive/dwarf/scan.py), which gives the same result."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dbhive.dwarf._cscan", ["dbhive/dwarf/_cscan.c"],
                             extra_compile_args=["-O2"], optional=True)])

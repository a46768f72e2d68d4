"""The compiled parts: the DWARF scanner's hot path (dbhive/dwarf/_cscan.c) and the BTF
reader's (dbhive/btf/_cbtf.c).  Everything else is in pyproject.toml.  Both extensions are
optional: without a C compiler the package installs with the pure-Python readers
(dbhive/dwarf/scan.py, dbhive/btf/reader.py), which give the same result."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dbhive.dwarf._cscan", ["dbhive/dwarf/_cscan.c"],
                             extra_compile_args=["-O2"], optional=True),
                   Extension("dbhive.btf._cbtf", ["dbhive/btf/_cbtf.c"],
                             extra_compile_args=["-O2"], optional=True)])

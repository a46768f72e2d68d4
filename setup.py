"""The compiled parts: the hot paths of the DWARF scanner (dbhive/dwarf/_cscan.c), the BTF
reader (dbhive/btf/_cbtf.c) and the model's type spelling (dbhive/_cmodel.c).  Everything
else is in pyproject.toml.  Every extension is optional: without a C compiler the package
installs with the pure-Python code (the reference), which gives the same result."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dbhive.dwarf._cscan", ["dbhive/dwarf/_cscan.c"],
                             extra_compile_args=["-O2"], optional=True),
                   Extension("dbhive.btf._cbtf", ["dbhive/btf/_cbtf.c"],
                             extra_compile_args=["-O2"], optional=True),
                   Extension("dbhive._cmodel", ["dbhive/_cmodel.c"],
                             extra_compile_args=["-O2"], optional=True)])

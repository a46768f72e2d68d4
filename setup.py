"""The compiled parts: the hot paths of the DWARF scanner (dbhive/dwarf/_cscan.c), the BTF
reader (dbhive/btf/_cbtf.c), the model's type spelling (dbhive/_cmodel.c) and the DB
writer's bulk inserts (dbhive/_cbulk.c).  Everything
else is in pyproject.toml.  Every extension is optional: without a C compiler the package
installs with the pure-Python code (the reference), which gives the same result."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("dbhive.dwarf._cscan", ["dbhive/dwarf/_cscan.c"],
                             extra_compile_args=["-O2"], optional=True),
                   Extension("dbhive.btf._cbtf", ["dbhive/btf/_cbtf.c"],
                             extra_compile_args=["-O2"], optional=True),
                   Extension("dbhive._cmodel", ["dbhive/_cmodel.c"],
                             extra_compile_args=["-O2"], optional=True),
                   # needs SQLite's header (Debian: libsqlite3-dev)
                   Extension("dbhive._cbulk", ["dbhive/_cbulk.c"], libraries=["sqlite3"],
                             extra_compile_args=["-O2"], optional=True)])

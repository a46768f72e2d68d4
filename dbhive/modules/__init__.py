"""Kernel modules -> type DBs: `kobuild` (custom or distro `.ko` files -> an overlay DB such
as `prev.db`) and `dbhive build --modules` (a package's modules into its kernel's DB).

  discover.py  finding module files, decompressing .ko.xz/.zst/.gz (bounded)
  modinfo.py   a module's identity: .modinfo (name, vermagic, srcversion), arch
  merge.py     many type graphs -> one, deduplicated (module-own layouts kept apart)
  kobuild.py   the pipeline: read each module (DWARF, or split BTF on a base) in workers,
               merge, complete from a base kernel, write the DB
  cli.py       the `kobuild` command
"""
from .kobuild import (KobuildResult, add_package_modules, extract_package_modules, kobuild,
                      read_module)

__all__ = ["KobuildResult", "add_package_modules", "extract_package_modules", "kobuild",
           "read_module"]

"""The resolver's exceptions: the lookup branch of the project's one error tree
(dbhive/errors.py).  All are `LookupError`s (drgn style) and `DbhiveError`s; each has the exit
code the CLI uses (`e.exit_code`) and a one-line message meant for people."""
from __future__ import annotations

from dbhive.errors import (AbsentMember, BadPath, CorruptDB, ExprError, LookupFailure,
                           NoKernelDB, NoSuchFunction, NoSuchType, NotAPointer, SchemaError)

ResolverError = LookupFailure

__all__ = ["ResolverError", "BadPath", "NoKernelDB", "NoSuchType", "NoSuchFunction",
           "AbsentMember", "NotAPointer", "ExprError", "CorruptDB", "SchemaError"]

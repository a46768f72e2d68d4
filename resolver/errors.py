"""The resolver's exceptions.  All are `LookupError`s (drgn style); each carries the exit
code the CLI uses and a one-line message meant for people."""
from __future__ import annotations


class ResolverError(LookupError):
    exit_code = 1

    def __str__(self) -> str:          # KeyError-style repr quoting would be noise
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadPath(ResolverError, ValueError):
    """A member path or expression that does not parse."""
    exit_code = 2


class NoKernelDB(ResolverError):
    """No DB in the hive matches the kernel asked for."""
    exit_code = 3


class NoSuchType(ResolverError):
    """The struct/union/typedef named is not in this kernel."""
    exit_code = 4


class NoSuchFunction(ResolverError):
    exit_code = 4


class AbsentMember(ResolverError):
    """The type exists but has no such member in this kernel."""
    exit_code = 5


class NotAPointer(ResolverError, ValueError):
    """`->` through something that is not a pointer to a struct/union, or `.` through a pointer,
    or a subscript on something that is not an array."""
    exit_code = 5


class ExprError(ResolverError, ValueError):
    """A surftrace expression that cannot be translated."""
    exit_code = 6


class CorruptDB(ResolverError):
    """A DB (or BTF) whose contents are inconsistent: a reference cycle, a dangling id."""
    exit_code = 7

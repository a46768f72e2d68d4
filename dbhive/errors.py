"""The project's one error tree, and the exit code of each kind (the only place they are set).

Everything a user can cause — a missing or unusable input, a malformed file, a DB of another
schema version, a type or member this kernel does not have — is a `DbhiveError`, whose
message is one line naming the file (or the name) and what is wrong.  The command lines
print those as one line and exit with `exit_code(e)`; any other exception is a bug in this
project and shows its traceback.

    DbhiveError
    ├── InputError            an input that cannot be used as given (missing, not a regular file,
    │   │                     wrong kind of file, too large, interrupted while reading)
    │   └── FormatError       a file of a known format whose content is malformed
    │       ├── ElfError, BtfError, DwarfError, ArchiveError, GoFormatError
    ├── OutputError           a destination that cannot be written as asked
    ├── BuildError            a build that cannot be done as asked (no type source, ...)
    ├── SchemaError           a DB that is not a dbhive DB, or of another schema version
    └── LookupFailure         (also a LookupError) the question has no answer in this kernel
        ├── BadPath, NoKernelDB, NoSuchType, NoSuchFunction, AbsentMember, NotAPointer,
        └── ExprError, CorruptDB
"""
from __future__ import annotations

from typing import Optional


class DbhiveError(Exception):
    """Base of user-facing errors; the message names the file and what is wrong."""

    def __str__(self) -> str:          # KeyError-style repr quoting would be noise
        return str(self.args[0]) if self.args else self.__class__.__name__


class InputError(DbhiveError):
    """An input file that cannot be used.  The message is one line naming the file."""


class FormatError(InputError):
    """A file of a known format whose content is malformed."""


class ElfError(FormatError):
    """Not an ELF file this project reads, or a damaged one."""


class BtfError(FormatError):
    """Raw BTF that cannot be read."""


class DwarfError(FormatError):
    """Unreadable or malformed DWARF.  The message names the file, section and offset."""

    def __init__(self, msg, path=None, section=None, offset=None):
        super().__init__(msg)
        self.path, self.section, self.offset = path, section, offset


class ArchiveError(FormatError):
    """A damaged or unsupported package / archive."""


class GoFormatError(FormatError):
    """A Go executable whose runtime tables cannot be read."""


class OutputError(DbhiveError):
    """A destination that cannot be written as asked (not a regular file, no directory)."""


class BuildError(DbhiveError):
    """A build that cannot be done as asked."""


class SchemaError(DbhiveError):
    """Not a dbhive DB, or one written with another schema version."""


class LookupFailure(DbhiveError, LookupError):
    """A question this kernel (or binary) has no answer for.  drgn style: a LookupError."""


class BadPath(LookupFailure, ValueError):
    """A member path or expression that does not parse."""


class NoKernelDB(LookupFailure):
    """No DB in the hive matches the kernel asked for (or the DB file named is unusable)."""


class NoSuchType(LookupFailure):
    """The struct/union/typedef named is not in this kernel."""


class NoSuchFunction(LookupFailure):
    pass


class AbsentMember(LookupFailure):
    """The type exists but has no such member in this kernel."""


class NotAPointer(LookupFailure, ValueError):
    """`->` through something that is not a pointer to a struct/union, or `.` through a pointer,
    or a subscript on something that is not an array."""


class ExprError(LookupFailure, ValueError):
    """A surftrace expression that cannot be translated."""


class CorruptDB(LookupFailure):
    """A DB (or BTF) whose contents are inconsistent: a reference cycle, a dangling id."""


# Exit codes of the command lines.  Looked up along the class's MRO: the most specific
# entry wins.  130 is kept for an interrupt (Ctrl-C / SIGTERM), 1 for everything else.
EXIT_CODES = {
    DbhiveError: 1,
    BadPath: 2,
    NoKernelDB: 3,
    SchemaError: 3,
    NoSuchType: 4,
    NoSuchFunction: 4,
    AbsentMember: 5,
    NotAPointer: 5,
    ExprError: 6,
    CorruptDB: 7,
}
EXIT_INTERRUPTED = 130


def exit_code(e: BaseException) -> int:
    """The exit code for an error (1 for anything not in the table)."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for cls in type(e).__mro__:
        code: Optional[int] = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return 1


DbhiveError.exit_code = property(exit_code, doc="This error's exit code (from EXIT_CODES).")

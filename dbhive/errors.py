"""Errors a user can cause (bad input, missing file): the CLI prints them on one line."""


class DbhiveError(Exception):
    """Base of user-facing errors; the message names the file and what is wrong."""


class BuildError(DbhiveError):
    pass

"""What every command line of the project (dbhive, resolver, tracer) does with errors: a
user's mistake (a DbhiveError) is one line on stderr and its exit code from
dbhive/errors.py; anything else is a bug and keeps its traceback."""
from __future__ import annotations

import functools
import sys
from typing import NoReturn, Optional

import click

from .errors import DbhiveError, exit_code


def fail(prog: str, message, code: Optional[int] = None) -> NoReturn:
    """Print `prog: error: message` and exit; `message` is text or a DbhiveError."""
    click.echo(f"{prog}: error: {message}", err=True)
    if code is None:
        code = exit_code(message) if isinstance(message, BaseException) else 1
    sys.exit(code)


def warn(prog: str, message) -> None:
    click.echo(f"{prog}: warning: {message}", err=True)


def one_line_errors(prog: str):
    """Decorator for a click command callback: DbhiveErrors become `fail(prog, e)`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DbhiveError as e:
                fail(prog, e)
        return inner
    return wrap


class OneLineErrorGroup(click.Group):
    """A click group whose subcommands' DbhiveErrors become one line + exit code, and
    whose output to a closed pipe (`| head`) ends quietly."""
    prog = "dbhive"

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DbhiveError as e:
            fail(self.prog, e)
        except BrokenPipeError:
            sys.exit(0)

"""Helpers the tests (and benchmarks) import: oracles (pahole, bpftool, the surftrace
client), real-input builders (Go binaries, RPMs, DBs).  Real inputs themselves are fetched
by scripts/realdata.py."""
import shutil


def need_tool(name: str) -> str:
    """The path of a tool the README's test command installs; a test failure if missing."""
    path = shutil.which(name)
    if not path:
        import pytest         # here: the demo builds its Go probe with these helpers, no pytest
        pytest.fail(f"{name} is not installed (the README's test command installs it)")
    return path

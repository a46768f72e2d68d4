"""What the tracer's tests share: how to run the tracer, and whether BPF works here."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
TRACER = [sys.executable, "-m", "tracer"]
MACHINE = os.uname().machine


def bpf_reason():
    from tracer.kernel import bpf_available
    return bpf_available()


needs_bpf = pytest.mark.skipif(bpf_reason() is not None, reason=f"BPF: {bpf_reason()}")


def tracer(*args, timeout=120, check=None, cwd=ROOT, env=None):
    """`python -m tracer ARGS` (in the repo, or `cwd`; `env` added to the environment)."""
    res = subprocess.run(TRACER + list(args), capture_output=True, text=True, timeout=timeout,
                         cwd=cwd, env=None if env is None else {**os.environ, **env})
    assert "Traceback" not in res.stderr, res.stderr
    if check is not None:
        assert res.returncode == check, (res.returncode, res.stdout[-3000:], res.stderr[-3000:])
    return res

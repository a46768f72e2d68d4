"""Coverage-guided fuzzing (atheris) of every reader a user's file reaches, 30 s per target
in CI (bench/fuzz.py runs them for 10 minutes each): no input may raise anything but the
project's own one-line errors."""
from __future__ import annotations

import pytest

from bench import fuzz

SECONDS = 30


@pytest.fixture(scope="module")
def env():
    return fuzz.environment()


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_fuzz_target(target, env):
    r = fuzz.run(target, SECONDS, env)
    print(f"\n{target}: {r['executions']} executions, {r['coverage_edges']} edges, "
          f"{r['features']} features")
    assert r["crashes"] == 0, r["crash_report"]
    assert r["executions"] >= 20 and r["features"] > 0, r

"""The issue's speed targets, measured by bench/bench_resolver.py on a real DB in one run
(short rounds here; run the bench itself for the full table)."""
from __future__ import annotations


from tests.support.resolver_dbs import build_btf_db, running_meta

from bench import bench_resolver


def test_speed_targets_and_same_offsets_as_the_client(running_btf):
    db = build_btf_db(running_btf, running_meta())
    res = bench_resolver.bench(db, rounds=300)
    assert res["offset_mismatches"] == []           # the client's offsets equal ours
    assert res["ours_warm"]["median_us"] <= 50
    assert res["ours_open_first"]["median_us"] <= 50_000
    assert res["ratio_warm"] >= 20
    assert res["ratio_walk"] >= 5                   # full walk, no result cache (~20-25x)

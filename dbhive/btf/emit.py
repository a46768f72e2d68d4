"""Model -> BTF, the whole way: fit the graph to the consumer's profile, deduplicate it,
encode it.

    out = emit(graph, profile="libbpf-0.5")    # out.data: raw BTF bytes; out.notes: changes

Files are written by dbhive.output (temp file + rename), see make.py.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Union

from .. import model as M
from . import dedup as D
from . import profiles as P
from .writer import encode


@dataclass
class Emitted:
    data: bytes
    profile: str
    byteorder: str
    notes: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)     # BTF kind name -> records
    merged: int = 0                                # types dedup removed

    def summary(self) -> dict:
        return {"bytes": len(self.data), "profile": self.profile, "byteorder": self.byteorder,
                "records": self.counts, "merged_by_dedup": self.merged, "notes": self.notes}


def emit(g: M.TypeGraph, profile: Union[str, P.Profile] = P.CURRENT,
         byteorder: str = "little") -> Emitted:
    prof = profile if isinstance(profile, P.Profile) else P.profile(profile)
    fitted, notes = P.fit(g, prof)
    deduped, _ = D.dedup(fitted)
    data = encode(deduped, prof, byteorder)
    return Emitted(data, prof.name, byteorder, notes, _counts(deduped, prof),
                   len(fitted.types) - len(deduped.types))


def _counts(g: M.TypeGraph, prof: P.Profile) -> dict:
    c = collections.Counter()
    for t in g.types[1:]:
        k = t.kind
        if k == M.ENUM and (t.size or 4) > 4 and prof.enum64:
            c["ENUM64"] += 1
        elif k == M.FWD and t.encoding == M.ENUM:
            c["ENUM"] += 1
        else:
            c[k.upper()] += 1
    c["FUNC"] += len(g.functions)
    c["VAR"] += len(g.variables)
    c["DATASEC"] += len(g.datasecs)
    c["DECL_TAG"] += len(g.decl_tags)
    return {k: v for k, v in sorted(c.items()) if v}


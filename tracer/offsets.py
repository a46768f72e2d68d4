"""Where members_offset's values come from: the kernel's own BTF, else the hive DB of the
running kernel, else an explicit DB; and the value of every field of fields.MEMBERS, with
the member path that gave it, or the reason it is absent."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from resolver import AbsentMember, NoKernelDB, Offset, Resolver, ResolverError

from . import fields as F
from .kernel import SYS_BTF, Running, btf_places, is_elf


@dataclass
class Source:
    resolver: Resolver
    label: str              # resolver.source: "btf:<path>" or "db:<path>"
    kind: str               # "btf" | "db"
    tried: List[str]
    warnings: List[str]

    @property
    def json_source(self) -> str:
        """The `source` of verify's JSON: "btf" or "db:<path>"."""
        return "btf" if self.kind == "btf" else self.label


def open_source(k: Running, hive: Optional[str] = None, db: Optional[str] = None,
                ignore_btf: bool = False, overlay: Optional[str] = None) -> Source:
    """The offsets source for the running kernel.

    An explicit --db is used as given.  Otherwise the kernel's BTF, from the first place
    that has it (an ELF vmlinux only when its build-id is the running kernel's), unless
    ignore_btf; then the hive's DB of the running kernel (build-id match, or release match
    with a warning).  None found: NoKernelDB naming every place tried.
    `overlay` (a prev.db path, "auto" for $LBC_PREVDB / ./prev.db, None for none) is
    consulted before that source; one for another kernel is refused (NoKernelDB)."""
    tried: List[str] = []
    if db:
        r = Resolver.open(db=db, overlay=None)
        return _source(r, "db", [r.source], overlay)
    if not ignore_btf:
        for place in btf_places(k.release):
            if not os.path.exists(place):
                tried.append(f"{place} (missing)")
                continue
            try:
                r = Resolver.from_btf(place, meta=_btf_meta(place, k))
            except ResolverError as e:
                tried.append(f"{place} ({e})")
                continue
            if is_elf(place):
                bid = (r.kernel.get("build_id") or "").lower()
                if not bid or not k.build_id or bid != k.build_id.lower():
                    tried.append(f"{place} (build-id {bid or 'unknown'}, running kernel "
                                 f"{k.build_id or 'unknown'})")
                    r.close()
                    continue
            tried.append(place)
            return _source(r, "btf", tried, overlay)
    else:
        tried.append("kernel BTF (ignored: --ignore-btf)")
    try:
        r = Resolver.for_running_kernel(hive=hive, overlay=None)
    except NoKernelDB as e:
        tried.append(str(e))
        raise NoKernelDB("no offsets for this kernel; tried: " + "; ".join(tried)) from None
    tried.append(r.source)
    return _source(r, "db", tried, overlay)


def _btf_meta(place: str, k: Running) -> Optional[dict]:
    """A raw <release>.btf says nothing of its kernel: it is the running one's by its name
    (the other places identify themselves: the running kernel's BTF, an ELF's build-id)."""
    if place == SYS_BTF or is_elf(place):
        return None
    return {"release": k.release, "arch": k.machine, "build_id": ""}


def _source(r: Resolver, kind: str, tried: List[str], overlay: Optional[str]) -> Source:
    """The Source of resolver `r` with the overlay DBs (checked against r's kernel)."""
    try:
        r.set_overlays(overlay)
    except BaseException:
        r.close()
        raise
    warnings = list(r.warnings)
    if overlay == "auto":
        for path in r.overlay_files:
            warnings.append(f"overlay {path} ($LBC_PREVDB or ./prev.db) is consulted before "
                            f"{r.source}; --no-overlay ignores it")
    return Source(r, r.source, kind, tried, warnings)


# ---- field values --------------------------------------------------------------------------

@dataclass
class Value:
    member: F.Member
    words: Dict[str, int]           # C word -> value (empty when absent)
    path: Optional[str] = None      # the member path that gave it
    detail: str = ""                # e.g. "bitfield", "u16 field", the kernel macro used
    absent: Optional[str] = None    # why there is no answer
    note: Optional[str] = None      # the resolver's note (several layouts)
    source: str = ""                # the DB that answered, when not the Source's own (overlay)

    @property
    def ok(self) -> bool:
        return self.absent is None

    def as_dict(self, source: str) -> dict:
        d = {"field": self.member.name, "kind": self.member.kind, "source": self.source or source,
             "path": self.path, "paths": self.member.paths}
        if self.ok:
            d["value"] = self.words[self.member.name]
            if self.member.kind == "bits":
                d["bit"] = self.words[self.member.name + "_shift"]
                d["width"] = self.words[self.member.name + "_width"]
            if self.detail:
                d["detail"] = self.detail
            if self.note:
                d["note"] = self.note
        else:
            d["value"] = None
            d["absent"] = self.absent
        return d

    def shown(self) -> str:
        if not self.ok:
            return "absent"
        v = self.words[self.member.name]
        if self.member.kind == "bits":
            return (f"{v} bit {self.words[self.member.name + '_shift']}"
                    f" width {self.words[self.member.name + '_width']}")
        return str(v)


def _bits(off: Offset, alt: F.Alt) -> Tuple[int, int, int, str]:
    """(byte, bit in that byte, width, detail) of a possibly-bitfield member."""
    if alt.shift is not None:                      # a value at a fixed place inside the member
        pos = off.offset * 8 + alt.shift
        return pos // 8, pos % 8, alt.width, alt.note
    if off.bit_size is not None:
        pos = off.offset * 8 + (off.bit_offset or 0)
        return pos // 8, pos % 8, off.bit_size, f"bitfield of {off.type}"
    if not 1 <= off.size <= 4:
        raise ValueError(f"{off.size}-byte member, not a value the BPF side can read in 4 bytes")
    return off.offset, 0, off.size * 8, f"{off.size}-byte field"


def resolve_member(r: Resolver, m: F.Member, machine: str) -> Value:
    if m.arch and machine not in m.arch:
        return Value(m, {}, absent=f"not used on {machine}")
    reasons = []
    for alt in m.alts:
        try:
            off = r.offset(alt.path)
        except ResolverError as e:
            reasons.append(str(e) if isinstance(e, AbsentMember) else f"{alt.path}: {e}")
            continue
        if m.kind == "bits":
            try:
                byte, bit, width, detail = _bits(off, alt)
            except ValueError as e:
                reasons.append(f"{alt.path}: {e}")
                continue
            return Value(m, {m.name: byte, m.name + "_shift": bit, m.name + "_width": width},
                         alt.path, detail, note=off.note, source=_overlay_of(r, alt.path))
        if off.bit_size is not None:
            reasons.append(f"{alt.path}: a bitfield, expected a whole member")
            continue
        if m.kind == "offset" and not m.accepts(off.size):
            reasons.append(f"{alt.path}: {off.size} bytes ({off.type}), the BPF side reads "
                           f"{m.read}")
            continue
        return Value(m, {m.name: off.offset}, alt.path, off.type, note=off.note,
                     source=_overlay_of(r, alt.path))
    return Value(m, {}, absent="; ".join(reasons) or "no path")


def _overlay_of(r: Resolver, path: str) -> str:
    """'overlay:<file>' when an overlay DB gave `path`'s answer, else ''."""
    if not r.overlay_files:
        return ""
    by = r.answered_by(path)
    return by if by.startswith("overlay:") else ""


def resolve_all(r: Resolver, machine: str) -> List[Value]:
    return [resolve_member(r, m, machine) for m in F.MEMBERS]


def members_words(values: List[Value]) -> Dict[str, int]:
    words: Dict[str, int] = {}
    for v in values:
        words.update(v.words)
    return words

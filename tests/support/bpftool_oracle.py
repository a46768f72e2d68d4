"""Parse `bpftool btf dump file X` (raw format): the kernel's own BTF, type by type.

An independent reading of the same bytes our BTF parser reads; tests compare every record.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Optional

_HEAD = re.compile(r"^\[(\d+)\] (\w+) '(.*?)'(.*)$")
_KV = re.compile(r"(\w+)=(\S+)")
_MEMBER = re.compile(r"^\t'(.*?)'(.*)$")
_SECINFO = re.compile(r"^\ttype_id=\d+ offset=\d+ size=\d+ \(\w+ '.*'\)$")   # DATASEC entry


@dataclass
class Record:
    id: int
    kind: str
    name: Optional[str]
    attrs: dict
    items: list = field(default_factory=list)    # (name, attrs) for members/params/values


def _attrs(text: str) -> dict:
    return {k: v for k, v in _KV.findall(text)}


def bpftool_dump(path: str) -> list:
    out = subprocess.run(["bpftool", "btf", "dump", "file", path], check=True,
                         capture_output=True, text=True).stdout
    records: list = []
    for lineno, line in enumerate(out.splitlines(), 1):
        m = _HEAD.match(line)
        if m:
            name = None if m.group(3) == "(anon)" else m.group(3)
            records.append(Record(int(m.group(1)), m.group(2), name, _attrs(m.group(4))))
            continue
        m = _MEMBER.match(line)
        if m and records:
            name = None if m.group(1) == "(anon)" else m.group(1)
            records[-1].items.append((name, _attrs(m.group(2))))
            continue
        if _SECINFO.match(line) and records and records[-1].kind == "DATASEC":
            continue
        raise ValueError(f"bpftool output line {lineno} not understood: {line!r}")
    return records

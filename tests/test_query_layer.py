"""One query layer: the lbc server's answers (remote mode), the surftrace tables the client
reads in local mode, and `resolver offset` agree for every struct of both test kernels; a DB
of another schema version is refused with one clear line everywhere."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from dbhive import schema
from dbhive.errors import SchemaError
from resolver import Resolver, lbc

_DIMS = re.compile(r"\[\d*\]")


def _table_structs(db: str):
    """{name: (members, bytes, [(type, offset, bytes, bits, name)])} straight from the tables."""
    conn = sqlite3.connect(db)
    out = {}
    for sid, name, members, size in conn.execute("SELECT id, name, members, bytes FROM structs"):
        cells = conn.execute("SELECT types, offset, bytes, bits, name FROM members WHERE fid = ?"
                             " ORDER BY rowid", (sid,)).fetchall()
        out[name] = (members, size, cells)
    conn.close()
    return out


def mismatches(r: Resolver, tables: dict) -> tuple:
    """(problems, cells compared, offsets compared) between the lbc answers, the tables and
    `resolver offset` for every struct in `tables`."""
    problems, n_cells, n_offsets = [], 0, 0
    for name, (members, size, cells) in tables.items():
        got = lbc.struct(r, name)
        if got is None or (got["members"], got["size"]) != (members, size) or \
                [(c["type"], c["offset"], c["size"], c["bits"], c["name"])
                 for c in got["cell"]] != [tuple(c) for c in cells]:
            problems.append(("lbc != tables", name))
            continue
        n_cells += len(cells)
        if not name.startswith(("struct ", "union ")):
            continue
        # each leaf cell is where `resolver offset` puts the same path
        kind, base = name.split(" ", 1)
        for (_ctype, off, nbytes, bits, cname) in cells:
            o = r.offset(f"{kind} {base}.{_DIMS.sub('', cname)}")
            if bits:
                bit_off, width = map(int, bits.split(":"))
                ok = (o.offset * 8 + o.bit_offset, o.bit_size) == (off * 8 + bit_off, width)
            else:
                ok = (o.offset, o.size) == (off, nbytes)
            if not ok:
                problems.append(("offset != table", name, cname))
            n_offsets += 1
    return problems, n_cells, n_offsets


@pytest.mark.parametrize("which", ["running", "debian"])
def test_lbc_equals_tables_equals_resolver(which, running_db, debian_db):
    db = running_db if which == "running" else debian_db
    problems, n_cells, n_offsets = mismatches(Resolver.open(db=db, overlay=None),
                                              _table_structs(db))
    assert problems == []
    assert n_cells > 100_000 and n_offsets > 100_000, (n_cells, n_offsets)


def test_the_comparison_sees_a_damaged_table(running_db, tmp_path):
    """The check above can fail: one member row moved by a byte is found."""
    bad = str(tmp_path / "bad.db")
    shutil.copy(running_db, bad)
    conn = sqlite3.connect(bad)
    sid = conn.execute("SELECT id FROM structs WHERE name = 'struct file'").fetchone()[0]
    conn.execute("UPDATE members SET offset = offset + 1 WHERE rowid = (SELECT min(rowid) "
                 "FROM members WHERE fid = ?)", (sid,))
    conn.commit()
    conn.close()
    tables = _table_structs(bad)
    problems, _, _ = mismatches(Resolver.open(db=running_db, overlay=None),
                                {"struct file": tables["struct file"]})
    assert problems == [("lbc != tables", "struct file")]


@pytest.mark.parametrize("which", ["running", "debian"])
def test_lbc_types_and_functions_equal_tables(which, running_db, debian_db):
    db = running_db if which == "running" else debian_db
    r = Resolver.open(db=db, overlay=None)
    conn = sqlite3.connect(db)
    types = conn.execute("SELECT name, alias, bytes FROM types").fetchall()
    for name, alias, size in types:
        if "*" in name:
            continue             # the client asks for every pointer as "_" (void *)
        assert lbc.type_(r, name) == {"name": name, "type": alias, "size": size}, name
    assert lbc.type_(r, "_") == {"name": "void *", "type": "void *", "size": 8}
    funcs = conn.execute("SELECT f.func, f.args, f.ret, f.line, fl.file FROM funs f "
                         "LEFT JOIN files fl ON fl.id = f.fid").fetchall()
    by_name: dict = {}
    for fn, args, ret, line, file in funcs:
        by_name.setdefault(fn, []).append({"func": fn, "args": json.loads(args), "ret": ret,
                                           "line": line, "file": file})
    for fn, want in by_name.items():
        assert lbc.func(r, fn, None, None) == want[:lbc.FUNC_LIMIT], fn
    assert len(by_name) > 20_000
    conn.close()


def _other_version(src: str, dest: str, version: str) -> str:
    shutil.copy(src, dest)
    conn = sqlite3.connect(dest)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.commit()
    conn.close()
    return dest


def test_schema_version_checked_everywhere(running_db, tmp_path):
    old = _other_version(running_db, str(tmp_path / "old.db"), "0")
    with pytest.raises(SchemaError, match="schema version 0; this dbhive reads version "
                                          f"{schema.SCHEMA_VERSION}"):
        schema.open_db(old)
    with pytest.raises(SchemaError, match="schema version 0"):
        Resolver.open(db=old, overlay=None)
    exe = os.path.dirname(sys.executable)
    for cmd in ([f"{exe}/resolver", "--db", old, "offset", "task_struct.files"],
                [f"{exe}/dbhive", "show", "--db", old, "task_struct"]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 3, p.stderr
        assert "schema version 0" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    # no version at all: not a dbhive DB
    conn = sqlite3.connect(old)
    conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="not a dbhive kernel DB"):
        schema.open_db(old)

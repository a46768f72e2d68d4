"""The tracer's kernel side, for real: members_offset from the kernel's BTF and from a DB that
`dbhive build` made of it (byte-identical, in the kernel's per-CPU map too), `tracer verify`
passing on this kernel and failing with the Debian 6.1 DB, the 4.14 rules on bcc's raw
bytecode (and the checker failing on programs that break them), and the pre-5.6 `sock` flags
shape decoded by the BPF readers from a struct gcc laid out.

Needs root and bcc: on this machine these tests run (they must not skip here); elsewhere they
skip with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess

import pytest

from scripts.realdata import RUNNING_BTF
from tests.support import need_tool
from tests.support.tracer_env import MACHINE, ROOT, VENV_BIN, needs_bpf, tracer

# ---- members_offset: BTF vs DB --------------------------------------------------------------

def test_table_covers_formats_md():
    """Every member path shared/docs/formats.md lists for members_offset is in the table."""
    from tracer import fields as F
    want = ["task_struct.files", "files_struct.fdt", "fdtable.fd", "file.private_data",
            "file.f_pos", "file.f_op", "file.f_inode", "file_operations.read_iter",
            "inode.i_mode", "inode.i_sb", "super_block.s_dev", "file.f_path.dentry",
            "dentry.d_name.name", "dentry.d_parent", "socket.sk", "socket.file",
            "sock.__sk_common.skc_family", "sock.__sk_common.skc_rcv_saddr",
            "sock.__sk_common.skc_daddr", "sock.__sk_common.skc_v6_rcv_saddr",
            "sock.__sk_common.skc_v6_daddr", "sock.__sk_common.skc_dport",
            "sock.__sk_common.skc_num", "sock.__sk_common.skc_state",
            "sock.__sk_common.skc_ipv6only", "sock.sk_type", "sock.sk_protocol",
            "sock.__sk_flags_offset", "tcp_sock.copied_seq", "tcp_sock.write_seq",
            "file.f_path.mnt", "mount.mnt", "mount.mnt_ns", "mnt_namespace.ns.inum",
            "mount.mnt_id", "task_struct.thread.fsbase", "task_struct.thread.fs",
            "task_struct.state", "task_struct.__state"]
    have = {p for m in F.MEMBERS for p in m.paths}
    assert not [p for p in want if p not in have]
    # the C struct and the packing come from the same table
    block = F.c_header().split("struct members_offset {")[1].split("};")[0]
    assert [ln.strip() for ln in block.strip().splitlines()] == [f"u32 {w};" for w in F.WORDS]


def test_btf_and_db_give_identical_members_offset(running_db_file):
    from resolver import Resolver
    from tracer import fields as F
    from tracer.offsets import members_words, resolve_all
    by_btf = resolve_all(Resolver.from_btf(RUNNING_BTF), MACHINE)
    by_db = resolve_all(Resolver.open(db=running_db_file, overlay=None), MACHINE)
    raw_btf = F.pack_members(members_words(by_btf))
    raw_db = F.pack_members(members_words(by_db))
    assert raw_btf == raw_db
    assert [v.path for v in by_btf] == [v.path for v in by_db]
    assert all(v.ok for v in by_btf), [v.absent for v in by_btf if not v.ok]
    # this 6.18 kernel: the 5.14+ and 5.6+ spellings
    vals = {v.member.name: v for v in by_btf}
    assert vals["task_state"].path == "task_struct.__state"
    assert vals["sk_type"].path == "sock.sk_type" and vals["sk_type"].detail == "2-byte field"


@needs_bpf
def test_maps_in_the_kernel_are_byte_identical(running_db_file):
    """The members_offset map the kernel holds, read back from every CPU, is the same bytes
    whether the offsets came from BTF or from the DB."""
    from resolver import Resolver
    from tracer import bpf as B
    from tracer import fields as F
    from tracer.offsets import members_words, resolve_all
    b = B.compile_program(MACHINE)
    try:
        got = {}
        for label, r in (("btf", Resolver.from_btf(RUNNING_BTF)),
                         ("db", Resolver.open(db=running_db_file, overlay=None))):
            raw = F.pack_members(members_words(resolve_all(r, MACHINE)))
            B.fill_members(b, raw)
            got[label] = B.read_members(b)
            assert all(x == raw for x in got[label])
            assert F.unpack_members(got[label][0])["ready"] == 1
        assert got["btf"] == got["db"]
        assert len(got["btf"]) == len(__import__("bcc").utils.get_possible_cpus())
    finally:
        b.cleanup()


def test_offsets_cli_names_path_and_source(running_db_file):
    res = tracer("offsets", "--ignore-btf", "--db", running_db_file, "--json", check=0)
    d = json.loads(res.stdout)
    assert d["source"] == f"db:{running_db_file}"
    fields = {f["field"]: f for f in d["fields"]}
    assert fields["task_files"]["path"] == "task_struct.files"
    assert fields["task_files"]["source"] == f"db:{running_db_file}"
    res = tracer("offsets", "--json", check=0)
    d2 = json.loads(res.stdout)
    assert d2["source"] == f"btf:{RUNNING_BTF}"
    assert [f["value"] for f in d2["fields"]] == [f["value"] for f in d["fields"]]
    text = tracer("offsets", check=0).stdout
    assert "task_struct.__state" in text and f"btf:{RUNNING_BTF}" in text


def test_no_source_names_every_place_tried(tmp_path):
    res = tracer("offsets", "--ignore-btf", "--hive", str(tmp_path), check=3)
    assert res.stdout == ""
    line = res.stderr.strip()
    assert "\n" not in line
    assert "--ignore-btf" in line and str(tmp_path) in line and "build-id" in line


def test_release_only_match_warns(running_hive, running_db_file, tmp_path):
    """A hive DB of this release but another build: used, with a warning."""
    hive = tmp_path / "hive"
    dest = hive / os.path.relpath(running_db_file, running_hive)
    dest.parent.mkdir(parents=True)
    shutil.copy(running_db_file, dest)
    con = sqlite3.connect(dest)
    con.execute("UPDATE meta SET value = ? WHERE key = 'build_id'", ("00" * 20,))
    con.commit()
    con.close()
    res = tracer("offsets", "--ignore-btf", "--hive", str(hive), "--json", check=0)
    d = json.loads(res.stdout)
    assert any("another build" in w for w in d["warnings"]), d["warnings"]


def test_refusals():
    """Kernels older than 4.14 and other arches are refused with one line (the check itself:
    this machine cannot boot such a kernel)."""
    from tracer.kernel import Running, TracerError, btf_places, check_supported
    check_supported(Running("4.14.0", "x86_64", (4, 14), None))
    check_supported(Running("5.10.0-32-cloud-arm64", "aarch64", (5, 10), None))
    for k in (Running("4.9.0-19-amd64", "x86_64", (4, 9), None),
              Running("6.1.0", "riscv64", (6, 1), None)):
        with pytest.raises(TracerError) as ei:
            check_supported(k)
        assert "\n" not in str(ei.value) and ei.value.exit_code == 2
    places = btf_places("R")
    assert places == ["/sys/kernel/btf/vmlinux", "/usr/lib/btf/vmlinux-R.btf", "/boot/vmlinux-R",
                      "/lib/modules/R/vmlinux", "/usr/lib/debug/boot/vmlinux-R",
                      "/usr/lib/debug/lib/modules/R/vmlinux"]


# ---- verify ----------------------------------------------------------------------------------

@needs_bpf
def test_verify_passes_ignore_btf_with_db(running_hive, running_db_file, probe_124):
    res = tracer("verify", "--ignore-btf", "--hive", running_hive, "--go-probe", probe_124,
                 "--json", check=0)
    d = json.loads(res.stdout)
    assert d["ok"] is True and d["source"] == f"db:{running_db_file}"
    assert d["kernel"]["release"] == os.uname().release
    fails = [c for c in d["checks"] if not c["ok"]]
    assert not fails, fails
    names = [c["field"] for c in d["checks"]]
    for want in ("inet: skc_rcv_saddr", "inet6 v6only=1: skc_v6_daddr", "file.f_pos",
                 "mount.mnt_id (container_of file.f_path.mnt)", "mnt_namespace.ns.inum",
                 "inet: tcp_sock.write_seq (TCP_REPAIR)", "go write: runtime.g.goid",
                 "go read: n at RET", "bpf:verify_probe"):
        assert any(n.startswith(want) for n in names), want
    if MACHINE == "x86_64":
        assert "task_struct.thread.fsbase" in names
        assert any(n.startswith("go write via fsbase-8") for n in names)
    assert d["skipped"] == []
    assert d["timings"]["total_s"] < 10


@needs_bpf
def test_verify_go_before_117_stack_abi_and_tls(probe_115):
    """Go 1.15 on amd64: arguments and results on the stack, g found through
    task_struct.thread.fsbase - 8."""
    res = tracer("verify", "--go-probe", probe_115, "--json", check=0)
    d = json.loads(res.stdout)
    go = {c["field"]: c for c in d["checks"] if c["field"].startswith("go")}
    assert all(c["ok"] for c in go.values()), go
    if MACHINE == "x86_64":
        assert go["go write: runtime.g.goid"]["note"] == "stack ABI, g at fsbase-8"
        assert go["go: proc_info_map[pid] + uprobes (entry + every RET)"]["expected"] \
            .startswith("go1.15")


@needs_bpf
def test_verify_from_btf_text_table():
    res = tracer("verify", check=0)
    assert "FAIL" not in res.stdout
    assert res.stdout.splitlines()[-1].startswith("OK:")
    assert f"btf:{RUNNING_BTF}" in res.stdout


@needs_bpf
def test_verify_fails_with_another_kernels_db(debian_db, probe_119_strip):
    """The Debian 6.1 kernel's offsets on this 6.18 kernel: FAIL rows, exit 1, no crash of the
    tracer (JSON, no traceback) nor of the traced Go program."""
    res = tracer("verify", "--ignore-btf", "--db", debian_db, "--go-probe", probe_119_strip,
                 "--json", check=1)
    d = json.loads(res.stdout)
    assert d["ok"] is False and d["source"] == f"db:{debian_db}"
    fails = {c["field"] for c in d["checks"] if not c["ok"]}
    for want in ("inet: skc_num (local port)", "inet: tcp_sock.write_seq (TCP_REPAIR)",
                 "dentry.d_name.name", "inode.i_mode"):
        assert want in fails, sorted(fails)
    by = {c["field"]: c for c in d["checks"]}
    assert by["go: the traced program ran on and exited normally"]["ok"]
    # the Go side does not depend on the kernel's offsets, except the fsbase way to g
    assert by["go write: runtime.g.goid"]["ok"]
    if MACHINE == "x86_64":          # a wrong goid, or no event (entry and RET disagree)
        assert any(not c["ok"] for f, c in by.items() if f.startswith("go write via fsbase-8"))
    text = tracer("verify", "--ignore-btf", "--db", debian_db, check=1).stdout
    assert " FAIL" in text and text.splitlines()[-1].startswith("FAILED:")


# ---- the 4.14 rules ---------------------------------------------------------------------------

@needs_bpf
def test_every_program_keeps_to_the_414_rules():
    from tracer import bpf as B
    b = B.compile_program(MACHINE)
    try:
        reports = B.check_all(b)
        assert {r.program for r in reports} == set(B.PROGRAMS)
        for r in reports:
            assert r.ok, (r.program, r.problems)
            assert 0 < r.insns <= 4096
            assert set(r.helpers) <= set(B.ALLOWED_HELPERS)
        # the kernel's own verifier accepts every program
        for name, (kind, _) in B.PROGRAMS.items():
            b.load_func(name.encode(), b.TRACEPOINT if kind == B.TRACEPOINT else b.KPROBE)
    finally:
        b.cleanup()
    # classic tracepoints and uprobes only
    assert {k for k, _ in B.PROGRAMS.values()} == {B.TRACEPOINT, B.UPROBE}
    src = open(os.path.join(ROOT, "tracer", "bpf", "tracer.h")).read() + \
        open(os.path.join(ROOT, "tracer", "bpf", "tracer.c")).read()
    for banned in ("#include", "bpf_probe_read_kernel", "bpf_probe_read_user", "RINGBUF",
                   "ringbuf", "kprobe__", "kretprobe", "raw_tracepoint", "RAW_TRACEPOINT",
                   "uretprobe", "for (", "while (", "#pragma unroll", "task_struct",
                   "struct sock ", "struct file "):
        assert banned not in src, banned


@needs_bpf
@pytest.mark.parametrize("bad,problem", [
    ("u32 i; for (i = 0; i < n; i++) bpf_probe_read(&acc, 8, (void *)(acc + i));", "back-edge"),
    ("acc = bpf_get_smp_processor_id();", "not in the allowed 4.14 set"),
    ("bpf_probe_read_kernel(&acc, sizeof(acc), (void *)n);", "not in the allowed 4.14 set"),
    ("LONG", "instructions > 4096"),
])
def test_rule_checker_fails_on_programs_that_break_them(bad, problem):
    import bcc
    from tracer import bpf as B
    if bad == "LONG":
        bad = "\n".join(f"bpf_probe_read(&acc, sizeof(acc), (void *)(n + {i}));"
                        for i in range(1400))
    text = ("int prog(struct tracepoint__syscalls__sys_enter_pwrite64 *args) {"
            " u64 acc = 0; u64 n = args->count; " + bad + " return acc; }")
    b = bcc.BPF(text=text.encode())
    try:
        rep = B.check_rules("prog", b.dump_func(b"prog"))
    finally:
        b.cleanup()
    assert not rep.ok
    assert any(problem in p for p in rep.problems), rep.problems


# ---- the sock flags word: < 5.6 bitfields, the unnamed word, >= 5.6 fields -----------------

FIXTURE_BODY = r"""
struct fixture_out { u32 seq, family, sk_type, sk_protocol, ipv6only; };
BPF_ARRAY(fixture_out, struct fixture_out, 1);
int fixture_probe(struct tracepoint__syscalls__sys_enter_pwrite64 *args)
{
    struct tracer_config *cfg = cfg_get();
    struct members_offset *mo = mo_get();
    struct fixture_out *o;
    u32 k = 0;
    void *sk = (void *)args->buf;       /* the program's struct sock, in user memory */
    if (!cfg || !mo || (bpf_get_current_pid_tgid() >> 32) != cfg->verify_tgid)
        return 0;
    o = fixture_out.lookup(&k);
    if (!o)
        return 0;
    o->family = rd_u16(sk, mo->skc_family);
    o->sk_type = rd_bits(sk, mo->sk_type, mo->sk_type_shift, mo->sk_type_width);
    o->sk_protocol = rd_bits(sk, mo->sk_protocol, mo->sk_protocol_shift, mo->sk_protocol_width);
    o->ipv6only = rd_bits(sk, mo->skc_ipv6only, mo->skc_ipv6only_shift, mo->skc_ipv6only_width);
    o->seq += 1;
    return 0;
}
"""


@pytest.fixture(scope="module")
def sock_fixtures(tmp_path_factory):
    """The fixture program in each shape, with BTF (gcc -g, pahole -J), and a DB of that BTF
    made by `dbhive build`."""
    need_tool("gcc")
    need_tool("pahole")
    d = tmp_path_factory.mktemp("sock-flags")
    src = os.path.join(ROOT, "data", "tracer-src", "sock_flags.c")
    out = {}
    for shape in ("PRE56", "UNNAMED", "POST56"):
        exe = str(d / f"sock_flags_{shape}")
        subprocess.run(["gcc", "-g", "-O0", f"-DSHAPE_{shape}", "-o", exe, src], check=True)
        subprocess.run(["pahole", "-J", exe], check=True, capture_output=True)
        raw = exe + ".btf"
        subprocess.run(["objcopy", "--dump-section", f".BTF={raw}", exe, str(d / "scratch")],
                       check=True)
        db = exe + ".db"
        subprocess.run([os.path.join(VENV_BIN, "dbhive"), "build", raw, "--out", db],
                       check=True, capture_output=True)
        out[shape] = (exe, db)
    return out


@pytest.mark.parametrize("shape,path,detail", [
    ("PRE56", "sock.sk_type", "bitfield of unsigned int"),
    ("UNNAMED", "sock.__sk_flags_offset", "SK_FL_TYPE_SHIFT/MASK, kernels < 5.6"),
    ("POST56", "sock.sk_type", "2-byte field"),
])
def test_sock_flags_shapes_resolve_alike_from_btf_and_db(sock_fixtures, shape, path, detail):
    from resolver import Resolver
    from tracer import fields as F
    from tracer.offsets import members_words, resolve_all
    exe, db = sock_fixtures[shape]
    by_btf = resolve_all(Resolver.from_btf(exe), MACHINE)
    by_db = resolve_all(Resolver.open(db=db, overlay=None), MACHINE)
    assert F.pack_members(members_words(by_btf)) == F.pack_members(members_words(by_db))
    v = {x.member.name: x for x in by_btf}
    assert (v["sk_type"].path, v["sk_type"].detail) == (path, detail)
    # what the fixture does not have is reported absent, not guessed
    assert not v["tcp_copied_seq"].ok and "tcp_sock" in v["tcp_copied_seq"].absent
    res = tracer("offsets", "--db", db, "--json", check=0)
    f = {x["field"]: x for x in json.loads(res.stdout)["fields"]}
    assert f["tcp_copied_seq"]["value"] is None and f["tcp_copied_seq"]["absent"]
    assert f["sk_type"]["path"] == path


@needs_bpf
@pytest.mark.parametrize("shape", ["PRE56", "UNNAMED", "POST56"])
def test_bpf_decodes_each_sock_flags_shape(sock_fixtures, shape):
    """The BPF readers (tracer.h's rd_bits, with the offsets the tracer resolved from the
    fixture's DB) read back what gcc's code stored in a struct sock of that shape, every
    neighbouring bit set."""
    from resolver import Resolver
    from tracer import bpf as B
    from tracer import fields as F
    from tracer.offsets import members_words, resolve_all
    exe, db = sock_fixtures[shape]
    raw = F.pack_members(members_words(resolve_all(Resolver.open(db=db, overlay=None), MACHINE)))
    import bcc
    b = bcc.BPF(text=B.program_text(MACHINE, FIXTURE_BODY).encode())
    proc = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        B.fill_members(b, raw)
        B.set_config(b, verify_tgid=proc.pid)
        b.attach_tracepoint(tp=b"syscalls:sys_enter_pwrite64", fn_name=b"fixture_probe")
        table = b[b"fixture_out"]
        cases = [(1, 6, 1), (2, 17, 0), (5, 132, 1), (0xFFFF if shape != "POST56" else 3,
                                                      0xFF if shape != "POST56" else 0x1FF, 0)]
        for (typ, proto, v6) in cases:
            before = table[table.Key(0)].seq
            proc.stdin.write(f"{typ} {proto} {v6}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
            o = table[table.Key(0)]
            assert o.seq == before + 1
            assert (o.sk_type, o.sk_protocol, o.ipv6only) == (typ, proto, v6)
            assert o.family == 0xFFFF          # the bytes around are all ones
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        b.cleanup()

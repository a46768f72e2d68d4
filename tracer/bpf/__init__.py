"""The one bcc program of the tracer: its text, compiling it, its programs and their attach
points, filling its maps, and the static check of the Linux 4.14 rules on bcc's raw bytecode.

The C lives next to this file (tracer.h: maps and readers; tracer.c: programs); the struct
declarations of both maps come from tracer/fields.py.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .. import fields as F
from ..kernel import TracerError, headers_hint

HERE = os.path.dirname(os.path.abspath(__file__))
PROC_INFO_MAX = 16384

# arch macros: where the Go ABI keeps g, the first argument and the first result
ARCH_MACROS = {
    "x86_64": """
#define GO_G_REG(ctx) ((ctx)->r14)
#define GO_ARG1(ctx)  ((ctx)->ax)
#define GO_RET1(ctx)  ((ctx)->ax)
#define GO_SP(ctx)    ((ctx)->sp)
""",
    "aarch64": """
#define GO_G_REG(ctx) ((ctx)->regs[28])
#define GO_ARG1(ctx)  ((ctx)->regs[0])
#define GO_RET1(ctx)  ((ctx)->regs[0])
#define GO_SP(ctx)    ((ctx)->sp)
""",
}

# program -> (bcc program type, what it attaches to)
TRACEPOINT, UPROBE = "tracepoint", "uprobe"
PROGRAMS: Dict[str, Tuple[str, str]] = {
    "on_exec": (TRACEPOINT, "sched:sched_process_exec"),
    "on_fork": (TRACEPOINT, "sched:sched_process_fork"),
    "on_exit": (TRACEPOINT, "sched:sched_process_exit"),
    "on_write_enter": (TRACEPOINT, "syscalls:sys_enter_write"),
    "on_read_enter": (TRACEPOINT, "syscalls:sys_enter_read"),
    "on_write_exit": (TRACEPOINT, "syscalls:sys_exit_write"),
    "on_read_exit": (TRACEPOINT, "syscalls:sys_exit_read"),
    "go_tls_write_entry": (UPROBE, "crypto/tls.(*Conn).Write entry"),
    "go_tls_write_ret": (UPROBE, "crypto/tls.(*Conn).Write every RET"),
    "go_tls_read_entry": (UPROBE, "crypto/tls.(*Conn).Read entry"),
    "go_tls_read_ret": (UPROBE, "crypto/tls.(*Conn).Read every RET"),
    "verify_probe": (TRACEPOINT, "syscalls:sys_enter_pwrite64"),
}
FOLLOW_PROGRAMS = ("on_exec", "on_fork", "on_exit")
SYSCALL_PROGRAMS = ("on_write_enter", "on_read_enter", "on_write_exit", "on_read_exit")
GO_FUNCS = {"crypto/tls.(*Conn).Write": ("go_tls_write_entry", "go_tls_write_ret"),
            "crypto/tls.(*Conn).Read": ("go_tls_read_entry", "go_tls_read_ret")}

EVENT_KINDS = {1: "exec", 2: "fork", 3: "exit", 4: "tcp_write", 5: "tcp_read",
               6: "go_tls_write", 7: "go_tls_read"}


def _read(name: str) -> str:
    with open(os.path.join(HERE, name)) as fh:
        return fh.read()


def program_text(machine: str, body: Optional[str] = None) -> str:
    """The program's C: the generated map declarations, the arch macros, the readers
    (tracer.h) and the programs (tracer.c, or `body` instead: tests compile their own
    programs against the same maps and readers)."""
    if machine not in ARCH_MACROS:
        raise TracerError(f"tracer: no Go register ABI for {machine}", 2)
    return "\n".join([
        "#include <uapi/linux/ptrace.h>",   # struct pt_regs: the uprobe context (ABI)
        f"#define PROC_INFO_MAX {PROC_INFO_MAX}",
        F.c_header(), ARCH_MACROS[machine], _read("tracer.h"),
        _read("tracer.c") if body is None else body])


def compile_program(machine: str, text: Optional[str] = None):
    """The compiled bcc module (programs are loaded when attached)."""
    import bcc
    release = os.uname().release
    if text is None:
        text = program_text(machine)
    # bcc prints clang's diagnostics on stderr itself; a failure is one exception
    try:
        return bcc.BPF(text=text.encode())
    except Exception as e:      # bcc raises plain Exception
        hint = headers_hint(release)
        raise TracerError(f"tracer: bcc could not compile the BPF program ({e})"
                          + (f": {hint}" if hint else ""), 4) from None


def load(b, prog: str):
    """Load one program (the kernel's verifier runs here); TracerError when it refuses."""
    kind = PROGRAMS.get(prog, (UPROBE, ""))[0]
    try:
        return b.load_func(prog.encode(), b.TRACEPOINT if kind == TRACEPOINT else b.KPROBE)
    except Exception as e:          # bcc raises plain Exception; it printed the verifier's log
        raise TracerError(f"tracer: the kernel refused BPF program {prog} ({e})", 4) from None


def attach_tracepoint(b, prog: str) -> None:
    tp = PROGRAMS[prog][1]
    load(b, prog)
    try:
        b.attach_tracepoint(tp=tp.encode(), fn_name=prog.encode())
    except Exception as e:
        raise TracerError(f"tracer: cannot attach {prog} to the tracepoint {tp} ({e}); the "
                          f"kernel needs CONFIG_FTRACE_SYSCALLS for syscalls:*", 4) from None


# ---- maps --------------------------------------------------------------------------------

def _ncpus(b) -> int:
    import bcc
    return len(bcc.utils.get_possible_cpus())


def fill_members(b, raw: bytes) -> None:
    """members_offset[0] = raw on every possible CPU."""
    table = b[b"members_offset"]
    leaf_t = table.Leaf            # per-CPU: an array of the struct, one per possible CPU
    one = leaf_t._type_
    if ctypes.sizeof(one) != len(raw):
        raise RuntimeError(f"members_offset is {ctypes.sizeof(one)} bytes in C, "
                           f"{len(raw)} packed")
    vals = leaf_t()
    for i in range(len(vals)):
        ctypes.memmove(ctypes.byref(vals[i]), raw, len(raw))
    table[table.Key(0)] = vals


def read_members(b) -> List[bytes]:
    """members_offset[0] as bytes, one per possible CPU."""
    table = b[b"members_offset"]
    vals = table[table.Key(0)]
    return [ctypes.string_at(ctypes.byref(v), ctypes.sizeof(v)) for v in vals]


def set_config(b, **kw) -> None:
    table = b[b"tracer_config"]
    cur = table[table.Key(0)]
    for k, v in kw.items():
        setattr(cur, k, v)
    table[table.Key(0)] = cur


def put_proc_info(b, pid: int, raw: bytes) -> None:
    table = b[b"proc_info_map"]
    leaf = table.Leaf()
    if ctypes.sizeof(leaf) != len(raw):
        raise RuntimeError(f"go_proc_info is {ctypes.sizeof(leaf)} bytes in C, {len(raw)} packed")
    ctypes.memmove(ctypes.byref(leaf), raw, len(raw))
    table[table.Key(pid)] = leaf


def get_proc_info(b, pid: int) -> Optional[bytes]:
    table = b[b"proc_info_map"]
    try:
        leaf = table[table.Key(pid)]
    except KeyError:
        return None
    return ctypes.string_at(ctypes.byref(leaf), ctypes.sizeof(leaf))


def del_proc_info(b, pid: int) -> None:
    table = b[b"proc_info_map"]
    try:
        del table[table.Key(pid)]
    except KeyError:
        pass


def clear_maps(b) -> None:
    """Empty proc_info_map and mark members_offset not ready (on every CPU)."""
    b[b"proc_info_map"].clear()
    table = b[b"members_offset"]
    table[table.Key(0)] = table.Leaf()


# ---- the 4.14 rules, checked on bcc's raw bytecode ---------------------------------------

# helper ids (include/uapi/linux/bpf.h) that Linux 4.14 has and the tracer may call
ALLOWED_HELPERS = {1: "bpf_map_lookup_elem", 2: "bpf_map_update_elem", 3: "bpf_map_delete_elem",
                   4: "bpf_probe_read", 5: "bpf_ktime_get_ns", 14: "bpf_get_current_pid_tgid",
                   25: "bpf_perf_event_output", 35: "bpf_get_current_task",
                   45: "bpf_probe_read_str"}
MAX_INSNS_414 = 4096          # BPF_MAXINSNS: the per-program cap before 5.2

BPF_CLASS = 0x07
BPF_JMP, BPF_JMP32, BPF_STX = 0x05, 0x06, 0x03
BPF_CALL, BPF_EXIT, BPF_JA = 0x80, 0x90, 0x00
BPF_ATOMIC = 0xc0


@dataclass
class RuleReport:
    program: str
    insns: int
    helpers: List[int]
    problems: List[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def helper_names(self) -> List[str]:
        return [ALLOWED_HELPERS.get(h, f"helper#{h}") for h in self.helpers]


def _decode(raw: bytes) -> List[Tuple[int, int, int, int, int]]:
    """[(index, opcode, regs, off, imm)] with ld_imm64's second slot skipped."""
    out, n, i = [], len(raw) // 8, 0
    while i < n:
        op, regs, off, imm = struct.unpack_from("<BBhi", raw, i * 8)
        out.append((i, op, regs, off, imm))
        i += 2 if op == 0x18 else 1
    return out


def _successors(i: int, op: int, off: int, n: int) -> List[int]:
    cls, code = op & BPF_CLASS, op & 0xf0
    if cls not in (BPF_JMP, BPF_JMP32):
        return [i + (2 if op == 0x18 else 1)]
    if code == BPF_EXIT:
        return []
    if code == BPF_CALL:
        return [i + 1]
    if code == BPF_JA:
        return [i + 1 + off]
    return [i + 1, i + 1 + off]


def _cfg_problems(insns, n: int) -> List[str]:
    """What Linux 4.14's check_cfg rejects: a back-edge (a loop), a jump out of the program,
    an unreachable instruction.  Depth-first from insn 0, as the kernel walks it."""
    ops = {i: (op, off) for (i, op, _r, off, _imm) in insns}
    state: Dict[int, int] = {}            # 1 on the stack, 2 done
    problems: List[str] = []
    stack = [(0, iter(_successors(0, *ops[0], n)))] if ops else []
    state[0] = 1
    while stack:
        node, succ = stack[-1]
        nxt = next(succ, None)
        if nxt is None:
            state[node] = 2
            stack.pop()
            continue
        if nxt not in ops:
            problems.append(f"insn {node}: jump out of range to {nxt}")
        elif state.get(nxt) == 1:
            problems.append(f"insn {node}: back-edge to insn {nxt} (a loop; bounded loops "
                            f"are Linux 5.3)")
        elif nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(_successors(nxt, *ops[nxt], n))))
    unreachable = [i for i in ops if i not in state]
    if unreachable:
        problems.append(f"{len(unreachable)} unreachable instructions (first: {unreachable[0]})")
    return problems


def check_rules(program: str, raw: bytes) -> RuleReport:
    """Linux 4.14 rules on one program's raw bytecode (bcc's dump_func): at most 4096
    instructions, only 4.14 helpers of the allowed set, no bpf-to-bpf calls (4.16), no loops
    (a back-edge in the control flow graph; bounded loops are 5.3), no JMP32 (5.1), no
    atomics other than XADD, no unreachable code."""
    problems: List[str] = []
    n = len(raw) // 8
    if len(raw) % 8:
        problems.append("bytecode length is not a multiple of 8")
    if n > MAX_INSNS_414:
        problems.append(f"{n} instructions > {MAX_INSNS_414}")
    insns = _decode(raw)
    helpers = set()
    for (i, op, regs, off, imm) in insns:
        cls = op & BPF_CLASS
        if cls == BPF_JMP32:
            problems.append(f"insn {i}: JMP32 (Linux 5.1)")
        if cls == BPF_JMP and (op & 0xf0) == BPF_CALL:
            src = regs >> 4
            if src == 1:
                problems.append(f"insn {i}: bpf-to-bpf call (Linux 4.16)")
            elif src != 0:
                problems.append(f"insn {i}: kfunc call")
            else:
                helpers.add(imm)
                if imm not in ALLOWED_HELPERS:
                    problems.append(f"insn {i}: helper #{imm} is not in the allowed 4.14 set")
        if cls == BPF_STX and (op & 0xe0) == BPF_ATOMIC and imm != 0:
            problems.append(f"insn {i}: atomic op {imm:#x} (only XADD is 4.14)")
    problems += _cfg_problems(insns, n)
    return RuleReport(program, n, sorted(helpers), problems)


def check_all(b) -> List[RuleReport]:
    return [check_rules(p, b.dump_func(p.encode())) for p in PROGRAMS]

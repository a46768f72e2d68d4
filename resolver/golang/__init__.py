"""Go executables: version, functions and their RET offsets, struct offsets, itabs.

    from resolver.golang import analyze_go_binary, analyze_pid
    rep = analyze_go_binary("./server")      # GoReport
    rep.version, rep.symbols["crypto/tls.(*Conn).Write"]["returns"], rep.offsets["runtime.g.goid"]

Imported lazily: the report pulls in a disassembler the kernel-side commands do not need.
"""
from __future__ import annotations

__all__ = ["analyze_go_binary", "analyze_pid", "process_maps", "GoReport", "NotGoBinary",
           "STANDARD_SYMBOLS", "STANDARD_OFFSETS", "STANDARD_ITABS"]


def __getattr__(name):
    if name in __all__:
        from . import report
        return getattr(report, name)
    raise AttributeError(f"module 'resolver.golang' has no attribute {name!r}")

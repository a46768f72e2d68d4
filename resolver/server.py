"""A local server for the surftrace/pylcc "lbc" protocol and a plain JSON API.

lbc (what an unmodified surftrace client in remote mode speaks):
    POST /lbc   body: [{"arch": "x86_64", "ver": "<uname -r>", "cmd": "struct"|"func"|"type"|"btf", ...}]
    reply:      {"code": 200, "res": [{"log": "ok.", "res": ...}, ...]}   (one entry per request)
  struct: {"struct": "struct task_struct"} -> {"name", "members", "size", "cell": [...]}
          (a name with '%' is a LIKE pattern: a list of {"name", "members", "size"}, 10 at most)
  func:   {"func": "do_filp_open"[, "ret": T][, "arg": T]} -> [{"func", "args", "ret", "line", "file"}]
  type:   {"type": "unsigned int"} -> {"name", "type", "size"}; the client sends "_" for any pointer
  btf:    {} -> {"log": "ok.", "btf": base64 of the kernel's raw BTF} when the hive has it
The client's port is fixed at 80 (surftrace's LBC_COMPILE_PORT) and LBC_SERVER is a host
name, so an unmodified client needs this server on port 80 of that host.

JSON API:
    GET  /api/kernels                              the hive's kernels
    POST /api/offset  {"release","arch" | "db": index, "paths": [...]}   like `resolver offset --json`
    POST /api/struct  {"release","arch", "name"}
    POST /api/func    {"release","arch", "name"}
    POST /api/expr    {"release","arch", "probes": [...], "compat": false, "expr_arch": "x86_64"}
    GET  /healthz

Safety: loopback by default; bodies over MAX_BODY are refused unread; every value is checked
for type and length; all SQL is constant text with parameters; each request's work is
bounded (LIMITs, list lengths); any failure becomes a JSON error reply, never a dead server.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import traceback
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from dbhive.hive import btf_path, hive_of_db

from . import select
from .api import Resolver
from .errors import NoKernelDB, ResolverError
from .kernel import KernelDB

MAX_BODY = 1 << 20            # 1 MiB
MAX_ITEMS = 64                # requests per lbc body / paths per API call
MAX_NAME = 256
MAX_OPEN_DBS = 16
MAX_WORKERS = 64              # requests handled at once; more wait for a slot
REQUEST_TIMEOUT = 10.0        # seconds a connection may stay idle mid-request

_SQL_STRUCT = "SELECT id, name, members, bytes FROM structs WHERE name = ? LIMIT 1"
_SQL_STRUCT_LIKE = ("SELECT id, name, members, bytes FROM structs WHERE name LIKE ? "
                    "ESCAPE '\\' LIMIT ?")
_SQL_CELLS = "SELECT types, offset, bytes, bits, name FROM members WHERE fid = ? ORDER BY rowid"
_SQL_TYPE = "SELECT name, alias, bytes FROM types WHERE name = ? LIMIT 1"
_SQL_FUNC = ("SELECT f.func, f.args, f.ret, f.line, fl.file FROM funs f "
             "LEFT JOIN files fl ON fl.id = f.fid WHERE f.func = ? LIMIT ?")
_SQL_FUNC_LIKE = ("SELECT f.func, f.args, f.ret, f.line, fl.file FROM funs f "
                  "LEFT JOIN files fl ON fl.id = f.fid WHERE f.func LIKE ? LIMIT ?")
_SQL_FUNC_RET = ("SELECT f.func, f.args, f.ret, f.line, fl.file FROM funs f "
                 "LEFT JOIN files fl ON fl.id = f.fid WHERE (f.ret = ? OR f.ret = ?) "
                 "AND f.func LIKE ? LIMIT ?")
_SQL_FUNC_ARG = ("SELECT f.func, f.args, f.ret, f.line, fl.file FROM funs f "
                 "LEFT JOIN files fl ON fl.id = f.fid, json_each(f.args) "
                 "WHERE json_each.value = ? AND f.func LIKE ? LIMIT ?")


class BadRequest(ValueError):
    pass


def _text(d: dict, key: str, required: bool = True, default=None) -> Optional[str]:
    v = d.get(key, default)
    if v is None:
        if required:
            raise BadRequest(f"missing {key!r}")
        return None
    if not isinstance(v, str):
        raise BadRequest(f"{key!r} must be a string")
    if len(v) > MAX_NAME or "\0" in v:
        raise BadRequest(f"{key!r} is too long or has a NUL byte")
    return v


class Kernels:
    """The DBs the server answers from: one fixed DB, or a hive looked up per request."""

    def __init__(self, hive: Optional[str] = None, db: Optional[str] = None):
        self.hive = hive or (None if db else select.default_hive())
        self.db = db
        self._open: "OrderedDict[str, Resolver]" = OrderedDict()
        self._by_key: dict = {}
        self._lock = threading.Lock()
        if db:
            self._fixed = Resolver(KernelDB(db))

    def get(self, ver: Optional[str], arch: Optional[str]) -> Resolver:
        if self.db:
            return self._fixed
        if not ver:
            raise BadRequest("missing 'ver' (kernel release)")
        key = (ver, arch or os.uname().machine)
        r = self._by_key.get(key)
        if r is not None:
            return r
        choice = select.choose_db(hive=self.hive, release=key[0], arch=key[1])
        r = self._open_path(choice.path)
        if len(self._by_key) > 4 * MAX_OPEN_DBS:
            self._by_key.clear()
        self._by_key[key] = r
        return r

    def _open_path(self, path: str) -> Resolver:
        choice_path = path
        with self._lock:
            r = self._open.get(choice_path)
            if r is not None:
                self._open.move_to_end(choice_path)
                return r
        r = Resolver(KernelDB(choice_path))
        with self._lock:
            old = self._open.get(choice_path)
            if old is not None:
                r.close()
                return old
            self._open[choice_path] = r
            while len(self._open) > MAX_OPEN_DBS:
                # dropped from the cache; its connection closes when no thread holds it
                _p, _evicted = self._open.popitem(last=False)
                self._by_key.clear()
        return r

    def list(self) -> list:
        if self.db:
            return [self._fixed.kernel]
        out = []
        for path, meta in select.hive_entries(self.hive):
            out.append({"release": meta.get("release"), "arch": meta.get("arch"),
                        "build_id": meta.get("build_id"), "flavour": meta.get("flavour"),
                        "distro": meta.get("distro"), "type_source": meta.get("type_source"),
                        "db": path})
        return out


# ---------------------------------------------------------------------------------------
# lbc commands over the surftrace tables

def _like_escape(s: str) -> str:
    """Keep the client's '%' wildcard, make '_' (a LIKE wildcard) literal."""
    return s.replace("\\", "\\\\").replace("_", "\\_")


def lbc_struct(db: KernelDB, name: str):
    if "%" in name:
        rows = db._query(_SQL_STRUCT_LIKE, (_like_escape(name), 10))
        return [{"name": r[1], "members": r[2], "size": r[3]} for r in rows]
    rows = db._query(_SQL_STRUCT, (name,))
    if not rows:
        return None
    sid, sname, members, size = rows[0]
    cells = [{"type": t, "offset": o, "size": b, "bits": bits, "name": n}
             for (t, o, b, bits, n) in db._query(_SQL_CELLS, (sid,))]
    return {"name": sname, "members": members, "size": size, "cell": cells}


def lbc_type(db: KernelDB, name: str):
    if name == "_" or "*" in name:
        name = "void *"
    rows = db._query(_SQL_TYPE, (name,))
    if not rows:
        return None
    n, alias, size = rows[0]
    return {"name": n, "type": alias, "size": size}


def _func_rows(rows) -> list:
    out = []
    for (func, args, ret, line, file) in rows:
        try:
            a = json.loads(args)
        except (TypeError, ValueError):
            a = []
        out.append({"func": func, "args": a, "ret": ret, "line": line, "file": file})
    return out


def lbc_func(db: KernelDB, func: str, ret: Optional[str], arg: Optional[str]):
    if ret is not None or arg is not None:
        pattern = func or "%"
        if "%" not in pattern:
            raise BadRequest("with 'ret' or 'arg', 'func' must be a pattern with '%'")
        if ret is not None:
            return _func_rows(db._query(_SQL_FUNC_RET, (ret, "static " + ret, pattern, 100)))
        return _func_rows(db._query(_SQL_FUNC_ARG, (arg, pattern, 100)))
    if "%" in func:
        return _func_rows(db._query(_SQL_FUNC_LIKE, (func, 20)))
    return _func_rows(db._query(_SQL_FUNC, (func, 20)))


def find_btf(r: Resolver, hive: Optional[str]) -> Optional[bytes]:
    """The raw BTF of the kernel of `r`, when the build kept it in the hive
    (`dbhive.hive.btf_path`: <hive>/<arch>/btf/<release>.btf)."""
    meta = r.db.meta
    release, arch = meta.get("release") or "", meta.get("arch") or ""
    for h in dict.fromkeys(x for x in (hive, hive_of_db(r.db.path)) if x):
        p = btf_path(h, arch, release, meta.get("flavour"))
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                data = fh.read()
            if data[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
                return data
    return None
    release, arch = meta.get("release") or "", meta.get("arch") or ""
    dirs = []
    if hive:
        dirs.append(os.path.join(hive, arch, "btf"))
    # the DB's own hive: <hive>/<arch>/db/<distro>/info-R.db
    dbdir = os.path.dirname(r.db.path)
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(dbdir)), "btf"))
    for d in dirs:
        for name in (f"{release}.btf", f"info-{release}.btf", f"vmlinux-{release}.btf"):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    data = fh.read()
                if data[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
                    return data
    return None


def lbc_one(kernels: Kernels, req) -> dict:
    if not isinstance(req, dict):
        return {"log": "bad request: each request must be an object."}
    try:
        cmd = _text(req, "cmd")
        ver = _text(req, "ver", required=False)
        arch = _text(req, "arch", required=False)
        r = kernels.get(ver, arch)
        db = r.db
        if cmd == "struct":
            return {"log": "ok.", "res": lbc_struct(db, _text(req, "struct"))}
        if cmd == "type":
            return {"log": "ok.", "res": lbc_type(db, _text(req, "type"))}
        if cmd == "func":
            return {"log": "ok.", "res": lbc_func(db, _text(req, "func", default="%"),
                                                  _text(req, "ret", required=False),
                                                  _text(req, "arg", required=False))}
        if cmd == "btf":
            data = find_btf(r, kernels.hive)
            if data is None:
                return {"log": f"btf not available for {db.meta.get('release')} "
                               f"({db.meta.get('type_source')} DB)", "btf": None}
            return {"log": "ok.", "btf": base64.b64encode(data).decode()}
        return {"log": f"cmd {cmd!r} not supported (struct, func, type, btf)."}
    except BadRequest as e:
        return {"log": f"bad request: {e}."}
    except NoKernelDB as e:
        return {"log": f"{e}."}
    except ResolverError as e:
        return {"log": f"{e}."}


# ---------------------------------------------------------------------------------------
# JSON API

def api_call(kernels: Kernels, path: str, body) -> tuple:
    if path == "/api/kernels":
        return 200, {"kernels": kernels.list()}
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    r = kernels.get(_text(body, "release", required=False), _text(body, "arch", required=False))
    if path == "/api/offset":
        paths = body.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or len(paths) > MAX_ITEMS or \
                not all(isinstance(p, str) and len(p) <= 1024 for p in paths):
            raise BadRequest(f"'paths' must be a list of 1..{MAX_ITEMS} strings")
        out = {"kernel": r.kernel, "offsets": {}}
        for p, v in r.offsets(paths).items():
            out["offsets"][p] = {"error": str(v)} if isinstance(v, LookupError) else v.as_dict()
        return 200, out
    if path == "/api/struct":
        s = r.struct(_text(body, "name"))
        d = s.as_dict()
        d["kernel"] = r.kernel
        return 200, d
    if path == "/api/func":
        fs = r.func(_text(body, "name"))
        return 200, {"kernel": r.kernel, "functions": [f.as_dict() for f in fs]}
    if path == "/api/expr":
        from .expr import translate
        probes = body.get("probes")
        if not isinstance(probes, list) or not probes or len(probes) > MAX_ITEMS or \
                not all(isinstance(p, str) and len(p) <= 4096 for p in probes):
            raise BadRequest(f"'probes' must be a list of 1..{MAX_ITEMS} strings")
        arch = _text(body, "expr_arch", required=False) or r.kernel.get("arch") or "x86_64"
        res = translate(r, probes, arch=arch, compat=bool(body.get("compat", False)))
        return 200, {"kernel": r.kernel, "probes": [p.as_dict() for p in res]}
    return 404, {"error": f"no such endpoint {path}"}


# ---------------------------------------------------------------------------------------
# HTTP

class _Handler(BaseHTTPRequestHandler):
    server_version = "dbhive-resolver/0.1"
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def log_message(self, fmt, *args):       # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), fmt % args))

    def _send(self, code: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise _HttpError(411, "chunked bodies are not accepted: send Content-Length")
        try:
            n = int(length)
        except (TypeError, ValueError):
            self.close_connection = True
            raise _HttpError(411, "Content-Length required")
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise _HttpError(413, f"body larger than {MAX_BODY} bytes")
        raw = self.rfile.read(n)
        if len(raw) != n:
            self.close_connection = True
            raise _HttpError(400, "body shorter than Content-Length")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _HttpError(400, f"body is not JSON: {e}")

    def _guard(self, fn) -> None:
        if not self.server.slots.acquire(timeout=REQUEST_TIMEOUT):
            self.close_connection = True
            self._send(503, {"code": 503, "log": "server busy, retry"})
            return
        try:
            fn()
        except _HttpError as e:
            self._send(e.code, {"code": e.code, "log": e.msg, "error": e.msg})
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:              # never let one request take the server down
            if self.server.verbose:
                traceback.print_exc()
            try:
                self._send(500, {"code": 500, "log": f"internal error: {type(e).__name__}",
                                 "error": f"internal error: {type(e).__name__}"})
            except OSError:
                self.close_connection = True
        finally:
            self.server.slots.release()

    def do_GET(self):
        def run():
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, {"ok": True})
            elif path == "/api/kernels":
                self._send(*api_call(self.server.kernels, path, None))
            else:
                raise _HttpError(404, f"no such endpoint {path} (POST /lbc, POST /api/...)")
        self._guard(run)

    def do_POST(self):
        def run():
            path = self.path.split("?", 1)[0]
            if path == "/lbc":
                body = self._body()
                if isinstance(body, dict):
                    body = [body]
                if not isinstance(body, list) or not body or len(body) > MAX_ITEMS:
                    raise _HttpError(400, f"body must be a list of 1..{MAX_ITEMS} requests")
                res = [lbc_one(self.server.kernels, q) for q in body]
                self._send(200, {"code": 200, "res": res})
            elif path.startswith("/api/"):
                body = self._body()
                try:
                    self._send(*api_call(self.server.kernels, path, body))
                except BadRequest as e:
                    raise _HttpError(400, str(e))
                except ResolverError as e:
                    self._send(404 if not isinstance(e, ValueError) else 400,
                               {"error": str(e), "kind": type(e).__name__})
            else:
                raise _HttpError(404, f"no such endpoint {path}")
        self._guard(run)

    def do_PUT(self):
        self._guard(lambda: (_ for _ in ()).throw(_HttpError(405, "use GET or POST")))

    do_DELETE = do_PATCH = do_PUT


class _HttpError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code, self.msg = code, msg


class ResolverServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, kernels: Kernels, verbose: bool = False):
        self.kernels = kernels
        self.verbose = verbose
        self.slots = threading.BoundedSemaphore(MAX_WORKERS)
        super().__init__(addr, _Handler)

    def handle_error(self, request, client_address):   # keep serving, stay quiet
        if self.verbose:
            super().handle_error(request, client_address)


def make_server(hive: Optional[str] = None, db: Optional[str] = None,
                host: str = "127.0.0.1", port: int = 8123, verbose: bool = False,
                overlay=None) -> ResolverServer:
    return ResolverServer((host, port), Kernels(hive=hive, db=db), verbose=verbose)


def serve_forever(hive=None, db=None, host="127.0.0.1", port=8123, overlay=None) -> None:
    srv = make_server(hive=hive, db=db, host=host, port=port)
    where = db or srv.kernels.hive
    print(f"resolver: serving {where} on http://{host}:{srv.server_address[1]} "
          f"(POST /lbc, /api/offset, /api/struct, /api/func, /api/expr; GET /api/kernels)",
          file=sys.stderr)
    if srv.server_address[1] != 80:
        print("resolver: note: the surftrace client always connects to port 80 of "
              "$LBC_SERVER; use --port 80 for it", file=sys.stderr)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()

"""A local server for the surftrace/pylcc "lbc" protocol and a plain JSON API.

lbc (what an unmodified surftrace client in remote mode speaks; the commands are in lbc.py):
    POST /lbc   body: [{"arch": "x86_64", "ver": "<uname -r>", "cmd": "struct"|"func"|"type"|"btf", ...}]
    reply:      {"code": 200, "res": [{"log": "ok.", "res": ...}, ...]}   (one entry per request)
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
Overlay DBs (`--overlay`, $LBC_PREVDB, ./prev.db) are consulted first, as by the resolver.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Optional

from dbhive.errors import DbhiveError

from . import choose, lbc
from .api import Resolver
from .errors import ResolverError
from .kernel import KernelDB
from .lbc import BadRequest

MAX_BODY = 1 << 20            # 1 MiB
MAX_ITEMS = 64                # requests per lbc body / paths per API call
MAX_NAME = 256
MAX_OPEN_DBS = 16
MAX_WORKERS = 32              # connections served at once, each by a pool thread
MAX_QUEUE = 128               # accepted connections waiting for a worker; more get 503
MAX_BTF = 64 << 20            # largest BTF file the `btf` command sends
MAX_REPLY = 32 << 20          # bytes of one reply; commands past it answer "reply too large"
REQUEST_TIMEOUT = 10.0        # seconds a connection may stay idle between reads
REQUEST_DEADLINE = 30.0       # seconds one request may take from its first byte to its reply



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

    def __init__(self, hive: Optional[str] = None, db: Optional[str] = None,
                 overlay: Optional[str] = None):
        self.hive = hive or (None if db else choose.default_hive())
        self.db = db
        # overlay DBs (kobuild's prev.db of custom modules) are consulted first, as by
        # `resolver offset`; "auto" means $LBC_PREVDB, else ./prev.db
        self.overlay_paths = tuple(choose.overlay_paths(overlay))
        self._open: "OrderedDict[str, Resolver]" = OrderedDict()
        self._by_key: dict = {}
        self._lock = threading.Lock()
        if db:
            self._fixed = self._resolver(db)

    def _resolver(self, path: str) -> Resolver:
        """The resolver of one kernel DB with the overlays that are for that kernel: with
        one --db an overlay for another kernel is refused (NoKernelDB, as by `resolver`);
        across a hive each overlay serves only its own kernel."""
        kdb = KernelDB(path)
        overlays = []
        try:
            for p in self.overlay_paths:
                o = KernelDB(p)
                try:
                    choose.check_overlay(o.path, o.meta, kdb.meta, f"DB {path}")
                except choose.NoKernelDB:
                    o.close()
                    if self.db:
                        raise
                    continue
                overlays.append(o)
        except BaseException:
            for o in overlays:
                o.close()
            kdb.close()
            raise
        return Resolver(kdb, tuple(overlays))

    def get(self, ver: Optional[str], arch: Optional[str], field: str = "ver") -> Resolver:
        if self.db:
            return self._fixed
        if not ver:
            raise BadRequest(f"missing {field!r} (kernel release)")
        key = (ver, arch or os.uname().machine)
        r = self._by_key.get(key)
        if r is not None:
            return r
        choice = choose.choose_db(hive=self.hive, release=key[0], arch=key[1])
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
        r = self._resolver(choice_path)
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
        for path, meta in choose.hive_entries(self.hive):
            out.append({"release": meta.get("release"), "arch": meta.get("arch"),
                        "build_id": meta.get("build_id"), "flavour": meta.get("flavour"),
                        "distro": meta.get("distro"), "type_source": meta.get("type_source"),
                        "db": path})
        return out


# ---------------------------------------------------------------------------------------
# lbc

def lbc_many(kernels: Kernels, reqs: list, max_reply: int = MAX_REPLY) -> list:
    """The replies to one body's requests; past `max_reply` bytes the rest answer that the
    reply is too large (one 2 KB body of 64 `btf` commands must not cost 0.5 GB)."""
    out, size = [], 0
    for q in reqs:
        if size > max_reply:
            out.append({"log": f"reply too large: over {max_reply} bytes; ask in fewer "
                               f"requests."})
            continue
        r = lbc_one(kernels, q)
        size += len(json.dumps(r))
        out.append(r if size <= max_reply else
                   {"log": f"reply too large: over {max_reply} bytes; ask in fewer requests."})
    return out


def lbc_one(kernels: Kernels, req) -> dict:
    """One lbc request -> its reply entry; every failure is this request's own log line."""
    if not isinstance(req, dict):
        return {"log": "bad request: each request must be an object."}
    try:
        cmd = _text(req, "cmd")
        r = kernels.get(_text(req, "ver", required=False), _text(req, "arch", required=False))
        if cmd == "struct":
            return {"log": "ok.", "res": lbc.struct(r, _text(req, "struct"))}
        if cmd == "type":
            return {"log": "ok.", "res": lbc.type_(r, _text(req, "type"))}
        if cmd == "func":
            return {"log": "ok.", "res": lbc.func(r, _text(req, "func", default="%"),
                                                  _text(req, "ret", required=False),
                                                  _text(req, "arg", required=False))}
        if cmd == "btf":
            log, data = lbc.btf(r, kernels.hive, MAX_BTF)
            return {"log": log, "btf": data}
        return {"log": f"cmd {cmd!r} not supported (struct, func, type, btf)."}
    except BadRequest as e:
        return {"log": f"bad request: {e}."}
    except DbhiveError as e:            # no such kernel, damaged DB, ...: this request only
        return {"log": f"{e}."}


# ---------------------------------------------------------------------------------------
# JSON API

def api_call(kernels: Kernels, path: str, body) -> tuple:
    if path == "/api/kernels":
        return 200, {"kernels": kernels.list()}
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    r = kernels.get(_text(body, "release", required=False), _text(body, "arch", required=False),
                    field="release")
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
        compat = body.get("compat", False)
        if not isinstance(compat, bool):
            raise BadRequest("'compat' must be true or false")
        res = translate(r, probes, arch=arch, compat=compat)
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

    def handle_one_request(self):
        # one deadline for the whole request: a client sending a byte at a time, or never
        # finishing its body, loses its connection when it passes (a per-read timeout alone
        # would let it hold a worker forever)
        timer = threading.Timer(self.server.request_deadline, self._expire)
        timer.daemon = True
        timer.start()
        try:
            super().handle_one_request()
        finally:
            timer.cancel()

    def _expire(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _guard(self, fn) -> None:
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
                self._send(200, {"code": 200, "res": lbc_many(self.server.kernels, body)})
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


_BUSY_BODY = b'{"code": 503, "log": "server busy, retry"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() +
         b"\r\n\r\n" + _BUSY_BODY)


class _HttpError(Exception):
    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code, self.msg = code, msg


class ResolverServer(HTTPServer):
    """Connections are served by a fixed pool of MAX_WORKERS threads with at most MAX_QUEUE
    waiting; beyond that a client gets 503 at once (memory and threads stay bounded)."""
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, kernels: Kernels, verbose: bool = False,
                 request_deadline: float = REQUEST_DEADLINE):
        self.kernels = kernels
        self.verbose = verbose
        self.request_deadline = request_deadline
        self.pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="resolver")
        self.admitted = threading.BoundedSemaphore(MAX_WORKERS + MAX_QUEUE)
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        if not self.admitted.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.admitted.release()

    def server_close(self):
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def handle_error(self, request, client_address):   # keep serving, stay quiet
        if self.verbose:
            super().handle_error(request, client_address)


def make_server(hive: Optional[str] = None, db: Optional[str] = None,
                host: str = "127.0.0.1", port: int = 8123, verbose: bool = False,
                overlay: Optional[str] = None,
                request_deadline: float = REQUEST_DEADLINE) -> ResolverServer:
    """`overlay`: an overlay DB path, "auto" ($LBC_PREVDB / ./prev.db) or None."""
    return ResolverServer((host, port), Kernels(hive=hive, db=db, overlay=overlay),
                          verbose=verbose, request_deadline=request_deadline)


def serve_forever(hive=None, db=None, host="127.0.0.1", port=8123, overlay=None,
                  request_deadline: float = REQUEST_DEADLINE) -> None:
    srv = make_server(hive=hive, db=db, host=host, port=port, overlay=overlay,
                      request_deadline=request_deadline)
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

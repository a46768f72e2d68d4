"""`resolver elf`: symbol file offsets of any ELF and OpenSSL's version, on Debian's real
libssl3 and on a static build (gcc -static with libssl.a)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from dbhive.elf import ElfFile as ElfImage
from resolver.elfsyms import openssl_version, resolve_symbols
from resolver.golang.cli import elf_command
from scripts.realdata import CACHE

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
C_SRC = r"""
#include <openssl/ssl.h>
#include <stdio.h>
int main(void) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *s = SSL_new(ctx);
    printf("%s %p %p\n", OpenSSL_version(OPENSSL_VERSION), (void *)SSL_write, (void *)SSL_read);
    SSL_free(s);
    SSL_CTX_free(ctx);
    return 0;
}
"""


def _readelf_syms(path, dynamic):
    out = subprocess.run(["readelf", "-W", "--dyn-syms" if dynamic else "--syms", path],
                         capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0][:-1].isdigit() and parts[6] != "UND":
            syms.setdefault(parts[7].split("@")[0], (int(parts[1], 16), int(parts[2], 0)))
    return syms


def _dpkg_openssl_version():
    v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libssl3"], capture_output=True,
                       text=True).stdout
    return v.split("-")[0]


def test_debian_libssl3():
    if not os.path.exists(LIBSSL):
        pytest.fail("libssl3 missing")
    img = ElfImage(LIBSSL)
    got = resolve_symbols(img, ["SSL_write", "SSL_read", "SSL_do_handshake", "no_such_symbol"])
    truth = _readelf_syms(LIBSSL, dynamic=True)
    for n in ("SSL_write", "SSL_read", "SSL_do_handshake"):
        assert (got[n]["address"], got[n]["size"]) == truth[n]
        # shared objects: file offset = vaddr - segment vaddr + segment offset
        assert got[n]["file_offset"] is not None
    assert got["no_such_symbol"] is None
    v = openssl_version(img)
    assert v["version"] == _dpkg_openssl_version()
    res = CliRunner().invoke(elf_command, [LIBSSL, "--symbols", "SSL_write,SSL_read", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["symbols"]["SSL_write"]["file_offset"] == got["SSL_write"]["file_offset"]


def test_static_openssl_build(tmp_path):
    if not os.path.exists("/usr/lib/x86_64-linux-gnu/libssl.a"):
        pytest.fail("libssl-dev missing (scripts/apt-test.txt)")
    exe = os.path.join(CACHE, "ssl-static")
    if not os.path.exists(exe):
        src = tmp_path / "s.c"
        src.write_text(C_SRC)
        subprocess.run(["gcc", "-static", "-O1", "-o", exe + ".part", str(src), "-lssl",
                        "-lcrypto", "-lpthread"], check=True, capture_output=True)
        os.replace(exe + ".part", exe)
    img = ElfImage(exe)
    got = resolve_symbols(img, ["SSL_write", "SSL_read"])
    truth = _readelf_syms(exe, dynamic=False)
    for n in ("SSL_write", "SSL_read"):
        assert (got[n]["address"], got[n]["size"]) == truth[n]
        assert got[n]["table"] == ".symtab"
    printed = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    assert openssl_version(img)["text"] in printed


def test_not_elf_and_missing(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world" * 10)
    r = CliRunner().invoke(elf_command, [str(junk), "--symbols", "x"])
    assert r.exit_code != 0 and "not an ELF file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(elf_command, [str(tmp_path / "nope")])
    assert r.exit_code != 0 and "cannot open" in r.output

#!/usr/bin/python3
"""Requests the server accepts cannot slip past the recorder: a differential test of odd
HTTP framings against Debian's uvicorn (h11), the parser of the servers chatcap watches.

Each case is a POST /v1/chat/completions written some odd way (bare LF or mixed line ends
in the head, whitespace around colons, chunk-line variants, trailers, obs-fold, ...), sent
raw on a connection of its own to ``fake_vllm.py`` while ``chatcap run`` records with its
default flags. The fake logs the sha256 of every body it parsed. For every case the server
answered 200 -- it parsed the request and would have handed it to the engine -- chatcap must
have written the request record the moment it was complete: ``complete`` true, the body
byte-exact (its sha256 is the server's), a summary with the model. Cases the server refused
are listed with what chatcap made of them (a refused request never reached the engine).

A passive recorder must parse at least as leniently as the servers it watches: any case
h11 accepts and chatcap does not record fails the test, naming the case.

Run: /usr/bin/python3 tests/e2e/test_odd_framing.py --chatcap build/chatcap [--keep]
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Checker, FakeServer, log  # noqa: E402
from forensics import LiveChatcap, wait_until  # noqa: E402

TARGET = "/v1/chat/completions"


def body_of(label: str) -> bytes:
    return json.dumps({"model": "odd-framing", "max_tokens": 2, "fake_tokens": 2,
                       "messages": [{"role": "user", "content": f"[{label}] hi"}]},
                      separators=(",", ":")).encode()


def chunked(body: bytes, eol: bytes = b"\r\n", *, extension: bytes = b"", trailers: bytes = b"",
            size_eol: bytes | None = None, sizes: tuple[int, ...] = (7, 11)) -> bytes:
    """`body` as chunks of the given sizes (then the rest), each size line ended by
    size_eol (default eol), each chunk's data by eol, then the last chunk and trailers."""
    size_eol = eol if size_eol is None else size_eol
    out, at = b"", 0
    for size in sizes + (len(body),):
        piece = body[at:at + size]
        if not piece:
            break
        out += format(len(piece), "x").encode() + extension + size_eol + piece + eol
        at += len(piece)
    return out + b"0" + size_eol + trailers + eol


@dataclass
class Case:
    name: str
    wire: bytes          # the whole request as sent
    body: bytes          # the body the server should parse


def head(lines: list[bytes], eol: bytes = b"\r\n", last: bytes | None = None) -> bytes:
    """Request line and header lines joined by eol, then the blank line (`last`)."""
    return eol.join(lines) + eol + (eol if last is None else last)


def cases() -> list[Case]:
    out: list[Case] = []

    def add(name: str, make) -> None:
        body = body_of(name)
        wire = make(body, f"Content-Length: {len(body)}".encode())
        out.append(Case(name, wire, body))

    rl = f"POST {TARGET} HTTP/1.1".encode()
    host = b"Host: 127.0.0.1"
    ctype = b"Content-Type: application/json"
    close = b"Connection: close"
    add("crlf", lambda b, cl: head([rl, host, ctype, cl, close]) + b)
    add("bare-lf", lambda b, cl: head([rl, host, ctype, cl, close], b"\n") + b)
    add("lf-request-line", lambda b, cl: rl + b"\n" + head([host, ctype, cl, close]) + b)
    add("lf-headers", lambda b, cl: rl + b"\r\n" + head([host, ctype, cl, close], b"\n") + b)
    add("mixed-each-line", lambda b, cl: rl + b"\r\n" + host + b"\n" + ctype + b"\r\n" + cl + b"\n" + close
        + b"\r\n\n" + b)
    add("lf-blank-line", lambda b, cl: head([rl, host, ctype, cl, close], b"\r\n", b"\n") + b)
    add("no-space-after-colon", lambda b, cl: head([rl, b"Host:127.0.0.1", b"Content-Type:application/json",
                                                     cl.replace(b": ", b":"), close]) + b)
    add("tab-after-colon", lambda b, cl: head([rl, b"Host:\t127.0.0.1", ctype, cl.replace(b": ", b":\t"),
                                                close]) + b)
    add("spaces-around-value", lambda b, cl: head([rl, host + b"   ", ctype, cl.replace(b": ", b":    ") + b" \t",
                                                    close]) + b)
    add("odd-case-names", lambda b, cl: head([rl, b"hOsT: 127.0.0.1", b"CONTENT-type: application/json",
                                               cl.replace(b"Content-Length", b"cOnTeNt-LeNgTh"), close]) + b)
    add("leading-blank-line", lambda b, cl: b"\r\n" + head([rl, host, ctype, cl, close]) + b)
    add("absolute-form", lambda b, cl: head([f"POST http://127.0.0.1{TARGET} HTTP/1.1".encode(), host, ctype, cl,
                                              close]) + b)
    add("content-length-zeros", lambda b, cl: head([rl, host, ctype, cl.replace(b": ", b": 000"), close]) + b)
    add("content-length-twice", lambda b, cl: head([rl, host, ctype, cl, cl, close]) + b)
    add("http-1.0", lambda b, cl: head([f"POST {TARGET} HTTP/1.0".encode(), host, ctype, cl]) + b)
    add("obs-fold", lambda b, cl: head([rl, host, b"X-Note: first", b" second line", ctype, cl, close]) + b)
    add("long-header", lambda b, cl: head([rl, host, b"X-Padding: " + b"p" * 20000, ctype, cl, close]) + b)
    add("space-before-colon", lambda b, cl: head([rl, host, b"Content-Type : application/json", cl, close]) + b)
    te = b"Transfer-Encoding: chunked"
    add("chunked", lambda b, cl: head([rl, host, ctype, te, close]) + chunked(b))
    add("chunked-lf-head", lambda b, cl: head([rl, host, ctype, te, close], b"\n") + chunked(b))
    add("chunked-lf-everywhere", lambda b, cl: head([rl, host, ctype, te, close], b"\n") + chunked(b, b"\n"))
    add("chunked-lf-size-lines", lambda b, cl: head([rl, host, ctype, te, close]) + chunked(b, size_eol=b"\n"))
    add("chunked-extension", lambda b, cl: head([rl, host, ctype, te, close]) + chunked(b, extension=b";x=1"))
    add("chunked-upper-hex", lambda b, cl: head([rl, host, ctype, te, close])
        + chunked(b, sizes=(10, 26)).replace(b"a\r\n", b"A\r\n").replace(b"1a\r\n", b"1A\r\n"))
    add("chunked-trailers", lambda b, cl: head([rl, host, ctype, te, close])
        + chunked(b, trailers=b"X-Trailer: yes\r\n"))
    add("chunked-lf-trailers", lambda b, cl: head([rl, host, ctype, te, close], b"\n")
        + chunked(b, b"\n", trailers=b"X-Trailer: yes\n"))
    add("te-and-content-length", lambda b, cl: head([rl, host, ctype, te, cl, close]) + chunked(b))
    add("te-chunked-upper", lambda b, cl: head([rl, host, ctype, b"Transfer-Encoding: CHUNKED", close])
        + chunked(b))
    return out


def send(port: int, wire: bytes, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """Sends `wire` on a connection of its own; the status the server answered (None if
    none) and what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(wire)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = s.recv(65536)
            except socket.timeout:
                break
            if not part:
                break
            got += part
            if b"\r\n\r\n" in got:
                head_part, _, rest = got.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head_part.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(rest) >= length:
                    break
    status = None
    if got.startswith(b"HTTP/1."):
        try:
            status = int(got.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = None
    return status, got


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    problem = harness.check_chatcap_binary(args.chatcap)
    if problem:
        print(f"FAIL test_odd_framing: {problem}", file=sys.stderr)
        return 1
    workdir = harness.Workdir("odd-framing", keep=args.keep)
    accepted: list[Case] = []
    refused: list[tuple[Case, int | None]] = []
    try:
        with FakeServer(workdir.path, mode="normal") as server:
            live = LiveChatcap(args.chatcap, server.port, workdir.path / "log").start()
            try:
                for case in cases():
                    status, _ = send(server.port, case.wire)
                    if status == 200:
                        accepted.append(case)
                    else:
                        refused.append((case, status))
                sha_seen = {e.get("sha256") for e in server.events() if e.get("event") == "request"}

                def request_records(records: list[dict]) -> dict[str, dict]:
                    found = {}
                    for r in records:
                        if r.get("type") != "request":
                            continue
                        for case in accepted:
                            if f"[{case.name}]".encode() in (harness.record_body_bytes(r) or b""):
                                found.setdefault(case.name, r)
                    return found

                wait_until(lambda: len(request_records(live.records())) == len(accepted), 8)
                records = live.records()
            finally:
                c.equal("chatcap run's exit status", 0, live.stop())
        found = request_records(records)
        exchanges = {r.get("id"): r for r in records if r.get("type") == "exchange"}
        for case in accepted:
            what = f"{case.name} (uvicorn answered 200)"
            sha = hashlib.sha256(case.body).hexdigest()
            c.check(sha in sha_seen, f"{what}: HARNESS: the server parsed another body than the one sent")
            r = found.get(case.name)
            if not c.check(r is not None, f"{what}: chatcap wrote no request record; sent {case.wire[:160]!r}"):
                continue
            c.equal(f"{what}: complete", True, r.get("complete"))
            c.equal(f"{what}: body sha256 (the server's)", sha,
                    hashlib.sha256(harness.record_body_bytes(r) or b"").hexdigest())
            c.equal(f"{what}: summary model", "odd-framing", (r.get("summary") or {}).get("model"))
            ex = exchanges.get(r.get("id"))
            if c.check(ex is not None, f"{what}: no exchange record"):
                c.equal(f"{what}: exchange state", "complete", ex.get("state"))
                c.equal(f"{what}: exchange status", 200, ex.get("status"))
        c.check(len(accepted) >= 12, f"HARNESS: only {len(accepted)} of {len(cases())} framings accepted by uvicorn")
        log(f"uvicorn (h11) accepted {len(accepted)} framings: {', '.join(x.name for x in accepted)}")
        log(f"uvicorn refused {len(refused)}: " + ", ".join(f"{x.name} ({s})" for x, s in refused))
    except Exception as exc:  # noqa: BLE001 - reported with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    return c.report("test_odd_framing")


if __name__ == "__main__":
    sys.exit(main())

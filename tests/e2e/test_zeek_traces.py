#!/usr/bin/python3
"""Differential test of ``chatcap read`` against Zeek's HTTP analyzer on Zeek's own test traces.

The traces and Zeek's verdicts come from the public zeek/zeek repository (see SOURCES.md in
the testdata directory): ``expected.tsv`` holds one row per entry of each btest's http.log
baseline.  For every test listed there (and, from the upstream baselines copied into
``EXTRA_ZEEK_ROWS`` below, for the traces whose baselines are cut to a few columns) this
test runs ``chatcap read TRACE --port any --endpoint /`` and compares chatcap's exchange
records, in order, with Zeek's rows:

* method, request-target (chatcap's target percent-decoded, because Zeek logs ``uri``
  decoded; Zeek's ``(empty)`` and ``-`` are the empty string), status code (Zeek's ``-`` and
  ``0`` both mean "no status line": chatcap's 0), response body bytes, request body bytes
  (from the matching request record), and the Host header where Zeek logged one;
* the exchange state: ``complete`` unless stated otherwise.

Where chatcap legitimately judges malformed input differently from Zeek (llhttp 8.1 is
stricter: unknown methods, HTTP/0.9, bare-LF header lines, bad Content-Length...), the
trace is not skipped: ``EXPECTED`` states the exact rows chatcap must produce, each
difference with its reason, and the test checks the table against Zeek's rows so that no
difference can hide in it unexplained.  Rows marked ``bug=`` expect the behaviour believed
correct, not what chatcap did when this test was written: they fail until chatcap is fixed.

Independently of Zeek, every trace must also give: exit status 0, no crash, only valid JSON
lines on stdout, exactly one request record per exchange (except a response with no
request, flagged ``midstream_pickup``) naming the same method and target, and a response
body as long as its Content-Length says for complete exchanges.  The same holds with a
16-byte ``--max-body`` cap, and (when it exists) for the sanitizer build
``build-sanitize/chatcap``, whose sanitizer reports fail the test.

Run: /usr/bin/python3 tests/e2e/test_zeek_traces.py --chatcap build/chatcap --source-dir .
     [--testdata DIR] [--sanitize-chatcap PATH] [--verbose]
Skips (exit 0, with a notice) only when the testdata directory is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

RUN_TIMEOUT_S = 120
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


# ---- expectations ------------------------------------------------------------------------

@dataclass(frozen=True)
class R:
    """One exchange record chatcap must produce (in record order)."""
    method: str
    target: str          # as chatcap records it (raw, percent-encoded as on the wire)
    status: int          # 0 = no status line
    body: int            # response body bytes (exchange ``body_bytes``)
    state: str = "complete"
    req_body: int = 0    # request body bytes (request record ``body_bytes``; 0 with no request)
    err: str | None = None            # llhttp errno named in the request's or exchange's error
    anoms: tuple[str, ...] = ()       # anomalies the exchange must carry (others allowed)
    zeek: int | None | type(...) = ...  # Zeek row this one stands for: ... = same position
    why: str = ""        # why chatcap differs from Zeek here (required when it does)
    bug: str = ""        # chatcap did otherwise when this was written: suspected chatcap bug


@dataclass
class Case:
    rows: list[R]
    zeek_unmatched: dict[int, str] = field(default_factory=dict)  # Zeek row -> why chatcap has none


# Suspected chatcap bugs (the rows carrying them expect the correct behaviour).
METHOD_LOST = "method-lost"
TARGET_IS_VERSION = "target-is-version"
BUGS = {}
BUGS[METHOD_LOST] = (
    "method lost: HttpSession sets request.method only in on_headers_complete, which never "
    "runs when llhttp fails after the request line (in a header line, e.g. a bare-LF Host line "
    "or Content-Length: -1) or the connection closes inside the header block (HTTP/0.9 line "
    "then FIN); the fallback fill_request_line_from parses the line holding the error (a "
    "header line or an empty line), not the request line, so a request line whose method "
    "llhttp accepted is recorded with method \"\"")
BUGS[TARGET_IS_VERSION] = (
    "wrong target: for a request line 'METHOD HTTP/1.1' (no target) fill_request_line_from "
    "records the version 'HTTP/1.1' as the target; it strips a trailing ' HTTP/x.y' only "
    "when a third token exists")

# Reasons shared by many rows.
# Lines that end in a bare LF are parsed as Zeek and the servers' h11 parse them (llhttp's
# lenient headers): those rows are Zeek's, complete.
BAD_VERSION = "'HTTP/1.' has no minor version: llhttp rejects it (HPE_INVALID_VERSION), Zeek accepts it"
NO_METHOD_SP = ("no SP after the method: neither sees a request (Zeek: method '-'); llhttp reports "
                "HPE_INVALID_METHOD and the reply pairs with that error exchange")
NOT_A_TOKEN = ("the method is 3 non-ASCII characters: neither sees a request (Zeek: method '-'); "
               "llhttp reports HPE_INVALID_METHOD and the reply pairs with that error exchange")
CCM_POST = ("llhttp 8.1 has a fixed method list without CCM_POST (HPE_INVALID_METHOD); chatcap "
            "still records the token and target of the request line and pairs the reply")
AS_HTTP09 = ("'{m} /HTTP/1.1' has no version: Zeek takes it for HTTP/0.9 and logs the whole "
             "reply, status line and headers included, as a 0.9 body with status 0 ({z} bytes); "
             "chatcap parses the reply's status line and Content-Length body")
HTTP09_REPLY = ("HTTP/0.9 reply (no status line): llhttp's response parser requires 'HTTP/' "
                "(HPE_INVALID_CONSTANT), so chatcap has no status and no body; Zeek logs the "
                "{z} reply bytes as a 0.9 body with status 0")
ZEEK09_EXTRA = ("Zeek adds an empty entry (no request, no status, no body) on the connection "
                "after its HTTP/0.9 reply; there is no second message on the wire")


def _http_methods() -> Case:
    """methods.pcap: 49 connections, one request each, every line ending in a bare LF."""
    rows: list[R] = []

    def add(m, t, st, body, err, why="", bug=""):
        if err == "bare-LF":  # parsed as Zeek parses it: complete
            rows.append(R(m, t, st, body, why=why))
            return
        rows.append(R(m, t, st, body, "parse_error", err=err, why=why, bug=bug))

    add("OPTIONS", "*", 405, 962, "bare-LF")            # 0
    add("OPTIONS", "", 400, 925, "HPE_INVALID_URL",
            "'OPTIONS HTTP/1.1' has no target: llhttp rejects the line (Zeek: uri (empty))",
            TARGET_IS_VERSION)                                                                       # 1
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 2 OPTIONSHTTP/1.1
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 3 OPTIONS\n
    add("GET", "/", 200, 43911, "bare-LF")               # 4
    add("GET", "/", 200, 43983, "HPE_INVALID_VERSION", BAD_VERSION)                            # 5
    add("GET", "/HTTP/1.1", 403, 1207, "bare-LF", AS_HTTP09.format(m="GET", z=1349))                                         # 6
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 7 GET/ HTTP/1.1
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 8 GET/HTTP/1.1
    add("GET", "/", 200, 43913, "bare-LF")               # 9
    add("", "", 405, 961, "HPE_INVALID_METHOD", NOT_A_TOKEN)                                   # 10
    for _ in range(4):
        add("", "", 400, 925, "HPE_INVALID_METHOD", NOT_A_TOKEN)                               # 11-14
    add("CCM_POST", "/", 405, 963, "HPE_INVALID_METHOD", CCM_POST)                             # 15
    add("CCM_POST", "/HTTP/1.1", 400, 925, "HPE_INVALID_METHOD",
            CCM_POST + "; Zeek takes the version-less line for HTTP/0.9 and logs the whole "
            "reply as a 0.9 body with status 0 (1068 bytes)")                                      # 16
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 17
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 18
    add("CCM_POST", "/", 405, 963, "HPE_INVALID_METHOD", CCM_POST)                             # 19
    # CONNECT, TRACE, DELETE, PUT, POST: the same five request-line variants each.
    variants = [("CONNECT", 400, 925, 400, 925, 1068, 400, 925),
                ("TRACE", 405, 960, 400, 925, 1068, 405, 960),
                ("DELETE", 405, 961, 400, 925, 1068, 405, 961),
                ("PUT", 411, 934, 411, 934, 1081, 411, 934),
                ("POST", 411, 934, 411, 934, 1081, None, None)]
    for m, st1, b1, st2, b2, z2, st5, b5 in variants:
        add(m, "/", st1, b1, "HPE_INVALID_VERSION", BAD_VERSION)                                # "M / HTTP/1."
        add(m, "/HTTP/1.1", st2, b2, "bare-LF", AS_HTTP09.format(m=m, z=z2))                      # "M /HTTP/1.1"
        add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                              # "M/ HTTP/1.1"
        add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                              # "M/HTTP/1.1"
        if st5 is not None:
            add(m, "/", st5, b5, "bare-LF")              # "M / HTTP/1.1"
    add("HEAD", "/", 200, 0, "bare-LF")                  # 44
    add("HEAD", "/", 200, 0, "HPE_INVALID_VERSION", BAD_VERSION)                               # 45
    add("HEAD", "/HTTP/1.1", 400, 0, "bare-LF",
            AS_HTTP09.format(m="HEAD", z=143) + "; the reply to HEAD has headers only")  # 46
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 47
    add("", "", 400, 925, "HPE_INVALID_METHOD", NO_METHOD_SP)                                  # 48
    return Case(rows)


LONG_CGI = ("/cgi-bin/formmail.pl?email=f2@aol.com&subject=www-nrg.ee/cgi-bin/formmail.pl"
            "&recipient=unknownz@buy2save.com&msg=w00t")

# Per test: the exact rows chatcap must produce, where they are not simply Zeek's rows in
# state "complete".
EXPECTED: dict[str, Case] = {
    "curl-http-09": Case([
        R("GET", "/zeek.html", 0, 0, "parse_error", err="HPE_INVALID_CONSTANT",
          why="the server answers with an HTTP/0.9 reply (no status line) and resets: llhttp's "
              "response parser requires 'HTTP/'; Zeek has no status and a 0-byte body too"),
    ]),
    "http-09": Case([
        R("GET", "/zeek.html", 0, 0, "parse_error", err="HPE_INVALID_CONSTANT", zeek=0,
          why="'GET /zeek.html' (HTTP/0.9): " + HTTP09_REPLY.format(z=51), bug=METHOD_LOST),
        R("POST", "/zeek.html", 0, 0, "parse_error", err="HPE_INVALID_CONSTANT", zeek=2,
          why="'POST /zeek.html' (HTTP/0.9): " + HTTP09_REPLY.format(z=11), bug=METHOD_LOST),
        R("GET", "", 0, 0, "parse_error", err="HPE_INVALID_URL", zeek=None,
          why="'GET ' has no target: Zeek only raises weird bad_HTTP_request and logs nothing; "
              "chatcap records the attempt as a parse_error exchange", bug=METHOD_LOST),
        R("T", "/zeek.html", 0, 0, "parse_error", err="HPE_INVALID_METHOD", zeek=None,
          why="'T' is no known method: Zeek only raises weird bad_HTTP_request; chatcap records "
              "the token and target of the line as a parse_error exchange"),
        R("T", "", 0, 0, "parse_error", err="HPE_INVALID_METHOD", zeek=None,
          why="'T ' (no method, no target): Zeek only raises weird bad_HTTP_request; chatcap "
              "records the attempt as a parse_error exchange"),
    ], zeek_unmatched={1: ZEEK09_EXTRA, 3: ZEEK09_EXTRA}),
    "no-version": Case([
        R("GET", LONG_CGI, 0, 0, "parse_error", err="HPE_INVALID_CONSTANT", zeek=0,
          why="version-less request line (HTTP/0.9): " + HTTP09_REPLY.format(z=323), bug=METHOD_LOST),
    ], zeek_unmatched={1: ZEEK09_EXTRA}),
    "http-09-content-length-confusion": Case([
        R("", "", 200, 4, "complete", anoms=("midstream_pickup",),
          why="the server sends '200 OK, Content-Length: 4' before any request: both log it as a "
              "reply with no request; chatcap gives it the 4 bytes its Content-Length announces "
              "('this'), Zeek none"),
        R("GET", "/", 0, 0, "parse_error", err="HPE_INVALID_CONSTANT",
          why="'GET /' is HTTP/0.9: Zeek gives it all 19 reply bytes that follow as a 0.9 body; "
              "chatcap, having given 4 of them to the 200, finds no status line in the rest and "
              "marks the waiting GET parse_error"),
    ]),
    "http-bad-request-with-version": Case([
        R("", "", 200, 14, "parse_error", err="HPE_INVALID_METHOD",
          why="4 binary bytes precede 'GET': neither sees a request (Zeek: method '-'); llhttp "
              "reports HPE_INVALID_METHOD and the reply pairs with that error exchange"),
    ]),
    "http-connect": Case([
        R("CONNECT", "mailin03.sul.t-online.de:25 /", 200, 0, "parse_error",
          err="HPE_INVALID_CONSTANT", anoms=("tunnel",),
          why="the CONNECT target contains a space: llhttp rejects the request line (chatcap "
              "keeps its method and target), Zeek accepts it; the 200 still opens the tunnel"),
    ]),
    "no-uri": Case([
        R("GET", "", 200, 4705, "parse_error", err="HPE_INVALID_URL",
          why="'GET HTTP/1.1' has no target: llhttp rejects the line (Zeek: uri (empty)); the "
              "reply still pairs", bug=TARGET_IS_VERSION),
    ]),
    "missing-zlib-header": Case([
        R("GET", "/library/dap.js", 200, 5139,
          why="Content-Encoding: deflate: Zeek's response_body_len counts inflated bytes "
              "(13249); chatcap counts the 5139 bytes on the wire (= Content-Length)"),
    ] * 2),
    "http-methods": _http_methods(),
    # ---- traces whose upstream baselines are cut down (Zeek rows in EXTRA_ZEEK_ROWS) ----
    "261.chunk-2pow64-overflow": Case([
        R("POST", "/", 0, 0, "parse_error", err="HPE_INVALID_CHUNK_SIZE",
          why="chunk size 0x10000000000000000 does not fit in 64 bits: llhttp rejects it (Zeek: "
              "weird HTTP_bad_chunk_size); both then find the request that follows"),
        R("GET", "/smuggled-chunk-2pow64", 0, 0, "aborted"),  # the server closes without a reply
    ]),
    "261.cl-leading-zeros": Case([
        R("POST", "/", 0, 0, "aborted", req_body=50),  # Content-Length 000...050 = 50, as Zeek
        R("GET", "/smuggled-leading-zeros", 0, 0, "aborted"),
    ]),
    "261.cl-negative": Case([
        R("POST", "/", 0, 0, "parse_error", err="HPE_INVALID_CONTENT_LENGTH",
          why="Content-Length: -1: llhttp rejects it (Zeek: weird HTTP_bad_content_length); both "
              "then find the request that follows", bug=METHOD_LOST),
        R("GET", "/smuggled-cl-negative", 0, 0, "aborted"),
    ]),
    "261.cl-uint64max": Case([
        R("POST", "/", 0, 0, "aborted", req_body=53, anoms=("request_incomplete",)),
    ], zeek_unmatched={
        1: "Content-Length 18446744073709551615 (2^64-1) fits in 64 bits: llhttp accepts it, so "
           "the 53 bytes that follow are the request's (cut) body; Zeek rejects the value "
           "(weird HTTP_bad_content_length) and parses those bytes as a second request"}),
    "261.obsolete-line-fold": Case([
        # llhttp 8.1 accepts the folded "Transfer-Encoding:\r\n chunked" (as Zeek does, with a
        # weird): the body is the empty chunked body and the next request follows.
        R("POST", "/", 0, 0, "aborted"),
        R("GET", "/smuggled-obsfold", 0, 0, "aborted"),
    ]),
    "content-length-overflow": Case([
        # Content-Length 2200000000 (> 2^31): 100 bytes come, then FIN: a cut response.
        R("GET", "/bigfile", 200, 100, "aborted"),
    ]),
    "invalid-content-ranges": Case([R("GET", "/file.bin", 206, 10)] * 3),
    "query-method": Case([
        R("QUERY", "/users", 200, 58, "parse_error", req_body=0, err="HPE_INVALID_METHOD",
          why="llhttp 8.1 does not know QUERY (draft-ietf-httpbis-safe-method-w-body): it "
              "rejects the request line, so the 57-byte request body is never parsed; chatcap "
              "keeps method and target from the line and pairs the reply"),
    ]),
}
EXPECTED["query-method-non-standard-port"] = EXPECTED["query-method"]  # same bytes, port 4711


@dataclass(frozen=True)
class Z:
    """One Zeek http.log entry, normalised; None = not in the (cut-down) baseline."""
    method: str | None
    host: str | None
    uri: bytes | None
    status: int | None
    req_body: int | None
    resp_body: int | None


# Upstream baselines (zeek/zeek at the commit SOURCES.md names) that expected.tsv leaves out
# because they keep only a few http.log columns.  261.*: "uid trans_depth method host uri"
# (upstream lists trans_depth 2 first, as Zeek writes an entry when its transaction ends;
# here in request order); invalid-content-ranges: "uid status_code status_msg".
EXTRA_ZEEK_ROWS: dict[str, list[Z]] = {
    "261.chunk-2pow64-overflow": [Z("POST", "target", b"/", None, None, None),
                                  Z("GET", "target", b"/smuggled-chunk-2pow64", None, None, None)],
    "261.cl-leading-zeros": [Z("POST", "target", b"/", None, None, None),
                             Z("GET", "target", b"/smuggled-leading-zeros", None, None, None)],
    "261.cl-negative": [Z("POST", "target", b"/", None, None, None),
                        Z("GET", "target", b"/smuggled-cl-negative", None, None, None)],
    "261.cl-uint64max": [Z("POST", "target", b"/", None, None, None),
                         Z("GET", "target", b"/smuggled-cl-uint64max", None, None, None)],
    "261.obsolete-line-fold": [Z("POST", "target", b"/", None, None, None),
                               Z("GET", "target", b"/smuggled-obsfold", None, None, None)],
    "content-length-overflow": [Z("GET", "10.0.0.2", b"/bigfile", 200, 0, 100)],
    "invalid-content-ranges": [Z(None, None, None, 206, None, None)] * 3,
    "query-method": [Z("QUERY", "example.com", b"/users", 200, 57, 58)],
    "query-method-non-standard-port": [Z("QUERY", "example.com", b"/users", 200, 57, 58)],
}


# ---- Zeek's rows ---------------------------------------------------------------------------

def zeek_unescape(text: str) -> bytes:
    """Undo Zeek's log escaping of non-printable bytes (\\xNN)."""
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and re.fullmatch(rb"[0-9a-fA-F]{2}", raw[i + 2:i + 4] or b""):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def load_expected_tsv(path: Path) -> dict[str, list[Z]]:
    tests: dict[str, list[tuple[int, Z]]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            method = "" if row["method"] == "-" else row["method"]
            host = "" if row["host"] == "-" else row["host"]
            uri = b"" if row["uri"] in ("-", "(empty)") else zeek_unescape(row["uri"])
            status = 0 if row["status_code"] in ("-", "0") else int(row["status_code"])
            req = 0 if row["request_body_len"] == "-" else int(row["request_body_len"])
            resp = 0 if row["response_body_len"] == "-" else int(row["response_body_len"])
            tests.setdefault(row["test"], []).append((int(row["index"]), Z(method, host, uri, status, req, resp)))
    return {t: [z for _, z in sorted(rows, key=lambda r: r[0])] for t, rows in tests.items()}


def decoded(target: str) -> bytes:
    """Zeek logs the uri percent-decoded; invalid escapes (a lone '%') stay as they are."""
    return urllib.parse.unquote_to_bytes(target.encode("utf-8", "surrogateescape"))


# ---- running chatcap -------------------------------------------------------------------------

@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    records: list[dict]
    problems: list[str]


def run_chatcap(binary: Path, trace: Path, extra: list[str], env: dict | None = None) -> Run:
    cmd = [str(binary), "read", str(trace), "--port", "any", "--endpoint", "/", *extra]
    started = time.monotonic()
    problems: list[str] = []
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=RUN_TIMEOUT_S, env=env)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = -999, e.stdout or b"", e.stderr or b""
        problems.append(f"timed out after {RUN_TIMEOUT_S} s")
    seconds = time.monotonic() - started
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    if rc < 0 and rc != -999:
        problems.append(f"killed by signal {-rc} (crash)")
    elif rc != 0 and rc != -999:
        problems.append(f"exit status {rc}")
    for marker in SANITIZER_MARKERS:
        if marker in stderr:
            problems.append(f"sanitizer report on stderr ({marker!r})")
            break
    records: list[dict] = []
    for n, line in enumerate(stdout.splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"stdout line {n} is not JSON ({e}): {line[:120]!r}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"stdout line {n} is not a JSON object")
            continue
        records.append(rec)
    if problems and stderr.strip():
        problems.append("stderr tail: " + " | ".join(stderr.strip().splitlines()[-6:])[:1500])
    return Run(rc, stdout, stderr, seconds, records, problems)


@dataclass
class Got:
    method: str
    target: str
    status: int
    body: int
    state: str
    req_body: int
    errors: str
    anomalies: list[str]
    host: str | None


def header(headers, name: str) -> str | None:
    for pair in headers or []:
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == name:
            return str(pair[1])
    return None


def build_rows(run: Run) -> tuple[list[Got], list[str]]:
    """chatcap's rows (one per exchange record, in order) and record-consistency problems."""
    problems: list[str] = []
    requests: dict[str, dict] = {}
    exchanged: set[str] = set()
    rows: list[Got] = []
    for rec in run.records:
        kind = rec.get("type")
        rid = rec.get("id")
        if kind == "request":
            if rid in requests:
                problems.append(f"two request records with id {rid}")
            requests[rid] = rec
        elif kind == "exchange":
            if rid in exchanged:
                problems.append(f"two exchange records with id {rid}")
            exchanged.add(rid)
            req = requests.get(rid)
            anomalies = list(rec.get("anomalies") or [])
            orphan = "midstream_pickup" in anomalies
            if req is None and not orphan:
                problems.append(f"exchange {rid} ({rec.get('method')!r} {rec.get('target')!r}) has no "
                                "request record before it and is not flagged midstream_pickup")
            if req is not None and (req.get("method"), req.get("target")) != (rec.get("method"), rec.get("target")):
                problems.append(f"exchange {rid}: request record says {req.get('method')!r} "
                                f"{req.get('target')!r}, exchange record {rec.get('method')!r} {rec.get('target')!r}")
            errors = " / ".join(dict.fromkeys(str(e) for e in ((req or {}).get("error"), rec.get("error")) if e))
            rows.append(Got(method=str(rec.get("method", "")), target=str(rec.get("target", "")),
                            status=int(rec.get("status") or 0), body=int(rec.get("body_bytes") or 0),
                            state=str(rec.get("state")), req_body=int((req or {}).get("body_bytes") or 0),
                            errors=errors, anomalies=anomalies,
                            host=header((req or {}).get("headers"), "host")))
            # Content-Length says how long a complete response body is.
            length = header(rec.get("response_headers"), "content-length")
            chunked = header(rec.get("response_headers"), "transfer-encoding")
            status = int(rec.get("status") or 0)
            if (rec.get("state") == "complete" and length is not None and length.strip().isdigit()
                    and chunked is None and rec.get("method") != "HEAD"
                    and not (100 <= status < 200 or status in (204, 304))
                    and int(length) != int(rec.get("body_bytes") or 0)):
                problems.append(f"exchange {rid}: complete with Content-Length {length} but "
                                f"body_bytes {rec.get('body_bytes')}")
    for rid, req in requests.items():
        if rid not in exchanged:
            problems.append(f"request {rid} ({req.get('method')!r} {req.get('target')!r}) never got "
                            "an exchange record although the file was read to its end")
    return rows, problems


# ---- comparisons -----------------------------------------------------------------------------

def zeek_diffs(row: R, z: Z) -> list[str]:
    """Fields where an expected chatcap row differs from its Zeek row."""
    diffs = []
    if z.method is not None and row.method != z.method:
        diffs.append(f"method {row.method!r} vs Zeek {z.method!r}")
    if z.uri is not None and decoded(row.target) != z.uri:
        diffs.append(f"target {row.target!r} vs Zeek uri {z.uri!r}")
    if z.status is not None and row.status != z.status:
        diffs.append(f"status {row.status} vs Zeek {z.status}")
    if z.resp_body is not None and row.body != z.resp_body:
        diffs.append(f"response body {row.body} vs Zeek {z.resp_body}")
    if z.req_body is not None and row.req_body != z.req_body:
        diffs.append(f"request body {row.req_body} vs Zeek {z.req_body}")
    return diffs


def check_table(test: str, case: Case, zrows: list[Z]) -> tuple[list[str], list[str]]:
    """Check a documented case against Zeek's rows: every difference must carry a reason.
    Returns (table errors, one-line notes of the documented differences)."""
    errors: list[str] = []
    notes: list[str] = []
    used: set[int] = set()
    for i, row in enumerate(case.rows):
        zi = i if row.zeek is ... else row.zeek
        if zi is None:
            if not row.why:
                errors.append(f"row {i}: no Zeek row and no reason given")
            notes.append(f"row {i} (no Zeek entry): {row.why}")
            continue
        if not 0 <= zi < len(zrows):
            errors.append(f"row {i}: Zeek row {zi} does not exist ({len(zrows)} rows)")
            continue
        used.add(zi)
        diffs = zeek_diffs(row, zrows[zi])
        if (diffs or row.state == "parse_error") and not row.why:
            errors.append(f"row {i}: differs from Zeek ({'; '.join(diffs) or 'state parse_error'}) "
                          "without a reason")
        if diffs or row.state == "parse_error" or row.why:
            notes.append(f"row {i} [{'; '.join(diffs) or 'state ' + row.state}]: {row.why or '-'}")
    for zi in range(len(zrows)):
        if zi in used:
            continue
        if zi not in case.zeek_unmatched:
            errors.append(f"Zeek row {zi} {zrows[zi]} has no chatcap row and no reason")
        else:
            notes.append(f"Zeek row {zi} (no chatcap row): {case.zeek_unmatched[zi]}")
    for zi in case.zeek_unmatched:
        if zi in used or not 0 <= zi < len(zrows):
            errors.append(f"zeek_unmatched names Zeek row {zi}, which is matched or does not exist")
    return errors, notes


def compare_expected(case: Case, got: list[Got]) -> tuple[list[str], set[str]]:
    """chatcap's rows against the documented table. Returns (failures, bug notes hit)."""
    failures: list[str] = []
    bugs: set[str] = set()
    if len(got) != len(case.rows):
        failures.append(f"{len(got)} exchange records, expected {len(case.rows)}")
    for i in range(min(len(got), len(case.rows))):
        want, have = case.rows[i], got[i]
        bad = []
        for name, w, h in (("method", want.method, have.method), ("target", want.target, have.target),
                           ("status", want.status, have.status), ("state", want.state, have.state),
                           ("response body_bytes", want.body, have.body),
                           ("request body_bytes", want.req_body, have.req_body)):
            if w != h:
                bad.append(f"{name} {h!r}, expected {w!r}")
        if want.err and want.err not in have.errors:
            bad.append(f"error {have.errors!r} should name {want.err}")
        for a in want.anoms:
            if a not in have.anomalies:
                bad.append(f"anomalies {have.anomalies} lack {a!r}")
        if bad:
            tag = f" [suspected chatcap bug: {want.bug}]" if want.bug else ""
            failures.append(f"row {i} ({want.method} {want.target!r}): " + "; ".join(bad) + tag)
            if want.bug:
                bugs.add(want.bug)
    for extra in got[len(case.rows):]:
        failures.append(f"unexpected extra row: {extra.method!r} {extra.target!r} status {extra.status} "
                        f"state {extra.state}")
    return failures, bugs


def compare_zeek(zrows: list[Z], got: list[Got]) -> list[str]:
    """chatcap's rows against Zeek's rows directly (tests with no documented difference)."""
    failures = []
    if len(got) != len(zrows):
        failures.append(f"{len(got)} exchange records, Zeek logged {len(zrows)}")
    for i in range(min(len(got), len(zrows))):
        z, h = zrows[i], got[i]
        bad = []
        if h.method != z.method:
            bad.append(f"method {h.method!r}, Zeek {z.method!r}")
        if decoded(h.target) != z.uri:
            bad.append(f"target {h.target!r} (decoded {decoded(h.target)!r}), Zeek uri {z.uri!r}")
        if h.status != z.status:
            bad.append(f"status {h.status}, Zeek {z.status}")
        if h.body != z.resp_body:
            bad.append(f"response body_bytes {h.body}, Zeek {z.resp_body}")
        if h.req_body != z.req_body:
            bad.append(f"request body_bytes {h.req_body}, Zeek {z.req_body}")
        if z.host and h.host != z.host:
            bad.append(f"Host header {h.host!r}, Zeek host {z.host!r}")
        if h.state != "complete":
            bad.append(f"state {h.state!r} ({h.errors or 'no error'}), expected 'complete'")
        if bad:
            failures.append(f"row {i} (Zeek: {z.method or '-'} {z.uri!r}): " + "; ".join(bad))
    for extra in got[len(zrows):]:
        failures.append(f"extra row: {extra.method!r} {extra.target!r} status {extra.status} state {extra.state}")
    for missing in zrows[len(got):]:
        failures.append(f"missing row: Zeek {missing.method or '-'} {missing.uri!r} status {missing.status}")
    return failures


# ---- main ------------------------------------------------------------------------------------

def find_testdata(args) -> Path | None:
    if args.testdata:  # explicit: that directory or nothing
        return Path(args.testdata) if (Path(args.testdata) / "expected.tsv").is_file() else None
    candidates = []
    if os.environ.get("CHATCAP_ZEEK_TRACES"):
        candidates.append(Path(os.environ["CHATCAP_ZEEK_TRACES"]))
    if args.source_dir:
        src = Path(args.source_dir)
        candidates += [src / "tests" / "testdata" / "zeek", src / "testdata" / "zeek"]
    candidates.append(Path("/work/shared/testdata/zeek"))
    for c in candidates:
        if (c / "expected.tsv").is_file():
            return c
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chatcap", required=True, help="the chatcap binary")
    ap.add_argument("--source-dir", default=str(Path(__file__).resolve().parents[2]))
    ap.add_argument("--testdata", help="directory with expected.tsv and the traces")
    ap.add_argument("--sanitize-chatcap", help="sanitizer build to run too "
                    "(default: SOURCE_DIR/build-sanitize/chatcap when it exists)")
    ap.add_argument("--verbose", action="store_true", help="print the documented differences")
    args = ap.parse_args()
    started = time.monotonic()

    testdata = find_testdata(args)
    if testdata is None:
        print("SKIP: Zeek testdata (expected.tsv and traces) not found; give --testdata DIR")
        return 0
    chatcap = Path(args.chatcap).resolve()
    if not os.access(chatcap, os.X_OK):
        print(f"FAIL: {chatcap} is not an executable chatcap binary")
        return 1
    sanitize = Path(args.sanitize_chatcap) if args.sanitize_chatcap else Path(args.source_dir) / "build-sanitize" / "chatcap"
    sanitize = sanitize if os.access(sanitize, os.X_OK) else None
    if args.sanitize_chatcap and sanitize is None:
        print(f"FAIL: --sanitize-chatcap {args.sanitize_chatcap} is not executable")
        return 1

    zeek = load_expected_tsv(testdata / "expected.tsv")
    for test, rows in EXTRA_ZEEK_ROWS.items():
        if test in zeek:
            print(f"FAIL: test table error: {test} is in expected.tsv and in EXTRA_ZEEK_ROWS")
            return 1
        zeek[test] = rows
    print(f"chatcap: {chatcap}")
    print(f"testdata: {testdata} ({len(zeek)} tests)")
    print(f"sanitizer build: {sanitize or 'absent (skipped)'}")

    failed: dict[str, list[str]] = {}
    bugs_hit: dict[str, set[str]] = {}
    summary: list[str] = []
    for test in sorted(zeek):
        trace = testdata / f"{test}.pcap"
        zrows = zeek[test]
        fails: list[str] = []
        if not trace.is_file():
            failed[test] = [f"trace {trace.name} missing"]
            summary.append(f"FAIL {test}: trace missing")
            continue
        run = run_chatcap(chatcap, trace, [])
        fails += [f"chatcap read: {p}" for p in run.problems]
        rows, consistency = build_rows(run)
        fails += [f"records: {p}" for p in consistency]

        case = EXPECTED.get(test)
        notes: list[str] = []
        if case is None:
            if test in EXTRA_ZEEK_ROWS:
                fails.append("test table error: no EXPECTED entry for a cut-down baseline")
            else:
                fails += compare_zeek(zrows, rows)
            kind = f"matches Zeek ({len(zrows)} rows)"
        else:
            table_errors, notes = check_table(test, case, zrows)
            fails += [f"test table error: {e}" for e in table_errors]
            row_fails, bugs = compare_expected(case, rows)
            fails += row_fails
            if bugs:
                bugs_hit[test] = bugs
            differing = sum(1 for n in notes if "[state " not in n)
            parse_only = len(notes) - differing
            kind = (f"{len(case.rows)} rows vs Zeek's {len(zrows)}: {differing} documented difference(s)"
                    + (f", {parse_only} more in state only" if parse_only else "")
                    if notes else f"matches Zeek ({len(zrows)} rows; exact rows stated)")

        # Robustness: a tiny body cap must not change the exchanges, only cut bodies.
        capped = run_chatcap(chatcap, trace, ["--max-body", "16"])
        fails += [f"chatcap read --max-body 16: {p}" for p in capped.problems]
        capped_rows, capped_consistency = build_rows(capped)
        fails += [f"--max-body 16 records: {p}" for p in capped_consistency]
        strip = [(g.method, g.target, g.status, g.state, g.body) for g in rows]
        if [(g.method, g.target, g.status, g.state, g.body) for g in capped_rows] != strip:
            fails.append("--max-body 16 changed the exchanges (method/target/status/state/body_bytes)")

        if sanitize is not None:
            env = dict(os.environ)
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            srun = run_chatcap(sanitize, trace, [], env=env)
            fails += [f"sanitizer build: {p}" for p in srun.problems]
            if not srun.problems and len(srun.records) != len(run.records):
                fails.append(f"sanitizer build wrote {len(srun.records)} records, normal build {len(run.records)}")

        if fails:
            failed[test] = fails
            summary.append(f"FAIL {test}: {kind}; {len(fails)} problem(s)")
        else:
            summary.append(f"ok   {test}: {kind} [{run.seconds:.2f} s]")
        if args.verbose and notes:
            for n in notes:
                summary.append(f"       {n}")

    unlisted = sorted(p.stem for p in testdata.glob("*.pcap") if p.stem not in zeek)
    for stem in unlisted:
        run = run_chatcap(chatcap, testdata / f"{stem}.pcap", [])
        _, consistency = build_rows(run)
        problems = run.problems + consistency
        summary.append(f"{'FAIL' if problems else 'ok  '} {stem}: no Zeek rows; crash/consistency check only")
        if problems:
            failed[stem] = problems

    print("\n".join(summary))
    elapsed = time.monotonic() - started
    if failed:
        print(f"\n{len(failed)} of {len(zeek) + len(unlisted)} traces FAILED:")
        for test, fails in failed.items():
            print(f"\n--- {test} ({testdata / (test + '.pcap')})")
            for f in fails:
                print(f"  {f}")
        by_bug: dict[str, list[str]] = {}
        for test, bugs in bugs_hit.items():
            for bug in bugs:
                by_bug.setdefault(bug, []).append(test)
        for bug, tests in sorted(by_bug.items()):
            print(f"\nsuspected chatcap bug {bug} ({', '.join(tests)}): {BUGS[bug]}")
        print(f"\nFAIL ({elapsed:.1f} s)")
        return 1
    print(f"\nPASS: {len(zeek) + len(unlisted)} traces ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

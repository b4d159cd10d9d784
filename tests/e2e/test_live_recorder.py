#!/usr/bin/python3
"""End-to-end test of ``chatcap run``: the live recorder on lo, against a real server
(fake_vllm on uvicorn) and real clients (httpx, curl).

What is asserted (the acceptance of the live-recorder issue):

1. Errors users hit: ``-i nosuchif0`` -> non-zero, "no such interface"; a log dir under a
   regular file -> non-zero, the message names the directory; ``--keep 0`` -> non-zero.
2. ``chatcap run -i lo -p PORT --log-dir D --pidfile P --keep 20`` prints "recording ...",
   writes its PID into the pidfile, and really captures (its USR1 counters see the probe).
3. 30 chat completions: 10 at once (streamed and not, httpx and curl, three on one httpx
   keep-alive connection, two on one curl connection), then 20 one after the other (8 on one
   httpx connection, 4 with one curl ``--next`` chain, 4 single curls, 4 on another httpx
   connection).  Every one of them is on disk with request body and answer right.
4. ``chatcap last 20 --json`` is exactly the 20 sequential ones, oldest first, each
   ``{"id", "request", "exchange"}`` with the request body byte-identical (sha256) and the
   answer equal to what the client assembled.
5. A second ``chatcap run`` with the same pidfile exits non-zero naming the running PID.
6. A slow stream: while the client is in the middle of it, its request record is on disk
   (body sha256 matches) with no exchange record yet; when it ends, the exchange is complete.
7. SIGHUP: still running and still recording; SIGUSR1: "counters:" on stderr.
8. SIGTERM while another slow stream is in the middle: exit 0 within 2 s, pidfile removed,
   that exchange on disk as ``capture_stopped`` whose content is a prefix of what the client
   received, and holds at least what the client had received before the signal.
9. The log dir (0750) holds exchanges.jsonl and .1 (0640) with between 20 and 40 distinct
   exchanges; no API key in clear.

Run: /usr/bin/python3 tests/e2e/test_live_recorder.py --chatcap build/chatcap
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

import harness
from harness import (CHAT_PATH, SECRET, Checker, ClientRecord, CurlRequest, FakeServer,
                     HttpxChatClient, chat_body, curl_chat, log, run_concurrently)
from live import LiveChatcap, SlowStream, read_log_records, wait_until

KEEP = 20
TERM_BUDGET_S = 2.0


# --------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------

def body(label: str, stream: bool, **kw) -> bytes:
    return chat_body(label, f"live recorder test, {label}.", stream=stream,
                     include_usage=stream, **kw)


def send_concurrent_batch(base: str, workdir: Path) -> list[ClientRecord]:
    """10 requests at once.  fake_token_delay_ms=10 makes each take ~0.2 s, so they
    overlap on the wire."""
    slow = {"token_delay_ms": 10}

    def httpx_keepalive() -> list[ClientRecord]:
        with HttpxChatClient(base, connection="A-httpx-keepalive") as c:
            return [c.chat("A-ka-1-stream", body("A-ka-1-stream", True, **slow)),
                    c.chat("A-ka-2-plain", body("A-ka-2-plain", False, **slow)),
                    c.chat("A-ka-3-stream", body("A-ka-3-stream", True, **slow))]

    def httpx_one(label: str, stream: bool):
        def call() -> list[ClientRecord]:
            with HttpxChatClient(base, connection=f"A-{label}") as c:
                return [c.chat(label, body(label, stream, **slow))]
        return call

    def curl_one(label: str, stream: bool):
        def call() -> list[ClientRecord]:
            return curl_chat(base, [CurlRequest(label, body(label, stream, **slow))],
                             workdir / "curl", connection=f"A-{label}")
        return call

    def curl_keepalive() -> list[ClientRecord]:
        return curl_chat(base, [
            CurlRequest("A-curl-ka-1-stream", body("A-curl-ka-1-stream", True, **slow)),
            CurlRequest("A-curl-ka-2-plain", body("A-curl-ka-2-plain", False, **slow)),
        ], workdir / "curl", connection="A-curl-keepalive")

    calls = [httpx_keepalive, curl_keepalive,
             httpx_one("A-httpx-stream-1", True), httpx_one("A-httpx-plain-1", False),
             httpx_one("A-httpx-stream-2", True),
             curl_one("A-curl-stream-1", True), curl_one("A-curl-plain-1", False)]
    records: list[ClientRecord] = []
    for result in run_concurrently(calls):
        records.extend(result)
    return records


def send_sequential(base: str, workdir: Path) -> list[ClientRecord]:
    """20 requests one after the other, in this order (the newest last)."""
    records: list[ClientRecord] = []
    with HttpxChatClient(base, connection="B-httpx-keepalive-1") as c:
        for i in range(8):
            label = f"B{len(records):02d}-httpx-ka1-{'stream' if i % 2 == 0 else 'plain'}"
            records.append(c.chat(label, body(label, i % 2 == 0)))
    chain = []
    for i in range(4):
        label = f"B{len(records) + i:02d}-curl-ka-{'stream' if i % 2 else 'plain'}"
        chain.append(CurlRequest(label, body(label, i % 2 == 1)))
    records += curl_chat(base, chain, workdir / "curl", connection="B-curl-keepalive")
    for i in range(4):
        label = f"B{len(records):02d}-curl-single-{'stream' if i % 2 == 0 else 'plain'}"
        records += curl_chat(base, [CurlRequest(label, body(label, i % 2 == 0))],
                             workdir / "curl", connection=f"B-curl-single-{i}")
    with HttpxChatClient(base, connection="B-httpx-keepalive-2") as c:
        for i in range(4):
            label = f"B{len(records):02d}-httpx-ka2-{'plain' if i % 2 == 0 else 'stream'}"
            records.append(c.chat(label, body(label, i % 2 == 1)))
    return records


def check_clients(c: Checker, server: FakeServer, records: list[ClientRecord]) -> None:
    """Harness self-check: the clients got what the fake model answers."""
    shas = [r.sha256 for r in records]
    c.check(len(set(shas)) == len(shas), "HARNESS: two requests have the same body sha256")
    for r in records:
        what = f"HARNESS {r.label}"
        if not c.check(r.error is None and r.status == 200,
                       f"{what}: status {r.status}, error {r.error}"):
            continue
        plan = server.plan(r.body)
        c.equal(f"{what}: content", plan.content, r.answer.content)
        if r.stream:
            c.check(r.answer.done, f"{what}: the stream did not end with [DONE]")
    for name in ("A-httpx-keepalive", "A-curl-keepalive", "B-httpx-keepalive-1",
                 "B-curl-keepalive", "B-httpx-keepalive-2"):
        addrs = {r.client_addr for r in records if r.connection == name}
        c.check(len(addrs) == 1 and None not in addrs,
                f"HARNESS: the {name} requests did not share one connection: {addrs}")
    batch = [r for r in records if r.label.startswith("A-")]
    if batch:
        peak = max_in_flight(batch)
        c.check(peak >= 5, f"HARNESS: at most {peak} of the 'concurrent' requests were in "
                           f"flight at the same time (expected >= 5)")


def max_in_flight(records: list[ClientRecord]) -> int:
    """The largest number of requests in flight at one moment (curl's times are those of
    its process, so a --next chain counts as one span)."""
    marks = sorted([(r.started, 1) for r in records] + [(r.finished, -1) for r in records],
                   key=lambda m: (m[0], m[1]))
    peak = now = 0
    for _, step in marks:
        now += step
        peak = max(peak, now)
    return peak


# --------------------------------------------------------------------------------------
# Checks of chatcap's records
# --------------------------------------------------------------------------------------

def sha_of_record(req: dict) -> str | None:
    try:
        data = harness.record_body_bytes(req)
    except (ValueError, TypeError):
        return None
    return harness.sha256_hex(data) if data is not None else None


def check_pair(c: Checker, what: str, req: dict | None, ex: dict | None, r: ClientRecord,
               server: FakeServer) -> None:
    """A request record and its exchange record against what the client sent and got."""
    if not c.check(isinstance(req, dict), f"{what}: no request record"):
        return
    c.equal(f"{what}: request body sha256", r.sha256, sha_of_record(req))
    c.equal(f"{what}: request.body_bytes", len(r.body), req.get("body_bytes"))
    c.equal(f"{what}: request.method", "POST", req.get("method"))
    c.equal(f"{what}: request.target", CHAT_PATH, req.get("target"))
    c.equal(f"{what}: request.server", server.address, req.get("server"))
    if r.client_addr:
        c.equal(f"{what}: request.client", r.client_addr, req.get("client"))
    auth = harness.header_values(req.get("headers"), "authorization")
    c.check(len(auth) == 1 and auth[0].startswith("<redacted"),
            f"{what}: Authorization header in the record is {auth!r}, expected redacted")
    if not c.check(isinstance(ex, dict), f"{what}: no exchange record (id {req.get('id')!r})"):
        return
    c.equal(f"{what}: exchange.id", req.get("id"), ex.get("id"))
    c.equal(f"{what}: exchange.state", "complete", ex.get("state"))
    c.equal(f"{what}: exchange.status", r.status, ex.get("status"))
    key = "sse" if r.stream else "answer"
    answer = ex.get(key)
    if not c.check(isinstance(answer, dict),
                   f"{what}: exchange has no {key!r} object (keys {sorted(ex)})"):
        return
    c.equal(f"{what}: {key}.content", r.answer.content or "", answer.get("content") or "")
    c.equal(f"{what}: {key}.reasoning", r.answer.reasoning, answer.get("reasoning") or "")
    c.equal(f"{what}: {key}.finish_reason", r.answer.finish_reason, answer.get("finish_reason"))
    if r.stream:
        c.check(answer.get("done") is True, f"{what}: sse.done is {answer.get('done')!r}")


def index_log(records: list[dict]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """(request records by body sha256, exchange records by id)."""
    by_sha: dict[str, list[dict]] = {}
    ex_by_id: dict[str, list[dict]] = {}
    for rec in records:
        if rec.get("type") == "request":
            by_sha.setdefault(sha_of_record(rec) or "?", []).append(rec)
        elif rec.get("type") == "exchange":
            ex_by_id.setdefault(str(rec.get("id")), []).append(rec)
    return by_sha, ex_by_id


def exchanges_done(log_dir: Path, shas: set[str]) -> bool:
    """True when every body in ``shas`` has a request record and an exchange record."""
    records, _ = read_log_records(log_dir)
    by_sha, ex_by_id = index_log(records)
    for sha in shas:
        reqs = by_sha.get(sha)
        if not reqs or str(reqs[0].get("id")) not in ex_by_id:
            return False
    return True


def run_last(chatcap: str, log_dir: Path, n: int) -> harness.ChatcapOutput:
    return harness.run_chatcap(chatcap, ["last", str(n), "--json", "--log-dir", str(log_dir)],
                               timeout=20)


def check_last(c: Checker, out: harness.ChatcapOutput, expected: list[ClientRecord],
               server: FakeServer) -> None:
    what = f"`chatcap last {len(expected)} --json`"
    c.check(out.returncode == 0, f"{what} exited {out.returncode}: {out.stderr.strip()[-1000:]}")
    c.check(not out.bad_lines, f"{what} printed lines that are not JSON objects: {out.bad_lines[:3]}")
    items = out.records
    c.equal(f"{what}: number of lines", len(expected), len(items))
    for i, item in enumerate(items):
        c.check(set(item) >= {"id", "request", "exchange"},
                f"{what} line {i + 1}: keys {sorted(item)}, expected id, request, exchange")
    got_shas = [sha_of_record(item.get("request") or {}) for item in items]
    want_shas = [r.sha256 for r in expected]
    label_of = {r.sha256: r.label for r in expected}
    got_labels = [label_of.get(s or "", f"<not one of the 20 newest: {str(s)[:12]}>") for s in got_shas]
    if not c.equal(f"{what}: the 20 newest exchanges (sent one after the other), oldest first",
                   [r.label for r in expected], got_labels):
        c.equal(f"{what}: as a set", sorted(want_shas), sorted(s or "" for s in got_shas))
    by_sha = {s: item for s, item in zip(got_shas, items)}
    for r in expected:
        item = by_sha.get(r.sha256)
        if item is None:
            continue
        c.equal(f"{what} {r.label}: id matches request.id", item.get("id"),
                (item.get("request") or {}).get("id"))
        check_pair(c, f"{what} {r.label}", item.get("request"), item.get("exchange"), r, server)


# --------------------------------------------------------------------------------------
# Error cases
# --------------------------------------------------------------------------------------

def check_user_errors(c: Checker, chatcap: str, tmp: Path, port: int) -> None:
    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([chatcap, "run", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=15, check=False)

    err_dir = tmp / "errors"
    err_dir.mkdir()
    p = run(["-i", "nosuchif0", "-p", str(port), "--log-dir", str(err_dir / "log1"),
             "--pidfile", str(err_dir / "p1.pid")])
    msg = p.stderr.decode(errors="replace").strip()
    log(f"-i nosuchif0 -> exit {p.returncode}: {msg}")
    c.check(p.returncode != 0, f"`chatcap run -i nosuchif0` exited 0 (stderr {msg!r})")
    c.check("no such interface" in msg.lower(),
            f"`chatcap run -i nosuchif0`: stderr does not say 'no such interface': {msg!r}")
    c.check(not (err_dir / "p1.pid").exists(),
            "`chatcap run -i nosuchif0` left its pidfile behind")

    regular = err_dir / "a-regular-file"
    regular.write_text("not a directory\n")
    bad_dir = regular / "log"
    p = run(["-i", "lo", "-p", str(port), "--log-dir", str(bad_dir),
             "--pidfile", str(err_dir / "p2.pid")])
    msg = p.stderr.decode(errors="replace").strip()
    log(f"--log-dir under a regular file -> exit {p.returncode}: {msg}")
    c.check(p.returncode != 0, f"`chatcap run --log-dir {bad_dir}` exited 0 (stderr {msg!r})")
    c.check(str(bad_dir) in msg,
            f"`chatcap run --log-dir {bad_dir}`: the message does not name the directory: {msg!r}")
    c.check(len(msg.splitlines()) == 1 and len(msg) < 400,
            f"`chatcap run --log-dir {bad_dir}`: expected one clear sentence, got {msg!r}")
    c.check(not (err_dir / "p2.pid").exists(),
            "`chatcap run` with an unusable log dir left its pidfile behind")

    p = run(["-i", "lo", "-p", str(port), "--log-dir", str(err_dir / "log3"),
             "--pidfile", str(err_dir / "p3.pid"), "--keep", "0"])
    msg = p.stderr.decode(errors="replace").strip()
    log(f"--keep 0 -> exit {p.returncode}: {msg[:300]}")
    c.check(p.returncode != 0, f"`chatcap run --keep 0` exited 0 (stderr {msg!r})")
    c.check("keep" in msg, f"`chatcap run --keep 0`: the message does not name --keep: {msg!r}")
    c.check("at least 1" in msg, f"`chatcap run --keep 0`: the message does not give the fix: {msg!r}")
    c.check(not (err_dir / "log3").exists(), "`chatcap run --keep 0` created its log dir anyway")

    # Without CAP_NET_RAW (as nobody, every capability dropped): the fix is named.
    nobody_dir = err_dir / "nobody"
    nobody_dir.mkdir()
    nobody_dir.chmod(0o777)
    err_dir.chmod(0o755)
    tmp.chmod(0o755)
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        "--bounding-set=-all", chatcap, "run", "-i", "lo", "-p", str(port),
                        "--log-dir", str(nobody_dir / "log"), "--pidfile", str(nobody_dir / "p.pid")],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15, check=False)
    msg = p.stderr.decode(errors="replace").strip()
    log(f"without CAP_NET_RAW -> exit {p.returncode}: {msg}")
    c.check(p.returncode != 0, f"`chatcap run` without CAP_NET_RAW exited 0 (stderr {msg!r})")
    c.check("permission denied" in msg and "CAP_NET_RAW" in msg,
            f"`chatcap run` without CAP_NET_RAW: the message does not name the cause and fix: {msg!r}")


# --------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------

def scenario(c: Checker, chatcap: str, tmp: Path) -> None:
    t0 = time.monotonic()
    log_dir = tmp / "log"
    pidfile = tmp / "chatcap.pid"

    server = FakeServer(tmp, mode="normal")
    daemon: LiveChatcap | None = None
    streams: list[SlowStream] = []
    try:
        server.start()
        base = server.base_url
        check_user_errors(c, chatcap, tmp, server.port)

        # -- start -------------------------------------------------------------------
        argv = ["run", "-i", "lo", "-p", str(server.port), "--log-dir", str(log_dir),
                "--pidfile", str(pidfile), "--keep", str(KEEP)]
        log(f"starting: chatcap {' '.join(argv)}")
        daemon = LiveChatcap(chatcap, argv).start(ready=r"recording ", timeout=10)
        log(f"chatcap up, pid {daemon.pid}: {daemon.wait_line('recording ')}")
        c.equal("pidfile content", str(daemon.pid),
                pidfile.read_text().strip() if pidfile.exists() else "<no pidfile>")
        took = daemon.wait_capturing(lambda: _probe(base), timeout=10)
        log(f"capture live: chatcap's counters saw the probe after {took:.2f} s")

        # -- 30 exchanges, every packet of them seen once ----------------------------
        reference = harness.Tcpdump.for_port(tmp / "reference.pcap", server.port).start()
        before_traffic = daemon.counters() or {}
        log("10 requests at once (httpx and curl, keep-alive and not, streamed and not)")
        batch = send_concurrent_batch(base, tmp)
        log("20 requests one after the other")
        sequential = send_sequential(base, tmp)
        records = batch + sequential
        c.equal("HARNESS: requests sent", 30, len(records))
        check_clients(c, server, records)
        if not wait_until(lambda: exchanges_done(log_dir, {r.sha256 for r in records}), 10):
            c.fail("after 10 s, not every one of the 30 exchanges has both its records on disk")
        c.check(daemon.alive(), f"chatcap died during the traffic: {daemon.stderr()[-1500:]}")
        time.sleep(1.0)  # the last FINs and ACKs: one kernel block and a wake-up away
        after_traffic = daemon.counters() or {}
        seen = reference.stop().captured
        check_packets_seen_once(c, before_traffic, after_traffic, seen)

        out = run_last(chatcap, log_dir, KEEP)
        (tmp / "last20.jsonl").write_bytes(out.stdout)
        check_last(c, out, sequential, server)

        disk, problems = read_log_records(log_dir)
        c.check(not problems, f"log files: {problems[:5]}")
        by_sha, ex_by_id = index_log(disk)
        for r in records:
            reqs = by_sha.get(r.sha256, [])
            if r in sequential:
                c.equal(f"{r.label}: request records on disk", 1, len(reqs))
            elif not reqs:
                c.warn(f"{r.label} (one of the 10 oldest) is no longer on disk")
            if len(reqs) == 1:
                exs = ex_by_id.get(str(reqs[0].get("id")), [])
                c.equal(f"{r.label}: exchange records on disk", 1, len(exs))
                check_pair(c, f"disk {r.label}", reqs[0], exs[0] if exs else None, r, server)
        log(f"30 exchanges checked ({time.monotonic() - t0:.1f} s)")

        # -- a second instance -------------------------------------------------------
        before = {n: (log_dir / n).read_bytes() for n in ("exchanges.jsonl", "exchanges.jsonl.1")
                  if (log_dir / n).exists()}
        second = subprocess.run([chatcap, *argv], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=10, check=False)
        msg = second.stderr.decode(errors="replace").strip()
        log(f"second instance -> exit {second.returncode}: {msg}")
        c.check(second.returncode != 0, f"a second `chatcap run` with the same pidfile "
                                         f"exited {second.returncode}; stderr {msg!r}")
        c.check(str(daemon.pid) in msg, f"the second instance's message does not name the "
                                        f"running PID {daemon.pid}: {msg!r}")
        c.check(daemon.alive(), "the first chatcap died when a second one was started")
        for n, data in before.items():
            now = (log_dir / n).read_bytes() if (log_dir / n).exists() else b""
            c.check(now.startswith(data), f"the refused second instance altered {n} "
                                          f"({len(data)} B before, {len(now)} B after)")
        c.equal("pidfile after the second instance", str(daemon.pid),
                pidfile.read_text().strip() if pidfile.exists() else "<no pidfile>")

        # -- on disk while streaming -------------------------------------------------
        check_request_before_response(c, base, log_dir, streams, server)

        # -- HUP, USR1 ---------------------------------------------------------------
        since = daemon.line_count()
        daemon.send(signal.SIGHUP)
        time.sleep(0.3)
        c.check(daemon.alive(), f"chatcap exited on SIGHUP: {daemon.stderr()[-1000:]}")
        with HttpxChatClient(base, connection="after-hup") as cl:
            hup = cl.chat("after-hup", body("after-hup", True))
        c.check(hup.error is None and hup.status == 200, f"HARNESS after-hup: {hup.error}")
        if not wait_until(lambda: exchanges_done(log_dir, {hup.sha256}), 5):
            c.fail("after SIGHUP, a new exchange did not reach the log within 5 s")
        else:
            by_sha, ex_by_id = index_log(read_log_records(log_dir)[0])
            req = (by_sha.get(hup.sha256) or [None])[0]
            check_pair(c, "after SIGHUP", req, (ex_by_id.get(str(req.get("id"))) or [None])[0],
                       hup, server)
        log(f"SIGHUP -> {daemon.wait_line('HUP|reopen', since=since, timeout=0.1)!r}")
        since = daemon.line_count()
        daemon.send(signal.SIGUSR1)
        line = daemon.wait_line(r"counters:", since=since, timeout=3)
        c.check(line is not None, "SIGUSR1: no 'counters:' line on stderr within 3 s")
        log(f"SIGUSR1 -> {line}")
        c.check(daemon.alive(), "chatcap exited on SIGUSR1")

        # -- TERM while streaming ----------------------------------------------------
        check_term_while_streaming(c, chatcap, daemon, base, log_dir, pidfile, streams, server)

        # -- the log dir -------------------------------------------------------------
        check_log_dir(c, log_dir)
        log(f"scenario done in {time.monotonic() - t0:.1f} s")
    finally:
        for s in streams:
            s.stop(timeout=2)
        if daemon is not None:
            daemon.stop()
        server.stop()


def check_packets_seen_once(c: Checker, before: dict[str, int], after: dict[str, int],
                            tcpdump_packets: int | None) -> None:
    """chatcap processed exactly the packets tcpdump saw on the port (on lo each packet
    once: the copy the kernel shows as it leaves is filtered out in the kernel, never
    counted as received, and nothing is lost at the start of the capture)."""
    processed = after.get("packets", 0) - before.get("packets", 0)
    log(f"packets of the 30 exchanges: chatcap {processed}, tcpdump {tcpdump_packets}")
    c.equal("packets processed by chatcap vs captured by tcpdump", tcpdump_packets, processed)
    # The kernel's count is refreshed when a block is handed over, so it may lag; twice
    # the packets pushed would mean both copies of each loopback packet reach the ring.
    received, pushed = after.get("kernel received", 0), after.get("queue pushed", 0)
    c.check(0 < received <= pushed, f"kernel received {received} packets for {pushed} pushed: "
                                    "the outgoing copies on lo are not filtered in the kernel")


def _probe(base: str) -> None:
    try:
        httpx.get(base + "/health", trust_env=False, timeout=2.0)
    except httpx.HTTPError:
        pass


def check_request_before_response(c: Checker, base: str, log_dir: Path,
                                  streams: list[SlowStream], server: FakeServer) -> None:
    """A slow stream (40 tokens, 40 ms apart): while it streams, its request record is on
    disk and its exchange record is not."""
    label = "slow-inflight"
    b = chat_body(label, "stream slowly", stream=True, fake_tokens=40, reasoning_tokens=0,
                  token_delay_ms=40)
    s = SlowStream(base, label, b).start()
    streams.append(s)
    sha = harness.sha256_hex(b)
    if not c.check(s.wait_events(6, timeout=10), f"{label}: the client got no tokens "
                                                 f"(status {s.status}, error {s.error})"):
        return
    content_before, events_before, _ = s.snapshot()
    records, _ = read_log_records(log_dir)
    content_after, events_after, done_after = s.snapshot()
    log(f"{label}: log read while the client had {events_before}..{events_after} events")
    by_sha, ex_by_id = index_log(records)
    reqs = by_sha.get(sha, [])
    c.check(not done_after, f"HARNESS {label}: the stream ended before the log was read")
    if c.equal(f"{label}: request records on disk while its response streams", 1, len(reqs)):
        req = reqs[0]
        c.equal(f"{label}: request body_bytes", len(b), req.get("body_bytes"))
        c.equal(f"{label}: exchange records on disk while its response streams "
                f"(id {req.get('id')})", 0, len(ex_by_id.get(str(req.get("id")), [])))
    if not c.check(s.join(15), f"HARNESS {label}: the stream did not end within 15 s"):
        return
    final, _, done = s.snapshot()
    plan = server.plan(b)
    c.check(done and final == plan.content, f"HARNESS {label}: stream incomplete "
                                            f"(done {done}, {len(final)} chars)")
    if not wait_until(lambda: exchanges_done(log_dir, {sha}), 5):
        c.fail(f"{label}: no exchange record within 5 s of the end of the stream")
        return
    by_sha, ex_by_id = index_log(read_log_records(log_dir)[0])
    req = by_sha[sha][0]
    ex = ex_by_id[str(req.get("id"))][0]
    c.equal(f"{label}: final state", "complete", ex.get("state"))
    c.equal(f"{label}: final sse.content", final, (ex.get("sse") or {}).get("content"))


def check_term_while_streaming(c: Checker, chatcap: str, daemon: LiveChatcap, base: str,
                               log_dir: Path, pidfile: Path, streams: list[SlowStream],
                               server: FakeServer) -> None:
    """SIGTERM in the middle of a slow stream (200 tokens, 30 ms apart)."""
    label = "slow-term"
    b = chat_body(label, "stream slowly until chatcap stops", stream=True, fake_tokens=200,
                  reasoning_tokens=0, token_delay_ms=30)
    sha = harness.sha256_hex(b)
    s = SlowStream(base, label, b).start()
    streams.append(s)
    if not c.check(s.wait_events(8, timeout=10), f"{label}: the client got no tokens "
                                                 f"(status {s.status}, error {s.error})"):
        return
    seen_before, events_before, _ = s.snapshot()
    time.sleep(0.3)  # chatcap has long processed what the client had at seen_before
    started = time.monotonic()
    daemon.send(signal.SIGTERM)
    code = daemon.wait(timeout=10)
    elapsed = time.monotonic() - started
    at_exit, events_exit, done_at_exit = s.snapshot()
    s.stop()
    log(f"SIGTERM -> exit {code} after {elapsed:.2f} s; the client had {events_before} events "
        f"0.3 s before, {events_exit} at exit")
    c.equal("exit code on SIGTERM", 0, code)
    c.check(code is not None and elapsed <= TERM_BUDGET_S,
            f"SIGTERM: chatcap took {elapsed:.2f} s to exit (budget {TERM_BUDGET_S} s)")
    c.check(not pidfile.exists(), "SIGTERM: the pidfile was not removed")
    c.check(not done_at_exit, f"HARNESS {label}: the stream ended before chatcap did")

    records, problems = read_log_records(log_dir)
    c.check(not problems, f"log files after SIGTERM: {problems[:5]}")
    by_sha, ex_by_id = index_log(records)
    reqs = by_sha.get(sha, [])
    if not c.equal(f"{label}: request records on disk", 1, len(reqs)):
        return
    exs = ex_by_id.get(str(reqs[0].get("id")), [])
    if not c.equal(f"{label}: exchange records on disk after SIGTERM", 1, len(exs)):
        return
    ex = exs[0]
    c.equal(f"{label}: state of the exchange streaming at SIGTERM", "capture_stopped",
            ex.get("state"))
    c.equal(f"{label}: status", 200, ex.get("status"))
    sse = ex.get("sse")
    if not c.check(isinstance(sse, dict), f"{label}: no 'sse' object (keys {sorted(ex)})"):
        return
    content = sse.get("content") if isinstance(sse.get("content"), str) else ""
    c.check(at_exit.startswith(content),
            f"{label}: recorded content ({len(content)} chars) is not a prefix of what the "
            f"client received by the time chatcap exited ({len(at_exit)} chars): "
            f"{harness.describe_difference(at_exit[:len(content)], content, 600)}")
    c.check(content.startswith(seen_before),
            f"{label}: recorded content ({len(content)} chars) lacks what the client had "
            f"received 0.3 s before SIGTERM ({len(seen_before)} chars): "
            f"{harness.describe_difference(seen_before, content[:len(seen_before)], 600)}")
    c.check(sse.get("done") is not True, f"{label}: sse.done is true for a stopped stream")
    log(f"{label}: recorded {len(content)} chars; client had {len(seen_before)} before TERM, "
        f"{len(at_exit)} at exit")

    # `chatcap last` works with the daemon gone; the stopped exchange is the newest.
    out = run_last(chatcap, log_dir, 1)
    c.check(out.returncode == 0, f"`chatcap last 1 --json` after stop exited {out.returncode}: "
                                 f"{out.stderr.strip()[-500:]}")
    if c.equal("`chatcap last 1 --json` after stop: lines", 1, len(out.records)):
        item = out.records[0]
        c.equal("`chatcap last 1 --json` after stop: the newest is the stopped stream",
                reqs[0].get("id"), item.get("id"))
        c.equal("`chatcap last 1 --json` after stop: its exchange state", "capture_stopped",
                (item.get("exchange") or {}).get("state"))


def check_log_dir(c: Checker, log_dir: Path) -> None:
    mode = stat.S_IMODE(log_dir.stat().st_mode)
    c.equal(f"mode of the log dir {log_dir}", "0o750", oct(mode))
    files = [log_dir / name for name in ("exchanges.jsonl", "exchanges.jsonl.1")]
    for f in files:
        if c.check(f.exists(), f"{f.name} does not exist (32 exchanges with --keep {KEEP} "
                               f"should have rotated once)"):
            c.equal(f"mode of {f.name}", "0o640", oct(stat.S_IMODE(f.stat().st_mode)))
            c.check(SECRET.encode() not in f.read_bytes(), f"the API key appears in clear in {f.name}")
    others = sorted(p.name for p in log_dir.iterdir() if p not in files)
    if others:
        c.warn(f"other files in the log dir: {others}")
    records, problems = read_log_records(log_dir)
    c.check(not problems, f"log files: {problems[:5]}")
    ids = {str(r.get("id")) for r in records if r.get("type") in ("request", "exchange")}
    per_file = {name: len({str(r.get('id')) for r in records if r.get("_file") == name
                          and r.get("type") in ("request", "exchange")})
                for name in ("exchanges.jsonl.1", "exchanges.jsonl")}
    log(f"log dir: {len(ids)} distinct exchanges ({per_file})")
    c.check(KEEP <= len(ids) <= 2 * KEEP,
            f"the log dir holds {len(ids)} distinct exchanges, expected {KEEP}..{2 * KEEP} "
            f"(per file: {per_file})")


# --------------------------------------------------------------------------------------

def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    workdir = harness.Workdir("live-recorder", keep=args.keep)
    started = time.monotonic()
    try:
        if os.geteuid() != 0:
            c.warn("not root: live capture on lo may be refused")
        problem = harness.check_chatcap_binary(args.chatcap)
        if problem:
            c.fail(f"cannot run chatcap: {problem}")
        else:
            scenario(c, args.chatcap, workdir.path)
    except Exception as exc:  # noqa: BLE001 - reported as a failure with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    log(f"total {time.monotonic() - started:.1f} s")
    return c.report("test_live_recorder")


if __name__ == "__main__":
    sys.exit(main())

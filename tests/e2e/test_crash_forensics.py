#!/usr/bin/python3
"""Crash forensics end to end: does chatcap tell which request killed the server?

Real clients (httpx, curl) and ``fake_vllm.py`` on loopback, ``chatcap run -i lo`` live
(records in ``--log-dir D``) and, at the same time, ``tcpdump -i lo`` for an offline
``chatcap read`` of the same traffic.  A *poison* request is one whose
``structured_outputs`` has no usable field; fake_vllm dies on it.

1. process exit (mode ``crash``), ``{"json": null}``: a finished warm-up exchange, an idle
   keep-alive connection, several slow streams that got tokens (httpx and curl), a
   non-streamed request still generating, then the poison request; the server
   ``os._exit()``s, a client's connect is refused.  Checked on the live log: every request
   sent has its request record on disk (body sha256 equal) while chatcap still runs;
   exactly one ``server_down`` record (kind process_exit, the server's address, evidence);
   its suspects are exactly the in-flight requests, the poison one FIRST, then the rest in
   the documented order (no token before tokens, most recent first); the warm-up is no
   suspect; no in-flight exchange is ``complete``: each is ``aborted`` with anomaly
   ``server_down``.  ``chatcap read`` of the tcpdump capture: the same, and the same
   suspects in the same order (compared by request-body sha256; ids differ).
   1b. the same, smaller, with ``{"json_object": false}``, live only.
2. engine death (mode ``engine_dead``): slow streams and a non-streamed request in flight,
   the poison request, then later requests (some while chatcap is still deciding, some
   after the ``server_down`` record) that get 500 EngineDeadError.  One server_down (kind
   engine_dead), poison first, suspects = the in-flight requests; the later 500 exchanges
   carry anomaly ``server_down`` and are no suspects; same through ``chatcap read``.
3. ``chatcap suspects --json`` / ``chatcap suspects`` on the logs of 1 and 2: the poison
   request first, with its summary's ``structured_output`` and its exact body.  Skipped
   (loudly) when this chatcap has no ``suspects`` command.
4. ``chatcap show ID --curl``: the printed command, run by bash against a server that keeps
   the bodies it receives (on the original port), delivers byte-identical bodies --
   quotes, ``$()``, backticks, newlines, heredoc terminators, non-ASCII, a non-UTF-8
   NUL-free byte soup -- and runs nothing else; ``chatcap show ID --body`` writes the raw
   body.  Skipped (loudly) when the flags do not exist.
5. no false alarm: (a) mode ``idle_close`` -- keep-alive clients pausing longer than the
   server's keep-alive timeout, whose idle connections the server closes, while a stream
   runs: no server_down, every exchange complete; (b) clients hanging up mid-stream
   themselves (httpx closing the response early, curl SIGKILLed), several at once, on a
   normal server: no server_down, those exchanges ``aborted`` with close ``client_fin`` or
   ``client_rst`` and no ``server_down`` anomaly; (c) a live server (a small socket server
   here) cuts ONE stream -- as uvicorn does when a streaming handler raises -- at the moment
   three other clients finish and close their connections (the server's FIN then only
   answers the client's): one cut stream is no death, no server_down.

Run: /usr/bin/python3 tests/e2e/test_crash_forensics.py --chatcap build/chatcap
     [--keep] [--verbose] [--only 1,2,...]       (needs root: capture on lo)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Checker, FakeServer, Tcpdump, chat_body, log  # noqa: E402
import forensics  # noqa: E402
from forensics import (  # noqa: E402
    CurlStream, IdleConnection, LiveChatcap, LogView, SlowCall, connect_refused, short)

SLOW = {"fake_tokens": 400, "token_delay_ms": 40}   # a 16 s stream: always cut
DECISION_WAIT = 8.0                                   # chatcap decides within ~2 s


class Context:
    def __init__(self, args, c: Checker, root: Path) -> None:
        self.args = args
        self.c = c
        self.root = root
        self.chatcap = args.chatcap
        self.logs: dict[str, dict] = {}      # scenario -> facts for scenario 3
        self.skipped: list[str] = []
        self.timings: list[tuple[str, float, int]] = []


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------

def poison_body(label: str, structured: dict, stream: bool = True) -> bytes:
    return chat_body(label, "Answer in JSON, please.", stream=stream,
                     extra={"structured_outputs": structured})


def start_warmup(ctx: Context, base: str, live: LiveChatcap, label: str) -> SlowCall:
    """A short stream whose exchange record shows chatcap records (and is no suspect)."""
    warm = SlowCall(base, label, chat_body(label, "Warm up.", stream=True, fake_tokens=4), True)
    warm.start()
    warm.join(20)
    ok = live.wait_for(lambda recs: LogView.of(recs).exchange_of(warm.result.sha256), 8,
                       f"the warm-up exchange {label}")
    if not ok:
        raise RuntimeError(f"chatcap run recorded no exchange for the warm-up request within 8 s "
                           f"(client: {warm.result.describe()}); chatcap stderr: "
                           f"{live.stderr_text().strip()[-600:]}")
    return warm


def start_slow_streams(base: str, prefix: str, n: int) -> list[SlowCall]:
    """``n`` slow streams on their own connections, started one after the other, each
    once the previous one got a token (so their order of arrival is known)."""
    out = []
    for i in range(n):
        s = SlowCall(base, f"{prefix}-stream-{i}", chat_body(f"{prefix}-stream-{i}", "Go on.",
                                                             stream=True, **_slow()), True)
        s.start()
        if not s.first_token.wait(10):
            raise RuntimeError(f"{s.result.label}: no token within 10 s")
        out.append(s)
        time.sleep(0.03)
    return out


def _slow() -> dict:
    return {"fake_tokens": SLOW["fake_tokens"], "token_delay_ms": SLOW["token_delay_ms"]}


def start_nonstream(base: str, label: str) -> SlowCall:
    call = SlowCall(base, label, chat_body(label, "Not streamed, long.", stream=False, **_slow()),
                    False)
    call.start()
    time.sleep(0.15)  # the request is on the wire and complete; the answer is 16 s away
    return call


def suspect_labels(view: LogView, down: dict, label_of: dict[str, str]) -> list[str]:
    return [label_of.get(sha or "", f"<unknown id {s.get('id')}>")
            for sha, s in zip(view.suspect_shas(down), down.get("suspects") or [])]


def check_request_records(c: Checker, what: str, view: LogView, sent: dict[str, bytes]) -> None:
    """Every request sent has exactly one request record with the same body bytes."""
    for label, body in sent.items():
        sha = hashlib.sha256(body).hexdigest()
        found = view.requests_by_sha.get(sha) or []
        c.check(len(found) == 1, f"{what}: {label}: {len(found)} request records whose body has "
                                 f"the sha256 of the body sent (expected 1; {len(body)} B sent)")


def the_one_down(c: Checker, what: str, view: LogView) -> dict | None:
    n = len(view.downs)
    if not c.check(n == 1, f"{what}: {n} server_down records, expected exactly 1"
                           + (f": {[short(d, 600) for d in view.downs]}" if n else "")):
        return view.downs[0] if view.downs else None
    return view.downs[0]


def check_suspects(c: Checker, what: str, view: LogView, down: dict, label_of: dict[str, str],
                   poison_sha: str, in_flight_shas: list[str], expected_order: list[str] | None,
                   not_suspects: list[str]) -> list[str | None]:
    """The suspects of ``down``: the poison first, exactly the in-flight requests, none of
    ``not_suspects``, and (when given) the documented order.  Returns their body shas."""
    suspects = down.get("suspects")
    if not c.check(isinstance(suspects, list) and suspects,
                   f"{what}: server_down has no suspects: {short(down)}"):
        return []
    shas = view.suspect_shas(down)
    labels = suspect_labels(view, down, label_of)
    c.check(None not in shas, f"{what}: suspects whose id has no request record: "
                              f"{[s.get('id') for s, sha in zip(suspects, shas) if sha is None]}")
    c.check(len(set(shas)) == len(shas), f"{what}: a suspect is listed twice: {labels}")
    c.equal(f"{what}: the FIRST suspect (must be the poison request)", label_of[poison_sha],
            labels[0] if labels else None)
    c.equal(f"{what}: the set of suspects (= the requests in flight at the death)",
            sorted(label_of[s] for s in in_flight_shas), sorted(labels))
    for sha in not_suspects:
        c.check(sha not in shas, f"{what}: {label_of[sha]} is listed as a suspect but it "
                                 f"{'finished before' if 'warm' in label_of[sha] else 'came after'} "
                                 f"the death: {labels}")
    if expected_order is not None:
        c.equal(f"{what}: suspect order (no token first, then most recent first)",
                [label_of[s] for s in expected_order], labels)
    for s in suspects:
        c.check(isinstance(s.get("why"), str) and s.get("why"),
                f"{what}: suspect {s.get('id')} has no 'why': {s}")
    return shas


# --------------------------------------------------------------------------------------
# 1. process exit
# --------------------------------------------------------------------------------------

def scenario_crash(ctx: Context, name: str, structured: dict, n_streams: int,
                   with_curl: bool, with_tcpdump: bool) -> None:
    c, tmp = ctx.c, ctx.root / name
    tmp.mkdir()
    what = f"[{name}]"
    server = FakeServer(tmp, mode="crash", crash_delay_ms=150)
    live: LiveChatcap | None = None
    capture: Tcpdump | None = None
    calls: list[SlowCall] = []
    curl: CurlStream | None = None
    idle: IdleConnection | None = None
    try:
        server.start()
        base = server.base_url
        live = LiveChatcap(ctx.chatcap, server.port, tmp / "log").start()
        if with_tcpdump:
            capture = Tcpdump.for_port(tmp / "crash.pcap", server.port)
            capture.start(probe=lambda: harness._probe(server))
        warm = start_warmup(ctx, base, live, f"{name}-warmup")
        idle = IdleConnection(base)
        streams = start_slow_streams(base, name, n_streams)
        calls += streams
        if with_curl:
            curl = CurlStream(base, f"{name}-curl-stream",
                              chat_body(f"{name}-curl-stream", "curl, go on.", stream=True,
                                        **_slow()), tmp / "curl")
            if not curl.wait_tokens(1, 10):
                raise RuntimeError("the curl stream got no token within 10 s")
            time.sleep(0.03)
        nonstream = start_nonstream(base, f"{name}-nonstream")
        calls.append(nonstream)
        poison = SlowCall(base, f"{name}-poison", poison_body(f"{name}-poison", structured), True)
        poison.start()
        calls.append(poison)
        log(f"{name}: {n_streams} httpx streams{' + curl stream' if with_curl else ''} + "
            f"1 non-streamed in flight, poison {json.dumps(structured)} sent")
        try:
            code = server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise RuntimeError("fake_vllm (mode crash) did not exit within 5 s of the poison request")
        t_death = time.time()
        refused = connect_refused("127.0.0.1", server.port)
        for call in calls:
            call.join(10)
        if curl:
            curl.wait(10)

        # Harness self-checks: the clients saw a crash.
        c.equal(f"{what} HARNESS: fake_vllm exit code", 1, code)
        c.equal(f"{what} HARNESS: connecting after the crash", ["refused", "refused"], refused)
        for call in calls:
            r = call.result
            c.check(r.error is not None and not r.done,
                    f"{what} HARNESS: {r.describe()} was not cut by the crash")
        for s in streams:
            c.check(s.result.tokens > 0, f"{what} HARNESS: {s.result.label} got no token before the crash")
        c.check(poison.result.tokens == 0, f"{what} HARNESS: the poison request got tokens")

        in_flight = [s.result for s in streams]
        sent: dict[str, bytes] = {warm.result.label: warm.result.body}
        sent.update({r.label: r.body for r in in_flight})
        if curl:
            sent[curl.label] = curl.body
        sent[nonstream.result.label] = nonstream.result.body
        sent[poison.result.label] = poison.result.body
        label_of = {hashlib.sha256(b).hexdigest(): label for label, b in sent.items()}
        in_flight_shas = [sha for sha, label in label_of.items() if label != warm.result.label]
        poison_sha = poison.result.sha256
        # documented order: no token first (poison, then the non-streamed one), then the
        # streams that got tokens, most recent first (curl started last)
        with_tokens = [r.sha256 for r in in_flight] + ([curl.sha256] if curl else [])
        expected_order = [poison_sha, nonstream.result.sha256] + list(reversed(with_tokens))

        # Live: wait for the verdict, then read what is on disk while chatcap still runs.
        live.wait_for(lambda recs: LogView.of(recs).downs, DECISION_WAIT, "the server_down record")
        t_decided = time.time()
        on_disk = LogView.of(live.records())
        c.check(live.alive(), f"{what}: chatcap run died: {live.stderr_text().strip()[-500:]}")
        log(f"{name}: server_down after {t_decided - t_death:.2f} s; {len(on_disk.records)} records on disk")
        check_request_records(c, f"{what} live log (chatcap running)", on_disk, sent)
        if capture:
            capture.stop()
            capture = None
        live.stop()
        c.equal(f"{what}: chatcap run exit code on SIGTERM", 0, live.returncode)
        final = LogView.of(live.records())
        live_shas = check_crash_records(c, f"{what} live", final, server, label_of, poison_sha,
                                        in_flight_shas, expected_order, warm.result.sha256,
                                        "process_exit", structured)
        ctx.logs[name] = {"log_dir": live.log_dir, "poison_sha": poison_sha,
                          "poison_body": poison.result.body, "structured": structured,
                          "in_flight": in_flight_shas, "label_of": label_of,
                          "poison_id": (final.request(poison_sha) or {}).get("id"),
                          "suspect_ids": [x.get("id") for x in (final.downs[-1:] or [{}])[0].get("suspects") or []]}

        if with_tcpdump:
            out = harness.run_chatcap_read(ctx.chatcap, tmp / "crash.pcap", [server.port])
            (tmp / "read.jsonl").write_bytes(out.stdout)
            c.check(out.returncode == 0, f"{what} read: exit {out.returncode}: {out.stderr[-500:]}")
            view = LogView.of(out.records)
            check_request_records(c, f"{what} read", view, sent)
            read_shas = check_crash_records(c, f"{what} read", view, server, label_of, poison_sha,
                                            in_flight_shas, expected_order, warm.result.sha256,
                                            "process_exit", structured)
            c.equal(f"{what}: suspects of `chatcap read` vs `chatcap run` (by body)",
                    [label_of.get(s or "", "?") for s in live_shas],
                    [label_of.get(s or "", "?") for s in read_shas])
        if ctx.args.verbose:
            for r in final.records:
                if r.get("type") != "request":
                    log(short(r, 800))
    finally:
        if curl:
            curl.kill()
        if idle:
            idle.close()
        if capture:
            capture.stop()
        if live:
            live.stop()
        server.stop()


def check_crash_records(c: Checker, what: str, view: LogView, server: FakeServer,
                        label_of: dict[str, str], poison_sha: str, in_flight_shas: list[str],
                        expected_order: list[str], warm_sha: str, kind: str,
                        structured: dict) -> list[str | None]:
    down = the_one_down(c, what, view)
    shas: list[str | None] = []
    poison_req = view.request(poison_sha)
    if c.check(poison_req is not None, f"{what}: no (single) request record for the poison request"):
        so = (poison_req.get("summary") or {}).get("structured_output")
        c.equal(f"{what}: poison request summary.structured_output",
                {"structured_outputs": structured}, so)
    if down is not None:
        c.equal(f"{what}: server_down.kind", kind, down.get("kind"))
        c.equal(f"{what}: server_down.server", server.address, down.get("server"))
        c.check(isinstance(down.get("evidence"), list) and down.get("evidence"),
                f"{what}: server_down has no evidence: {short(down)}")
        c.check(isinstance(down.get("ts"), str) and down.get("ts"), f"{what}: server_down has no ts")
        shas = check_suspects(c, what, view, down, label_of, poison_sha, in_flight_shas,
                              expected_order, [warm_sha])
        log(f"{what}: server_down evidence {down.get('evidence')}; suspects "
            f"{suspect_labels(view, down, label_of)}")
    warm = view.exchange_of(warm_sha)
    if c.check(warm is not None, f"{what}: no exchange record for the warm-up request"):
        c.equal(f"{what}: warm-up exchange state", "complete", warm.get("state"))
        c.check("server_down" not in (warm.get("anomalies") or []),
                f"{what}: the warm-up exchange (before the death) has anomaly server_down")
    for sha in in_flight_shas:
        ex = view.exchange_of(sha)
        label = label_of[sha]
        if not c.check(ex is not None, f"{what}: {label}: no exchange record (in flight at the crash)"):
            continue
        c.check(ex.get("state") != "complete", f"{what}: {label} cut by the crash is recorded "
                                               f"'complete': {short(ex)}")
        c.equal(f"{what}: {label}: state of the cut exchange", "aborted", ex.get("state"))
        c.check("server_down" in (ex.get("anomalies") or []),
                f"{what}: {label}: the cut exchange lacks anomaly server_down: "
                f"anomalies {ex.get('anomalies')}, close {ex.get('close')}")
        c.check(ex.get("close") in ("server_fin", "server_rst"),
                f"{what}: {label}: close is {ex.get('close')!r}, expected server_fin/server_rst")
    return shas


# --------------------------------------------------------------------------------------
# 2. engine death
# --------------------------------------------------------------------------------------

def scenario_engine_dead(ctx: Context) -> None:
    name = "engine_dead"
    c, tmp = ctx.c, ctx.root / name
    tmp.mkdir()
    what = f"[{name}]"
    server = FakeServer(tmp, mode="engine_dead", crash_delay_ms=150)
    live: LiveChatcap | None = None
    capture: Tcpdump | None = None
    try:
        server.start()
        base = server.base_url
        live = LiveChatcap(ctx.chatcap, server.port, tmp / "log").start()
        capture = Tcpdump.for_port(tmp / "engine.pcap", server.port)
        capture.start(probe=lambda: harness._probe(server))
        warm = start_warmup(ctx, base, live, f"{name}-warmup")
        streams = start_slow_streams(base, name, 3)
        nonstream = start_nonstream(base, f"{name}-nonstream")
        poison = SlowCall(base, f"{name}-poison", poison_body(f"{name}-poison", {"json": None}), True)
        poison.start()
        in_flight_calls = streams + [nonstream, poison]
        for call in in_flight_calls:
            call.join(10)
        t_death = time.time()
        time.sleep(0.5)  # later requests: well after the death

        def later(label: str, stream: bool) -> SlowCall:
            call = SlowCall(base, label, chat_body(label, "After the death.", stream=stream,
                                                   fake_tokens=8), stream)
            call.start()
            call.join(10)
            return call

        early = [later(f"{name}-later-a-stream", True), later(f"{name}-later-a-plain", False)]
        live.wait_for(lambda recs: LogView.of(recs).downs, DECISION_WAIT, "the server_down record")
        log(f"{name}: server_down after {time.time() - t_death:.2f} s")
        late = [later(f"{name}-later-b-stream", True), later(f"{name}-later-b-plain", False)]
        later_calls = early + late
        live.wait_for(lambda recs: all(LogView.of(recs).exchange_of(x.result.sha256)
                                       for x in later_calls), 5, "the later exchanges")

        # Harness self-checks.
        for call in streams + [poison]:
            r = call.result
            c.check(r.status == 200 and r.sse_error is not None and r.done,
                    f"{what} HARNESS: {r.describe()} did not end with an SSE error event + [DONE]")
        for s in streams:
            c.check(s.result.tokens > 0, f"{what} HARNESS: {s.result.label} got no token")
        for call in [nonstream] + later_calls:
            c.check(call.result.status == 500 and b"EngineDeadError" in call.result.response_body,
                    f"{what} HARNESS: {call.result.describe()} did not get a 500 EngineDeadError")

        capture.stop()
        capture = None
        live.stop()
        label_of = {x.result.sha256: x.result.label for x in [warm] + in_flight_calls + later_calls}
        sent = {x.result.label: x.result.body for x in [warm] + in_flight_calls + later_calls}
        in_flight_shas = [x.result.sha256 for x in in_flight_calls]
        later_shas = [x.result.sha256 for x in later_calls]
        expected_order = ([poison.result.sha256, nonstream.result.sha256]
                          + [s.result.sha256 for s in reversed(streams)])

        final = LogView.of(live.records())
        out = harness.run_chatcap_read(ctx.chatcap, tmp / "engine.pcap", [server.port])
        (tmp / "read.jsonl").write_bytes(out.stdout)
        c.check(out.returncode == 0, f"{what} read: exit {out.returncode}: {out.stderr[-500:]}")
        results = {}
        for where, view in (("live", final), ("read", LogView.of(out.records))):
            w = f"{what} {where}"
            check_request_records(c, w, view, sent)
            down = the_one_down(c, w, view)
            if down is None:
                continue
            c.equal(f"{w}: server_down.kind", "engine_dead", down.get("kind"))
            c.equal(f"{w}: server_down.server", server.address, down.get("server"))
            c.check(isinstance(down.get("evidence"), list) and down.get("evidence"),
                    f"{w}: server_down has no evidence: {short(down)}")
            log(f"{w}: server_down evidence {down.get('evidence')}; suspects "
                f"{suspect_labels(view, down, label_of)}")
            results[where] = check_suspects(c, w, view, down, label_of, poison.result.sha256,
                                            in_flight_shas, expected_order,
                                            [warm.result.sha256] + later_shas)
            for sha in in_flight_shas:
                ex = view.exchange_of(sha)
                if c.check(ex is not None, f"{w}: {label_of[sha]}: no exchange record"):
                    c.check("server_down" in (ex.get("anomalies") or []),
                            f"{w}: {label_of[sha]} (in flight at the death) lacks anomaly "
                            f"server_down: {short(ex, 600)}")
            for sha in later_shas:
                ex = view.exchange_of(sha)
                if not c.check(ex is not None, f"{w}: {label_of[sha]}: no exchange record"):
                    continue
                c.equal(f"{w}: {label_of[sha]}: status", 500, ex.get("status"))
                c.check("server_down" in (ex.get("anomalies") or []),
                        f"{w}: {label_of[sha]} (500 after the death) lacks anomaly server_down: "
                        f"{short(ex, 600)}")
            warm_ex = view.exchange_of(warm.result.sha256)
            if c.check(warm_ex is not None, f"{w}: no exchange record for the warm-up"):
                c.equal(f"{w}: warm-up state", "complete", warm_ex.get("state"))
                c.check("server_down" not in (warm_ex.get("anomalies") or []),
                        f"{w}: the warm-up (before the death) has anomaly server_down")
        if "live" in results and "read" in results:
            c.equal(f"{what}: suspects of `chatcap read` vs `chatcap run` (by body)",
                    [label_of.get(s or "", "?") for s in results["live"]],
                    [label_of.get(s or "", "?") for s in results["read"]])
        ctx.logs[name] = {"log_dir": live.log_dir, "poison_sha": poison.result.sha256,
                          "poison_body": poison.result.body, "structured": {"json": None},
                          "in_flight": in_flight_shas, "label_of": label_of,
                          "poison_id": (final.request(poison.result.sha256) or {}).get("id"),
                          "suspect_ids": [x.get("id") for x in (final.downs[-1:] or [{}])[0].get("suspects") or []]}
    finally:
        if capture:
            capture.stop()
        if live:
            live.stop()
        server.stop()


# --------------------------------------------------------------------------------------
# 3. chatcap suspects
# --------------------------------------------------------------------------------------

def scenario_suspects_command(ctx: Context) -> None:
    c = ctx.c
    exists, why = forensics.has_subcommand(ctx.chatcap, "suspects")
    if not exists:
        skip(ctx, "3 `chatcap suspects [--json]`", why)
        return
    if not ctx.logs:
        c.fail("[suspects] no log of a server death to read (scenarios 1/2 did not run or broke)")
        return
    for name, facts in ctx.logs.items():
        what = f"[suspects on the {name} log]"
        log_dir = str(facts["log_dir"])
        poison_id = facts["poison_id"]
        out = run(ctx, ["suspects", "--json", "--log-dir", log_dir])
        if not c.check(out.returncode == 0, f"{what} --json: exit {out.returncode}: "
                                            f"{out.stderr.decode(errors='replace')[-500:]}"):
            continue
        entries, problem = parse_suspect_entries(out.stdout)
        if not c.check(problem is None and entries,
                       f"{what} --json: cannot find the suspects in the output ({problem}): "
                       f"{out.stdout[:600]!r}"):
            continue
        first = entries[0]
        req = first.get("request") if isinstance(first.get("request"), dict) else first
        first_id = first.get("id") or (req or {}).get("id")
        c.equal(f"{what} --json: id of the first suspect (the poison request)", poison_id, first_id)
        summary = (req or {}).get("summary") or first.get("summary")
        so = summary.get("structured_output") if isinstance(summary, dict) else None
        c.check(so in ({"structured_outputs": facts["structured"]}, facts["structured"]),
                f"{what} --json: first suspect's summary.structured_output is {so!r}, expected "
                f"{{'structured_outputs': {facts['structured']!r}}}; summary {summary!r}")
        body_sha = forensics.body_sha(req) if isinstance(req, dict) else None
        c.equal(f"{what} --json: sha256 of the first suspect's body (= the poison body)",
                facts["poison_sha"], body_sha)
        ids = [e.get("id") or (e.get("request") or {}).get("id") for e in entries]
        c.equal(f"{what} --json: suspects (ids, in order) = those of the server_down record",
                facts["suspect_ids"], ids)

        human = run(ctx, ["suspects", "--log-dir", log_dir])
        text = human.stdout.decode("utf-8", "replace")
        if c.check(human.returncode == 0, f"{what} human: exit {human.returncode}: "
                                          f"{human.stderr.decode(errors='replace')[-500:]}"):
            positions = {i: text.find(str(i)[:12]) for i in ids if i}
            pos = positions.get(poison_id, -1)
            c.check(pos >= 0, f"{what} human: the poison request's id {poison_id} is not shown: "
                              f"{text[:800]!r}")
            others = [p for i, p in positions.items() if i != poison_id and p >= 0]
            c.check(pos >= 0 and all(pos < p for p in others),
                    f"{what} human: the poison request is not listed first: {text[:800]!r}")
            c.check("structured" in text.lower(),
                    f"{what} human: the output does not mention the structured output: {text[:800]!r}")


def parse_suspect_entries(stdout: bytes) -> tuple[list[dict], str | None]:
    """The suspect entries of ``chatcap suspects --json``, whatever the framing: one JSON
    document (an object with "suspects", or an array) or JSON Lines (a server_down-like
    object with "suspects", or one object per suspect)."""
    try:
        doc = json.loads(stdout)
        docs = [doc]
    except ValueError:
        docs = []
        for line in stdout.splitlines():
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except ValueError as exc:
                    return [], f"a line is not JSON: {exc}"
    if len(docs) == 1 and isinstance(docs[0], list):
        docs = docs[0]
    with_list = [d for d in docs if isinstance(d, dict) and isinstance(d.get("suspects"), list)]
    if with_list:
        entries = with_list[-1]["suspects"]
    else:
        entries = [d for d in docs if isinstance(d, dict) and d.get("type") != "server_down"]
    entries = [e for e in entries if isinstance(e, dict)]
    return entries, None if entries else "no suspect entries"


# --------------------------------------------------------------------------------------
# 4 + 5b. show --curl / --body, client hang-ups (one normal server)
# --------------------------------------------------------------------------------------

def nasty_bodies(tmp: Path) -> dict[str, bytes]:
    pwn = tmp / "pwned"
    text = ("quotes: \"double\" 'single' '\\'' \\\" ; subst: $(touch " + f"{pwn}-dollar) "
            "`touch " + f"{pwn}-backtick` ${{HOME}} $HOME !! !$ %s %n \\n \\x41 ; "
            "newlines:\nline 2\r\nCRLF\rCR\n\nEOF\nCHATCAP_EOF\n'EOF'\nEND\n\ttab "
            "non-ASCII: Ünïcödé “smart” 日本語 🚀 — \u2028 \u00a0 é")
    bodies = {
        "replay-nasty-json": chat_body("replay-nasty-json", text, pretty=True),
        "replay-nasty-oneline": chat_body("replay-nasty-oneline", text + " | cat /etc/passwd > " + f"{pwn}-pipe"),
        # not UTF-8, no NUL: every other byte value, quotes and newlines included
        "replay-binary": (b'{"model":"m","messages":[{"role":"user","content":"[replay-binary] '
                          + bytes(range(1, 256)) + b' \xff\xfe\xc0\x80 $(id) `id` \'\\\'"}]}'),
        "replay-trailing-newlines": chat_body("replay-trailing-newlines", "x") + b"\n\n",
    }
    return bodies


def scenario_normal_server(ctx: Context) -> None:
    """Scenario 4 (show --curl / --body) and 5b (client hang-ups) on one normal server."""
    name = "normal"
    c, tmp = ctx.c, ctx.root / name
    tmp.mkdir()
    server = FakeServer(tmp, mode="normal")
    live: LiveChatcap | None = None
    killers: list[CurlStream] = []
    try:
        server.start()
        base = server.base_url
        port = server.port
        live = LiveChatcap(ctx.chatcap, port, tmp / "log").start()
        start_warmup(ctx, base, live, f"{name}-warmup")

        # 4: the bodies to replay later
        bodies = nasty_bodies(tmp)
        for label, body in bodies.items():
            call = SlowCall(base, label, body, stream=False)
            call.start()
            call.join(10)
            c.check(call.result.status in (200, 400),
                    f"[show] HARNESS: {call.result.describe()}")

        # 5b: clients hanging up mid-stream, several at once
        hangups = [SlowCall(base, f"hangup-httpx-{i}", chat_body(f"hangup-httpx-{i}", "Long.",
                                                                  stream=True, fake_tokens=300,
                                                                  token_delay_ms=20),
                            True, hang_up_after=5) for i in range(3)]
        killers = [CurlStream(base, f"hangup-curl-{i}", chat_body(f"hangup-curl-{i}", "Long.",
                                                                   stream=True, fake_tokens=300,
                                                                   token_delay_ms=20), tmp / "curl")
                   for i in range(2)]
        for h in hangups:
            h.start()
        for k in killers:
            if not k.wait_tokens(3, 10):
                raise RuntimeError(f"{k.label}: no token within 10 s")
        for h in hangups:
            h.join(15)
        for k in killers:
            k.kill()
        t_cut = time.time()
        after = SlowCall(base, f"{name}-after", chat_body(f"{name}-after", "Still fine?",
                                                          stream=True, fake_tokens=4), True)
        after.start()
        after.join(10)
        for h in hangups:
            c.check(h.result.hung_up and h.result.error is None,
                    f"[hangup] HARNESS: {h.result.describe()} did not hang up cleanly")
        # let a (wrong) incident's decision window pass while chatcap runs
        time.sleep(max(0.0, 2.6 - (time.time() - t_cut)))
        shas = [h.result.sha256 for h in hangups] + [k.sha256 for k in killers]
        labels = {h.result.sha256: h.result.label for h in hangups}
        labels.update({k.sha256: k.label for k in killers})
        live.wait_for(lambda recs: all(LogView.of(recs).exchange_of(s) for s in shas), 5,
                      "the hung-up exchanges")
        view = LogView.of(live.records())

        w = "[5b client hang-ups]"
        c.check(not view.downs, f"{w}: FALSE ALARM: server_down record(s) although only clients "
                                f"hung up: {[short(d) for d in view.downs]}")
        for sha in shas:
            ex = view.exchange_of(sha)
            if not c.check(ex is not None, f"{w}: {labels[sha]}: no exchange record"):
                continue
            c.equal(f"{w}: {labels[sha]}: state", "aborted", ex.get("state"))
            c.check(ex.get("close") in ("client_fin", "client_rst"),
                    f"{w}: {labels[sha]}: close is {ex.get('close')!r}, expected client_fin or "
                    f"client_rst: {short(ex, 600)}")
            c.check("server_down" not in (ex.get("anomalies") or []),
                    f"{w}: {labels[sha]}: anomaly server_down on a client hang-up")
        after_ex = view.exchange_of(after.result.sha256)
        if c.check(after_ex is not None, f"{w}: no exchange record for the request after the hang-ups"):
            c.equal(f"{w}: the request after the hang-ups: state", "complete", after_ex.get("state"))
            c.check("server_down" not in (after_ex.get("anomalies") or []),
                    f"{w}: the request after the hang-ups has anomaly server_down")

        # 4: show --curl / --body
        check_show(ctx, live, server, bodies, view)
    finally:
        for k in killers:
            k.kill()
        if live:
            live.stop()
        server.stop()


def check_show(ctx: Context, live: LiveChatcap, server: FakeServer, bodies: dict[str, bytes],
               view: LogView) -> None:
    c = ctx.c
    tmp = live.log_dir.parent
    log_dir = str(live.log_dir)
    ids = {}
    for label, body in bodies.items():
        req = view.request(hashlib.sha256(body).hexdigest())
        if c.check(req is not None, f"[show] {label}: no (single) request record with the body sent"):
            ids[label] = str(req.get("id"))

    has_body, why_body = forensics.has_flag(ctx.chatcap, "show", "--body")
    if not has_body:
        skip(ctx, "4 `chatcap show ID --body`", why_body)
    else:
        for label, id_ in ids.items():
            out = run(ctx, ["show", id_, "--body", "--log-dir", log_dir])
            if c.check(out.returncode == 0, f"[show --body] {label}: exit {out.returncode}: "
                                            f"{out.stderr.decode(errors='replace')[-300:]}"):
                c.equal(f"[show --body] {label}: sha256 of stdout (= body sent, {len(bodies[label])} B)",
                        hashlib.sha256(bodies[label]).hexdigest(), hashlib.sha256(out.stdout).hexdigest())

    has_curl, why_curl = forensics.has_flag(ctx.chatcap, "show", "--curl")
    if not has_curl:
        skip(ctx, "4 `chatcap show ID --curl` replay", why_curl)
        return
    commands = {}
    for label, id_ in ids.items():
        out = run(ctx, ["show", id_, "--curl", "--log-dir", log_dir])
        if c.check(out.returncode == 0 and out.stdout.strip(),
                   f"[show --curl] {label}: exit {out.returncode}, {len(out.stdout)} B: "
                   f"{out.stderr.decode(errors='replace')[-300:]}"):
            commands[label] = out.stdout
            (tmp / f"replay-{label}.sh").write_bytes(out.stdout)
    # The replay goes where the original went: the same address, now a body-keeping server.
    live.stop()
    server.stop()
    capture = forensics.BodyCaptureServer(server.port)
    replay_dir = tmp / "replay-cwd"
    replay_dir.mkdir()
    try:
        for label, command in commands.items():
            before = len(capture.received)
            proc = subprocess.run([b"/bin/bash", b"-c", command], cwd=replay_dir, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=15, check=False,
                                  env=forensics.env_without_proxy())
            got = capture.received[before:]
            what = f"[show --curl] {label}"
            if not c.check(proc.returncode == 0 and len(got) == 1,
                           f"{what}: bash ran the printed command: exit {proc.returncode}, "
                           f"{len(got)} requests received (expected 1); stderr "
                           f"{proc.stderr.decode(errors='replace')[-400:]!r}; command "
                           f"{command[:400]!r}"):
                continue
            method, path, _headers, body = got[0]
            c.equal(f"{what}: method", "POST", method)
            c.equal(f"{what}: path", harness.CHAT_PATH, path)
            c.equal(f"{what}: sha256 of the body received by the replay server "
                    f"({len(body)} B received, {len(bodies[label])} B sent)",
                    hashlib.sha256(bodies[label]).hexdigest(), hashlib.sha256(body).hexdigest())
            if body != bodies[label]:
                c.fail(f"{what}: {harness.describe_difference(bodies[label], body)}")
        leftovers = sorted(p.name for p in list(tmp.glob("pwned*")) + list(replay_dir.iterdir()))
        c.check(not leftovers, f"[show --curl] the replay executed parts of a body or left files: "
                               f"{leftovers}")
    finally:
        capture.close()


# --------------------------------------------------------------------------------------
# 5a. idle keep-alive connections closed by the server
# --------------------------------------------------------------------------------------

def scenario_idle_close(ctx: Context) -> None:
    name = "idle_close"
    c, tmp = ctx.c, ctx.root / name
    tmp.mkdir()
    w = "[5a idle_close]"
    server = FakeServer(tmp, mode="idle_close")  # uvicorn keep-alive timeout 1 s
    live: LiveChatcap | None = None
    try:
        server.start()
        base = server.base_url
        live = LiveChatcap(ctx.chatcap, server.port, tmp / "log").start()
        long_stream = SlowCall(base, "idle-long-stream",
                               chat_body("idle-long-stream", "Long.", stream=True, fake_tokens=90,
                                         token_delay_ms=40), True)
        long_stream.start()

        def client(i: int) -> list:
            out = []
            with harness.HttpxChatClient(base, connection=f"idle-ka-{i}") as ka:
                for k in range(3):
                    if k:
                        time.sleep(1.6)  # longer than the keep-alive timeout: the server closes
                    out.append(ka.chat(f"idle-ka-{i}-{k}", chat_body(
                        f"idle-ka-{i}-{k}", "Hello.", stream=bool(k % 2), fake_tokens=6)))
                time.sleep(1.3)  # and the last one is closed by the server too
            return out

        records = [r for rs in harness.run_concurrently([lambda i=i: client(i) for i in range(3)])
                   for r in rs]
        long_stream.join(10)
        time.sleep(2.4)  # past the decision window of a (wrong) incident
        view = LogView.of(live.records())
        live.stop()
        final = LogView.of(live.records())

        for r in records:
            c.check(r.error is None and r.status == 200, f"{w} HARNESS: {r.describe()}: {r.error}")
        for i in range(3):
            addrs = [r.client_addr for r in records if r.connection == f"idle-ka-{i}"]
            c.check(len(set(addrs)) == 3, f"{w} HARNESS: client {i} reused a connection the "
                                          f"server should have closed when idle: {addrs}")
        c.check(long_stream.result.done and long_stream.result.error is None,
                f"{w} HARNESS: {long_stream.result.describe()}")

        c.check(not view.downs and not final.downs,
                f"{w}: FALSE ALARM: server_down record(s) although the server only closed idle "
                f"keep-alive connections: {[short(d) for d in final.downs or view.downs]}")
        for r in records + [long_stream.result]:
            ex = final.exchange_of(r.sha256)
            if c.check(ex is not None, f"{w}: {r.label}: no exchange record"):
                c.equal(f"{w}: {r.label}: state", "complete", ex.get("state"))
                c.check(not ex.get("anomalies"),
                        f"{w}: {r.label}: anomalies {ex.get('anomalies')}")
    finally:
        if live:
            live.stop()
        server.stop()


# --------------------------------------------------------------------------------------
# 5c. one stream cut by a live server while other clients close their connections
# --------------------------------------------------------------------------------------

def scenario_single_cut(ctx: Context) -> None:
    """A live server cuts ONE stream (as uvicorn does when a streaming handler raises) at the
    moment three other clients finish their streams and close their connections (the server
    then closes its side: a passive close).  One cut stream is not a death, and connections
    the clients closed are not 'closed by the server': no server_down."""
    name = "single_cut"
    c, tmp = ctx.c, ctx.root / name
    tmp.mkdir()
    w = "[5c one server cut + client closes]"
    server = forensics.CuttingSSEServer(events=10, delay=0.02, cut_after=8)
    live: LiveChatcap | None = None
    try:
        live = LiveChatcap(ctx.chatcap, server.port, tmp / "log").start()
        base = server.base_url
        warm = SlowCall(base, "cut-warmup", chat_body("cut-warmup", "Warm up.", stream=True), True)
        warm.start()
        warm.join(10)
        live.wait_for(lambda recs: LogView.of(recs).exchange_of(warm.result.sha256), 8,
                      "the warm-up exchange")
        calls = [SlowCall(base, f"cut-normal-{i}", chat_body(f"cut-normal-{i}", "Short.",
                                                             stream=True), True) for i in range(3)]
        calls.append(SlowCall(base, "cut-me", chat_body("cut-me", "This one is cut.", stream=True),
                              True))
        for call in calls:
            call.start()
        for call in calls:
            call.join(10)
        t_end = time.time()
        for call in calls[:3]:
            c.check(call.result.done and call.result.error is None,
                    f"{w} HARNESS: {call.result.describe()} did not complete")
        c.check(calls[3].result.error is not None and not calls[3].result.done,
                f"{w} HARNESS: {calls[3].result.describe()} was not cut")
        ends = [call.result.ended_at for call in calls]
        c.check(max(ends) - min(ends) < 0.15,
                f"{w} HARNESS: the streams did not end together: spread {max(ends) - min(ends):.3f} s")
        time.sleep(max(0.0, 2.6 - (time.time() - t_end)))  # past a (wrong) decision window
        live.stop()
        view = LogView.of(live.records())
        c.check(not view.downs,
                f"{w}: FALSE ALARM: server_down although the server cut a single stream and the "
                f"other connections were closed by their clients (the server's FIN answered "
                f"the client's FIN): {[short(d) for d in view.downs]}")
        labels = {call.result.sha256: call.result.label for call in calls}
        for sha, label in labels.items():
            ex = view.exchange_of(sha)
            if not c.check(ex is not None, f"{w}: {label}: no exchange record"):
                continue
            c.check("server_down" not in (ex.get("anomalies") or []),
                    f"{w}: {label}: anomaly server_down: {short(ex, 500)}")
            if label == "cut-me":
                c.equal(f"{w}: {label}: state", "aborted", ex.get("state"))
                c.equal(f"{w}: {label}: close", "server_fin", ex.get("close"))
            else:
                c.equal(f"{w}: {label}: state", "complete", ex.get("state"))
    finally:
        if live:
            live.stop()
        server.close()


# --------------------------------------------------------------------------------------

class Ran:
    def __init__(self, proc: subprocess.CompletedProcess | None, error: str = "") -> None:
        self.returncode = proc.returncode if proc else None
        self.stdout = proc.stdout if proc else b""
        self.stderr = proc.stderr if proc else error.encode()


def run(ctx: Context, args: list[str], timeout: float = 30.0) -> Ran:
    try:
        return Ran(subprocess.run([ctx.chatcap, *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False))
    except subprocess.TimeoutExpired:
        return Ran(None, f"timed out after {timeout} s")


def skip(ctx: Context, what: str, why: str) -> None:
    """A command the acceptance needs is missing: that is a failure, not a skip."""
    message = f"{what}: this chatcap lacks it ({why})"
    ctx.skipped.append(message)
    ctx.c.fail(message)


SCENARIOS: list[tuple[str, str, Callable[[Context], None]]] = [
    ("1", "process exit, {json: null}, live + tcpdump",
     lambda ctx: scenario_crash(ctx, "crash", {"json": None}, n_streams=3, with_curl=True,
                                with_tcpdump=True)),
    ("1b", "process exit, {json_object: false}, live",
     lambda ctx: scenario_crash(ctx, "crash_json_object", {"json_object": False}, n_streams=2,
                                with_curl=False, with_tcpdump=False)),
    ("2", "engine death, live + tcpdump", scenario_engine_dead),
    ("3", "chatcap suspects", scenario_suspects_command),
    ("4+5b", "show --curl/--body, client hang-ups", scenario_normal_server),
    ("5a", "idle keep-alive closes", scenario_idle_close),
    ("5c", "one server cut + client closes", scenario_single_cut),
]


def main() -> int:
    import argparse
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--only", default="")
    known, rest = extra.parse_known_args()
    args = harness.common_args(__doc__.split("\n\n")[0], rest)
    only = {s.strip() for s in known.only.split(",") if s.strip()}
    c = Checker()
    workdir = harness.Workdir("crash-forensics", keep=args.keep)
    ctx = Context(args, c, workdir.path)
    started = time.monotonic()
    try:
        problem = harness.check_chatcap_binary(args.chatcap)
        if problem:
            c.fail(f"cannot run chatcap: {problem}")
        else:
            for key, title, fn in SCENARIOS:
                if only and key not in only:
                    continue
                t0, failures0 = time.monotonic(), len(c.failures)
                log(f"=== scenario {key}: {title}")
                try:
                    fn(ctx)
                except Exception as exc:  # noqa: BLE001 - reported with context
                    traceback.print_exc()
                    c.fail(f"scenario {key} ({title}): the test itself broke: "
                           f"{type(exc).__name__}: {exc}")
                ctx.timings.append((f"{key} {title}", time.monotonic() - t0,
                                    len(c.failures) - failures0))
    finally:
        workdir.finish(ok=c.ok)
    for title, seconds, failed in ctx.timings:
        log(f"scenario {title}: {seconds:.1f} s, {'FAILED ' + str(failed) if failed else 'ok'}")
    log(f"total {time.monotonic() - started:.1f} s")
    for message in ctx.skipped:
        print(f"!! {message}", file=sys.stderr)
    return c.report("test_crash_forensics")


if __name__ == "__main__":
    sys.exit(main())

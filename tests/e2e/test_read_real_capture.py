#!/usr/bin/python3
"""Acceptance test of ``chatcap read``: a real capture of real clients and a real server.

1. Start ``fake_vllm.py`` (mode normal) on a free loopback port and ``tcpdump -i lo`` on
   that port.
2. Send 16 chat completions plus a GET /v1/models the way real clients do: httpx and
   curl; streamed and not; five (and a GET) on one keep-alive httpx connection, two on one
   keep-alive curl connection (``--next``); five at once on separate connections; a body
   full of non-ASCII, quotes, backslashes, newlines, ``$()`` and backticks (sent by httpx
   and by curl from a file); a ~300 KB streamed body (httpx); a ~1.5 MiB body from curl,
   which makes curl send ``Expect: 100-continue`` and uvicorn answer ``100 Continue``;
   a body that is not UTF-8 (the server answers 400; chatcap must keep it as base64).
   Every client sends ``Authorization: Bearer sk-test-SECRET123``.
3. Check the clients got what the fake model says (a harness self-check) and that the
   capture holds every request (tshark, independent of chatcap).
4. Run ``chatcap read CAP --port P --max-body 4194304`` and check, matching chatcap's
   records to the client's requests by body sha256: one request record per request with
   the exact body; one exchange record per request, state complete, the right status;
   for streams ``sse.content`` / ``sse.reasoning`` / ``sse.finish_reason`` / tool-call
   arguments equal what the client assembled and ``sse.done`` is true; for non-streamed
   answers ``answer.content`` (and reasoning) equal ``message.content``; nothing but
   /v1/chat/completions is recorded; the API key appears nowhere in clear and the
   Authorization header is ``<redacted sha256:...>``.

Run: /usr/bin/python3 tests/e2e/test_read_real_capture.py --chatcap build/chatcap
     [--keep] [--verbose]     (needs root: tcpdump on lo)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (  # noqa: E402
    CHAT_PATH, SECRET, WEATHER_TOOL, Checker, ClientRecord, CurlRequest, FakeServer,
    HttpxChatClient, chat_body, curl_chat, log, run_concurrently)

MAX_BODY = 4 * 1024 * 1024
REDACTED = re.compile(r"^<redacted sha256:[0-9a-f]{4,64}>$")


def nasty_text(workdir: Path) -> str:
    """Text that breaks naive quoting: non-ASCII (2/3/4-byte UTF-8), quotes, backslashes,
    real and escaped newlines, CR, tab, NUL, shell substitutions that would create a file
    in ``workdir`` if anything ever ran them."""
    return ("Ünïcödé “smart quotes” 日本語 🚀 — \"double\" 'single' back\\slash \\n "
            "not-a-newline\nreal newline\r\nCRLF\ttab \x00 nul \x7f del "
            f"$(touch {workdir}/pwned-dollar) `touch {workdir}/pwned-backtick` "
            "${HOME} %s %n \\\" \\\\ \"; echo -e \"\\x41\" ; data: [DONE]\n\n")


def large_text(size: int) -> str:
    unit = "Lorem ipsum dolor sit amet, café 日本語 — chunk of a very large prompt. "
    return (unit * (size // len(unit.encode()) + 1))[: size - 300]


def scenario(server: FakeServer, workdir: Path) -> list[ClientRecord]:
    """Send every request; return the ClientRecords of the chat completions."""
    base = server.base_url
    nasty = nasty_text(workdir)
    records: list[ClientRecord] = []

    log("keep-alive httpx connection: 5 chat completions + GET /v1/models")
    with HttpxChatClient(base, connection="httpx-keepalive") as ka:
        records.append(ka.chat("ka-nonstream", chat_body("ka-nonstream", "Hello there.")))
        records.append(ka.chat("ka-stream-usage", chat_body(
            "ka-stream-usage", "Stream with usage.", stream=True, include_usage=True,
            fake_tokens=24)))
        status, _ = ka.get("/v1/models")
        if status != 200:
            raise RuntimeError(f"GET /v1/models answered {status}")
        records.append(ka.chat("ka-stream-tools", chat_body(
            "ka-stream-tools", "Weather in Zürich?", stream=True, tools=[WEATHER_TOOL])))
        records.append(ka.chat("ka-nasty-nonstream", chat_body(
            "ka-nasty-nonstream", nasty, pretty=True, max_tokens=12)))
        records.append(ka.chat("ka-nonstream-tools", chat_body(
            "ka-nonstream-tools", "Weather in Kyoto?", tools=[WEATHER_TOOL],
            reasoning_tokens=0)))

    log("5 concurrent clients: 4 httpx connections + 1 curl")
    conc = [HttpxChatClient(base, connection=f"httpx-concurrent-{i}") for i in range(4)]
    try:
        calls = [
            lambda: [conc[0].chat("conc-stream-long", chat_body(
                "conc-stream-long", "A long one.", stream=True, fake_tokens=40,
                token_delay_ms=5))],
            lambda: [conc[1].chat("conc-stream-length", chat_body(
                "conc-stream-length", "Cut by max_tokens.", stream=True, max_tokens=30,
                token_delay_ms=4))],
            lambda: [conc[2].chat("conc-nonstream", chat_body(
                "conc-nonstream", "Not streamed, concurrent.", fake_tokens=20,
                token_delay_ms=5))],
            lambda: [conc[3].chat("conc-stream-nasty", chat_body(
                "conc-stream-nasty", nasty, stream=True, include_usage=True,
                reasoning_tokens=8, token_delay_ms=3))],
            lambda: curl_chat(base, [CurlRequest("curl-stream-nasty", chat_body(
                "curl-stream-nasty", nasty, stream=True, fake_tokens=30, token_delay_ms=4,
                pretty=True))], workdir / "curl", connection="curl-concurrent"),
        ]
        for result in run_concurrently(calls):
            records.extend(result)
    finally:
        for client in conc:
            client.close()

    log("curl: one non-streamed request, then two on one keep-alive connection (--next)")
    records += curl_chat(base, [CurlRequest("curl-nonstream", chat_body(
        "curl-nonstream", "From curl, not streamed."))], workdir / "curl", connection="curl-single")
    records += curl_chat(base, [
        CurlRequest("curl-ka-stream", chat_body("curl-ka-stream", "curl keep-alive 1",
                                                stream=True, include_usage=True)),
        CurlRequest("curl-ka-nonstream", chat_body("curl-ka-nonstream", "curl keep-alive 2")),
    ], workdir / "curl", connection="curl-keepalive")

    log("large bodies: ~1.5 MiB from curl (Expect: 100-continue), ~300 KB streamed by httpx")
    records += curl_chat(base, [CurlRequest("curl-large-1.5MiB", chat_body(
        "curl-large-1.5MiB", large_text(1536 * 1024), fake_tokens=8))],
        workdir / "curl", connection="curl-large")
    with HttpxChatClient(base, connection="httpx-large") as big:
        records.append(big.chat("httpx-large-300KB-stream", chat_body(
            "httpx-large-300KB-stream", large_text(300 * 1024), stream=True,
            include_usage=True)))
        log("a body that is not UTF-8 (latin-1 'café'): the server answers 400")
        bad = b'{"model":"m","messages":[{"role":"user","content":"[bad-utf8] caf\xe9 \xff\xfe"}]}'
        records.append(big.chat("bad-utf8-400", bad, stream=False))
    return records


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------

EXPECTED_STATUS = {"bad-utf8-400": 400}


def check_clients(c: Checker, server: FakeServer, records: list[ClientRecord]) -> None:
    """Harness self-check: the clients got what the fake model answers.  A failure here is
    a bug of the test harness (or of the fake server), not of chatcap."""
    shas = [r.sha256 for r in records]
    c.check(len(set(shas)) == len(shas), "HARNESS: two requests have the same body sha256")
    for r in records:
        what = f"HARNESS {r.label}"
        if not c.check(r.error is None, f"{what}: transport error {r.error}"):
            continue
        expected_status = EXPECTED_STATUS.get(r.label, 200)
        if not c.equal(f"{what}: status", expected_status, r.status) or expected_status != 200:
            continue
        plan = server.plan(r.body)
        c.equal(f"{what}: response is SSE iff a stream was asked", r.stream, r.is_sse)
        c.equal(f"{what}: content", plan.content if not plan.tool_calls else ("" if r.stream else None),
                r.answer.content)
        c.equal(f"{what}: reasoning", plan.reasoning, r.answer.reasoning)
        c.equal(f"{what}: finish_reason", plan.finish_reason, r.answer.finish_reason)
        c.equal(f"{what}: tool call arguments", [t.arguments for t in plan.tool_calls],
                [t["arguments"] for t in r.answer.tool_calls])
        if r.stream:
            c.check(r.answer.done, f"{what}: the stream did not end with [DONE]")
    groups: dict[str, list[ClientRecord]] = {}
    for r in records:
        groups.setdefault(r.connection, []).append(r)
    for name in ("httpx-keepalive", "curl-keepalive"):
        addrs = {r.client_addr for r in groups.get(name, [])}
        c.check(len(addrs) == 1 and None not in addrs,
                f"HARNESS: the {name} requests did not share one connection: {addrs}")
    conc_addrs = [r.client_addr for r in records if r.connection.startswith(("httpx-concurrent",
                                                                              "curl-concurrent"))]
    c.check(len(set(conc_addrs)) == 5, f"HARNESS: concurrent requests' connections: {conc_addrs}")
    large = next(r for r in records if r.label == "curl-large-1.5MiB")
    c.check(large.sent_expect_continue and large.got_100_continue,
            f"HARNESS: curl did not use Expect: 100-continue for the 1.5 MiB body "
            f"(sent {large.sent_expect_continue}, got 100 {large.got_100_continue})")
    overlap = [r for r in records if r.connection.startswith(("httpx-concurrent", "curl-concurrent"))]
    if overlap:
        latest_start = max(r.started for r in overlap)
        earliest_end = min(r.finished for r in overlap)
        c.check(latest_start < earliest_end,
                "HARNESS: the 'concurrent' requests did not overlap in time")


def check_capture(c: Checker, pcap: Path, port: int, records: list[ClientRecord],
                  stats: harness.CaptureStats) -> None:
    """The capture holds every request (tshark's view, independent of chatcap)."""
    c.equal("CAPTURE: packets dropped by the kernel", 0, stats.dropped)
    rows = harness.tshark_http_requests(pcap, port)
    posts = [r for r in rows if r["method"] == "POST" and r["uri"] == CHAT_PATH]
    gets = [r for r in rows if r["method"] == "GET" and r["uri"] == "/v1/models"]
    c.equal(f"CAPTURE: POST {CHAT_PATH} requests tshark finds in the capture",
            len(records), len(posts))
    c.equal("CAPTURE: GET /v1/models requests in the capture", 1, len(gets))
    c.check(harness.tshark_count(pcap, port, "http.response.code == 100") >= 1,
            "CAPTURE: no '100 Continue' response in the capture")
    log(f"capture: {len(posts)} chat requests, {len(rows)} HTTP requests in all, "
        f"{stats.captured} packets")


def check_chatcap(c: Checker, out: harness.ChatcapOutput, server: FakeServer,
                  records: list[ClientRecord], workdir: Path) -> None:
    """chatcap's records against what the clients sent and received."""
    c.check(out.returncode == 0, f"chatcap read exited with {out.returncode}; stderr: "
            f"{out.stderr.strip()[-2000:] or '(empty)'}")
    c.check(not out.bad_lines, f"chatcap printed lines that are not JSON objects: "
            f"{out.bad_lines[:5]}")
    c.check(SECRET.encode() not in out.stdout and SECRET not in out.stderr,
            f"the API key {SECRET!r} appears in clear in chatcap's output")
    for name in ("pwned-dollar", "pwned-backtick"):
        c.check(not (workdir / name).exists(), f"something executed a request body: {name} exists")

    requests = out.of_type("request")
    exchanges = out.of_type("exchange")
    log(f"chatcap: {len(out.records)} records ({len(requests)} request, {len(exchanges)} "
        f"exchange, types {sorted({str(r.get('type')) for r in out.records})})")
    c.equal("number of request records (one per chat completion sent)", len(records), len(requests))
    if not requests:
        c.fail(f"chatcap read wrote no request record at all (stdout {len(out.stdout)} B, "
               f"stderr: {out.stderr.strip()[-1000:] or '(empty)'}); per-request checks skipped")
        return
    for rec in out.records:
        if "target" in rec and rec.get("target") != CHAT_PATH:
            c.fail(f"record {rec.get('id')} has target {rec.get('target')!r}: only "
                   f"{CHAT_PATH} should be recorded by default")

    by_sha: dict[str, list[dict]] = {}
    for req in requests:
        try:
            body = harness.record_body_bytes(req)
        except (ValueError, TypeError) as exc:
            c.fail(f"request record {req.get('id')}: unreadable body: {exc}")
            continue
        sha = harness.sha256_hex(body) if body is not None else None
        by_sha.setdefault(sha or "<no body>", []).append(req)
    exchanges_by_id: dict[str, list[dict]] = {}
    for ex in exchanges:
        exchanges_by_id.setdefault(str(ex.get("id")), []).append(ex)

    sent = {r.sha256 for r in records}
    for sha, reqs in by_sha.items():
        if sha not in sent:
            sizes = [r.get("body_bytes") for r in reqs]
            c.fail(f"{len(reqs)} request record(s) whose body matches no request sent "
                   f"(ids {[r.get('id') for r in reqs]}, body_bytes {sizes}, "
                   f"body starts {str(reqs[0].get('body'))[:120]!r})")

    for r in records:
        what = r.describe()
        matches = by_sha.get(r.sha256, [])
        if not c.check(len(matches) == 1,
                       f"{what}: {len(matches)} request records with this body sha256 "
                       f"(expected 1)"):
            continue
        req = matches[0]
        check_request_record(c, what, req, r, server)
        exs = exchanges_by_id.get(str(req.get("id")), [])
        if not c.check(len(exs) == 1, f"{what}: {len(exs)} exchange records with id "
                                      f"{req.get('id')!r} (expected 1)"):
            continue
        check_exchange_record(c, what, exs[0], r)


def check_request_record(c: Checker, what: str, req: dict, r: ClientRecord,
                         server: FakeServer) -> None:
    c.equal(f"{what}: request.method", "POST", req.get("method"))
    c.equal(f"{what}: request.target", CHAT_PATH, req.get("target"))
    c.equal(f"{what}: request.body_bytes", len(r.body), req.get("body_bytes"))
    c.equal(f"{what}: request.server", server.address, req.get("server"))
    if r.client_addr:
        c.equal(f"{what}: request.client", r.client_addr, req.get("client"))
    if r.label == "bad-utf8-400":
        c.equal(f"{what}: request.body_encoding of a non-UTF-8 body", "base64",
                req.get("body_encoding"))
    auth = harness.header_values(req.get("headers"), "authorization")
    if c.check(len(auth) == 1, f"{what}: {len(auth)} Authorization headers in the request "
                               f"record (expected 1, redacted)"):
        c.check(bool(REDACTED.match(auth[0])),
                f"{what}: Authorization header is {auth[0]!r}, expected '<redacted sha256:...>'")
    c.check(harness.header_values(req.get("headers"), "content-type") == ["application/json"],
            f"{what}: Content-Type header missing or altered: {req.get('headers')!r:.300}")


def check_exchange_record(c: Checker, what: str, ex: dict, r: ClientRecord) -> None:
    c.equal(f"{what}: exchange.state", "complete", ex.get("state"))
    c.equal(f"{what}: exchange.status", r.status, ex.get("status"))
    if r.status != 200:
        return
    if r.stream:
        sse = ex.get("sse")
        if not c.check(isinstance(sse, dict), f"{what}: streamed exchange has no 'sse' object "
                                              f"(keys {sorted(ex)})"):
            return
        c.equal(f"{what}: sse.content", r.answer.content, sse.get("content"))
        c.equal(f"{what}: sse.reasoning", r.answer.reasoning, sse.get("reasoning") or "")
        c.check(sse.get("done") is True, f"{what}: sse.done is {sse.get('done')!r}, expected true")
        c.equal(f"{what}: sse.finish_reason", r.answer.finish_reason, sse.get("finish_reason"))
        c.check(sse.get("error") is None, f"{what}: sse.error is {sse.get('error')!r}")
        c.equal(f"{what}: sse.tool_calls arguments", [t["arguments"] for t in r.answer.tool_calls],
                tool_call_arguments(sse.get("tool_calls")))
        if r.answer.usage is not None:
            c.equal(f"{what}: sse.usage.completion_tokens", r.answer.usage.get("completion_tokens"),
                    (sse.get("usage") or {}).get("completion_tokens"))
    else:
        answer = ex.get("answer")
        if not c.check(isinstance(answer, dict), f"{what}: non-streamed exchange has no "
                                                 f"'answer' object (keys {sorted(ex)})"):
            return
        # A tool-call answer has "content": null; chatcap may write null or "".
        c.equal(f"{what}: answer.content", r.answer.content or "", answer.get("content") or "")
        c.equal(f"{what}: answer.reasoning", r.answer.reasoning, answer.get("reasoning") or "")
        if r.answer.tool_calls:
            c.equal(f"{what}: answer.tool_calls arguments",
                    [t["arguments"] for t in r.answer.tool_calls],
                    tool_call_arguments(answer.get("tool_calls")))
    # The response body: "<response bytes up to the cap>" -- which bytes exactly (de-chunked
    # or on-the-wire chunked) is not pinned down by the contract: warn only.
    try:
        body = harness.record_body_bytes(ex)
    except (ValueError, TypeError):
        body = None
    if body is not None and body != r.response_body:
        c.warn(f"{what}: exchange.body ({len(body)} B) differs from the de-chunked body the "
               f"client read ({len(r.response_body)} B)")


def tool_call_arguments(calls) -> list:
    """The ``arguments`` strings of a record's tool_calls, whatever their exact shape
    (``{"arguments": ...}`` or ``{"function": {"arguments": ...}}``)."""
    if not isinstance(calls, list):
        return [calls]
    out = []
    for call in calls:
        if isinstance(call, dict):
            fn = call.get("function") if isinstance(call.get("function"), dict) else call
            out.append(fn.get("arguments"))
        else:
            out.append(call)
    return out


# --------------------------------------------------------------------------------------

def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    workdir = harness.Workdir("read-real-capture", keep=args.keep)
    tmp = workdir.path
    try:
        run = harness.capture_scenario(tmp, scenario, mode="normal",
                                       pcap_name="real-capture.pcap", token_delay_ms=3)
        server, pcap, records = run.server, run.pcap, run.result
        log(f"sent {len(records)} chat completions")

        check_clients(c, server, records)
        check_capture(c, pcap, server.port, records, run.stats)

        problem = harness.check_chatcap_binary(args.chatcap)
        if problem:
            c.fail(f"cannot run chatcap: {problem}")
        else:
            out = harness.run_chatcap_read(args.chatcap, pcap, [server.port],
                                           ["--max-body", str(MAX_BODY)])
            if args.verbose:
                sys.stderr.write(out.stdout.decode("utf-8", "replace"))
            (tmp / "chatcap-read.jsonl").write_bytes(out.stdout)
            (tmp / "chatcap-read.stderr").write_text(out.stderr)
            log(f"ran: {' '.join(out.argv)} -> exit {out.returncode}")
            check_chatcap(c, out, server, records, tmp)
    except Exception as exc:  # noqa: BLE001 - reported as a failure with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    return c.report("test_read_real_capture")


if __name__ == "__main__":
    sys.exit(main())

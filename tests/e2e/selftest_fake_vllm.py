#!/usr/bin/python3
"""Self-test of the e2e harness: the fake vLLM server's modes behave as documented.

Not a chatcap test (CTest runs only ``test_*.py``); run it after changing
``fake_vllm.py``, ``clients.py`` or ``harness.py``:

    /usr/bin/python3 tests/e2e/selftest_fake_vllm.py [--keep]

Checks, each against a fresh server:

* normal      -- every client path (httpx/curl, stream or not, tools) gets the planned
                 answer; IPv4 and IPv6 listeners when ``::1`` is usable.
* crash       -- a poison request (``structured_outputs: {"json": null}``) makes the
                 process exit with status 1 ~crash-delay later; in-flight streams are cut
                 (no ``[DONE]``); the poison stream got its 200 headers and nothing else;
                 new connections are refused.
* engine_dead -- in-flight streams and the poison stream end with the SSE error event and
                 ``[DONE]``; later requests (chat, /health) get 500 naming EngineDeadError.
* idle_close  -- an idle keep-alive connection is closed by the server after ~1 s.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

import harness  # noqa: E402
from harness import (  # noqa: E402
    WEATHER_TOOL, Checker, CurlRequest, FakeServer, HttpxChatClient, chat_body, curl_chat,
    log, run_concurrently)

POISON = {"structured_outputs": {"json": None}}


def check_normal(c: Checker, tmp: Path) -> None:
    hosts = ["127.0.0.1"] + (["::1"] if ipv6_loopback() else [])
    with FakeServer(tmp, mode="normal", hosts=hosts) as server:
        with HttpxChatClient(server.base_url) as client:
            records = [
                client.chat("n-stream", chat_body("n-stream", stream=True, include_usage=True)),
                client.chat("n-plain", chat_body("n-plain", max_tokens=7)),
                client.chat("n-tools", chat_body("n-tools", stream=True, tools=[WEATHER_TOOL])),
                # normal mode answers a poison request like any other
                client.chat("n-poison", chat_body("n-poison", extra=POISON)),
            ]
        records += curl_chat(server.base_url, [
            CurlRequest("n-curl-stream", chat_body("n-curl-stream", stream=True)),
            CurlRequest("n-curl-plain", chat_body("n-curl-plain"))], tmp / "curl")
        for r in records:
            plan = server.plan(r.body)
            c.equal(f"normal {r.label}: status", 200, r.status)
            c.equal(f"normal {r.label}: content",
                    plan.content if not plan.tool_calls else "", r.answer.content or "")
            c.equal(f"normal {r.label}: reasoning", plan.reasoning, r.answer.reasoning)
            c.equal(f"normal {r.label}: tool args", [t.arguments for t in plan.tool_calls],
                    [t["arguments"] for t in r.answer.tool_calls])
            c.equal(f"normal {r.label}: finish", plan.finish_reason, r.answer.finish_reason)
            if r.stream:
                c.check(r.answer.done, f"normal {r.label}: no [DONE]")
        c.equal("normal: usage on request", 7 + 4, records[1].answer.usage["completion_tokens"])
        c.check(records[0].answer.usage is not None, "normal: include_usage gave no usage chunk")
        if "::1" in hosts:
            r = httpx.get(f"http://[::1]:{server.port}/health", trust_env=False)
            c.equal("normal: /health over IPv6", 200, r.status_code)
        log_text = server.log_path.read_text(errors="replace")
        c.check(harness.SECRET not in log_text, "normal: the server logged the API key")
        c.check("POST" not in log_text, f"normal: the server logged requests: {log_text[-300:]}")


def slow_stream(label: str) -> bytes:
    return chat_body(label, stream=True, fake_tokens=200, token_delay_ms=10)


def check_crash(c: Checker, tmp: Path) -> None:
    server = FakeServer(tmp, mode="crash", crash_delay_ms=150).start()
    try:
        clients = [HttpxChatClient(server.base_url, connection=f"c{i}") for i in range(3)]

        def poison_later():
            time.sleep(0.3)
            return clients[2].chat("crash-poison", chat_body("crash-poison", stream=True,
                                                             extra=POISON))
        t0 = time.monotonic()
        results = run_concurrently([
            lambda: clients[0].chat("crash-inflight-0", slow_stream("crash-inflight-0")),
            lambda: clients[1].chat("crash-inflight-1", slow_stream("crash-inflight-1")),
            poison_later])
        elapsed = time.monotonic() - t0
        for r in results[:2]:
            c.equal(f"crash {r.label}: status", 200, r.status)
            c.check(not r.answer.done, f"crash {r.label}: the stream was not cut")
            c.check(r.error is not None, f"crash {r.label}: no transport error at the cut")
            c.check(len(r.answer.content or "") > 0, f"crash {r.label}: no token before the cut")
        poison = results[2]
        c.equal("crash poison: status (headers sent)", 200, poison.status)
        c.equal("crash poison: events received", 0, poison.answer.events)
        c.check(elapsed < 3, f"crash: took {elapsed:.1f} s")
        server.proc.wait(timeout=5)
        c.equal("crash: server exit status", 1, server.proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            c.fail("crash: the port still accepts connections")
        except ConnectionRefusedError:
            c.check(True, "")
        events = [e["event"] for e in server.events()]
        c.check("crash" in events, f"crash: events log {events}")
        for cl in clients:
            cl.close()
    finally:
        server.stop()


def check_engine_dead(c: Checker, tmp: Path) -> None:
    with FakeServer(tmp, mode="engine_dead", crash_delay_ms=100) as server:
        clients = [HttpxChatClient(server.base_url, connection=f"d{i}") for i in range(4)]

        def poison_later():
            time.sleep(0.3)
            return clients[2].chat("dead-poison", chat_body("dead-poison", stream=True,
                                                            extra=POISON))

        def plain_inflight():
            return clients[3].chat("dead-plain", chat_body("dead-plain", fake_tokens=200,
                                                           token_delay_ms=10))
        results = run_concurrently([
            lambda: clients[0].chat("dead-inflight-0", slow_stream("dead-inflight-0")),
            lambda: clients[1].chat("dead-inflight-1", slow_stream("dead-inflight-1")),
            poison_later, plain_inflight])
        for r in results[:3]:
            c.equal(f"engine_dead {r.label}: status", 200, r.status)
            c.check(r.answer.done, f"engine_dead {r.label}: no [DONE] after the error")
            c.equal(f"engine_dead {r.label}: error event", "InternalServerError",
                    (r.answer.error or {}).get("type"))
            c.check(r.error is None, f"engine_dead {r.label}: transport error {r.error}")
        c.equal("engine_dead in-flight non-stream: status", 500, results[3].status)
        later = clients[0].chat("dead-later", chat_body("dead-later"))
        c.equal("engine_dead later request: status", 500, later.status)
        c.check(b"EngineDeadError" in later.response_body,
                f"engine_dead later body: {later.response_body[:200]!r}")
        r = httpx.get(server.base_url + "/health", trust_env=False)
        c.equal("engine_dead /health", 500, r.status_code)
        c.equal("engine_dead: server still running", None, server.proc.poll())
        for cl in clients:
            cl.close()


def check_idle_close(c: Checker, tmp: Path) -> None:
    with FakeServer(tmp, mode="idle_close") as server:
        with HttpxChatClient(server.base_url) as client:
            first = client.chat("idle-1", chat_body("idle-1"))
            second = client.chat("idle-2", chat_body("idle-2"))
            time.sleep(2.0)
            third = client.chat("idle-3", chat_body("idle-3"))
        c.equal("idle_close: back-to-back requests share the connection",
                first.client_addr, second.client_addr)
        c.check(third.client_addr != second.client_addr,
                "idle_close: the idle connection was not closed by the server")
        c.equal("idle_close: statuses", [200, 200, 200],
                [first.status, second.status, third.status])


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    workdir = harness.Workdir("selftest", keep=args.keep)
    try:
        for name, check in (("normal", check_normal), ("crash", check_crash),
                            ("engine_dead", check_engine_dead), ("idle_close", check_idle_close)):
            log(f"mode {name}")
            check(c, workdir.path)
    except Exception as exc:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        c.fail(f"the self-test broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    return c.report("selftest_fake_vllm")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Shipping the JSON Lines log to another host with Debian's rsyslog, as the README shows.

Two rsyslogd instances on loopback, each with a configuration of its own (the README's
recipe, examples/rsyslog-sender.conf and examples/rsyslog-receiver.conf, with this test's
paths and port filled in): the *sender* follows chatcap's log with imfile
(exchanges.jsonl, through chatcap's rotations) and forwards each line over TCP with
omfwd; the *receiver* (imtcp) writes each message's text to a file, one per line. chatcap
runs live (``--keep 3``, so the log rotates several times) while real clients send
requests to the fake vLLM. At the end every record chatcap wrote to exchanges.jsonl --
read back from the two files, in order -- is in the receiver's file, byte for byte and
whole (JSON that parses, the largest above rsyslog's default 8 KiB message size), and in
the same order.

Run: /usr/bin/python3 tests/e2e/test_rsyslog_shipping.py --chatcap build/chatcap
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

import harness  # noqa: E402
from harness import Checker, FakeServer, chat_body, log  # noqa: E402
from forensics import LiveChatcap, wait_until  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sender_conf(work: Path, log_dir: Path, port: int) -> str:
    """examples/rsyslog-sender.conf, the README's recipe, with this test's paths and port."""
    text = (EXAMPLES / "rsyslog-sender.conf").read_text()
    return (text.replace('global(maxMessageSize="16m")', f'global(workDirectory="{work}" maxMessageSize="16m")')
            .replace("/var/log/chatcap/", f"{log_dir}/").replace('"collector.example"', '"127.0.0.1"')
            .replace('port="6514"', f'port="{port}"'))


def receiver_conf(work: Path, port: int, out: Path) -> str:
    text = (EXAMPLES / "rsyslog-receiver.conf").read_text()
    return (text.replace('global(maxMessageSize="16m")', f'global(workDirectory="{work}" maxMessageSize="16m")')
            .replace('input(type="imtcp" port="6514"', f'input(type="imtcp" address="127.0.0.1" port="{port}"')
            .replace("/var/log/chatcap-fleet/%hostname%.jsonl", str(out)))


def start_rsyslog(name: str, conf: str, work: Path) -> subprocess.Popen:
    (work / name).mkdir(parents=True, exist_ok=True)
    conf_path = work / f"{name}.conf"
    conf_path.write_text(conf)
    check = subprocess.run(["rsyslogd", "-N1", "-f", str(conf_path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"rsyslogd -N1 refuses {conf_path}: {check.stderr[-800:]}")
    return subprocess.Popen(["rsyslogd", "-n", "-f", str(conf_path), "-i", str(work / f"{name}.pid")],
                            stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.stderr", "wb"))


def log_lines(log_dir: Path) -> list[str]:
    """chatcap's records, oldest first: exchanges.jsonl.1 then exchanges.jsonl (whole lines)."""
    lines: list[str] = []
    for name in ("exchanges.jsonl.1", "exchanges.jsonl"):
        path = log_dir / name
        if path.exists():
            data = path.read_text(encoding="utf-8", errors="surrogateescape")
            lines += [line for line in data.split("\n")[:-1] if line]
    return lines


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    problem = harness.check_chatcap_binary(args.chatcap)
    if problem or shutil.which("rsyslogd") is None:
        print(f"FAIL test_rsyslog_shipping: {problem or 'rsyslogd is not installed (scripts/install-deps)'}",
              file=sys.stderr)
        return 1
    workdir = harness.Workdir("rsyslog", keep=args.keep)
    procs: list[subprocess.Popen] = []
    try:
        work = workdir.path
        port = harness.free_port()
        received = work / "received.jsonl"
        log_dir = work / "log"
        log_dir.mkdir()
        procs.append(start_rsyslog("receiver", receiver_conf(work / "receiver", port, received), work))
        with FakeServer(work, mode="normal") as server:
            live = LiveChatcap(args.chatcap, server.port, log_dir, keep=3).start()
            procs.append(start_rsyslog("sender", sender_conf(work / "sender", log_dir, port), work))
            time.sleep(1.0)  # imfile has the file open before the first record
            try:
                with httpx.Client(trust_env=False, timeout=30) as client:
                    for i in range(10):
                        big = "x" * (20000 if i == 4 else 10)  # one record past 8 KiB
                        r = client.post(server.base_url + "/v1/chat/completions",
                                        content=chat_body(f"ship-{i}", big, stream=i % 2 == 0, fake_tokens=5))
                        c.equal(f"request {i} status", 200, r.status_code)
                wait_until(lambda: sum(1 for line in log_lines(log_dir) if '"type":"exchange"' in line) >= 6, 10)
                time.sleep(0.5)
            finally:
                c.equal("chatcap run's exit status", 0, live.stop())
        written = log_lines(log_dir)
        # Records of the files chatcap had rotated away before shipping ended are shipped
        # too: compare what was written to the two files left with the tail of what arrived.
        wait_until(lambda: received.exists() and
                   all(line in received.read_text(errors="surrogateescape") for line in written), 15)
        got = [line for line in received.read_text(errors="surrogateescape").split("\n") if line]
        c.check(len(written) >= 4, f"HARNESS: chatcap wrote only {len(written)} records")
        missing = [line[:120] for line in written if line not in got]
        c.equal("records of the log missing at the receiver", [], missing)
        positions = [got.index(line) for line in written if line in got]
        c.equal("received in the order written", sorted(positions), positions)
        for line in got:
            try:
                obj = json.loads(line)
            except ValueError:
                c.fail(f"a received line is not a whole record: {line[:160]!r}")
                continue
            c.check(isinstance(obj, dict) and obj.get("type") in ("request", "exchange", "server_down"),
                    f"a received line is not a chatcap record: {line[:160]!r}")
        c.check(any(len(line) > 8192 for line in got), "no record over 8 KiB was shipped (HARNESS or maxMessageSize)")
        # Through the rotations too: every exchange of the 10 requests arrived, even those
        # whose file chatcap has since dropped.
        shipped = {json.loads(line).get("id") for line in got if '"type":"exchange"' in line}
        c.equal("exchanges shipped (all 10, across rotations)", 10, len(shipped))
        log(f"{len(got)} records arrived at the receiver; {len(written)} in the log files at the end")
    except Exception as exc:  # noqa: BLE001 - reported with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        workdir.finish(ok=c.ok)
    return c.report("test_rsyslog_shipping")


if __name__ == "__main__":
    sys.exit(main())

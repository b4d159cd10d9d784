#!/usr/bin/python3
"""Checks of systemd/chatcap.service with systemd's own tools.

1. ``systemd-analyze verify systemd/chatcap.service`` exits 0 and says nothing about the
   unit (an unknown key, a bad value, a missing ExecStart binary are all reported on
   stderr).  verify requires the ExecStart binary (/usr/local/sbin/chatcap) to exist: if it
   does not, the test symlinks it to the built chatcap for its duration and removes the
   symlink afterwards (only the one it created).
2. ``systemd-analyze security --offline=true systemd/chatcap.service``: the "Overall
   exposure level" is at most 2.5 (printed).

Run: /usr/bin/python3 tests/e2e/test_systemd_unit.py --chatcap build/chatcap
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import Checker, log

MAX_EXPOSURE = 2.5
DEFAULT_EXEC = "/usr/local/sbin/chatcap"


def exec_start_binary(unit: Path) -> str:
    """The program of the unit's ExecStart= (prefixes like '-', '@', '+', '!' removed)."""
    for line in unit.read_text().splitlines():
        m = re.match(r"\s*ExecStart\s*=\s*(.+)", line)
        if m:
            words = shlex.split(m.group(1))
            if words:
                return words[0].lstrip("-@:+!|")
    return DEFAULT_EXEC


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", PAGER="cat", LC_ALL="C.UTF-8")
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=40,
                          check=False, env=env)


def check_verify(c: Checker, analyze: str, unit: Path) -> None:
    p = run([analyze, "verify", str(unit)])
    out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    log(f"systemd-analyze verify -> exit {p.returncode}{': ' + out if out else ''}")
    c.check(p.returncode == 0,
            f"`systemd-analyze verify {unit}` exited {p.returncode}: {out[-2000:] or '(no output)'}")
    about_unit = [line for line in out.splitlines() if unit.name in line]
    c.check(not about_unit, f"`systemd-analyze verify` complains about the unit: {about_unit[:10]}")


def check_security(c: Checker, analyze: str, unit: Path) -> None:
    p = run([analyze, "security", "--offline=true", str(unit)])
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace").strip()
    c.check(p.returncode == 0, f"`systemd-analyze security --offline=true` exited "
                               f"{p.returncode}: {err[-1500:] or out[-1500:]}")
    m = re.search(r"Overall exposure level for \S+:\s*([0-9]+(?:\.[0-9]+)?)", out)
    if not c.check(m is not None, f"no 'Overall exposure level' in the output of "
                                  f"`systemd-analyze security`: {(out + err)[-1500:]!r}"):
        return
    level = float(m.group(1))
    verdict = out[m.end():].splitlines()[0].strip() if out[m.end():] else ""
    print(f"systemd-analyze security: overall exposure level {level:.1f} {verdict}",
          file=sys.stderr, flush=True)
    worst = [line.strip() for line in out.splitlines()
             if line.lstrip().startswith("✗") and re.search(r"\s([0-9]\.[0-9])\s*$", line)]
    worst.sort(key=lambda line: -float(line.split()[-1]))
    for line in worst[:5]:
        log(f"  exposure: {re.sub(r'  +', '  ', line)}")
    c.check(level <= MAX_EXPOSURE,
            f"overall exposure level of chatcap.service is {level} (must be <= {MAX_EXPOSURE}); "
            f"the biggest contributors: {worst[:8]}")


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    started = time.monotonic()
    unit = Path(args.source_dir) / "systemd" / "chatcap.service"
    created: Path | None = None
    try:
        analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
        if not Path(analyze).exists():
            c.fail("systemd-analyze is not installed (Debian package systemd)")
        elif not c.check(unit.is_file(), f"{unit} does not exist"):
            pass
        else:
            binary = Path(exec_start_binary(unit))
            log(f"ExecStart binary: {binary}")
            if not os.path.lexists(binary):
                problem = harness.check_chatcap_binary(args.chatcap)
                if problem:
                    c.fail(f"{binary} does not exist and the built chatcap cannot stand in "
                           f"for it: {problem}")
                else:
                    binary.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(Path(args.chatcap).resolve(), binary)
                    created = binary
                    log(f"created the symlink {binary} -> {Path(args.chatcap).resolve()} "
                        f"for the test")
            elif not os.path.exists(binary):
                c.fail(f"{binary} is a dangling symlink (-> {os.readlink(binary)}): not "
                       f"touched; verify will fail")
            else:
                log(f"{binary} exists already"
                    f"{' (-> ' + os.readlink(binary) + ')' if binary.is_symlink() else ''}")
            check_verify(c, analyze, unit)
            check_security(c, analyze, unit)
    except Exception as exc:  # noqa: BLE001 - reported as a failure with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        if created is not None:
            try:
                created.unlink()
                log(f"removed the symlink {created}")
            except OSError as exc:
                c.fail(f"could not remove the symlink {created} this test created: {exc}")
    log(f"total {time.monotonic() - started:.1f} s")
    return c.report("test_systemd_unit")


if __name__ == "__main__":
    sys.exit(main())

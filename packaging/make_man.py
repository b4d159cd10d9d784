#!/usr/bin/python3
"""Writes chatcap.8 from chatcap's own help text (help2man), so the man page says what
`--help` says: the top-level help, then each command's `chatcap COMMAND --help` as a
subsection of COMMANDS.

    packaging/make_man.py BUILT_CHATCAP OUT.8
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

COMMANDS = ("run", "read", "last", "show", "suspects", "risks", "tail")


def roff(text: str) -> str:
    """Help text as roff lines: a leading '.' or "'" escaped, backslashes doubled, each
    line kept as it is (.nf), so the columns of the flag lists stay aligned."""
    out = []
    for line in text.splitlines():
        line = line.replace("\\", "\\e")
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def main() -> int:
    chatcap, target = sys.argv[1], Path(sys.argv[2])
    sections = ["[COMMANDS]"]
    for command in COMMANDS:
        help_text = subprocess.run([chatcap, command, "--help"], check=True, capture_output=True, text=True).stdout
        sections += [f'.SS "chatcap {command}"', ".nf", roff(help_text), ".fi"]
    sections += ["[FILES]", ".TP", ".B /etc/chatcap/chatcap.conf",
                 "the flags' defaults, the same keys as the flags (a conffile of the package)",
                 ".TP", ".B /var/log/chatcap/exchanges.jsonl, exchanges.jsonl.1",
                 "the ring: the last --keep exchanges of --endpoint paths, server deaths",
                 ".TP", ".B /var/log/chatcap/watched.jsonl, watched.jsonl.1",
                 "watched-only requests: POSTs on other paths (--keep-watched)",
                 "[SEE ALSO]", "systemctl(1), journalctl(1), tcpdump(8)"]
    with tempfile.NamedTemporaryFile("w", suffix=".h2m", delete=False) as include:
        include.write("\n".join(sections) + "\n")
    subprocess.run(["help2man", "--section=8", "--no-info", "--no-discard-stderr",
                    "--name=passive recorder of LLM API traffic (vLLM, OpenAI-compatible servers)",
                    f"--include={include.name}", f"--output={target}", chatcap], check=True)
    Path(include.name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

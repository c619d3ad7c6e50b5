#!/usr/bin/env python3
"""Prints the README's configuration tables from the binaries' own --help (so they cannot drift).

    cargo build --workspace --bins && scripts/config-table.py
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def table(binary: str) -> str:
    out = subprocess.run([str(ROOT / "target/debug" / binary), "--help"], capture_output=True,
                         text=True, check=True).stdout
    rows, flag, text = [], None, []

    def emit():
        if flag and flag not in ("--help", "--version"):
            body = " ".join(text)
            env = re.search(r"\[env: ([A-Z0-9_]+)(?:=[^\]]*)?\]", body)
            default = re.search(r"\[default: ([^\]]*)\]", body)
            desc = re.sub(r"\s*\[(env|default|possible values): [^\]]*\]", "", body).strip()
            possible = re.search(r"\[possible values: ([^\]]*)\]", body)
            if possible:
                desc += f" ({possible.group(1)})"
            rows.append(f"| `{flag}` | `{env.group(1) if env else ''}` | "
                        f"{'`' + default.group(1) + '`' if default else ''} | {desc} |")

    for line in out.splitlines():
        m = re.match(r"^\s+(?:-\w, )?(--[a-z0-9-]+)(?: <[A-Z_]+>)?\s*(.*)$", line)
        heading = re.match(r"^([A-Z][^:]*):$", line)
        if m:
            emit()
            flag, text = m.group(1), [m.group(2)] if m.group(2) else []
        elif heading:
            # A help heading (`Store (embedded mode):`): the flags below it form a group.
            emit()
            flag, text = None, []
            if heading.group(1) != "Options":
                rows.append(f"| **{heading.group(1)}** | | | |")
        elif flag and line.strip():
            text.append(line.strip())
    emit()
    return "| flag | environment | default | what |\n|---|---|---|---|\n" + "\n".join(rows)


if __name__ == "__main__":
    for b in sys.argv[1:] or ["broadcast-service", "primary-picture-service"]:
        print(f"### `{b}`\n\n{table(b)}\n")

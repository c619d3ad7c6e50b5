#!/usr/bin/env python3
"""Fails when two source files of one crate import each other, directly or round a longer loop
(issue 15: "no import cycles between files"). A file's imports are the `crate::a::b` paths it
names (in `use` or inline) and its `super::x` paths, resolved to the file that defines the
module; a parent module's `mod x;` declarations and `pub use` re-exports of its own children
are not counted (a module owns its submodules; that is a tree, not a cycle).

    scripts/check-cycles.py [WORKSPACE]   # every crate of the workspace (default: this one)
"""
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
CRATES = ["protocol", "process", "link", "primary-picture-service", "broadcast-service", "client"]


def module_of(src: Path, file: Path) -> list:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(src: Path, modules: dict, path: list):
    """The file defining the longest prefix of `path` (items live in their module's file)."""
    for n in range(len(path), 0, -1):
        key = tuple(path[:n])
        if key in modules:
            return modules[key]
    return None


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand_use_tree(prefix: list, tree: str) -> list:
    """`a::{b, c::d}` -> [[a, b], [a, c, d]] (enough for import paths)."""
    tree = tree.strip()
    m = re.match(r"^([\w:]*?)(?:::)?\{(.*)\}$", tree, flags=re.S)
    if not m:
        return [prefix + [p for p in tree.split("::") if p and p not in ("self", "*")]]
    head = [p for p in m.group(1).split("::") if p]
    body, depth, parts, cur = m.group(2), 0, [], ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            out += expand_use_tree(prefix + head, part)
    return out


def imports(src: Path, modules: dict, file: Path) -> set:
    me = module_of(src, file)
    text = strip_comments(file.read_text())
    found = set()
    paths = []
    for m in re.finditer(r"\buse\s+(crate|super|self)::([^;]+);", text):
        base = {"crate": [], "super": me[:-1], "self": me}[m.group(1)]
        if m.group(1) == "self" or file.name in ("mod.rs", "lib.rs", "main.rs") and m.group(1) == "self":
            base = me
        for p in expand_use_tree([], m.group(2)):
            paths.append(base + p)
    for m in re.finditer(r"\bcrate((?:::\w+)+)", text):
        paths.append([p for p in m.group(1).split("::") if p])
    for m in re.finditer(r"(?<![\w:])super((?:::\w+)+)", text):
        paths.append(me[:-1] + [p for p in m.group(1).split("::") if p])
    for path in paths:
        target = file_of(src, modules, path)
        if target is None or target == file:
            continue
        # A module naming its own descendants owns them: not an import back.
        if module_of(src, target)[: len(me)] == me:
            continue
        found.add(target)
    return found


def main() -> int:
    bad = []
    for crate in CRATES:
        src = ROOT / crate / "src"
        if not src.is_dir():
            continue
        files = [f for f in src.rglob("*.rs")]
        modules = {tuple(module_of(src, f)): f for f in files}
        graph = {f: imports(src, modules, f) for f in files}
        # Tarjan's strongly connected components.
        index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(comp)

        sys.setrecursionlimit(10000)
        for f in files:
            if f not in index:
                visit(f)
        for comp in comps:
            names = sorted(str(f.relative_to(ROOT)) for f in comp)
            bad.append(f"{crate}: files import each other: {', '.join(names)}")
        print(f"check-cycles: {crate}: {len(files)} files, {'no cycle' if not comps else f'{len(comps)} cycle(s)'}")
    for line in bad:
        print(f"check-cycles: FAIL: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks that the server's imports point one way.

Reads every `crate::…` and `super::…` path in src/ (a `use` line or a path
in code), and checks two rules:

1. The top-level modules form layers, and a module imports only from the
   layers below it (LAYERS, top first). A module not listed is an error,
   so that a new one is placed on purpose.
2. No import circle between files: the graph of file-to-file imports has
   no cycle (a module's `mod.rs` re-exporting its own files is not an
   import of them by the others).

Prints each violation and exits 1; prints a summary and exits 0 otherwise.
Usage: scripts/check-layers.py [SRC_DIR]
"""

import re
import sys
from pathlib import Path

# Top first. A module may import from any layer after its own. Modules in
# one tuple share a layer and must not import each other.
LAYERS = [
    ("main",),
    ("lib",),
    ("app",),
    ("server",),
    ("adapters",),
    ("http",),
    ("signaling",),
    ("analytics",),
    ("telemetry",),
    ("config",),
    ("protocol", "clock", "timefmt"),
]

RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_of(path: Path, src: Path) -> list[str]:
    """`src/signaling/connection/join.rs` -> ["signaling", "connection", "join"]."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts or ["lib"]


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def without_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod … { … }` blocks: tests may import what they test."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def targets(text: str, here: list[str], is_mod: bool) -> set[tuple[str, ...]]:
    """Every module path this file names, resolved to an absolute path."""
    found = set()
    # `use crate::a::{b, c::d}` names crate::a::b and crate::a::c::d.
    for m in USE_GROUP.finditer(text):
        base = m.group(1) + m.group(2)
        for item in re.split(r",", re.sub(r"\{[^}]*\}", "", m.group(3))):
            item = item.strip().split(" as ")[0].strip()
            if item and item != "self":
                found.add(resolve(f"{base}::{item}", here, is_mod))
            elif item == "self":
                found.add(resolve(base, here, is_mod))
    for m in PATH.finditer(text):
        found.add(resolve(m.group(0), here, is_mod))
    return {t for t in found if t}


def resolve(path: str, here: list[str], is_mod: bool) -> tuple[str, ...] | None:
    parts = path.split("::")
    if parts[0] == "crate":
        return tuple(parts[1:])
    # `super` in a mod.rs is the parent of the folder's module; in a file it
    # is the folder's module.
    base = list(here) if is_mod else list(here[:-1])
    while parts and parts[0] == "super":
        parts.pop(0)
        if parts and parts[0] == "super":
            base = base[:-1]
    if here == ["lib"]:
        base = []
    return tuple(base + parts)


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = {}
    for path in sorted(src.rglob("*.rs")):
        if "bin" in path.relative_to(src).parts:
            continue
        files[tuple(module_of(path, src))] = path
    problems = []
    edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in files}
    for module, path in files.items():
        text = without_tests(strip_comments(path.read_text()))
        top = module[0]
        if top not in RANK:
            problems.append(f"{path}: module `{top}` is in no layer of {Path(__file__).name}")
            continue
        for target in targets(text, list(module), path.name == "mod.rs"):
            if not target:
                continue
            other = target[0]
            if other not in RANK:
                continue
            if other != top and RANK[other] <= RANK[top]:
                problems.append(
                    f"{path}: `{top}` imports `{'::'.join(target)}` from a layer "
                    f"{'beside' if RANK[other] == RANK[top] else 'above'} it"
                )
            # The file the path lands in: the longest module prefix that is a file.
            for n in range(len(target), 0, -1):
                if target[:n] in files:
                    dest = target[:n]
                    break
            else:
                continue
            # A folder's mod.rs re-exporting its files is its front door, and
            # a file naming its own folder's front door is not a circle.
            is_front = path.name == "mod.rs" and dest[: len(module)] == module
            if dest != module and not is_front and module[: len(dest)] != dest:
                edges[module].add(dest)
    cycle = find_cycle(edges)
    if cycle:
        problems.append("import circle: " + " -> ".join("::".join(m) for m in cycle))
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"check-layers: {len(files)} files, {sum(map(len, edges.values()))} imports, "
          f"every import points down, no circle")
    return 0


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())

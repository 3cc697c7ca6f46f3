#!/usr/bin/env python3
"""Fail when two top-level modules of src/ import each other, directly or
through others (an import cycle). Reads `crate::<module>` paths in non-test
code (everything before a file's first `#[cfg(test)]`, and no file that is
itself a test module); `super::` stays inside a module and is not an edge.

Usage: scripts/check-cycles.py [SRC_DIR]   (default: src)
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src")
modules = sorted(
    {p.stem for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    | {p.name for p in src.iterdir() if p.is_dir()}
)
edges = {m: set() for m in modules}
uses = re.compile(r"crate::(\w+)")
grouped = re.compile(r"use crate::\{([^}]*)\}", re.S)

for path in src.rglob("*.rs"):
    rel = path.relative_to(src)
    owner = rel.parts[0].removesuffix(".rs")
    if owner not in edges or path.stem in ("tests", "fake"):
        continue
    text = path.read_text()
    text = text.split("#[cfg(test)]", 1)[0]
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    found = set(uses.findall(text))
    for group in grouped.findall(text):
        found |= {g.strip().split("::")[0] for g in group.split(",") if g.strip()}
    edges[owner] |= {m for m in found if m in edges and m != owner}

# No command imports another: each is a thin entry point over the library.
commands = src / "commands"
for path in sorted(commands.glob("*.rs")) if commands.is_dir() else []:
    text = path.read_text().split("#[cfg(test)]", 1)[0]
    others = {p.stem for p in commands.glob("*.rs")} - {path.stem, "mod"}
    for other in sorted(others):
        if re.search(rf"(super|crate::commands)::{other}\b", text):
            print(f"{path}: the command imports another command ({other})", file=sys.stderr)
            print("hint: move what both need into the library", file=sys.stderr)
            sys.exit(1)

# Depth-first search for a cycle; report the first one found.
WHITE, GREY, BLACK = 0, 1, 2
color = {m: WHITE for m in modules}
stack = []


def visit(m):
    color[m] = GREY
    stack.append(m)
    for n in sorted(edges[m]):
        if color[n] == GREY:
            return stack[stack.index(n):] + [n]
        if color[n] == WHITE:
            cycle = visit(n)
            if cycle:
                return cycle
    stack.pop()
    color[m] = BLACK
    return None


for m in modules:
    if color[m] == WHITE:
        cycle = visit(m)
        if cycle:
            print("import cycle between modules: " + " -> ".join(cycle), file=sys.stderr)
            print("hint: move the shared item into the lower module, or pass it in", file=sys.stderr)
            sys.exit(1)

print(f"no import cycle among {len(modules)} modules: "
      + "; ".join(f"{m} -> {', '.join(sorted(edges[m])) or '-'}" for m in modules))

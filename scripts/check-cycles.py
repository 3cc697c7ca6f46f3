#!/usr/bin/env python3
"""Fail when two top-level modules of src/ import each other, directly or
through others (an import cycle). Reads `crate::<module>` paths in non-test
code (everything before a file's first `#[cfg(test)]`, and no file that is
itself a test module); `super::` stays inside a module and is not an edge.

Then, inside every module folder (src/build/, src/stage/flink/, …), the same
between the files of that folder: an edge from `a.rs` to its sibling `b.rs`
when `a.rs` names `b` (`use super::b`, `super::b::f()`, `crate::build::b`, or
an item the folder's `mod.rs` re-exports from `b`); a file inside a subfolder
counts as the subfolder. Every loop is reported, each strongly connected set
of files with the lines that tie it. They fail only with --strict (issue 18:
`make lint STRICT_LINT=1`), so the build can be restructured first.

Usage: scripts/check-cycles.py [--strict] [SRC_DIR]   (default: src)
"""
import pathlib
import re
import sys

from rustsrc import is_test_file, line_of, mask, module_path, test_ranges

args = [a for a in sys.argv[1:] if a != "--strict"]
strict = "--strict" in sys.argv[1:]
src = pathlib.Path(args[0] if args else "src")
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
    if owner not in edges or is_test_file(rel):
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


# ---- files inside a module folder ----

USE = re.compile(r"\buse\s+([^;]+);")
INLINE = re.compile(r"\b(?:crate|super|self)(?:\s*::\s*\w+)+")


def use_paths(tree):
    """The paths a use tree names: `super::{a, b::{c, d as e}}` ->
    [super, a], [super, b, c], [super, b, d]."""
    tokens = re.findall(r"::|[{},*]|\w+", tree)
    pos = 0

    def parse(prefix):
        nonlocal pos
        out, path = [], list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                while pos < len(tokens) and tokens[pos] != "}":
                    out += parse(path)
                    if pos < len(tokens) and tokens[pos] == ",":
                        pos += 1
                pos += 1
                return out
            if t in (",", "}"):
                break
            if t == "as":
                pos += 2
                continue
            if t not in ("::", "*"):
                path = path + ([] if t == "self" and path else [t])
            pos += 1
        return out + ([path] if path != list(prefix) or not out and path else [])

    return parse([])


def folder_children(folder):
    """The sibling nodes of a module folder: its files (not mod.rs) and subfolders."""
    kids = set()
    for p in folder.iterdir():
        if p.is_dir() and p.name != "tests":
            kids.add(p.name)
        elif p.suffix == ".rs" and p.stem != "mod" and not is_test_file(p.relative_to(src)):
            kids.add(p.stem)
    return kids


def module_file(mod):
    """The file that holds module path `mod` (its mod.rs or NAME.rs)."""
    base = src.joinpath(*mod)
    for p in (base / "mod.rs", base.with_suffix(".rs")):
        if p.is_file():
            return p
    return None


folders = {tuple(module_path(src, d / "mod.rs")): d
           for d in sorted(p for p in src.rglob("*") if p.is_dir())
           if d.name != "tests" and any(d.glob("*.rs"))}
children = {mod: folder_children(d) for mod, d in folders.items()}


def references(path):
    """(absolute module path, line) of every path `path` names, test code left out."""
    code = mask(path.read_text())
    for a, b in test_ranges(code):
        code = code[:a] + "".join(c if c == "\n" else " " for c in code[a:b + 1]) + code[b + 1:]
    here = module_path(src, path)
    own = children.get(tuple(here), set())
    found = []
    spans = []
    for m in USE.finditer(code):
        spans.append((m.start(), m.end()))
        for segs in use_paths(m.group(1)):
            found.append((segs, line_of(code, m.start())))
    for m in INLINE.finditer(code):
        if not any(a <= m.start() < b for a, b in spans):
            found.append([re.findall(r"\w+", m.group(0)), line_of(code, m.start())])
    out = []
    for segs, line in found:
        if not segs:
            continue
        if segs[0] == "crate":
            base, rest = [], segs[1:]
        elif segs[0] in ("super", "self"):
            base, rest = list(here), list(segs)
            while rest and rest[0] in ("super", "self"):
                if rest.pop(0) == "super":
                    base = base[:-1]
        elif segs[0] in own:  # a child module, named relative to this one
            base, rest = list(here), segs
        else:
            continue
        out.append((base + rest, line))
    return out


def reexports(mod):
    """Names the module file of `mod` imports from its own children
    (`pub use layer::LayerBuild;`): a child's `super::LayerBuild` is `layer`."""
    path = module_file(list(mod))
    names = {}
    if path is None:
        return names
    for target, _ in references(path):
        if len(target) > len(mod) + 1 and tuple(target[:len(mod)]) == mod \
                and target[len(mod)] in children[mod]:
            names[target[-1]] = target[len(mod)]
    return names


exported = {mod: reexports(mod) for mod in folders}
loops = []
for mod, folder in folders.items():
    if not mod:
        continue  # src/ itself: the top-level check above
    graph = {k: {} for k in children[mod]}
    for path in sorted(folder.rglob("*.rs")):
        rel = path.relative_to(src)
        if is_test_file(rel) or path.parent == folder and path.stem == "mod":
            continue
        owner = module_path(src, path)[len(mod)]
        if owner not in graph:
            continue
        for target, line in references(path):
            if tuple(target[:len(mod)]) != mod or len(target) <= len(mod):
                continue
            node = target[len(mod)]
            if node not in graph:
                node = exported[mod].get(node)
            if node and node != owner:
                graph[owner].setdefault(node, f"{rel}:{line}")

    # Tarjan's strongly connected components.
    index, low, on, stack, sccs = {}, {}, set(), [], []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    for scc in sccs:
        ties = [f"{a} -> {b} ({graph[a][b]})" for a in scc for b in sorted(graph[a]) if b in scc]
        loops.append((folder, scc, ties))

where = f"{len(folders) - (() in folders)} module folders"
if not loops:
    print(f"no import loop between the files of {where}")
    sys.exit(0)
print(f"{len(loops)} import loop(s) between the files of {where}:")
for folder, scc, ties in loops:
    print(f"  {folder}/: {' <-> '.join(f'{n}' for n in scc)}")
    for t in ties:
        print(f"    {t}")
if strict:
    print("hint: move what both files need into one of them or a third file, or pass it in",
          file=sys.stderr)
    sys.exit(1)
print("(reported only; --strict fails on them)")

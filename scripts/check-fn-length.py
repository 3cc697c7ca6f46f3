#!/usr/bin/env python3
"""List the non-test Rust functions of src/ longer than a limit (80 lines by
default): file:line, name and length, longest first. A function's length runs
from its `fn` line to its closing brace, both counted; a function nested in
another counts in both. Test code is left out: `#[cfg(test)]` modules and
items, `#[test]`-like functions, `tests.rs`, files under a `tests/` folder and
the recording fake engine (`fake.rs`).

Reports only, unless --strict: then a function over the limit fails (exit 1).

Usage: scripts/check-fn-length.py [--strict] [--max N] [SRC_DIR]   (default: src)
"""
import argparse
import pathlib
import sys

from rustsrc import (ITEM_FN, TEST_ATTR, closing_brace, is_test_file, line_of, mask, preamble,
                     test_ranges)


def functions(path):
    """(name, first line, length in lines) of each function with a body in
    `path`, test code excluded."""
    code = mask(path.read_text())
    tests = test_ranges(code)
    found = []
    for m in ITEM_FN.finditer(code):
        if any(a <= m.start() <= b for a, b in tests) or TEST_ATTR.search(preamble(code, m.start())):
            continue
        # The body: the first `{` after the signature, unless a `;` ends it
        # first (a trait's declaration). Parentheses and brackets in the
        # signature hold no braces here.
        body, depth = None, 0
        for k in range(m.end(), len(code)):
            ch = code[k]
            if ch in "([":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif depth == 0 and ch == ";":
                break
            elif depth == 0 and ch == "{":
                body = k
                break
        if body is None:
            continue
        first = line_of(code, m.start())
        last = line_of(code, closing_brace(code, body))
        found.append((m.group(1), first, last - first + 1))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strict", action="store_true", help="fail when a function is over the limit")
    ap.add_argument("--max", type=int, default=80, help="the most lines a function may have (80)")
    ap.add_argument("src", nargs="?", default="src")
    args = ap.parse_args()
    src = pathlib.Path(args.src)
    long = []
    for path in sorted(src.rglob("*.rs")):
        if is_test_file(path.relative_to(src)):
            continue
        for name, line, length in functions(path):
            if length > args.max:
                long.append((length, f"{path}:{line}", name))
    long.sort(key=lambda f: (-f[0], f[1]))
    if not long:
        print(f"no non-test function over {args.max} lines in {src}")
        return 0
    print(f"{len(long)} non-test function(s) over {args.max} lines in {src}:")
    for length, where, name in long:
        print(f"  {length:4d} lines  {where}  {name}")
    if args.strict:
        print(f"hint: split each into named steps of at most {args.max} lines", file=sys.stderr)
        return 1
    print(f"(reported only; --strict fails on them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading Rust sources for the lint scripts (check-cycles.py, check-fn-length.py)
without a Rust parser: comments, strings and character literals masked out
(same length, same line breaks, so offsets and line numbers still hold), then
items found by their keywords and bodies by matching braces.

Not a parser: it knows what this crate writes (no macros defining functions,
no `fn` inside string-like macro input that survives masking).
"""
import pathlib
import re

_CHAR = re.compile(r"'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|.)|[^\\'\n])'")
_RAW = re.compile(r'b?r(#*)"')
_START = re.compile(r'//|/\*|"|\'|\bb?r#*"')


def mask(text):
    """`text` with every comment, string and char literal's content replaced by
    spaces (line breaks kept). Quotes stay, so `""` is still an expression."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        # Jump to the next place a comment, string or char literal may start.
        m = _START.search(text, i)
        if not m:
            break
        i = m.start()
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rb" and _RAW.match(text, i) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = _RAW.match(text, i)
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end
            blank(m.end(), end)
            i = end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        elif c == "'":
            m = _CHAR.match(text, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
            else:  # a lifetime or label
                i += 1
        else:
            i += 1
    return "".join(out)


def closing_brace(code, open_at):
    """The offset of the `}` matching the `{` at `open_at` in masked `code`."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code) - 1


def line_of(code, offset):
    return code.count("\n", 0, offset) + 1


# An item's keyword and name; its attributes and modifiers are before it
# (see `preamble`).
ITEM_FN = re.compile(r"\bfn\s+(\w+)")
ITEM_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
TEST_ATTR = re.compile(r"#\[\s*(?:cfg\s*\(\s*test\s*\)|(?:\w+::)*test\b)")


def preamble(code, at):
    """What precedes the item keyword at `at` in masked `code` back to the
    end of the previous item or the start of a block (`;`, `{` or `}`): its
    attributes and modifiers (`#[cfg(test)] pub(crate) async`)."""
    return code[max(code.rfind(c, 0, at) for c in ";{}") + 1:at]


def test_ranges(code):
    """Offset ranges of masked `code` that are test code: `#[cfg(test)]`
    inline modules (an item marked `#[cfg(test)]` or `#[test]` is told by
    its `preamble`)."""
    ranges = []
    for m in ITEM_MOD.finditer(code):
        if TEST_ATTR.search(preamble(code, m.start())):
            ranges.append((m.start(), closing_brace(code, m.end() - 1)))
    return ranges


def is_test_file(path):
    """Whole files of test code: `tests.rs`, anything under a `tests/`
    folder, and the recording fake engine (`fake.rs`)."""
    p = pathlib.PurePath(path)
    return p.stem in ("tests", "fake") or "tests" in p.parts[:-1]


def module_path(src, path):
    """The module path of a source file: src/a/b.rs -> ["a", "b"],
    src/a/mod.rs -> ["a"], src/lib.rs and src/main.rs -> []."""
    rel = pathlib.PurePath(path).relative_to(src)
    parts = list(rel.parts[:-1])
    stem = rel.stem
    if not (stem == "mod" or (not parts and stem in ("lib", "main"))):
        parts.append(stem)
    return parts

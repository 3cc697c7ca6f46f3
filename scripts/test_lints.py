#!/usr/bin/env python3
"""Tests of the lint scripts on small source trees written here: each lint
must find what it is for (a loop between files, a long function) and nothing
in test code, comments or strings. `make lint` runs them first."""
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = pathlib.Path(__file__).resolve().parent


def lint(script, src, *flags):
    return subprocess.run([sys.executable, str(HERE / script), *flags, str(src)],
                          capture_output=True, text=True)


def tree(files):
    d = tempfile.TemporaryDirectory()
    for name, text in files.items():
        p = pathlib.Path(d.name, "src", name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return d


class Cycles(unittest.TestCase):
    FILES = {
        "lib.rs": "pub mod build;\npub mod plan;\n",
        "plan.rs": "pub fn p() {}\n",
        "build/mod.rs": "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\npub use e::Thing;\nuse crate::plan;\n",
        # a <-> b through `use super::{..}` and an inline `super::a::` path
        "build/a.rs": "use super::{b, c};\npub fn f() { b::g(); }\n",
        "build/b.rs": "pub fn g() { super::a::f(); }\n",
        # c -> d (a crate:: path), d -> e (a name mod.rs re-exports from e): no loop
        "build/c.rs": "pub fn h() { crate::build::d::i(); }\n",
        "build/d.rs": "use super::Thing;\npub fn i() {}\n// super::c::h() in a comment\nconst S: &str = \"super::c::h\";\n",
        "build/e.rs": "pub struct Thing;\n#[cfg(test)]\nmod tests {\n    use super::super::d;\n}\n",
    }

    def test_every_loop_between_files_is_reported_and_fails_only_when_strict(self):
        with tree(self.FILES) as d:
            src = pathlib.Path(d, "src")
            r = lint("check-cycles.py", src)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("1 import loop(s)", r.stdout)
            self.assertIn("a <-> b", r.stdout)
            self.assertIn("build/a.rs:1", r.stdout)
            self.assertIn("build/b.rs:1", r.stdout)
            # d's mentions of c are a comment and a string; e's is test code.
            self.assertNotIn("d -> c", r.stdout)
            self.assertNotIn("e -> d", r.stdout)
            self.assertEqual(lint("check-cycles.py", src, "--strict").returncode, 1)

    def test_a_re_exported_name_ties_the_files(self):
        files = dict(self.FILES)
        # e uses d, d uses `super::Thing`, which mod.rs re-exports from e.
        files["build/e.rs"] = "pub struct Thing;\npub fn k() { super::d::i(); }\n"
        with tree(files) as d:
            r = lint("check-cycles.py", pathlib.Path(d, "src"))
            self.assertIn("d <-> e", r.stdout)
            self.assertIn("2 import loop(s)", r.stdout)

    def test_no_loop_no_failure(self):
        files = dict(self.FILES)
        files["build/b.rs"] = "pub fn g() {}\n"
        with tree(files) as d:
            r = lint("check-cycles.py", pathlib.Path(d, "src"), "--strict")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("no import loop", r.stdout)


def body(n):
    return "".join(f"    let x{i} = {i};\n" for i in range(n))


class Lengths(unittest.TestCase):
    def test_long_non_test_functions_are_listed_with_place_and_length(self):
        files = {
            "lib.rs": "pub mod a;\n",
            # 84 lines: a 4-line signature, 79 body lines, the closing brace.
            "a.rs": "//! A module.\n\npub async fn long<T: Into<u8>>(t: T) -> Result<(), String>\nwhere\n    T: Copy,\n{\n"
                    + body(77) + "    let s = \"}\"; let c = '}'; let l: &'static str = s;\n    Ok(())\n}\n"
                    + "fn short() {\n" + body(3) + "}\n"
                    + "trait T {\n    fn declared(&self);\n}\n"
                    + "#[cfg(test)]\nmod tests {\n    fn helper() {\n" + body(100) + "    }\n}\n",
            "b/tests.rs": "fn in_a_test_file() {\n" + body(100) + "}\n",
        }
        with tree(files) as d:
            src = pathlib.Path(d, "src")
            r = lint("check-fn-length.py", src)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("1 non-test function(s) over 80 lines", r.stdout)
            self.assertRegex(r.stdout, r"   84 lines  \S*a\.rs:3  long")
            self.assertNotIn("helper", r.stdout)
            self.assertNotIn("in_a_test_file", r.stdout)
            self.assertEqual(lint("check-fn-length.py", src, "--strict").returncode, 1)
            r = lint("check-fn-length.py", src, "--max", "84", "--strict")
            self.assertEqual(r.returncode, 0, r.stdout)


if __name__ == "__main__":
    unittest.main()

//! A requirements file as pip reads it (`req_file.py`: backslash
//! continuations, `#` comments, `${VAR}` left as written, per-line
//! `--hash`), narrowed to what direct mode decides exactly: every
//! requirement pins one version with `==`. Anything else (an unpinned or
//! ranged line, a URL or path, `-e`, `-r`/`-c`, an index or find-links
//! option) is refused here, naming the line, before anything is built.

use std::str::FromStr;

use pep440_rs::Operator;
use pep508_rs::{Requirement, VersionOrUrl};

use crate::error::{Error, Result};

/// One requirement line.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based, of the line the requirement starts on.
    pub number: usize,
    pub text: String,
    pub requirement: Requirement,
    /// `sha256:…` values of its `--hash` options (lowercase hex).
    pub hashes: Vec<String>,
}

impl Line {
    pub fn key(&self) -> String {
        crate::record::normalize(self.requirement.name.as_ref())
    }
}

#[derive(Debug, Clone, Default)]
pub struct File {
    pub lines: Vec<Line>,
    /// `--require-hashes`, or any line with `--hash`: pip's hash-checking mode.
    pub require_hashes: bool,
}

fn refuse(file: &str, number: usize, text: &str, reason: &str) -> Error {
    Error::DirectRefused {
        input: format!("{file} line {number} ({})", text.trim()),
        reason: reason.to_string(),
    }
}

/// Options pip accepts in a requirements file that change nothing here.
const HARMLESS: &[&str] = &["--no-index", "--pre", "--prefer-binary"];

/// Parse `text` (the file named `file` in messages).
pub fn parse(file: &str, text: &str) -> Result<File> {
    let mut out = File::default();
    for (number, line) in logical_lines(text) {
        let text = strip_comment(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let first_opt = tokens
            .iter()
            .position(|t| t.starts_with('-'))
            .unwrap_or(tokens.len());
        let (req_tokens, opts) = tokens.split_at(first_opt);
        let refuse = |reason: &str| refuse(file, number, text, reason);
        let options = options(opts).map_err(|reason| refuse(&reason))?;
        out.require_hashes |= options.require_hashes;
        if req_tokens.is_empty() {
            continue;
        }
        out.require_hashes |= !options.hashes.is_empty();
        let requirement = pinned(&req_tokens.join(" ")).map_err(|reason| refuse(&reason))?;
        out.lines.push(Line {
            number,
            text: text.to_string(),
            requirement,
            hashes: options.hashes,
        });
    }
    Ok(out)
}

/// The file's logical lines (backslash continuations joined), each with
/// the 1-based number of the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            current = Some((start, acc));
            continue;
        }
        acc.push_str(raw);
        logical.push((start, acc));
    }
    if let Some(c) = current {
        logical.push(c);
    }
    logical
}

/// `line` up to pip's COMMENT_RE: `#` at the start or after whitespace.
fn strip_comment(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '#' && (i == 0 || chars[i - 1].is_whitespace()) {
            return chars[..i].iter().collect();
        }
    }
    line.to_string()
}

/// What a line's options say.
#[derive(Default)]
struct Options {
    hashes: Vec<String>,
    require_hashes: bool,
}

/// A line's options, or why direct mode refuses one.
fn options(opts: &[&str]) -> std::result::Result<Options, String> {
    let mut out = Options::default();
    let mut i = 0;
    while i < opts.len() {
        let (name, value) = match opts[i].split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (opts[i], None),
        };
        // The option's value: after `=`, else the next token (consumed).
        let mut next = |value: Option<String>| match value {
            Some(v) => v,
            None => {
                i += 1;
                opts.get(i).map(|s| s.to_string()).unwrap_or_default()
            }
        };
        match name {
            "--hash" => match next(value).split_once(':') {
                Some(("sha256", h)) => out.hashes.push(h.to_ascii_lowercase()),
                Some((alg, _)) => {
                    return Err(format!(
                        "--hash with {alg}: direct mode checks sha256 hashes only"
                    ))
                }
                None => return Err("--hash needs ALGORITHM:HEX".into()),
            },
            "--require-hashes" => out.require_hashes = true,
            "--trusted-host" | "--only-binary" => {
                next(value);
            }
            n if HARMLESS.contains(&n) => {}
            other => return Err(refusal(other)),
        }
        i += 1;
    }
    Ok(out)
}

/// Why direct mode refuses option `name`.
fn refusal(name: &str) -> String {
    match name {
        "-e" | "--editable" => "an editable requirement is built from source".into(),
        "-r" | "--requirement" | "-c" | "--constraint" => {
            "it names another requirements or constraints file, which Beam does not stage".into()
        }
        "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links" => {
            "it names a package index or link, which direct mode does not reach (it installs from the staged cache only)".into()
        }
        "--no-binary" => "--no-binary asks pip to build from source".into(),
        _ => format!("option {name} is not one direct mode handles"),
    }
}

/// A PEP 508 requirement pinned to one version with `==`, or why not.
fn pinned(text: &str) -> std::result::Result<Requirement, String> {
    let requirement = Requirement::from_str(text)
        .map_err(|e| format!("not a PEP 508 requirement, or a path or URL pip would build: {e}"))?;
    match &requirement.version_or_url {
        Some(VersionOrUrl::VersionSpecifier(specs))
            if specs.len() == 1 && *specs[0].operator() == Operator::Equal =>
        {
            Ok(requirement)
        }
        Some(VersionOrUrl::Url(_)) => Err(
            "a direct URL: direct mode installs pinned requirements from the staged cache (name==version)".into(),
        ),
        _ => Err(
            "it is not pinned to one version with == (direct mode decides only what pip would with every line pinned; pin it, e.g. with `pip freeze`, or use --builder engine)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_lines_with_comments_markers_extras_and_hashes() {
        let f = parse(
            "requirements.txt",
            "# comment\npython-slugify==8.0.4  # trailing\nrequests[socks]==2.32.0 ; python_version >= \"3.8\" \\\n    --hash=sha256:ABCDEF --hash sha256:0123\n\n--no-index\nsix==1.16.0\n",
        )
        .unwrap();
        assert_eq!(f.lines.len(), 3);
        assert_eq!(f.lines[0].key(), "python-slugify");
        assert_eq!(f.lines[1].number, 3);
        assert_eq!(f.lines[1].hashes, ["abcdef", "0123"]);
        assert_eq!(f.lines[1].requirement.extras.len(), 1);
        assert!(f.require_hashes);
        assert_eq!(f.lines[2].number, 7);
    }

    #[test]
    fn an_unpinned_line_is_refused_naming_it() {
        for (text, why) in [
            ("six>=1.0\n", "not pinned"),
            ("six\n", "not pinned"),
            ("six==1.*\n", "not pinned"),
            ("six==1.0,<2\n", "not pinned"),
            ("six @ https://example.com/six.whl\n", "direct URL"),
            ("-e .\n", "editable"),
            ("-r other.txt\n", "another requirements"),
            (
                "--extra-index-url https://x/simple\nsix==1\n",
                "package index",
            ),
        ] {
            let e = parse("requirements.txt", &format!("tabulate==0.9.0\n{text}")).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("requirements.txt line 2"), "{m}");
            assert!(m.contains(why), "{text}: {m}");
        }
    }
}

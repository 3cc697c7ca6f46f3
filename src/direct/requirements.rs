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
const HARMLESS: &[&str] = &["--no-index", "--pre", "--prefer-binary", "--trusted-host"];

/// Parse `text` (the file named `file` in messages).
pub fn parse(file: &str, text: &str) -> Result<File> {
    let mut out = File::default();
    // Join continuation lines, remembering where each logical line starts.
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
    for (number, line) in logical {
        // pip's COMMENT_RE: `#` at the start or after whitespace.
        let mut text = line.clone();
        let bytes: Vec<char> = line.chars().collect();
        for (i, c) in bytes.iter().enumerate() {
            if *c == '#' && (i == 0 || bytes[i - 1].is_whitespace()) {
                text = bytes[..i].iter().collect();
                break;
            }
        }
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
        let mut hashes = Vec::new();
        let mut i = 0;
        while i < opts.len() {
            let o = opts[i];
            let (name, value) = match o.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (o, None),
            };
            match name {
                "--hash" => {
                    let v = match value {
                        Some(v) => v,
                        None => {
                            i += 1;
                            opts.get(i).map(|s| s.to_string()).unwrap_or_default()
                        }
                    };
                    match v.split_once(':') {
                        Some(("sha256", h)) => hashes.push(h.to_ascii_lowercase()),
                        Some((alg, _)) => {
                            return Err(refuse(
                                file,
                                number,
                                text,
                                &format!("--hash with {alg}: direct mode checks sha256 hashes only"),
                            ))
                        }
                        None => {
                            return Err(refuse(file, number, text, "--hash needs ALGORITHM:HEX"))
                        }
                    }
                }
                "--require-hashes" => out.require_hashes = true,
                n if HARMLESS.contains(&n) => {
                    if n == "--trusted-host" && value.is_none() {
                        i += 1;
                    }
                }
                "-e" | "--editable" => {
                    return Err(refuse(file, number, text, "an editable requirement is built from source"))
                }
                "-r" | "--requirement" | "-c" | "--constraint" => {
                    return Err(refuse(
                        file,
                        number,
                        text,
                        "it names another requirements or constraints file, which Beam does not stage",
                    ))
                }
                "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links" => {
                    return Err(refuse(
                        file,
                        number,
                        text,
                        "it names a package index or link, which direct mode does not reach (it installs from the staged cache only)",
                    ))
                }
                "--no-binary" => {
                    return Err(refuse(file, number, text, "--no-binary asks pip to build from source"))
                }
                "--only-binary" => {
                    if value.is_none() {
                        i += 1;
                    }
                }
                _ => {
                    return Err(refuse(
                        file,
                        number,
                        text,
                        &format!("option {name} is not one direct mode handles"),
                    ))
                }
            }
            i += 1;
        }
        if req_tokens.is_empty() {
            continue;
        }
        let req_text = req_tokens.join(" ");
        let requirement = Requirement::from_str(&req_text).map_err(|e| {
            refuse(
                file,
                number,
                text,
                &format!("not a PEP 508 requirement, or a path or URL pip would build: {e}"),
            )
        })?;
        match &requirement.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(specs))
                if specs.len() == 1 && *specs[0].operator() == Operator::Equal => {}
            Some(VersionOrUrl::Url(_)) => {
                return Err(refuse(
                    file,
                    number,
                    text,
                    "a direct URL: direct mode installs pinned requirements from the staged cache (name==version)",
                ))
            }
            _ => {
                return Err(refuse(
                    file,
                    number,
                    text,
                    "it is not pinned to one version with == (direct mode decides only what pip would with every line pinned; pin it, e.g. with `pip freeze`, or use --builder engine)",
                ))
            }
        }
        if !hashes.is_empty() {
            out.require_hashes = true;
        }
        out.lines.push(Line {
            number,
            text: text.to_string(),
            requirement,
            hashes,
        });
    }
    Ok(out)
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

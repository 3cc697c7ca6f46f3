//! Facts read out of the base's Python sources, the way the interpreter and
//! pip would compute them, without running either: the install schemes of
//! `sysconfig.py` (a dict literal), the build variables of
//! `_sysconfigdata_*.py`, which `site.py` layout the base has (Debian's
//! `dist-packages` or CPython's `site-packages`), pip's version, its script
//! template and whether its `is_local` is Debian's.

use std::collections::BTreeMap;

/// The string-valued entries of the dict literal assigned to `name`
/// (`_INSTALL_SCHEMES = {'posix_prefix': {'purelib': '…', …}, …}`): scheme →
/// key → template. Entries whose value is not a string literal are skipped.
pub fn install_schemes(source: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(start) = source.find("_INSTALL_SCHEMES = {") else {
        return out;
    };
    let tokens = tokenize(&source[start + "_INSTALL_SCHEMES = ".len()..]);
    // Walk: { 'scheme': { 'key': 'value', ... }, ... }
    let mut depth = 0usize;
    let mut scheme: Option<String> = None;
    let mut pending_key: Option<String> = None;
    let mut last_string: Option<String> = None;
    for t in tokens {
        match t {
            Token::Open => {
                depth += 1;
                if depth == 2 {
                    scheme = last_string.take();
                }
            }
            Token::Close => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    scheme = None;
                }
            }
            Token::Str(s) => {
                if depth == 2 {
                    if let Some(k) = pending_key.take() {
                        if let Some(sc) = &scheme {
                            out.entry(sc.clone())
                                .or_insert_with(BTreeMap::new)
                                .insert(k, s);
                        }
                        continue;
                    }
                }
                last_string = Some(s);
            }
            Token::Colon => {
                if depth == 2 {
                    pending_key = last_string.take();
                }
            }
            Token::Comma => {
                pending_key = None;
                last_string = None;
            }
            Token::Other => {
                if depth == 2 {
                    pending_key = None;
                }
            }
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    Colon,
    Comma,
    Str(String),
    Other,
}

/// Just enough of Python's tokenizer for dict literals of strings: string
/// literals (with `r`/`b`/`u` prefixes, no escapes needed by schemes),
/// brackets, colons, commas, comments. Stops at the bracket that closes the
/// first one.
fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        let c = b[i];
        match c {
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '{' | '[' | '(' => {
                depth += 1;
                out.push(Token::Open)
            }
            '}' | ']' | ')' => {
                depth -= 1;
                out.push(Token::Close);
                if depth <= 0 {
                    break;
                }
            }
            ':' => out.push(Token::Colon),
            ',' => out.push(Token::Comma),
            '\'' | '"' => {
                let q = c;
                let mut v = String::new();
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == '\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                // Adjacent literals concatenate.
                if let Some(Token::Str(prev)) = out.last_mut() {
                    prev.push_str(&v);
                } else {
                    out.push(Token::Str(v));
                }
            }
            c if c.is_whitespace() => {}
            'r' | 'b' | 'u' | 'R' | 'B' | 'U'
                if b.get(i + 1).is_some_and(|n| *n == '\'' || *n == '"') => {}
            _ => {
                if !matches!(out.last(), Some(Token::Other)) {
                    out.push(Token::Other);
                }
            }
        }
        i += 1;
    }
    out
}

/// `'KEY': 'value'` or `'KEY': 123` entries of a `_sysconfigdata_*.py`
/// `build_time_vars` dict (the first line of each; multi-line string values
/// keep their first part, which is all the index reads).
pub fn sysconfig_vars(source: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in source.lines() {
        let t = match line.split_once("= {") {
            Some((_, rest)) => rest,
            None => line,
        };
        let t = t.trim_start_matches(['{', ' ']).trim();
        let Some(rest) = t.strip_prefix('\'') else {
            continue;
        };
        let Some((key, value)) = rest.split_once("':") else {
            continue;
        };
        let v = value.trim().trim_end_matches([',', '}']).trim();
        let v = if let Some(s) = v.strip_prefix('\'') {
            s.split('\'').next().unwrap_or("").to_string()
        } else if let Some(s) = v.strip_prefix('"') {
            s.split('"').next().unwrap_or("").to_string()
        } else {
            v.to_string()
        };
        out.insert(key.to_string(), v);
    }
    out
}

/// Expand a scheme template (`{base}/lib/python{py_version_short}/site-packages`).
pub fn expand(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}') {
            Some(j) => {
                let key = &after[..j];
                match vars.get(key) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(key);
                        out.push('}');
                    }
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    normalize(&out)
}

/// `os.path.normpath` for absolute POSIX paths.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `__version__ = "23.0.1"` in a module's source.
pub fn dunder_version(source: &str) -> Option<String> {
    source.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("__version__")?.trim_start();
        let v = rest.strip_prefix('=')?.trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// distlib's `SCRIPT_TEMPLATE = r'''…'''` in pip's vendored `scripts.py`.
pub fn script_template(source: &str) -> Option<String> {
    let start = source.find("SCRIPT_TEMPLATE = ")?;
    let rest = &source[start + "SCRIPT_TEMPLATE = ".len()..];
    let rest = rest.strip_prefix('r').unwrap_or(rest);
    for q in ["'''", "\"\"\""] {
        if let Some(body) = rest.strip_prefix(q) {
            let end = body.find(q)?;
            return Some(body[..end].to_string());
        }
    }
    None
}

/// Whether pip's `is_local` is Debian's (paths under `/usr` are pip's only
/// inside the install scheme; the rest belongs to apt), rather than
/// upstream's (everything is local outside a virtual environment).
pub fn debian_is_local(misc_source: &str) -> bool {
    let Some(start) = misc_source.find("def is_local(") else {
        return false;
    };
    let body = &misc_source[start..];
    let end = body[1..].find("\ndef ").map_or(body.len(), |i| i + 1);
    let body = &body[..end];
    body.contains("get_scheme") && body.contains("'/usr'")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCONFIG: &str = r#"
_INSTALL_SCHEMES = {
    'posix_prefix': {
        'stdlib': '{installed_base}/{platlibdir}/python{py_version_short}',
        'purelib': '{base}/lib/python{py_version_short}/site-packages',
        'include':
            '{installed_base}/include/python{py_version_short}{abiflags}',
        'scripts': '{base}/bin',
        'data': '{base}',
        },
    # Debian's
    'posix_local': {
        'purelib': '{base}/local/lib/python{py_version_short}/dist-packages',
        'scripts': '{base}/local/bin',
        'data': '{base}/local',
        },
    }

if os.name == 'nt':
    _INSTALL_SCHEMES['venv'] = {'x': 'y'}
"#;

    #[test]
    fn schemes_are_read_from_the_dict_literal() {
        let s = install_schemes(SYSCONFIG);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(
            s["posix_prefix"]["include"],
            "{installed_base}/include/python{py_version_short}{abiflags}"
        );
        assert_eq!(s["posix_local"]["scripts"], "{base}/local/bin");
        let vars = BTreeMap::from([
            ("base", "/usr".to_string()),
            ("py_version_short", "3.11".to_string()),
        ]);
        assert_eq!(
            expand(&s["posix_local"]["purelib"], &vars),
            "/usr/local/lib/python3.11/dist-packages"
        );
        assert_eq!(expand("{base}/../x/./y", &vars), "/x/y");
    }

    #[test]
    fn sysconfig_vars_and_versions() {
        let v = sysconfig_vars(
            "build_time_vars = {'ABIFLAGS': '',\n 'MULTIARCH': 'x86_64-linux-gnu',\n 'Py_DEBUG': 0,\n 'SOABI': 'cpython-311-x86_64-linux-gnu',\n 'LONG': 'a b '\n         'c d'}\n",
        );
        assert_eq!(v["ABIFLAGS"], "");
        assert_eq!(v["MULTIARCH"], "x86_64-linux-gnu");
        assert_eq!(v["Py_DEBUG"], "0");
        assert_eq!(v["LONG"], "a b ");
        assert_eq!(
            dunder_version("x = 1\n__version__ = \"23.0.1\"\n").as_deref(),
            Some("23.0.1")
        );
        let t = script_template("SCRIPT_TEMPLATE = r'''# -*- coding: utf-8 -*-\nimport re\n'''\n")
            .unwrap();
        assert_eq!(t, "# -*- coding: utf-8 -*-\nimport re\n");
    }

    #[test]
    fn debian_is_local_is_told_from_upstreams() {
        let debian = "def is_local(path: str) -> bool:\n    prefix = '/usr'\n    from pip._internal.locations import get_scheme\n    return True\n\ndef other():\n    pass\n";
        let upstream = "def is_local(path: str) -> bool:\n    if not running_under_virtualenv():\n        return True\n    return path.startswith(normalize_path(sys.prefix))\n\ndef get_scheme(): pass\n";
        assert!(debian_is_local(debian));
        assert!(!debian_is_local(upstream));
    }
}

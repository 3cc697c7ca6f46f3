//! A project's page of a "simple" package index: PEP 503 (HTML, one anchor
//! per file) or PEP 691 (JSON, `application/vnd.pypi.simple.v1+json`), and
//! the choice among its files of the wheel pip would install for a pinned
//! requirement on a platform: the version pinned, the Python the page's
//! `requires-python` allows, the platform's tags in pip's order of
//! preference, then the higher build tag; unyanked files before yanked ones
//! (PEP 592 lets a `==` pin take a yanked file); with `--hash` values,
//! only the files whose index hash is allowed when any is (pip's
//! `filter_unallowed_hashes`).

use std::str::FromStr;

use pep440_rs::{Version, VersionSpecifiers};

use crate::direct::tags::{Supported, WheelName};

/// PEP 691's JSON media type.
pub const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// The `Accept` header pip sends: JSON first, HTML after.
pub const ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// One file a project page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub filename: String,
    /// As written on the page (relative to the page's URL, or absolute),
    /// without its fragment.
    pub url: String,
    /// Lowercase hex, from the `#sha256=` fragment or the JSON `hashes`.
    pub sha256: Option<String>,
    pub requires_python: Option<String>,
    pub yanked: bool,
}

/// The files of a PEP 691 JSON page; `None` when it is not one.
pub fn parse_json(body: &[u8]) -> Option<Vec<Link>> {
    let page: serde_json::Value = serde_json::from_slice(body).ok()?;
    let files = page["files"].as_array()?;
    Some(
        files
            .iter()
            .filter_map(|f| {
                let url = f["url"].as_str()?;
                Some(Link {
                    filename: f["filename"].as_str()?.to_string(),
                    url: url.split('#').next().unwrap_or(url).to_string(),
                    sha256: f["hashes"]["sha256"].as_str().map(str::to_ascii_lowercase),
                    requires_python: f["requires-python"].as_str().map(str::to_string),
                    // `true`, or a string giving the reason.
                    yanked: f["yanked"].as_bool().unwrap_or(false) || f["yanked"].is_string(),
                })
            })
            .collect(),
    )
}

/// The files of a PEP 503 HTML page: every `<a href=…>`; the file name is
/// the anchor's text (the URL's last segment when the text is empty).
pub fn parse_html(body: &str) -> Vec<Link> {
    let mut out = Vec::new();
    let lower = body.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<a").map(|i| from + i) {
        let Some(tag_end) = lower[at..].find('>').map(|i| at + i) else {
            break;
        };
        let attrs = attributes(&body[at + 2..tag_end]);
        let text_end = lower[tag_end..]
            .find("</a")
            .map_or(body.len(), |i| tag_end + i);
        from = text_end;
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let Some(href) = get("href") else {
            continue;
        };
        let (url, fragment) = match href.split_once('#') {
            Some((u, f)) => (u.to_string(), Some(f.to_string())),
            None => (href.clone(), None),
        };
        let text = unescape(body[tag_end + 1..text_end].trim());
        let filename = if text.is_empty() {
            let last = url.rsplit('/').next().unwrap_or_default();
            percent_decode(last)
        } else {
            text
        };
        out.push(Link {
            filename,
            url,
            sha256: fragment.and_then(|f| f.strip_prefix("sha256=").map(str::to_ascii_lowercase)),
            requires_python: get("data-requires-python"),
            yanked: get("data-yanked").is_some(),
        });
    }
    out
}

/// The attributes of a tag (`name="value"`, `name='value'`, `name=value`,
/// bare `name`), names lowercased, values unescaped.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = tag.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            i += 1;
        }
        let name: String = chars[start..i]
            .iter()
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            i += 1;
            continue;
        }
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            let quote = chars.get(i).copied().filter(|c| *c == '"' || *c == '\'');
            let vstart = if quote.is_some() { i + 1 } else { i };
            let mut j = vstart;
            while j < chars.len()
                && match quote {
                    Some(q) => chars[j] != q,
                    None => !chars[j].is_whitespace(),
                }
            {
                j += 1;
            }
            let value: String = chars[vstart..j.min(chars.len())].iter().collect();
            out.push((name, unescape(&value)));
            i = j + 1;
        } else {
            out.push((name, String::new()));
        }
    }
    out
}

/// HTML character references (named ones an index writes, and numeric).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let Some(end) = after.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = after;
            continue;
        };
        let entity = &after[..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e => e
                .strip_prefix("#x")
                .or_else(|| e.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `%XX` escapes of a URL segment decoded (invalid ones kept as written).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a pinned requirement allows: its normalised name, the pinned
/// version, the Python it runs on and its `--hash` values.
pub struct Wanted<'a> {
    pub key: &'a str,
    pub version: &'a Version,
    pub python: &'a Version,
    pub hashes: &'a [String],
}

/// The best wheel of `links` for `wanted` on the platform whose tags are
/// `supported`; `None` when the page has none.
pub fn choose<'a>(links: &'a [Link], wanted: &Wanted, supported: &Supported) -> Option<&'a Link> {
    let candidates: Vec<(&Link, usize, i64)> = links
        .iter()
        .filter_map(|l| {
            let w = WheelName::parse(&l.filename)?;
            if crate::record::normalize(&w.name) != wanted.key {
                return None;
            }
            if Version::from_str(&w.version).ok().as_ref() != Some(wanted.version) {
                return None;
            }
            if let Some(spec) = &l.requires_python {
                let ok = VersionSpecifiers::from_str(spec)
                    .map(|s| s.contains(wanted.python))
                    .unwrap_or(true);
                if !ok {
                    return None;
                }
            }
            let rank = supported.rank(&w)?;
            let build = w
                .build
                .as_deref()
                .and_then(|b| {
                    b.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .ok()
                })
                .unwrap_or(-1);
            Some((l, rank, build))
        })
        .collect();
    let allowed = |l: &Link| l.sha256.as_ref().is_some_and(|h| wanted.hashes.contains(h));
    let any_allowed = candidates.iter().any(|(l, ..)| allowed(l));
    candidates
        .into_iter()
        .filter(|(l, ..)| {
            wanted.hashes.is_empty() || !any_allowed || l.sha256.is_none() || allowed(l)
        })
        // Best: not yanked, then the best tag, then the higher build.
        .min_by_key(|(l, rank, build)| (l.yanked, *rank, -*build))
        .map(|(l, ..)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::tags::{cpython_tags, linux_platforms};

    const HTML: &str = r#"<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.1"></head><body>
<h1>Links for numpy</h1>
<a href="../../packages/numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl#sha256=AAAA" data-requires-python="&gt;=3.10">numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl</a><br/>
<A HREF='https://files.example/numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl#sha256=bbbb' data-dist-info-metadata="sha256=cc">numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl</A>
<a href="numpy-2.2.6-cp311-cp311-musllinux_1_2_aarch64.whl">numpy-2.2.6-cp311-cp311-musllinux_1_2_aarch64.whl</a>
<a href="numpy-2.2.6.tar.gz#sha256=dd">numpy-2.2.6.tar.gz</a>
<a href="numpy-2.2.5-cp311-cp311-manylinux_2_17_aarch64.whl" data-yanked="">numpy-2.2.5-cp311-cp311-manylinux_2_17_aarch64.whl</a>
<a href="numpy%2B-2.2.6-py3-none-any.whl"></a>
</body></html>"#;

    fn arm64() -> Supported {
        let mut platforms = linux_platforms("aarch64", (2, 17));
        platforms.retain(|p| !p.starts_with("linux_"));
        Supported::new(&cpython_tags(3, 11, "cp311", &platforms))
    }

    fn v(text: &str) -> Version {
        Version::from_str(text).unwrap()
    }

    #[test]
    fn html_pages_give_every_anchor_with_its_hash_and_attributes() {
        let links = parse_html(HTML);
        assert_eq!(links.len(), 6);
        assert_eq!(
            links[0].url,
            "../../packages/numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        );
        assert_eq!(links[0].sha256.as_deref(), Some("aaaa"));
        assert_eq!(links[0].requires_python.as_deref(), Some(">=3.10"));
        assert!(!links[0].yanked);
        assert!(links[1].url.starts_with("https://files.example/"));
        assert_eq!(links[1].sha256.as_deref(), Some("bbbb"));
        assert_eq!(links[2].sha256, None);
        assert!(links[4].yanked);
        assert_eq!(links[5].filename, "numpy+-2.2.6-py3-none-any.whl");
    }

    #[test]
    fn json_pages_give_files_hashes_and_yanked() {
        let body = br#"{"meta":{"api-version":"1.1"},"name":"numpy","files":[
            {"filename":"numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.whl","url":"https://f.example/a.whl#x=1","hashes":{"sha256":"ABCD"},"requires-python":">=3.10","yanked":false},
            {"filename":"numpy-2.2.6-cp311-cp311-manylinux_2_28_aarch64.whl","url":"b.whl","hashes":{},"yanked":"broken"}]}"#;
        let links = parse_json(body).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].url, "https://f.example/a.whl");
        assert_eq!(links[0].sha256.as_deref(), Some("abcd"));
        assert_eq!(links[0].requires_python.as_deref(), Some(">=3.10"));
        assert!(!links[0].yanked && links[1].yanked);
        assert!(parse_json(b"<html></html>").is_none());
    }

    #[test]
    fn the_wheel_for_the_platform_is_chosen_by_pips_preference() {
        let links = parse_html(HTML);
        let (version, python) = (v("2.2.6"), v("3.11.2"));
        let wanted = Wanted {
            key: "numpy",
            version: &version,
            python: &python,
            hashes: &[],
        };
        let got = choose(&links, &wanted, &arm64()).unwrap();
        assert!(
            got.filename.contains("manylinux_2_17_aarch64"),
            "{}",
            got.filename
        );
        // Python 3.9 is outside the x86_64 file's requires-python; no other
        // file serves x86_64 but the sdist, which is never chosen.
        let amd = Supported::new(&cpython_tags(
            3,
            11,
            "cp311",
            &linux_platforms("x86_64", (2, 17)),
        ));
        assert!(choose(&links, &wanted, &amd).is_some());
        let old = v("3.9.0");
        let w = Wanted {
            python: &old,
            ..wanted
        };
        assert!(choose(&links, &w, &amd).is_none());
        // 2.2.5 is only yanked: a == pin may still take it.
        let older = v("2.2.5");
        let w = Wanted {
            version: &older,
            python: &python,
            ..w
        };
        assert!(choose(&links, &w, &arm64()).unwrap().yanked);
        // No cp312 wheel for aarch64 at all.
        let cp312 = Supported::new(&cpython_tags(
            3,
            12,
            "cp312",
            &linux_platforms("aarch64", (2, 17)),
        ));
        let w = Wanted {
            version: &version,
            ..w
        };
        assert!(choose(&links, &w, &cp312).is_none());
    }

    #[test]
    fn hashes_pick_the_allowed_file_when_the_index_names_one() {
        let mk = |name: &str, hash: &str| Link {
            filename: name.into(),
            url: name.into(),
            sha256: Some(hash.into()),
            requires_python: None,
            yanked: false,
        };
        let links = vec![
            mk("x-1-cp311-cp311-manylinux_2_17_aarch64.whl", "11"),
            mk("x-1-py3-none-any.whl", "22"),
        ];
        let (version, python) = (v("1"), v("3.11.2"));
        let hashes = vec!["22".to_string()];
        let wanted = Wanted {
            key: "x",
            version: &version,
            python: &python,
            hashes: &hashes,
        };
        assert_eq!(
            choose(&links, &wanted, &arm64()).unwrap().sha256.as_deref(),
            Some("22")
        );
        // No file's hash allowed: the best one, whose download then fails the check.
        let other = vec!["33".to_string()];
        let wanted = Wanted {
            hashes: &other,
            ..wanted
        };
        assert_eq!(
            choose(&links, &wanted, &arm64()).unwrap().sha256.as_deref(),
            Some("11")
        );
    }

    #[test]
    fn entities_and_escapes_decode() {
        assert_eq!(unescape("a&amp;b&#62;&#x3c;&bogus;"), "a&b><&bogus;");
        assert_eq!(percent_decode("a%2Bb%zz%4"), "a+b%zz%4");
    }
}

//! One grammar for image references, the docker/OCI distribution rules, used
//! for every reference prebuilder takes (`--base`, `--boot-from`,
//! `--repository`, `--tag`) before any work starts, and for splitting the
//! references the engine lists. A refusal names the rule that was broken.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path            (at most 255 characters)
//! domain     := host [ ":" port ]              (the first component, when it has a
//!                                               "." or ":" or is "localhost")
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex              (e.g. sha256:…)
//! ```

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, when the reference names a registry.
    pub domain: Option<String>,
    /// The repository path within the registry (`team/sdk`).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// `[domain/]path`, the repository name as written.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Parse a full reference. `Err` says which rule was broken.
pub fn parse(reference: &str) -> Result<Reference, String> {
    if reference.is_empty() {
        return Err("a reference cannot be empty".into());
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => {
            check_digest(digest)?;
            (rest, Some(digest.to_string()))
        }
        None => (reference, None),
    };
    let (name, tag) = split_tag(rest);
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    let (domain, path) = split_domain(name);
    if let Some(domain) = domain {
        check_domain(domain)?;
    }
    check_path(path)?;
    if name.len() > 255 {
        return Err(format!(
            "the repository name is {} characters; at most 255 are allowed",
            name.len()
        ));
    }
    Ok(Reference {
        domain: domain.map(str::to_string),
        path: path.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// A repository name: a reference without tag or digest.
pub fn parse_repository(repository: &str) -> Result<Reference, String> {
    let r = parse(repository)?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(
            "a repository has no tag or digest (\":tag\" after the last \"/\", or \"@\")".into(),
        );
    }
    Ok(r)
}

/// `name[:tag]` → (name, tag): the tag is after the last `:` that is not
/// part of a registry's `host:port` (no `/` after it).
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => {
            (&reference[..i], Some(&reference[i + 1..]))
        }
        _ => (reference, None),
    }
}

/// The docker CLI's rule: the first component is a registry host when it
/// has a `.` or `:` or is `localhost`.
pub fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            (Some(host), rest)
        }
        _ => (None, name),
    }
}

/// A tag: up to 128 letters, digits, `_ . -`, not starting with `.` or `-`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > 128 {
        return Err("a tag is 1 to 128 characters".into());
    }
    if !tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("tag {tag:?} must start with a letter, digit or _"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!("tag {tag:?} may hold only letters, digits, _ . -"));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || domain.starts_with('[') => (h, Some(p)),
        _ => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("the registry port in {domain:?} must be a number"));
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the registry host {host:?} must be dot-separated letters, digits and inner -"
        ))
    }
}

fn check_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err(
                "a repository path has no empty component (no leading, trailing or double /)"
                    .into(),
            );
        }
        if !valid_component(component) {
            return Err(format!(
                "component {component:?} must be lowercase letters and digits, separated by . _ __ or -"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ((. | _ | __ | -+) [a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) {
        return false;
    }
    let bytes: Vec<char> = c.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep: String = bytes[start..i].iter().collect();
        if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|ch| ch == '-')) {
            return false;
        }
    }
    true
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must be algorithm:hex, e.g. sha256:…"
        ));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-')
        });
    if !algorithm_ok || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {digest:?} must be algorithm:hex, e.g. sha256:…"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_references_split_into_their_parts() {
        let r = parse("localhost:5000/team/sdk:2.77.0@sha256:abcd").unwrap();
        assert_eq!(r.domain.as_deref(), Some("localhost:5000"));
        assert_eq!(r.path, "team/sdk");
        assert_eq!(r.tag.as_deref(), Some("2.77.0"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(r.name(), "localhost:5000/team/sdk");
        let r = parse("apache/beam_python3.11_sdk:2.77.0").unwrap();
        assert_eq!(
            (r.domain, r.path.as_str()),
            (None, "apache/beam_python3.11_sdk")
        );
        assert!(parse("nvcr.io/nvidia/pytorch:24.01-py3").is_ok());
        assert!(parse("[::1]:5000/a").is_ok());
    }

    #[test]
    fn each_broken_rule_is_named() {
        for (bad, rule) in [
            ("", "empty"),
            ("Upper/Case:1", "lowercase"),
            ("a//b", "empty component"),
            ("rel/a..b", "component \"a..b\""),
            ("host:port/x", "port"),
            ("a b", "lowercase"),
            ("x:", "1 to 128"),
            ("x:.bad", "must start"),
            ("x@sha256", "algorithm:hex"),
            ("bad_host_/x", "lowercase"),
            ("-a", "lowercase"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(rule), "{bad:?}: {e}");
        }
        assert!(parse(&"a".repeat(256)).unwrap_err().contains("255"));
    }

    #[test]
    fn repositories_have_no_tag() {
        assert!(parse_repository("localhost:5000/beam").is_ok());
        assert!(parse_repository("x:5000").unwrap_err().contains("no tag"));
        assert!(parse_repository("x@sha256:ab").is_err());
    }

    #[test]
    fn tags_split_after_the_last_colon_outside_the_host() {
        assert_eq!(
            split_tag("localhost:5000/a/b:tag"),
            ("localhost:5000/a/b", Some("tag"))
        );
        assert_eq!(
            split_tag("localhost:5000/a/b"),
            ("localhost:5000/a/b", None)
        );
        assert_eq!(split_tag("repo:t"), ("repo", Some("t")));
    }

    #[test]
    fn separators_follow_the_distribution_rules() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "0"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["a..b", "a___b", "a_-b", ".a", "a.", "A", ""] {
            assert!(!valid_component(bad), "{bad}");
        }
    }
}

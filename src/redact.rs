//! Credentials out of every line prebuilder prints or stores.
//!
//! Secrets reach prebuilder in places it does not control: a direct-URL
//! requirement (`pkg @ https://user:TOKEN@host/pkg.whl`), an index URL with
//! a token, a signed download link. pip echoes them in its own output, which
//! prebuilder relays, and they would end up in error summaries and records.
//! One function scrubs a line of text, wherever it comes from: the userinfo
//! of every URL in it and the values of query parameters that carry secrets.

use std::borrow::Cow;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query parameters whose values are secrets (compared case-insensitively).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "auth_token",
    "id_token",
    "refresh_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "key",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// `text` with the userinfo of every URL and every secret query value
/// replaced by [`MASK`]. Borrowed when there was nothing to hide.
pub fn redact(text: &str) -> Cow<'_, str> {
    let without_userinfo = redact_userinfo(text);
    match redact_query_values(&without_userinfo) {
        Cow::Borrowed(_) => without_userinfo,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// `scheme://user:pass@host/…` -> `scheme://***@host/…`, for every URL.
fn redact_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let after = &rest[sep + 3..];
        // The authority ends at the path, query or fragment, or where the URL does.
        let end = after
            .find(|c: char| ends_url(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(after.len());
        out.push_str(&rest[..sep + 3]);
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str(MASK);
                out.push_str(&after[at..end]);
                changed = true;
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// `?token=x&page=2` -> `?token=***&page=2`, wherever a query appears: pip
/// also prints bare paths (`/pkg.whl?token=…`) in its retry warnings.
fn redact_query_values(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    for (at, _) in text.match_indices(['?', '&']) {
        if at < copied {
            continue;
        }
        let name_start = at + 1;
        let name_len = text[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(text.len() - name_start);
        let name = &text[name_start..name_start + name_len];
        let value_start = name_start + name_len + 1;
        if !text[name_start + name_len..].starts_with('=') || !is_secret_param(name) {
            continue;
        }
        let value_len = text[value_start..]
            .find(|c: char| ends_url(c) || matches!(c, '&' | '#'))
            .unwrap_or(text.len() - value_start);
        if value_len == 0 {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(MASK);
        copied = value_start + value_len;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Characters that cannot be part of a URL as pip and shells print them.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}' | ',')
}

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines pip really prints, or prebuilder's own summaries of them.
    const CORPUS: &[(&str, &str)] = &[
        (
            "Collecting pkg@ https://user:s3cr3tTOKEN@host.example/pkg-1.0.whl",
            "Collecting pkg@ https://***@host.example/pkg-1.0.whl",
        ),
        (
            "  ERROR: Could not install requirement pkg from https://s3cr3tTOKEN@host/p.whl because",
            "  ERROR: Could not install requirement pkg from https://***@host/p.whl because",
        ),
        (
            "Looking in indexes: https://__token__:s3cr3tTOKEN@pypi.example/simple, https://pypi.org/simple",
            "Looking in indexes: https://***@pypi.example/simple, https://pypi.org/simple",
        ),
        (
            "WARNING: Retrying (...) 'https://host/simple/pkg/?token=s3cr3tTOKEN&page=2'",
            "WARNING: Retrying (...) 'https://host/simple/pkg/?token=***&page=2'",
        ),
        (
            "download https://b.example/x.whl?X-Amz-Signature=s3cr3tTOKEN&X-Amz-Date=1#sha256=ab",
            "download https://b.example/x.whl?X-Amz-Signature=***&X-Amz-Date=1#sha256=ab",
        ),
        (
            "git+https://oauth2:s3cr3tTOKEN@gitlab.example/g/p.git@v1#egg=p",
            "git+https://***@gitlab.example/g/p.git@v1#egg=p",
        ),
        (
            "after connection broken by 'X': /private_pkg-1.0-py3-none-any.whl?token=s3cr3tTOKEN",
            "after connection broken by 'X': /private_pkg-1.0-py3-none-any.whl?token=***",
        ),
        (
            "Max retries exceeded with url: /p.whl?a=1&Password=s3cr3tTOKEN (Caused by X)",
            "Max retries exceeded with url: /p.whl?a=1&Password=*** (Caused by X)",
        ),
        (
            "(https://u:s3cr3tTOKEN@h/a) and [ssh://git:s3cr3tTOKEN@h:22/r]",
            "(https://***@h/a) and [ssh://***@h:22/r]",
        ),
    ];

    #[test]
    fn corpus_is_scrubbed() {
        for (line, want) in CORPUS {
            let got = redact(line);
            assert_eq!(got, *want, "{line}");
            assert!(!got.contains("s3cr3tTOKEN"), "{got}");
        }
    }

    #[test]
    fn lines_without_secrets_are_borrowed_unchanged() {
        for line in [
            "Successfully installed slugify-8.0.4",
            "Looking in links: /opt/apache/beam/artifacts",
            "see https://pip.pypa.io/en/stable/topics/?x=1#y for details",
            "ratio 3://4",
        ] {
            assert!(matches!(redact(line), Cow::Borrowed(_)), "{line}");
        }
    }

    #[test]
    fn email_like_text_outside_urls_is_kept() {
        assert_eq!(redact("mail dev@example.com"), "mail dev@example.com");
        // An `@` after the host is a path, not userinfo.
        assert_eq!(redact("https://host/p.git@v1 x"), "https://host/p.git@v1 x");
    }

    #[test]
    fn every_url_in_a_line() {
        let got = redact("a https://a:b@x/ b https://c:d@y/?password=e c");
        assert_eq!(got, "a https://***@x/ b https://***@y/?password=*** c");
    }
}

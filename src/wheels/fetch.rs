//! Talking to a package index over HTTP: a project's page (JSON asked for
//! first, HTML accepted) and a file's download, with HTTP basic credentials
//! from the index URL's userinfo or the netrc file, sent only to the
//! index's own host and port. The credentials live in [`Index`] apart
//! from its URL: every message names the index by its URL without them,
//! and any text from the HTTP client goes through [`crate::redact`] too.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::Url;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::simple::{self, Link};
use crate::error::{Error, Result};

/// One index: its URL without credentials, and the credentials.
#[derive(Clone)]
pub struct Index {
    url: Url,
    credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("url", &self.url.as_str())
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Index {
    /// `url` as pip takes it; credentials from its userinfo, else from the
    /// netrc text for its host.
    pub fn parse(url: &str, netrc: Option<&str>) -> Result<Index> {
        let mut parsed = Url::parse(url.trim()).map_err(|e| Error::PackageIndex {
            index: crate::redact::redact(url).into_owned(),
            action: "reading its URL".into(),
            reason: e.to_string(),
            hint: "name the index as an http(s) URL, e.g. https://pypi.example/simple".into(),
            retry: false,
        })?;
        let user = simple::percent_decode(parsed.username());
        let password = parsed.password().map(simple::percent_decode);
        let credentials = match (user.is_empty(), password) {
            (false, Some(p)) => Some((user, p)),
            // A token as the user name alone, as pip allows.
            (false, None) => Some((user, String::new())),
            (true, _) => parsed
                .host_str()
                .and_then(|h| netrc.and_then(|t| super::netrc::lookup(t, h))),
        };
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        Ok(Index {
            url: parsed,
            credentials,
        })
    }

    /// The URL, never with credentials: what messages name.
    pub fn shown(&self) -> String {
        let base = self.url.as_str();
        base.strip_suffix('/').unwrap_or(base).to_string()
    }

    fn page(&self, project: &str) -> Result<Url> {
        self.url
            .join(&format!("{project}/"))
            .map_err(|e| self.failed(format!("the page of {project}"), e.to_string(), false))
    }

    /// A request to `url`, with the index's credentials when `url` is on
    /// the index's own scheme, host and port.
    fn get(&self, client: &reqwest::Client, url: &Url) -> reqwest::RequestBuilder {
        let request = client.get(url.clone());
        let same = url.scheme() == self.url.scheme()
            && url.host_str() == self.url.host_str()
            && url.port_or_known_default() == self.url.port_or_known_default();
        match (&self.credentials, same) {
            (Some((user, password)), true) => request.basic_auth(user, Some(password)),
            _ => request,
        }
    }

    fn failed(&self, action: String, reason: String, retry: bool) -> Error {
        Error::PackageIndex {
            index: self.shown(),
            action,
            reason: crate::redact::redact(&reason).into_owned(),
            hint: if retry {
                "check that the index is up and reachable from this machine, then run again".into()
            } else {
                "check the index URL (PIP_INDEX_URL, pip.conf, or the requirements file's --index-url)".into()
            },
            retry,
        }
    }

    fn answer(&self, action: String, status: reqwest::StatusCode) -> Error {
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Error::PackageIndex {
                index: self.shown(),
                action,
                reason: format!("HTTP {status}: {}", if self.credentials.is_some() { "the credentials were refused" } else { "it wants credentials, and none are configured" }),
                hint: "give the credentials in the index URL (https://USER:PASSWORD@host/simple, e.g. in PIP_INDEX_URL) or in ~/.netrc (NETRC names another file); prebuilder never prints them".into(),
                retry: false,
            };
        }
        self.failed(action, format!("HTTP {status}"), status.is_server_error())
    }

    /// The files of `project`'s page (`project` normalised); empty when the
    /// index does not have the project (HTTP 404).
    pub async fn links(&self, client: &reqwest::Client, project: &str) -> Result<Vec<(Url, Link)>> {
        let url = self.page(project)?;
        let action = format!("reading the page of {project}");
        let response = self
            .get(client, &url)
            .header(reqwest::header::ACCEPT, simple::ACCEPT)
            .send()
            .await
            .map_err(|e| self.failed(action.clone(), chain(&e), true))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !response.status().is_success() {
            return Err(self.answer(action, response.status()));
        }
        // Relative links resolve against the page's final URL (after redirects).
        let page = response.url().clone();
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(simple::JSON));
        let body = response
            .bytes()
            .await
            .map_err(|e| self.failed(action.clone(), chain(&e), true))?;
        let links = match json {
            true => simple::parse_json(&body).ok_or_else(|| {
                self.failed(
                    action,
                    "its PEP 691 JSON page has no files list".into(),
                    false,
                )
            })?,
            false => simple::parse_html(&String::from_utf8_lossy(&body)),
        };
        Ok(links
            .into_iter()
            .filter_map(|l| Some((page.join(&l.url).ok()?, l)))
            .collect())
    }

    /// Download `url` into `dir/<sha256 hex>/<filename>` (kept there: the
    /// cache by content), unless a file of a digest `known` beforehand (the
    /// index's hash, else the requirement's `--hash` values) is there
    /// already; the file's path and its sha256. A download whose sha256 is
    /// not the index's, or that `check` refuses, is removed and refused.
    pub async fn download(
        &self,
        client: &reqwest::Client,
        (url, link): (&Url, &Link),
        (dir, known): (&Path, &[String]),
        check: &dyn Fn(&str) -> Result<()>,
    ) -> Result<(PathBuf, String)> {
        for hex in known {
            let cached = dir.join(hex).join(&link.filename);
            // Read again: a file changed in the cache is downloaded anew.
            if file_sha256(&cached).as_ref() == Some(hex) && check(hex).is_ok() {
                return Ok((cached, hex.clone()));
            }
        }
        let action = format!("downloading {}", link.filename);
        let response = self
            .get(client, url)
            .send()
            .await
            .map_err(|e| self.failed(action.clone(), chain(&e), true))?;
        if !response.status().is_success() {
            return Err(self.answer(action, response.status()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let part = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        let mut file =
            tokio::fs::File::from_std(part.reopen().map_err(|e| Error::io(part.path(), e))?);
        let mut hasher = Sha256::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(action.clone(), chain(&e), true))?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(part.path(), e))?;
        }
        file.flush().await.map_err(|e| Error::io(part.path(), e))?;
        drop(file);
        let hex = format!("{:x}", hasher.finalize());
        if let Some(expected) = &link.sha256 {
            if *expected != hex {
                return Err(Error::PackageIndex {
                    index: self.shown(),
                    action,
                    reason: format!("its sha256 is {hex}, but the index says {expected}"),
                    hint: "the file changed on its way or on the index: run again, and tell the index's owners if it repeats; nothing was built".into(),
                    retry: false,
                });
            }
        }
        check(&hex)?;
        let target_dir = dir.join(&hex);
        std::fs::create_dir_all(&target_dir).map_err(|e| Error::io(&target_dir, e))?;
        let target = target_dir.join(&link.filename);
        part.persist(&target)
            .map_err(|e| Error::io(&target, e.error))?;
        Ok((target, hex))
    }
}

/// The sha256 of the file at `path`; `None` when it cannot be read.
fn file_sha256(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(format!("{:x}", hasher.finalize()))
}

/// An error and its sources, `: `-joined ([`crate::error::chain`]),
/// credentials redacted.
fn chain(e: &dyn std::error::Error) -> String {
    crate::redact::redact(&crate::error::chain(e)).into_owned()
}

/// The HTTP client for indexes: the host's root certificates plus the
/// bundle pip's `cert` names (PIP_CERT), redirects followed (credentials
/// dropped on another host, as reqwest does).
pub fn client(cert: Option<&Path>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("prebuilder/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30));
    if let Some(path) = cert {
        let pem = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| Error::PackageIndex {
        index: String::new(),
        action: "making the HTTP client".into(),
        reason: chain(&e),
        hint: "check PIP_CERT / pip.conf's cert: it must name a PEM bundle".into(),
        retry: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_userinfo_or_netrc_and_are_never_shown() {
        let i = Index::parse("https://__token__:s3cr%40t@pypi.example/simple", None).unwrap();
        assert_eq!(i.shown(), "https://pypi.example/simple");
        assert_eq!(i.credentials, Some(("__token__".into(), "s3cr@t".into())));
        let debug = format!("{i:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        let e = i.answer(
            "reading the page of x".into(),
            reqwest::StatusCode::UNAUTHORIZED,
        );
        let text = format!("{e} {}", e.hint().unwrap_or_default());
        assert!(!text.contains("s3cr"), "{text}");
        assert!(text.contains("https://pypi.example/simple"), "{text}");
        assert!(text.contains("credentials were refused"), "{text}");
        let e = i.failed(
            "x".into(),
            "error sending request for url (https://u:s3cr3t@pypi.example/simple/x/)".into(),
            true,
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert_eq!(e.exit_code(), 3);

        let netrc = "machine pypi.example login nu password np\n";
        let n = Index::parse("http://pypi.example:8080/simple", Some(netrc)).unwrap();
        assert_eq!(n.credentials, Some(("nu".into(), "np".into())));
        assert_eq!(n.shown(), "http://pypi.example:8080/simple");
        assert_eq!(
            n.page("numpy").unwrap().as_str(),
            "http://pypi.example:8080/simple/numpy/"
        );
        let none = Index::parse("http://other.example/simple/", Some(netrc)).unwrap();
        assert!(none.credentials.is_none());
        assert!(Index::parse("not a url", None).is_err());
    }

    #[test]
    fn credentials_go_only_to_the_index_s_own_host() {
        let i = Index::parse("http://u:p@127.0.0.1:9/simple", None).unwrap();
        let client = reqwest::Client::new();
        let auth = |url: &str| {
            i.get(&client, &Url::parse(url).unwrap())
                .build()
                .unwrap()
                .headers()
                .contains_key(reqwest::header::AUTHORIZATION)
        };
        assert!(auth("http://127.0.0.1:9/packages/x.whl"));
        assert!(!auth("http://127.0.0.1:10/packages/x.whl"));
        assert!(!auth("https://127.0.0.1:9/x.whl"));
        assert!(!auth("http://files.example/x.whl"));
    }
}

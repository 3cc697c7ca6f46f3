//! What a failed registry call becomes: the registry's answer (its status
//! and its own words, read from the JSON `errors` body the distribution API
//! defines) or the broken exchange, kept as the error's typed source, so a
//! 5xx exits as a retry and the user reads what the registry said.

use reqwest::{Response, StatusCode};

use super::Registry;
use crate::error::{Error, RegistryCause};

/// The most of a registry's words a message carries.
const MESSAGE_LIMIT: usize = 300;

impl Registry {
    /// The error for an answer the call did not expect (`action`: what was
    /// being done): 401 and 403 by what they mean, any other status with
    /// what the registry said in its body.
    pub(super) async fn failure(&self, resp: Response, action: String) -> Error {
        let status = resp.status();
        match status {
            StatusCode::UNAUTHORIZED => Error::RegistryUnauthorized {
                registry: self.repo.registry.clone(),
                with_credentials: self.credential.is_some(),
            },
            StatusCode::FORBIDDEN => Error::RegistryDenied {
                registry: self.repo.registry.clone(),
                repository: self.repo.path.clone(),
            },
            _ => {
                // A body that cannot be read says nothing: the status still does.
                let body = resp.bytes().await.unwrap_or_default();
                Error::Registry {
                    registry: self.repo.registry.clone(),
                    action,
                    source: RegistryCause::Status {
                        status,
                        message: message(&body),
                    },
                }
            }
        }
    }

    /// The error for an exchange that broke (no answer, or a body cut short).
    pub(super) fn unreachable(&self, e: reqwest::Error) -> Error {
        Error::RegistryUnreachable {
            registry: self.repo.registry.clone(),
            source: RegistryCause::Http(e),
        }
    }
}

/// What a registry's error body says: each entry of its JSON `errors` as
/// the docker CLI shows it (`blob unknown: blob unknown to registry`, the
/// code lowercased, with a string `detail` after it), else its text with
/// whitespace folded; `None` when empty. At most [`MESSAGE_LIMIT`] characters.
pub(super) fn message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let text = match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .map(|e| {
                let code = e.code.to_lowercase().replace('_', " ");
                let mut one = match (code.is_empty(), e.message.is_empty()) {
                    (false, false) => format!("{code}: {}", e.message),
                    (true, _) => e.message.clone(),
                    (false, true) => code,
                };
                if let Some(d) = e.detail.as_str().filter(|d| !d.trim().is_empty()) {
                    one.push_str(&format!(" ({})", d.trim()));
                }
                one
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut shown: String = text.chars().take(MESSAGE_LIMIT).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::super::{BlobBody, RepositoryRef};
    use super::*;
    use crate::error::EXIT_UNAVAILABLE;

    #[test]
    fn the_registrys_own_words_are_kept() {
        let body = br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry","detail":"session 4f"},{"code":"UNKNOWN","message":"unknown error","detail":{"k":1}}]}"#;
        assert_eq!(
            message(body).as_deref(),
            Some("blob upload unknown: blob upload unknown to registry (session 4f); unknown: unknown error")
        );
        assert_eq!(
            message(b"<html>\n<h1>502 Bad Gateway</h1>\n</html>\n").as_deref(),
            Some("<html> <h1>502 Bad Gateway</h1> </html>")
        );
        assert_eq!(message(b""), None);
        assert_eq!(message(b"  \n"), None);
        let long = message(&vec![b'x'; 1000]).unwrap();
        assert_eq!(long.chars().count(), MESSAGE_LIMIT + 1);
    }

    /// A registry on loopback that answers each request by its method and
    /// path: `answer` gives the status, extra headers and body. A real HTTP
    /// server (tiny_http), so our client is exercised as it is.
    struct Server {
        addr: String,
        server: std::sync::Arc<tiny_http::Server>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    type Answer = (u16, Vec<(&'static str, String)>, String);

    impl Server {
        fn start(answer: impl Fn(&str, &str) -> Answer + Send + 'static) -> Server {
            let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let addr = server.server_addr().to_ip().unwrap().to_string();
            let s = server.clone();
            let thread = std::thread::spawn(move || {
                for mut request in s.incoming_requests() {
                    // Read the body before answering, as a registry does.
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(request.as_reader(), &mut sink);
                    let method = request.method().to_string();
                    let (status, headers, body) = answer(&method, request.url());
                    let mut response =
                        tiny_http::Response::from_string(body).with_status_code(status);
                    for (k, v) in headers {
                        response.add_header(
                            tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                        );
                    }
                    let _ = request.respond(response);
                }
            });
            Server {
                addr,
                server,
                thread: Some(thread),
            }
        }

        fn registry(&self) -> Registry {
            Registry::new(RepositoryRef::parse(&format!("{}/team/x", self.addr)), None).unwrap()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    const BODY: &str = r#"{"errors":[{"code":"UNKNOWN","message":"storage backend is down"}]}"#;
    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Every answer is `status` with the JSON body, but upload sessions
    /// open (202) when `open_uploads`, so the `PUT` is what fails.
    fn failing(status: u16, open_uploads: bool) -> Server {
        Server::start(move |method, url| match (method, url) {
            ("POST", u) if open_uploads && u.contains("/blobs/uploads/") => (
                202,
                vec![("Location", "/v2/team/x/blobs/uploads/s1?_state=a".into())],
                String::new(),
            ),
            _ => (
                status,
                vec![("Content-Type", "application/json".into())],
                BODY.into(),
            ),
        })
    }

    fn assert_retryable(e: &Error, status: u16, with_body: bool) {
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE, "{e}");
        let shown = e.to_string();
        assert!(shown.contains(&status.to_string()), "{shown}");
        assert_eq!(
            shown.contains("unknown: storage backend is down"),
            with_body,
            "{shown}"
        );
        assert!(
            matches!(
                e,
                Error::Registry {
                    source: RegistryCause::Status { .. },
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// Issue 18: a 5xx on a blob, an upload start or a manifest exited 2,
    /// and two messages dropped the registry's body.
    #[tokio::test]
    async fn a_5xx_on_every_call_is_a_retry_with_the_registrys_words() {
        for status in [500, 502, 503] {
            let server = failing(status, false);
            let r = server.registry();
            // HEAD answers carry no body: the status alone.
            assert_retryable(&r.blob_exists(DIGEST).await.unwrap_err(), status, false);
            assert_retryable(&r.manifest_digest("k").await.unwrap_err(), status, false);
            let dir = tempfile::tempdir().unwrap();
            let dst = dir.path().join("blob");
            assert_retryable(
                &r.download_blob(DIGEST, &dst).await.unwrap_err(),
                status,
                true,
            );
            assert_retryable(
                &r.upload_blob(DIGEST, BlobBody::Bytes(b""))
                    .await
                    .unwrap_err(),
                status,
                true,
            );
            assert_retryable(
                &r.mount_blob(DIGEST, "team/base").await.unwrap_err(),
                status,
                true,
            );
            assert_retryable(&r.manifest("k").await.unwrap_err(), status, true);
            let manifest = super::super::RawManifest {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: b"{}".to_vec(),
                digest: DIGEST.into(),
            };
            assert_retryable(
                &r.put_manifest("k", &manifest).await.unwrap_err(),
                status,
                true,
            );
            // The upload's PUT, once its session is open.
            let server = failing(status, true);
            let e = server
                .registry()
                .upload_blob(DIGEST, BlobBody::Bytes(b""))
                .await
                .unwrap_err();
            assert_retryable(&e, status, true);
        }
    }

    #[tokio::test]
    async fn a_refusal_is_not_a_retry_and_says_why() {
        let server = Server::start(|_, _| {
            (
                400,
                vec![],
                r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}"#.into(),
            )
        });
        let e = server.registry().manifest("k").await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
        assert!(
            e.to_string()
                .ends_with("HTTP 400 Bad Request: manifest invalid: manifest invalid"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn no_answer_is_unreachable_with_the_clients_causes() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Registry::new(
            RepositoryRef::parse(&format!("127.0.0.1:{port}/team/x")),
            None,
        )
        .unwrap();
        let e = r.blob_exists(DIGEST).await.unwrap_err();
        assert_eq!(e.exit_code(), EXIT_UNAVAILABLE, "{e}");
        assert!(
            matches!(
                &e,
                Error::RegistryUnreachable {
                    source: RegistryCause::Http(_),
                    ..
                }
            ),
            "{e:?}"
        );
        // reqwest names the request; the refusal is deeper in its chain.
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    }
}

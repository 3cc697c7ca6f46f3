//! Registries: where a repository lives, the user's credentials for it (found
//! the way the docker CLI finds them), and the registry API calls prebuilder
//! makes itself: a manifest `HEAD`, which answers "is this key already built
//! somewhere?"; manifests read and put (`manifest`); and the blobs of a push
//! (`blobs`): prebuilder pushes what it built itself, so the digest of a
//! result is the same whichever engine built it.
//!
//! Credentials stay in memory: they go into request headers only, never into
//! a message, a log line, the report or the image.

use std::path::Path;
use std::time::Duration;

use oci_spec::image::MediaType;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use crate::error::{Error, RegistryCause, Result};

mod blobs;
mod failure;
pub mod image_ref;
mod manifest;
pub mod reference;
pub mod referrers;

pub use blobs::BlobBody;
pub use image_ref::ImageRef;
pub use manifest::{
    image_layers, oci_manifest, ImageLayers, LayerBlob, RawManifest, OCI_LAYER_GZIP,
};

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key docker's config.json uses for Docker Hub.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A repository split into registry host and path, e.g.
/// `localhost:5000/team/sdk` → (`localhost:5000`, `team/sdk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRef {
    /// As written (`docker.io` when the repository names no host).
    pub registry: String,
    pub path: String,
    /// Whether the repository named its registry explicitly.
    pub explicit: bool,
}

impl RepositoryRef {
    /// The docker CLI's rule: the first component is a registry host when it
    /// has a `.` or `:` or is `localhost`.
    pub fn parse(repository: &str) -> RepositoryRef {
        match reference::split_domain(repository) {
            (Some(host), rest) => RepositoryRef {
                registry: host.to_string(),
                path: rest.to_string(),
                explicit: true,
            },
            (None, _) => RepositoryRef {
                registry: DOCKER_HUB.to_string(),
                path: if repository.contains('/') {
                    repository.to_string()
                } else {
                    format!("library/{repository}")
                },
                explicit: false,
            },
        }
    }

    /// Where the registry API answers.
    fn api_base(&self) -> String {
        let host = if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        };
        // Like the engine, which treats loopback registries as insecure by
        // default, speak plain HTTP to them and HTTPS to everything else.
        let scheme = if is_loopback(host) { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// The key of this registry in docker's config.json.
    pub fn auth_key(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_AUTH_KEY
        } else {
            &self.registry
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: String },
    IdentityToken(String),
}

// Never print a secret, even in debug output.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The user's credentials for `repo`'s registry: `config.json` in the docker
/// CLI's configuration directory `config_dir` (`crate::settings`), its
/// `auths`, `credHelpers` and `credsStore`. `None` when nothing is
/// configured (anonymous access).
pub fn credentials(config_dir: &Path, repo: &RepositoryRef) -> Result<Option<Credential>> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let file = config_dir.join("config.json");
    let found = match std::fs::File::open(&file) {
        Ok(f) => docker_credential::get_credential_from_reader(
            std::io::BufReader::new(f),
            repo.auth_key(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Credentials {
                registry: repo.registry.clone(),
                reason: format!("cannot read {}: {e}", file.display()),
            })
        }
    };
    match found {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::Basic { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(E::NoCredentialConfigured | E::ConfigNotFound) => Ok(None),
        // The crate says "read error" for a file that is there but broken too:
        // that is not "no credentials", and the user must hear which file.
        Err(E::ConfigReadError) => match config_problem(&file) {
            Some(reason) => Err(Error::Credentials {
                registry: repo.registry.clone(),
                reason,
            }),
            None => Ok(None),
        },
        // The helper protocol's "no entry for this server": anonymous, as the
        // docker CLI treats it (a registry that needs a login then answers
        // 401, and that error says to `docker login`).
        Err(E::HelperFailure { stdout, .. }) if helper_found_nothing(&stdout) => Ok(None),
        // A helper's own output may hold secrets: name the helper, not what it
        // printed. `helper` is already the command (`docker-credential-X`).
        Err(E::HelperFailure { helper, .. }) => Err(Error::Credentials {
            registry: repo.registry.clone(),
            reason: format!("credential helper {helper} failed"),
        }),
        Err(e) => Err(Error::Credentials {
            registry: repo.registry.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Why an existing config file cannot be used (unreadable, not JSON, not a
/// JSON object); `None` when it is absent or fine. serde_json's message names
/// a line and column, never the file's content (which may hold secrets).
fn config_problem(path: &std::path::Path) -> Option<String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read {}: {e}", path.display())),
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(v) if v.is_object() => None,
        Ok(_) => Some(format!(
            "{} is malformed: not a JSON object",
            path.display()
        )),
        Err(e) => Some(format!("{} is malformed: {e}", path.display())),
    }
}

/// Whether a registry failure the engine reports as text (lowercased) says
/// the registry was unavailable rather than refusing: the connection failed
/// or broke, timed out, or the registry answered 5xx. Such a failure is
/// worth a retry; anything else needs the user.
pub fn is_transient(lower: &str) -> bool {
    const SIGNS: [&str; 12] = [
        "connection refused",
        "connection reset",
        "broken pipe",
        "i/o timeout",
        "timeout exceeded",
        "tls handshake timeout",
        "unexpected eof",
        "no route to host",
        "500 internal server error",
        "502 bad gateway",
        "503 service unavailable",
        "504 gateway timeout",
    ];
    SIGNS.iter().any(|s| lower.contains(s))
}

/// What credential helpers print (on stdout, with a failing status) when they
/// hold nothing for a server: `credentials.errCredentialsNotFoundMessage` of
/// docker-credential-helpers, which the docker CLI matches the same way.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

fn helper_found_nothing(stdout: &str) -> bool {
    stdout.trim() == HELPER_NOT_FOUND
}

/// What the build asks of a registry itself: a trait so the build's
/// decisions are tested without one; the real [`Registry`] is tested against
/// a real registry in integration tests.
#[allow(async_fn_in_trait)]
pub trait Manifests {
    /// The registry's host (`localhost:5000`), for messages.
    fn host(&self) -> &str;
    /// The repository's path in its registry (`team/sdk`).
    fn path(&self) -> &str;
    /// Whether the repository has the blob `digest`.
    async fn blob_exists(&self, digest: &str) -> Result<bool>;
    /// Link blob `digest` from repository `from` of the same registry;
    /// `false` when the registry would not.
    async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool>;
    /// Upload a blob whose digest is `digest`.
    async fn upload_blob(&self, digest: &str, body: BlobBody<'_>) -> Result<()>;
    /// Download blob `digest` into the file `dst` (its digest checked).
    async fn download_blob(&self, digest: &str, dst: &std::path::Path) -> Result<()>;
    /// The manifest digest of `tag` in the repository; `None` when absent.
    async fn manifest_digest(&self, tag: &str) -> Result<Option<String>>;
    /// The manifest of `reference` (tag or digest) as stored; `None` when absent.
    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>>;
    /// Put `manifest` under `tag` (same bytes, same digest).
    async fn put_manifest(&self, tag: &str, manifest: &RawManifest) -> Result<()>;
    /// The image id (config digest) of `reference` for this machine's
    /// platform, read without pulling; `None` when absent.
    async fn image_id(&self, reference: &str) -> Result<Option<String>>;
    /// The image manifest of `reference` for this machine's platform (an
    /// index followed to it); `None` when absent.
    async fn image_manifest(&self, reference: &str) -> Result<Option<RawManifest>>;
    /// The referrers the registry's referrers API lists for `subject`;
    /// `None` when it has no such API (see [`referrers`]).
    async fn referrers(&self, subject: &str) -> Result<Option<Vec<referrers::Descriptor>>>;
    /// Put a referrer manifest by its digest; `true` when the registry
    /// indexed it as a referrer itself.
    async fn put_referrer(&self, manifest: &RawManifest) -> Result<bool>;
}

impl Manifests for Registry {
    fn host(&self) -> &str {
        &self.repo.registry
    }

    fn path(&self) -> &str {
        &self.repo.path
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        Registry::blob_exists(self, digest).await
    }

    async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        Registry::mount_blob(self, digest, from).await
    }

    async fn upload_blob(&self, digest: &str, body: BlobBody<'_>) -> Result<()> {
        Registry::upload_blob(self, digest, body).await
    }

    async fn download_blob(&self, digest: &str, dst: &std::path::Path) -> Result<()> {
        Registry::download_blob(self, digest, dst).await
    }

    async fn manifest_digest(&self, tag: &str) -> Result<Option<String>> {
        Registry::manifest_digest(self, tag).await
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        Registry::manifest(self, reference).await
    }

    async fn put_manifest(&self, tag: &str, manifest: &RawManifest) -> Result<()> {
        Registry::put_manifest(self, tag, manifest).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Registry::image_id(self, reference).await
    }

    async fn image_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        Registry::image_manifest(self, reference).await
    }

    async fn referrers(&self, subject: &str) -> Result<Option<Vec<referrers::Descriptor>>> {
        Registry::referrers(self, subject).await
    }

    async fn put_referrer(&self, manifest: &RawManifest) -> Result<bool> {
        Registry::put_referrer(self, manifest).await
    }
}

/// A registry API client for one repository.
pub struct Registry {
    repo: RepositoryRef,
    credential: Option<Credential>,
    http: reqwest::Client,
    /// The last bearer token the registry gave, tried first on the next
    /// request, so an upload's body is not sent once to be refused.
    token: std::sync::Mutex<Option<String>>,
}

impl Registry {
    pub fn new(repo: RepositoryRef, credential: Option<Credential>) -> Result<Registry> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("prebuilder/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Registry {
                registry: repo.registry.clone(),
                action: "setting up an HTTP client".into(),
                source: RegistryCause::Http(e),
            })?;
        Ok(Registry {
            repo,
            credential,
            http,
            token: std::sync::Mutex::new(None),
        })
    }

    pub fn repository(&self) -> &RepositoryRef {
        &self.repo
    }

    /// The manifest digest the registry holds for `tag` (what `HEAD
    /// /v2/<name>/manifests/<tag>` returns), `None` when the tag is absent.
    pub async fn manifest_digest(&self, tag: &str) -> Result<Option<String>> {
        let url = format!(
            "{}/v2/{}/manifests/{tag}",
            self.repo.api_base(),
            self.repo.path
        );
        let accept = [
            MediaType::ImageManifest,
            MediaType::ImageIndex,
            MediaType::Other("application/vnd.docker.distribution.manifest.v2+json".into()),
            MediaType::Other("application/vnd.docker.distribution.manifest.list.v2+json".into()),
        ]
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ");
        let head = |auth: Option<String>| {
            let mut req = self.http.head(&url).header(ACCEPT, &accept);
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            req.send()
        };
        let mut resp = head(self.basic_auth())
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Some(token) = self.bearer_token(resp.headers(), "pull").await? {
                resp = head(Some(format!("Bearer {token}")))
                    .await
                    .map_err(|e| self.unreachable(e))?;
            }
        }
        let action = || format!("looking up {}:{tag}", self.repo.path);
        match resp.status() {
            s if s.is_success() => {
                let digest = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                digest.map(Some).ok_or_else(|| Error::Registry {
                    registry: self.repo.registry.clone(),
                    action: action(),
                    source: "the answer has no Docker-Content-Digest header".into(),
                })
            }
            StatusCode::NOT_FOUND => Ok(None),
            // 5xx included: the exit status makes it a retry.
            _ => Err(self.failure(resp, action()).await),
        }
    }

    fn basic_auth(&self) -> Option<String> {
        use base64::Engine as _;
        match &self.credential {
            Some(Credential::Basic { username, password }) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        }
    }

    /// The token flow registries such as Docker Hub use: the 401 names a realm
    /// that trades credentials for a bearer token. `None` when the 401 asks
    /// for Basic auth (already sent, if configured).
    async fn bearer_token(&self, headers: &HeaderMap, action: &str) -> Result<Option<String>> {
        let Some(challenge) = headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()) else {
            return Ok(None);
        };
        let Some(params) = challenge.strip_prefix("Bearer ") else {
            return Ok(None);
        };
        let param = |name: &str| {
            params.split(',').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let Some(realm) = param("realm") else {
            return Ok(None);
        };
        let scope =
            param("scope").unwrap_or_else(|| format!("repository:{}:{action}", self.repo.path));
        let mut query = vec![("scope", scope)];
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(&realm).query(&query);
        match &self.credential {
            Some(Credential::Basic { username, password }) => {
                req = req.basic_auth(username, Some(password))
            }
            Some(Credential::IdentityToken(t)) => req = req.bearer_auth(t),
            None => {}
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp.json().await.map_err(|e| Error::Registry {
            registry: self.repo.registry.clone(),
            action: "reading an auth token".into(),
            source: RegistryCause::Http(e),
        })?;
        Ok(t.token.or(t.access_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_hosts_like_docker() {
        let r = RepositoryRef::parse("localhost:5000/team/sdk");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.explicit),
            ("localhost:5000", "team/sdk", true)
        );
        let r = RepositoryRef::parse("gcr.io/proj/beam");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str()),
            ("gcr.io", "proj/beam")
        );
        let r = RepositoryRef::parse("localhost/x");
        assert_eq!(r.registry, "localhost");
        let r = RepositoryRef::parse("beam_python_prebuilt_sdk");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.explicit),
            ("docker.io", "library/beam_python_prebuilt_sdk", false)
        );
        let r = RepositoryRef::parse("team/sdk");
        assert_eq!(
            (r.path.as_str(), r.auth_key()),
            ("team/sdk", "https://index.docker.io/v1/")
        );
    }

    #[test]
    fn loopback_registries_speak_http() {
        assert_eq!(
            RepositoryRef::parse("127.0.0.1:5000/a").api_base(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            RepositoryRef::parse("localhost:5000/a").api_base(),
            "http://localhost:5000"
        );
        assert_eq!(
            RepositoryRef::parse("gcr.io/a/b").api_base(),
            "https://gcr.io"
        );
        assert_eq!(
            RepositoryRef::parse("a/b").api_base(),
            "https://registry-1.docker.io"
        );
    }

    #[test]
    fn transient_registry_failures_are_told_from_refusals() {
        for transient in [
            "put http://127.0.0.1:5000/v2/x/blobs/uploads/: dial tcp 127.0.0.1:5000: connect: connection refused",
            "received unexpected http status: 503 service unavailable",
            "read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
        ] {
            assert!(is_transient(transient), "{transient}");
        }
        for refusal in [
            "unsupported: the operation is unsupported",
            "name unknown: repository name not known to registry",
            "manifest invalid",
        ] {
            assert!(!is_transient(refusal), "{refusal}");
        }
    }

    #[test]
    fn credentials_never_print_secrets() {
        let c = Credential::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            !format!("{:?}", Credential::IdentityToken("tok-secret".into())).contains("tok-secret")
        );
    }

    #[test]
    fn credentials_come_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"127.0.0.1:5999": {"auth": "YWxpY2U6aHVudGVyMg=="}}}"#,
        )
        .unwrap();
        let found = credentials(dir.path(), &RepositoryRef::parse("127.0.0.1:5999/a/b")).unwrap();
        let none = credentials(dir.path(), &RepositoryRef::parse("127.0.0.1:5998/a/b")).unwrap();
        let absent = credentials(
            &dir.path().join("nowhere"),
            &RepositoryRef::parse("127.0.0.1:5999/a/b"),
        )
        .unwrap();
        assert_eq!(absent, None, "no config.json: anonymous");
        assert_eq!(
            found,
            Some(Credential::Basic {
                username: "alice".into(),
                password: "hunter2".into()
            })
        );
        assert_eq!(none, None);
    }

    /// Issue 12: a malformed config.json was reported as "no credentials
    /// are configured"; it is named and called malformed, without its content.
    #[test]
    fn a_malformed_docker_config_is_named_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(config_problem(&path), None, "absent is fine");
        std::fs::write(&path, r#"{"auths": {"h": {"auth": "c2VjcmV0"}},"#).unwrap();
        let p = config_problem(&path).unwrap();
        assert!(
            p.contains(&path.display().to_string()) && p.contains("malformed"),
            "{p}"
        );
        assert!(!p.contains("c2VjcmV0"), "{p}");
        std::fs::write(&path, "[]").unwrap();
        assert!(config_problem(&path).unwrap().contains("not a JSON object"));
        std::fs::write(&path, "{}").unwrap();
        assert_eq!(config_problem(&path), None);
    }
}

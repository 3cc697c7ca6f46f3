//! Which engine to talk to, chosen exactly as the docker CLI chooses it, so a
//! CI runner's `DOCKER_HOST`/TLS settings, `ssh://` remotes and docker
//! contexts work without extra flags:
//!
//! 1. `DOCKER_HOST` (unix, tcp, tcp with TLS when `DOCKER_TLS_VERIFY` is set,
//!    certificates from `DOCKER_CERT_PATH` or the config dir, ssh);
//! 2. else the context named by `DOCKER_CONTEXT`;
//! 3. else the `currentContext` of `$DOCKER_CONFIG/config.json` (default `~/.docker`);
//! 4. else the local socket.
//!
//! A context's endpoint is in `contexts/meta/<sha256 of its name>/meta.json`
//! and its TLS material in `contexts/tls/<sha256 of its name>/docker/`.
//! [`resolve`] is pure apart from reading those files: environment and config
//! dir in, an [`Endpoint`] out. The adapter that connects to it names it in
//! its caller's errors ([`name`]): nothing is remembered process-wide.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The docker CLI's default socket.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Where the engine is and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as configured (`unix:///…`, `tcp://…`, `ssh://…`).
    pub host: String,
    pub transport: Transport,
    /// How it was chosen, for messages.
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Unix(PathBuf),
    /// Plain HTTP to `host:port`.
    Tcp(String),
    /// HTTPS to `host:port`, verifying the engine with `ca`, presenting `cert`/`key`.
    Tls {
        addr: String,
        files: TlsFiles,
    },
    /// `docker system dial-stdio` on the remote through the `ssh` binary.
    Ssh,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    DockerHost,
    /// A docker context; `from` says what named it.
    Context {
        name: String,
        from: ContextFrom,
    },
    /// Nothing configured: the local socket.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextFrom {
    /// `DOCKER_CONTEXT`.
    Env,
    /// `currentContext` in this config.json.
    Config(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::DockerHost => write!(f, "from DOCKER_HOST"),
            Source::Context {
                name,
                from: ContextFrom::Env,
            } => write!(f, "context {name} from DOCKER_CONTEXT"),
            Source::Context {
                name,
                from: ContextFrom::Config(path),
            } => write!(f, "context {name}, currentContext in {}", path.display()),
            Source::Default => write!(
                f,
                "the default: no DOCKER_HOST, DOCKER_CONTEXT or current context"
            ),
        }
    }
}

impl fmt::Display for Endpoint {
    /// `tcp://127.0.0.1:2376 (from DOCKER_HOST, TLS with certificates in /certs)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.host, self.source)?;
        if let Transport::Tls { files, .. } = &self.transport {
            write!(f, ", TLS with certificates in {}", files.dir.display())?;
        }
        write!(f, ")")
    }
}

impl Endpoint {
    /// What to do when the engine does not answer, fitted to the transport
    /// and to how the endpoint was chosen.
    pub fn unreachable_hint(&self) -> String {
        let how = match &self.source {
            Source::DockerHost => "check DOCKER_HOST (unset it to use the local socket)".to_string(),
            Source::Context { name, from } => {
                let unset = match from {
                    ContextFrom::Env => "unset DOCKER_CONTEXT".to_string(),
                    ContextFrom::Config(_) => "`docker context use default`".to_string(),
                };
                format!("check the context with `docker context inspect {name}`, or {unset}")
            }
            Source::Default => {
                return "start the Docker (or Podman) engine, or point DOCKER_HOST at it (e.g. DOCKER_HOST=unix:///run/user/1000/podman/podman.sock) or select a docker context".into()
            }
        };
        match &self.transport {
            Transport::Unix(path) => format!(
                "nothing answers on {}: start the engine that listens there; or {how}",
                path.display()
            ),
            Transport::Tcp(addr) => format!(
                "check that an engine listens on {addr} without TLS (an engine started with --tlsverify needs DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH); or {how}"
            ),
            Transport::Tls { addr, files } => format!(
                "check that the engine on {addr} serves TLS and trusts the client certificate, and that {} signed the engine's certificate (its name must match the host); or {how}",
                files.ca.display()
            ),
            Transport::Ssh => format!(
                "check that `ssh {} docker system dial-stdio` works from this shell: a key the ssh agent or ~/.ssh/config offers, a known host key, and docker on the remote PATH talking to its engine; or {how}",
                self.host.trim_start_matches("ssh://")
            ),
        }
    }
}

/// The environment the resolver reads (the docker CLI's variables).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub docker_host: Option<String>,
    pub docker_context: Option<String>,
    pub tls_verify: Option<String>,
    /// `DOCKER_TLS`: TLS without verifying the engine, which prebuilder refuses.
    pub tls: Option<String>,
    pub cert_path: Option<String>,
    pub docker_config: Option<String>,
    pub home: Option<PathBuf>,
}

impl Env {
    /// The docker CLI's variables from `settings` (read once by the
    /// caller); empty values count as unset, as in the CLI.
    pub fn from_settings(settings: &crate::settings::Settings) -> Env {
        let var = |k: &str| settings.var(k).map(str::to_string);
        Env {
            docker_host: var("DOCKER_HOST"),
            docker_context: var("DOCKER_CONTEXT"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            tls: var("DOCKER_TLS"),
            cert_path: var("DOCKER_CERT_PATH"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub fn config_dir(&self) -> Option<PathBuf> {
        match &self.docker_config {
            Some(d) => Some(PathBuf::from(d)),
            None => self.home.as_ref().map(|h| h.join(".docker")),
        }
    }
}

/// The endpoint the docker CLI would use in `env`.
pub fn resolve(env: &Env) -> Result<Endpoint> {
    if let Some(host) = &env.docker_host {
        return default_context(host, Source::DockerHost, env);
    }
    let config_dir = env.config_dir();
    let (name, from) = match &env.docker_context {
        Some(name) => (name.clone(), ContextFrom::Env),
        None => match current_context(config_dir.as_deref())? {
            Some((name, path)) => (name, ContextFrom::Config(path)),
            None => return default_context(DEFAULT_HOST, Source::Default, env),
        },
    };
    // "default" is the CLI's name for DOCKER_HOST-or-local-socket, never a stored context.
    if name == "default" {
        return default_context(DEFAULT_HOST, Source::Default, env);
    }
    context(config_dir.as_deref(), name, from)
}

/// `DOCKER_HOST` or the local socket, with TLS when `DOCKER_TLS_VERIFY` is set.
fn default_context(host: &str, source: Source, env: &Env) -> Result<Endpoint> {
    if env.tls.is_some() && env.tls_verify.is_none() {
        return Err(refusal(
            host,
            &source,
            "DOCKER_TLS asks for TLS without verifying the engine's certificate, which prebuilder does not do".into(),
            "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to a directory with the engine's CA (ca.pem) and the client's cert.pem and key.pem".into(),
        ));
    }
    let tls = match &env.tls_verify {
        None => None,
        Some(_) => {
            let dir = match (&env.cert_path, env.config_dir()) {
                (Some(p), _) => PathBuf::from(p),
                (None, Some(d)) => d,
                (None, None) => {
                    return Err(refusal(
                        host,
                        &source,
                        "DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is, so there are no certificates to use".into(),
                        "set DOCKER_CERT_PATH to the directory holding ca.pem, cert.pem and key.pem".into(),
                    ))
                }
            };
            Some(dir)
        }
    };
    endpoint(host, source, tls)
}

/// `host` with TLS material in `tls` (a directory with ca.pem, cert.pem, key.pem).
fn endpoint(host: &str, source: Source, tls: Option<PathBuf>) -> Result<Endpoint> {
    let (scheme, rest) = host.split_once("://").ok_or_else(|| {
        refusal(
            host,
            &source,
            "the host has no scheme".into(),
            "write it as unix:///path/to/docker.sock, tcp://HOST:PORT or ssh://USER@HOST".into(),
        )
    })?;
    let transport = match (scheme, tls) {
        ("unix", _) => {
            if rest.is_empty() {
                return Err(refusal(
                    host,
                    &source,
                    "the socket path is empty".into(),
                    "write it as unix:///path/to/docker.sock".into(),
                ));
            }
            Transport::Unix(PathBuf::from(rest))
        }
        ("tcp" | "http", None) => Transport::Tcp(tcp_addr(host, rest, &source)?),
        ("tcp" | "https", Some(dir)) => {
            let addr = tcp_addr(host, rest, &source)?;
            let files = tls_files(&dir);
            // Like the CLI: the CA is required; a missing client certificate
            // or key is an engine-side refusal later, not ours.
            if !files.ca.is_file() {
                return Err(refusal(
                    host,
                    &source,
                    format!(
                        "TLS is asked for (DOCKER_TLS_VERIFY or a context with TLS material) but the CA certificate {} cannot be read",
                        files.ca.display()
                    ),
                    "point DOCKER_CERT_PATH at the directory with ca.pem, cert.pem and key.pem (the docker CLI refuses the same way), or unset DOCKER_TLS_VERIFY for an engine without TLS".into(),
                ));
            }
            Transport::Tls { addr, files }
        }
        ("ssh", _) => {
            ssh_destination(host, rest, &source)?;
            Transport::Ssh
        }
        (other, _) => {
            return Err(refusal(
                host,
                &source,
                format!("scheme {other}:// is not supported"),
                "use unix://, tcp:// (with DOCKER_TLS_VERIFY for TLS) or ssh://".into(),
            ))
        }
    };
    Ok(Endpoint {
        host: host.to_string(),
        transport,
        source,
    })
}

fn tls_files(dir: &Path) -> TlsFiles {
    TlsFiles {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    }
}

/// `host:port` of a tcp endpoint (the path part, if any, is ignored as by the CLI).
fn tcp_addr(host: &str, rest: &str, source: &Source) -> Result<String> {
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(refusal(
            host,
            source,
            "the host name is empty".into(),
            "write it as tcp://HOST:PORT".into(),
        ));
    }
    Ok(authority.to_string())
}

/// Checks an `ssh://[user@]host` destination. bollard hands the URL's
/// authority to `ssh` as the destination, so a port in the URL would become
/// part of the host name: refused here with the way around it.
fn ssh_destination(host: &str, rest: &str, source: &Source) -> Result<()> {
    let authority = rest.split('/').next().unwrap_or_default();
    let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_part.is_empty() {
        return Err(refusal(
            host,
            source,
            "the host name is empty".into(),
            "write it as ssh://USER@HOST".into(),
        ));
    }
    if let Some((name, port)) = host_part.rsplit_once(':') {
        if !name.ends_with(']') || host_part.starts_with('[') {
            return Err(refusal(
                host,
                source,
                format!("prebuilder's ssh transport cannot pass the port {port} to ssh"),
                format!(
                    "give the port in ~/.ssh/config (`Host {n}` / `HostName {n}` / `Port {port}`) and use ssh://{user}{n}",
                    n = name.trim_start_matches('[').trim_end_matches(']'),
                    user = authority
                        .rsplit_once('@')
                        .map(|(u, _)| format!("{u}@"))
                        .unwrap_or_default(),
                ),
            ));
        }
    }
    Ok(())
}

fn refusal(host: &str, source: &Source, reason: String, hint: String) -> Error {
    Error::EngineConfig {
        endpoint: format!("{host} ({source})"),
        reason,
        hint,
    }
}

/// `currentContext` from `dir/config.json`, with the file's path.
fn current_context(dir: Option<&Path>) -> Result<Option<(String, PathBuf)>> {
    let Some(dir) = dir else { return Ok(None) };
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::EngineConfig {
            endpoint: format!("the current docker context ({})", path.display()),
            reason: format!("{} is not valid JSON: {e}", path.display()),
            hint: "fix the file (the docker CLI refuses it too) or point DOCKER_CONFIG elsewhere"
                .into(),
        })?;
    Ok(value
        .get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(|c| (c.to_string(), path)))
}

/// The directory name the docker CLI stores a context under.
pub fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// The docker endpoint of a stored context.
fn context(dir: Option<&Path>, name: String, from: ContextFrom) -> Result<Endpoint> {
    let source = Source::Context {
        name: name.clone(),
        from,
    };
    let inspect = format!(
        "list the contexts with `docker context ls`; create it with `docker context create {name} --docker host=…`, or unset DOCKER_CONTEXT / run `docker context use default`"
    );
    let Some(dir) = dir else {
        return Err(Error::EngineConfig {
            endpoint: source.to_string(),
            reason: "neither DOCKER_CONFIG nor HOME is set, so there is no context store".into(),
            hint: inspect,
        });
    };
    let id = context_id(&name);
    let meta_path = dir.join("contexts/meta").join(&id).join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::EngineConfig {
        endpoint: source.to_string(),
        reason: format!("context not found: {}: {e}", meta_path.display()),
        hint: inspect.clone(),
    })?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::EngineConfig {
        endpoint: source.to_string(),
        reason: format!("{} is not valid JSON: {e}", meta_path.display()),
        hint: inspect.clone(),
    })?;
    let docker = &meta["Endpoints"]["docker"];
    let host = docker["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::EngineConfig {
            endpoint: source.to_string(),
            reason: format!("{} has no Endpoints.docker.Host", meta_path.display()),
            hint: inspect.clone(),
        })?
        .to_string();
    if docker["SkipTLSVerify"].as_bool() == Some(true) {
        return Err(refusal(
            &host,
            &source,
            "the context skips TLS verification, which prebuilder does not do".into(),
            format!("give the context the engine's CA (`docker context update {name} --docker host={host},ca=…,cert=…,key=…`)"),
        ));
    }
    let tls_dir = dir.join("contexts/tls").join(&id).join("docker");
    let tls = tls_dir.join("ca.pem").is_file().then_some(tls_dir);
    endpoint(&host, source, tls)
}

/// A client for `endpoint` that has agreed on an API version with the
/// engine (the first request, so a dead endpoint fails here, named).
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Docker> {
    let secs = timeout.as_secs();
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match &endpoint.transport {
        Transport::Unix(_) => Docker::connect_with_unix(&endpoint.host, secs, version),
        Transport::Tcp(addr) => Docker::connect_with_http(addr, secs, version),
        Transport::Tls { addr, files } => {
            Docker::connect_with_ssl(addr, &files.key, &files.cert, &files.ca, secs, version)
        }
        Transport::Ssh => Docker::connect_with_ssh(&endpoint.host, secs, version, None),
    }
    .map_err(|e| unreachable_at(endpoint, Box::new(e)))?;
    // ssh starts a master connection first: give it longer than a socket.
    let first = match endpoint.transport {
        Transport::Ssh => Duration::from_secs(60),
        _ => Duration::from_secs(30),
    };
    match tokio::time::timeout(first, docker.negotiate_version()).await {
        Err(_) => Err(unreachable_at(
            endpoint,
            format!("no answer within {} s", first.as_secs()).into(),
        )),
        Ok(Err(e)) => Err(unreachable_at(endpoint, Box::new(e))),
        Ok(Ok(docker)) => Ok(docker.with_timeout(timeout)),
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

fn unreachable_at(endpoint: &Endpoint, source: Cause) -> Error {
    Error::EngineUnreachable {
        endpoint: endpoint.to_string(),
        source,
        hint: endpoint.unreachable_hint(),
    }
}

/// The engine stopped answering: the caller names its endpoint
/// ([`Error::named`]), which an adapter's call does not know.
pub fn unreachable(source: Cause) -> Error {
    Error::EngineUnreachable {
        endpoint: String::new(),
        source,
        hint: "check that the engine is running (`docker info`)".into(),
    }
}

/// How errors name the engine at `endpoint`, which says it is `product`.
pub fn name(endpoint: &Endpoint, product: &str) -> crate::error::EngineName {
    crate::error::EngineName {
        description: format!("the engine at {endpoint}, {product}"),
        endpoint: endpoint.to_string(),
        unreachable_hint: endpoint.unreachable_hint(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::default()
    }

    fn write_context(config: &Path, name: &str, host: &str, tls: bool) {
        let meta = config.join("contexts/meta").join(context_id(name));
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            serde_json::json!({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}}}).to_string(),
        )
        .unwrap();
        if tls {
            let t = config
                .join("contexts/tls")
                .join(context_id(name))
                .join("docker");
            std::fs::create_dir_all(&t).unwrap();
            for f in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::write(t.join(f), "pem").unwrap();
            }
        }
    }

    fn certs(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.join(f), "pem").unwrap();
        }
    }

    #[test]
    fn nothing_set_is_the_local_socket() {
        let e = resolve(&env()).unwrap();
        assert_eq!(e.host, DEFAULT_HOST);
        assert_eq!(e.transport, Transport::Unix("/var/run/docker.sock".into()));
        assert_eq!(e.source, Source::Default);
    }

    #[test]
    fn docker_host_unix_and_tcp() {
        let e = resolve(&Env {
            docker_host: Some("unix:///run/podman/podman.sock".into()),
            ..env()
        })
        .unwrap();
        assert_eq!(
            e.transport,
            Transport::Unix("/run/podman/podman.sock".into())
        );
        assert_eq!(e.source, Source::DockerHost);
        assert_eq!(
            e.to_string(),
            "unix:///run/podman/podman.sock (from DOCKER_HOST)"
        );
        let e = resolve(&Env {
            docker_host: Some("tcp://10.0.0.1:2375".into()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Tcp("10.0.0.1:2375".into()));
    }

    #[test]
    fn tls_verify_uses_cert_path() {
        let dir = tempfile::tempdir().unwrap();
        certs(dir.path());
        let e = resolve(&Env {
            docker_host: Some("tcp://docker:2376".into()),
            tls_verify: Some("1".into()),
            cert_path: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        let Transport::Tls { addr, files } = &e.transport else {
            panic!("{e:?}")
        };
        assert_eq!(addr, "docker:2376");
        assert_eq!(files.ca, dir.path().join("ca.pem"));
        assert_eq!(files.key, dir.path().join("key.pem"));
        assert!(e.to_string().contains("TLS with certificates in"), "{e}");
    }

    #[test]
    fn tls_verify_without_cert_path_uses_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        certs(&dir.path().join(".docker"));
        let e = resolve(&Env {
            docker_host: Some("tcp://docker:2376".into()),
            tls_verify: Some("1".into()),
            home: Some(dir.path().into()),
            ..env()
        })
        .unwrap();
        let Transport::Tls { files, .. } = &e.transport else {
            panic!("{e:?}")
        };
        assert_eq!(files.dir, dir.path().join(".docker"));
        // DOCKER_CONFIG moves the default cert dir with it.
        let cfg = dir.path().join("cfg");
        certs(&cfg);
        let e = resolve(&Env {
            docker_host: Some("tcp://docker:2376".into()),
            tls_verify: Some("1".into()),
            docker_config: Some(cfg.display().to_string()),
            home: Some(dir.path().into()),
            ..env()
        })
        .unwrap();
        let Transport::Tls { files, .. } = &e.transport else {
            panic!("{e:?}")
        };
        assert_eq!(files.dir, cfg);
    }

    #[test]
    fn tls_asked_with_missing_certs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&Env {
            docker_host: Some("tcp://docker:2376".into()),
            tls_verify: Some("1".into()),
            cert_path: Some(dir.path().join("nope").display().to_string()),
            ..env()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("tcp://docker:2376 (from DOCKER_HOST)"),
            "{msg}"
        );
        assert!(msg.contains("ca.pem"), "{msg}");
        let hint = err.hint().unwrap();
        assert!(hint.contains("DOCKER_CERT_PATH"), "{hint}");
        assert!(!hint.contains("start the Docker"), "{hint}");
    }

    #[test]
    fn tls_without_verification_is_refused() {
        let err = resolve(&Env {
            docker_host: Some("tcp://docker:2376".into()),
            tls: Some("1".into()),
            ..env()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("DOCKER_TLS asks for TLS without verifying"),
            "{err}"
        );
        assert!(err.hint().unwrap().contains("DOCKER_TLS_VERIFY=1"));
    }

    #[test]
    fn docker_host_wins_over_contexts() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "ci", "unix:///ci.sock", false);
        std::fs::write(dir.path().join("config.json"), r#"{"currentContext":"ci"}"#).unwrap();
        let e = resolve(&Env {
            docker_host: Some("unix:///host.sock".into()),
            docker_context: Some("ci".into()),
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.host, "unix:///host.sock");
        assert_eq!(e.source, Source::DockerHost);
    }

    #[test]
    fn docker_context_env_wins_over_config() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "ci", "unix:///ci.sock", false);
        write_context(dir.path(), "other", "unix:///other.sock", false);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{},"currentContext":"other"}"#,
        )
        .unwrap();
        let e = resolve(&Env {
            docker_context: Some("ci".into()),
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Unix("/ci.sock".into()));
        assert_eq!(
            e.to_string(),
            "unix:///ci.sock (context ci from DOCKER_CONTEXT)"
        );
    }

    #[test]
    fn current_context_from_config_json() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".docker");
        write_context(&dir, "remote", "ssh://ci@build-host", false);
        std::fs::write(dir.join("config.json"), r#"{"currentContext":"remote"}"#).unwrap();
        let e = resolve(&Env {
            home: Some(home.path().into()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Ssh);
        assert_eq!(e.host, "ssh://ci@build-host");
        assert_eq!(
            e.source,
            Source::Context {
                name: "remote".into(),
                from: ContextFrom::Config(dir.join("config.json"))
            }
        );
        assert!(
            e.to_string().contains("context remote, currentContext in"),
            "{e}"
        );
    }

    #[test]
    fn context_with_tls_material() {
        let dir = tempfile::tempdir().unwrap();
        write_context(dir.path(), "secure", "tcp://10.0.0.2:2376", true);
        let e = resolve(&Env {
            docker_context: Some("secure".into()),
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        let Transport::Tls { addr, files } = &e.transport else {
            panic!("{e:?}")
        };
        assert_eq!(addr, "10.0.0.2:2376");
        assert!(files
            .dir
            .ends_with(format!("{}/docker", context_id("secure"))));
    }

    #[test]
    fn context_id_is_the_clis() {
        // `docker context create ci` stores it under sha256("ci").
        assert_eq!(
            context_id("ci"),
            "1b158839f8aa339e89bb50b1603e90ec68e0fd5565fe10a7cb32729fddf7070a"
        );
        assert_eq!(context_id("ci").len(), 64);
    }

    #[test]
    fn default_context_name_means_the_local_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"currentContext":"default"}"#,
        )
        .unwrap();
        let e = resolve(&Env {
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.host, DEFAULT_HOST);
        let e = resolve(&Env {
            docker_context: Some("default".into()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.host, DEFAULT_HOST);
    }

    #[test]
    fn missing_context_is_refused_with_its_name_and_origin() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(&Env {
            docker_context: Some("gone".into()),
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("context gone"), "{msg}");
        assert!(msg.contains("DOCKER_CONTEXT"), "{msg}");
        assert!(msg.contains("context not found"), "{msg}");
        assert!(err.hint().unwrap().contains("docker context ls"));
    }

    #[test]
    fn broken_config_json_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = resolve(&Env {
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn config_without_current_context_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"auths":{}}"#).unwrap();
        let e = resolve(&Env {
            docker_config: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.source, Source::Default);
    }

    #[test]
    fn ssh_hosts() {
        let e = resolve(&Env {
            docker_host: Some("ssh://ci@build-host".into()),
            ..env()
        })
        .unwrap();
        assert_eq!(e.transport, Transport::Ssh);
        let err = resolve(&Env {
            docker_host: Some("ssh://ci@build-host:2222".into()),
            ..env()
        })
        .unwrap_err();
        assert!(err.to_string().contains("port 2222"), "{err}");
        let hint = err.hint().unwrap();
        assert!(hint.contains("Port 2222"), "{hint}");
        assert!(hint.contains("ssh://ci@build-host"), "{hint}");
    }

    #[test]
    fn bad_hosts_are_refused() {
        for host in [
            "docker.sock",
            "fd://",
            "npipe:////./pipe/docker",
            "tcp://",
            "unix://",
        ] {
            let err = resolve(&Env {
                docker_host: Some(host.into()),
                ..env()
            })
            .unwrap_err();
            assert!(err.to_string().contains(host), "{host}: {err}");
            assert!(matches!(err, Error::EngineConfig { .. }), "{host}: {err:?}");
        }
    }

    #[test]
    fn hints_fit_the_transport() {
        let dir = tempfile::tempdir().unwrap();
        certs(dir.path());
        let tls = resolve(&Env {
            docker_host: Some("tcp://127.0.0.1:2376".into()),
            tls_verify: Some("1".into()),
            cert_path: Some(dir.path().display().to_string()),
            ..env()
        })
        .unwrap();
        assert!(tls.unreachable_hint().contains("TLS"));
        assert!(!tls.unreachable_hint().contains("start the Docker"));
        let ssh = resolve(&Env {
            docker_host: Some("ssh://ci@h".into()),
            ..env()
        })
        .unwrap();
        assert!(ssh
            .unreachable_hint()
            .contains("ssh ci@h docker system dial-stdio"));
        let local = resolve(&env()).unwrap();
        assert!(local.unreachable_hint().contains("start the Docker"));
    }
}

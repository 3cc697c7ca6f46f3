//! Second engines and an sshd for the tests that need more than the engine
//! they run against (see SPEC.md, "More engines for tests"):
//! - [`Engine`]: a dockerd or a Podman service, started, restarted and
//!   stopped by `integration/fixtures/engine.sh` (the one script that starts
//!   engines; the bench uses it too): its own data and exec roots, socket,
//!   bridge, storage driver, optionally a TLS port, the containerd image
//!   store, or the binaries of another Docker version;
//! - [`SshServer`]: an sshd on 127.0.0.1 with a key made here, whose sessions
//!   see `DOCKER_HOST` of an engine of our choice.
//!
//! Each is stopped by its pid on drop, and leaves no bridge, mount or directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn must(c: &mut Command) -> Output {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// SIGTERM, then wait up to `grace` for the child to exit, then SIGKILL.
fn stop(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool, log: &Path) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what} did not start within {timeout:?}; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// What kind of second engine to start, and how; [`EngineBuilder::start`]
/// starts it.
pub struct EngineBuilder {
    /// The options of `engine.sh start`.
    options: Vec<String>,
}

impl EngineBuilder {
    /// `--storage`: the storage driver (the script's defaults: `vfs`; with
    /// the containerd store, the `native` snapshotter; Podman: `overlay`
    /// through fuse-overlayfs).
    pub fn storage(mut self, driver: &str) -> Self {
        self.options.extend(["--storage".into(), driver.into()]);
        self
    }

    /// A `--tlsverify` TCP port on 127.0.0.1 besides the unix socket; the
    /// client's certificates are in [`Engine::client_certs`].
    pub fn tls(mut self) -> Self {
        self.options.push("--tls".into());
        self
    }

    /// The containerd image store (`"containerd-snapshotter": true`).
    pub fn containerd_store(mut self) -> Self {
        self.options.push("--containerd-store".into());
        self
    }

    /// The dockerd (and containerd) of a `dpkg -x` root of Debian packages,
    /// as `integration/fixtures/engines.sh` extracts them (dockerd in
    /// `usr/sbin` as Debian ships it, or `usr/bin`).
    pub fn binaries(mut self, root: &Path) -> Self {
        self.options
            .extend(["--binaries".into(), root.display().to_string()]);
        self
    }

    /// Podman: a registry it may push to over plain HTTP.
    pub fn insecure_registry(mut self, addr: &str) -> Self {
        self.options
            .extend(["--insecure-registry".into(), addr.into()]);
        self
    }

    pub fn start(self) -> Engine {
        // Short paths: containerd's sockets live under the exec-root.
        let dir = tempfile::Builder::new()
            .prefix("pbe-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let o = engine_sh("start", &dir, &self.options);
        assert!(
            o.status.success(),
            "engine.sh start {} {:?}: {}",
            dir.display(),
            self.options,
            String::from_utf8_lossy(&o.stderr)
        );
        let mut engine = Engine {
            dir,
            vars: HashMap::new(),
        };
        engine.read_state();
        engine
    }
}

/// `bash integration/fixtures/engine.sh COMMAND DIR OPTIONS…`.
fn engine_sh(command: &str, dir: &Path, options: &[String]) -> Output {
    Command::new("bash")
        .arg(crate::support::repo().join("integration/fixtures/engine.sh"))
        .arg(command)
        .arg(dir)
        .args(options)
        .stdin(Stdio::null())
        .output()
        .expect("bash integration/fixtures/engine.sh")
}

/// A second engine of this test's own; stopped, with its bridge, mounts and
/// directory, on drop.
pub struct Engine {
    dir: PathBuf,
    /// `engine.sh`'s `ENGINE_*` values (from `DIR/engine.env`).
    vars: HashMap<String, String>,
}

impl Engine {
    /// A dockerd (the system's, unless [`EngineBuilder::binaries`]).
    pub fn dockerd() -> EngineBuilder {
        EngineBuilder {
            options: Vec::new(),
        }
    }

    /// `podman system service` (Debian's Podman 4).
    pub fn podman() -> EngineBuilder {
        EngineBuilder {
            options: vec!["--podman".into()],
        }
    }

    fn read_state(&mut self) {
        let text = std::fs::read_to_string(self.dir.join("engine.env")).unwrap();
        self.vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("engine.sh gave no {name} for {}", self.dir.display()))
    }

    /// `unix:///…/engine.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        self.var("ENGINE_HOST").to_string()
    }

    /// `127.0.0.1:PORT` of the TLS port ([`EngineBuilder::tls`]).
    pub fn tcp(&self) -> String {
        self.var("ENGINE_TCP").to_string()
    }

    /// The client's `ca.pem`, `cert.pem` and `key.pem`, for `DOCKER_CERT_PATH`.
    pub fn client_certs(&self) -> PathBuf {
        PathBuf::from(self.var("ENGINE_CERTS"))
    }

    /// Stop the daemon and start it again on the same state (containers,
    /// images, socket); what was running on it is stopped.
    pub fn restart(&mut self) {
        let o = engine_sh("restart", &self.dir, &[]);
        assert!(
            o.status.success(),
            "engine.sh restart {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        self.read_state();
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .expect("docker")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} on the engine at {}: {}",
            self.host(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Copy an image from the engine the tests run against (`DOCKER_HOST`,
    /// or the default one): `docker save | docker load`.
    pub fn load_from_main(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let out = save.stdout.take().unwrap();
        let load = Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", self.host())
            .args(["load", "-q"])
            .stdin(out)
            .output()
            .expect("docker load");
        assert!(save.wait().unwrap().success(), "docker save {image}");
        assert!(
            load.status.success(),
            "docker load into {}: {}",
            self.host(),
            String::from_utf8_lossy(&load.stderr)
        );
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let o = engine_sh("stop", &self.dir, &[]);
        if !o.status.success() {
            eprintln!(
                "engine.sh stop {}: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// An sshd on 127.0.0.1 that lets root in with a key made here; its
/// sessions get `DOCKER_HOST=<remote_host>` (the remote's docker CLI is what
/// `docker system dial-stdio` runs). The client side is an ssh config, as a
/// user would write in `~/.ssh/config`: `ssh_path` holds an `ssh` that reads
/// it (the ssh binary takes its config from the passwd home, not `$HOME`).
pub struct SshServer {
    /// The `Host` name of the config (port, key, known host behind it).
    pub alias: String,
    /// Prepend to PATH.
    pub ssh_path: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SshServer {
    pub fn start(remote_host: &str) -> SshServer {
        let dir = tempfile::Builder::new()
            .prefix("en-ssh-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["hostkey", "userkey"] {
            must(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", ""])
                    .arg("-f")
                    .arg(d.join(key)),
            );
        }
        let read = |f: &str| {
            std::fs::read_to_string(d.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        std::fs::write(
            d.join("authorized_keys"),
            format!(
                "environment=\"DOCKER_HOST={remote_host}\" {}\n",
                read("userkey.pub")
            ),
        )
        .unwrap();
        let port = free_port();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", read("hostkey.pub")),
        )
        .unwrap();
        let p = |f: &str| d.join(f).display().to_string();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitUserEnvironment yes\nPidFile none\n",
                p("hostkey"),
                p("authorized_keys")
            ),
        )
        .unwrap();
        let alias = format!("en-remote-{}", std::process::id());
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
                p("userkey"),
                p("known_hosts")
            ),
        )
        .unwrap();
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Each invocation's arguments, one line each (see `invocations`).
        std::fs::write(
            bin.join("ssh"),
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec /usr/bin/ssh -F {} \"$@\"\n",
                p("invocations.log"),
                p("ssh_config")
            ),
        )
        .unwrap();
        must(Command::new("chmod").arg("755").arg(bin.join("ssh")));
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let log = d.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(&log)
            .spawn()
            .expect("sshd (Debian openssh-server)");
        let addr = format!("127.0.0.1:{port}");
        wait_until(
            "sshd",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(&addr).is_ok(),
            &log,
        );
        SshServer {
            alias,
            ssh_path: bin,
            child,
            _dir: dir,
        }
    }

    /// The arguments of every `ssh` run through [`SshServer::path_env`], in order.
    pub fn invocations(&self) -> Vec<String> {
        std::fs::read_to_string(self._dir.path().join("invocations.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// PATH with this server's `ssh` first.
    pub fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.ssh_path.clone()];
        paths.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(paths).unwrap()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        // sshd serves each connection in a child of its own session, which
        // outlives the listener: stop those first. Their end closes the ssh
        // client's master connection (bollard's, through `ssh -M`), which then exits.
        for pid in children_of(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// Processes whose command line mentions `text`, as `pid: command line`
/// (from /proc).
pub fn processes_mentioning(text: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = String::from_utf8_lossy(&raw).replace('\0', " ");
            args.contains(text)
                .then(|| format!("{pid}: {}", args.trim()))
        })
        .collect()
}

/// Pids whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // `pid (comm) state ppid …`; comm may hold spaces, so split after ')'.
                .and_then(|st| {
                    st.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(parent)
        })
        .collect()
}

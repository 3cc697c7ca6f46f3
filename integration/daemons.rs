//! More engines for the engine tests, started and stopped by the tests
//! themselves (see SPEC.md, "More engines for tests"):
//! - a second dockerd with its own data/exec roots, its own bridge (never
//!   `--bridge=none`: that deletes the host's docker0) and a TLS port whose
//!   certificates `openssl` makes here;
//! - an sshd on 127.0.0.1 with a key made here, whose sessions see
//!   `DOCKER_HOST` of an engine of our choice;
//! - a Podman API service with its own root, runroot and containers.conf.
//!
//! Every process is a child of the test, stopped by its pid on drop.

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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// the docker docs make them; the client's `ca.pem`, `cert.pem`, `key.pem`
/// are in `client`.
pub struct Certs {
    pub dir: PathBuf,
    pub client: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            must(Command::new("openssl").current_dir(dir).args(args));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=prebuilder-test-ca",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [("server", "127.0.0.1"), ("client", "prebuilder-test")] {
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &format!("{name}-cert.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        let client = dir.join("client");
        std::fs::create_dir_all(&client).unwrap();
        for (from, to) in [
            ("ca.pem", "ca.pem"),
            ("client-cert.pem", "cert.pem"),
            ("client-key.pem", "key.pem"),
        ] {
            std::fs::copy(dir.join(from), client.join(to)).unwrap();
        }
        Certs {
            dir: dir.to_path_buf(),
            client,
        }
    }
}

/// A second dockerd: unix socket plus a `--tlsverify` TCP port on 127.0.0.1.
pub struct SecondDockerd {
    pub sock: PathBuf,
    /// `127.0.0.1:PORT`, TLS only.
    pub tcp: String,
    pub certs: Certs,
    bridge: String,
    child: Child,
    log: PathBuf,
    /// Data and exec roots, certificates, log; removed after the daemon stops.
    dir: tempfile::TempDir,
}

impl SecondDockerd {
    pub fn start() -> SecondDockerd {
        let dir = tempfile::Builder::new()
            .prefix("en-dockerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let certs = Certs::make(&d.join("certs"));
        // Its own bridge: a dockerd needs one (and must never get
        // --bridge=none), and it must not touch the host's docker0.
        let n = std::process::id() % 100_000;
        let bridge = format!("br-en{n}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        must(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        let net = format!("10.{}.{}.1/24", 200 + n % 50, n % 250);
        must(Command::new("ip").args(["addr", "add", &net, "dev", &bridge]));
        must(Command::new("ip").args(["link", "set", &bridge, "up"]));
        std::fs::write(
            d.join("daemon.json"),
            r#"{"storage-driver": "fuse-overlayfs"}"#,
        )
        .unwrap();
        let sock = d.join("docker.sock");
        let tcp = format!("127.0.0.1:{}", free_port());
        let log = d.join("dockerd.log");
        let c = &certs.dir;
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("-H")
            .arg(format!("tcp://{tcp}"))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(c.join("ca.pem"))
            .arg("--tlscert")
            .arg(c.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(c.join("server-key.pem"))
            .args(["--iptables=false", "--ip-masq=false"])
            .arg(format!("--bridge={bridge}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("dockerd (Debian docker.io)");
        let daemon = SecondDockerd {
            sock,
            tcp,
            certs,
            bridge,
            child,
            log,
            dir,
        };
        wait_until(
            "the second dockerd",
            Duration::from_secs(60),
            || daemon.docker(&["version"]).status.success(),
            &daemon.log,
        );
        daemon
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .expect("docker")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} on the second dockerd: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Copy an image from the main engine (`docker save | docker load`).
    pub fn load_from_main(&self, image: &str) {
        copy_image(image, &self.host());
    }
}

/// `docker save IMAGE` from the main engine into the engine at `host`.
pub fn copy_image(image: &str, host: &str) {
    let mut save = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    let out = save.stdout.take().unwrap();
    let load = Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(["load", "-q"])
        .stdin(out)
        .output()
        .expect("docker load");
    assert!(save.wait().unwrap().success(), "docker save {image}");
    assert!(
        load.status.success(),
        "docker load into {host}: {}",
        String::from_utf8_lossy(&load.stderr)
    );
}

impl Drop for SecondDockerd {
    fn drop(&mut self) {
        // Containers first, so the daemon's shutdown has nothing to wait for.
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        stop(&mut self.child, Duration::from_secs(30));
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // fuse-overlayfs mounts left by a killed daemon would block the removal.
        let data = self.dir.path().join("data");
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&*data.to_string_lossy()) {
                    let _ = Command::new("umount").arg("-l").arg(m).output();
                }
            }
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

/// `podman system service` on its own socket, root and runroot, with the
/// containers.conf this sandbox needs (explicit ulimits: no CAP_SYS_RESOURCE)
/// and a registries.conf marking `insecure` registries (Podman pushes over
/// HTTP only to those).
pub struct PodmanService {
    pub sock: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl PodmanService {
    pub fn start(insecure: &[&str]) -> PodmanService {
        let dir = tempfile::Builder::new()
            .prefix("en-podman-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .unwrap();
        let mut registries = String::from("unqualified-search-registries = []\n");
        for r in insecure {
            registries.push_str(&format!(
                "[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"
            ));
        }
        std::fs::write(d.join("registries.conf"), registries).unwrap();
        let (root, runroot) = (d.join("root"), d.join("runroot"));
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\
                 [storage.options.overlay]\nmount_program = \"/usr/bin/fuse-overlayfs\"\n",
                root.display(),
                runroot.display()
            ),
        )
        .unwrap();
        let sock = d.join("podman.sock");
        let log = d.join("service.log");
        let child = Command::new("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", sock.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("podman (Debian podman)");
        let service = PodmanService { sock, child, dir };
        wait_until(
            "the podman service",
            Duration::from_secs(30),
            || service.docker(&["version"]).status.success(),
            &log,
        );
        service
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// The docker CLI against the service.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .output()
            .expect("docker")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} on podman: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        stop(&mut self.child, Duration::from_secs(10));
        // fuse-overlayfs mounts of the storage, so the temp dir can go.
        if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
            let d = self.dir.path().to_string_lossy().into_owned();
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&d) {
                    let _ = Command::new("umount").arg("-l").arg(m).output();
                }
            }
        }
    }
}

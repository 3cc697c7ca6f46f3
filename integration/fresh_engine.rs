//! A fresh, empty second Docker engine for the fresh-runner tests (issue 11):
//! its own dockerd with its own data-root, exec-root, socket, pidfile and
//! bridge (`br-fr<n>`; never `--bridge=none`, which deletes the host's
//! docker0), `--iptables=false`, and the `vfs` storage driver, so images built
//! there come from a different storage driver than the main engine's. Stopped
//! by its pid, its bridge deleted, its directories removed on drop.
//!
//! Kept apart from other second-engine harnesses so they can be unified later.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub struct FreshEngine {
    /// `unix:///…/docker.sock`, for `DOCKER_HOST`.
    pub host: String,
    child: Child,
    bridge: String,
    dir: tempfile::TempDir,
}

impl FreshEngine {
    pub fn start() -> FreshEngine {
        // Short paths: containerd's sockets live under the exec-root.
        let dir = tempfile::Builder::new()
            .prefix("fr-engine-")
            .tempdir_in("/tmp")
            .unwrap();
        let n = std::process::id() % 100_000;
        let bridge = format!("br-fr{n}");
        let subnet = 100 + (n % 100);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec![
                "addr",
                "add",
                &format!("10.231.{subnet}.1/24"),
                "dev",
                &bridge,
            ],
            vec!["link", "set", &bridge, "up"],
        ] {
            let o = Command::new("ip").args(&args).output().expect("ip");
            assert!(
                o.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let p = |name: &str| dir.path().join(name);
        let socket = p("docker.sock");
        let log = std::fs::File::create(p("dockerd.log")).unwrap();
        // Its own config file: the host's /etc/docker/daemon.json sets data-root and driver.
        std::fs::write(p("daemon.json"), r#"{"storage-driver": "vfs"}"#).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(p("daemon.json"))
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            .args(["--log-level", "error"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let engine = FreshEngine {
            host: format!("unix://{}", socket.display()),
            child,
            bridge,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer:\n{}",
                std::fs::read_to_string(engine.path("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .expect("docker")
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} on the second engine: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for FreshEngine {
    fn drop(&mut self) {
        // SIGTERM by pid (dockerd stops its containers and its containerd), then wait.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

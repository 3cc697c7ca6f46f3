//! Issue 12: a build stopped at any phase (SIGTERM, or SIGKILL and a later
//! run or `gc`) leaves nothing behind: no container, no temporary file, no
//! untagged image, no wrong tag; runs with different TMPDIRs share one lock.
//!
//! Each test stages a wheel of random bytes under a name of its own: its keys
//! are new (nothing cached, whatever else uses the engine), its upload and
//! layer are big enough that every phase lasts seconds, and every image built
//! from it can be found by the name in its `prebuilder.artifacts` label.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use crate::daemons::Engine;
use crate::support::*;

/// A wheel of `mb` MiB of random data installing package `name`.
fn big_wheel(dir: &Path, name: &str, mb: usize) -> PathBuf {
    let script = r#"
import os, sys, zipfile
out, name, mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
whl = os.path.join(out, f"{name}-1.0-py3-none-any.whl")
with zipfile.ZipFile(whl, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
    z.writestr(f"{name}/data.bin", os.urandom(mb << 20))
    di = f"{name}-1.0.dist-info"
    z.writestr(f"{di}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    z.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: prebuilder-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{di}/RECORD", "")
print(whl)
"#;
    let o = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(name)
        .arg(mb.to_string())
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// A package name no other test or run uses.
fn unique_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("rb{test}{}x{nanos}", std::process::id())
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// One test's world: its own state root and TMPDIR, a repository, a wheel.
struct World {
    dir: tempfile::TempDir,
    repo: TestRepo,
    name: String,
    wheel: PathBuf,
}

impl World {
    fn new(test: &str, mb: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        for d in ["state", "tmp", "wheels"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let name = unique_name(test);
        let wheel = big_wheel(&dir.path().join("wheels"), &name, mb);
        World {
            repo: TestRepo::new(&format!("rb-{test}")),
            dir,
            name,
            wheel,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn prebuilder(&self) -> Command {
        let mut c = prebuilder();
        c.env("PREBUILDER_STATE_DIR", self.state())
            .env("TMPDIR", self.tmp());
        c
    }

    /// A build of this world's wheel (`--extra-package`) into its repository.
    fn build(&self) -> Build {
        self.build_of(&self.wheel, &self.repo.name)
    }

    /// A build of `wheel` (`--extra-package`) into `repository`.
    fn build_of(&self, wheel: &Path, repository: &str) -> Build {
        Build::new(&Fixtures::load().beam_image)
            .env("PREBUILDER_STATE_DIR", self.state())
            .env("TMPDIR", self.tmp())
            .repository(repository)
            .arg("--extra-package")
            .arg(wheel)
    }

    fn scratch(&self, pid: u32) -> PathBuf {
        self.state().join(format!("tmp/{}-{pid}", host()))
    }

    /// Containers a process made that are still on the engine.
    fn containers_of(&self, pid: u32) -> Vec<String> {
        docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=prebuilder.pid={pid}"),
            "--format",
            "{{.Names}}",
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// Every image (tagged or not) built from this test's wheel.
    fn images(&self) -> Vec<String> {
        let ids = docker_ok(&[
            "images",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            "label=prebuilder.artifacts",
        ]);
        let ids: Vec<&str> = ids.lines().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Id}} {{index .Config.Labels \"prebuilder.artifacts\"}}",
        ];
        args.extend(&ids);
        // An image removed between the two calls makes inspect fail for it only.
        let o = docker(&args);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains(&self.name))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// Nothing of process `pid`: no container, no scratch directory, nothing
    /// in TMPDIR, no image from this wheel (tagged or not).
    fn assert_nothing_left(&self, pid: u32, what: &str) {
        assert_eq!(self.containers_of(pid), Vec::<String>::new(), "{what}");
        assert!(
            !self.scratch(pid).exists(),
            "{what}: scratch directory left"
        );
        let tmp: Vec<_> = std::fs::read_dir(self.tmp()).unwrap().collect();
        assert!(tmp.is_empty(), "{what}: files left in TMPDIR: {tmp:?}");
        assert_eq!(self.images(), Vec::<String>::new(), "{what}: images left");
        assert_eq!(self.repo.tags(), Vec::<String>::new(), "{what}: tags left");
    }
}

/// A prebuilder run whose stderr is read line by line.
struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(mut c: Command) -> Running {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        track(child.id());
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Read stderr up to the first line containing `needle` (the phase's event).
    fn wait_for(&mut self, needle: &str) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.seen.push(line.clone());
            if line.contains(needle) {
                return;
            }
        }
        panic!("the run ended before {needle:?}: {:#?}", self.seen);
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The exit status and the rest of stderr.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let status = self.child.wait().unwrap();
        self.seen.extend(rest.iter().cloned());
        (status.code(), self.seen)
    }
}

/// The image of a successful build report has the wheel's package installed.
fn assert_installed(w: &World, out: &std::process::Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let report = json(out);
    let image = report["image"].as_str().unwrap();
    let o = python_in(image, &format!("import {} as m; print(m.VALUE)", w.name));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    report
}

/// SIGTERM while uploading, while the setup runs and while the layer is
/// written: exit 143 after clean-up, and nothing of the run is left; then
/// the same build, uninterrupted, builds the layer (nothing half-made was
/// taken for a hit) and the image works.
#[test]
fn sigterm_at_each_phase_leaves_nothing_and_the_next_build_is_correct() {
    let w = World::new("term", 100);
    for phase in [
        "uploading",
        "running /opt/apache/beam/boot",
        "writing the layer",
    ] {
        let mut run = Running::spawn(w.build().command());
        run.wait_for(phase);
        let pid = run.pid();
        assert!(w.scratch(pid).is_dir(), "the run's scratch directory");
        run.signal("TERM");
        let (code, seen) = run.finish();
        assert_eq!(code, Some(143), "SIGTERM at {phase}: {seen:#?}");
        assert!(
            seen.iter().any(|l| l.contains("interrupted (SIGTERM)")),
            "{seen:#?}"
        );
        assert!(
            seen.iter()
                .any(|l| l.contains("removed the 1 container(s) this build had created")),
            "the setup container existed, and its removal is said: {seen:#?}"
        );
        w.assert_nothing_left(pid, &format!("SIGTERM at {phase}"));
    }
    let out = w.build().run();
    let report = assert_installed(&w, &out);
    assert_eq!(layers(&report)[0].1, "miss");
}

/// SIGTERM while pushing: the local result is complete (it was tagged before
/// the push), no container or temporary file is left, and the registry's
/// content tag is either absent or the result's; a rerun pushes and the
/// registry's tag is the reported digest.
#[test]
fn sigterm_while_pushing_leaves_no_wrong_tag() {
    let w = World::new("push", 60);
    let registry = TestRegistry::start(None);
    let repo = format!("{}/rb-push-{}", registry.addr, std::process::id());
    let build = w.build_of(&w.wheel, &repo).push();
    let mut running = Running::spawn(build.command());
    running.wait_for("pushing ");
    let pid = running.pid();
    running.signal("TERM");
    let (code, seen) = running.finish();
    let path = repo.split_once('/').unwrap().1;
    let tags = docker_ok(&["images", &repo, "--format", "{{.Tag}}"]);
    let key_tag = tags.lines().next().unwrap_or_default().to_string();
    let after_signal = registry.digest(path, &key_tag, None);
    assert_eq!(code, Some(143), "{seen:#?}");
    assert_eq!(w.containers_of(pid), Vec::<String>::new());
    assert!(!w.scratch(pid).exists());

    let report = build.ok();
    let digest = report["digest"].as_str().unwrap().to_string();
    assert_eq!(
        report["image"].as_str().unwrap(),
        format!("{repo}:{key_tag}")
    );
    if let Some(d) = after_signal {
        assert_eq!(d, digest, "the tag set before the signal is the result's");
    }
    assert_eq!(registry.digest(path, &key_tag, None), Some(digest));
    forget_local(&repo);
    assert_eq!(w.images(), Vec::<String>::new());
}

/// SIGKILL during the setup leaves its container (nothing can run in a
/// killed process); `gc --dry-run` lists it and the scratch directory, and
/// the next build removes both before building correctly.
#[test]
fn after_sigkill_in_setup_the_next_build_sweeps_and_builds() {
    let w = World::new("kill", 20);
    let mut running = Running::spawn(w.build().command());
    running.wait_for("running /opt/apache/beam/boot");
    let pid = running.pid();
    running.signal("KILL");
    let (code, _) = running.finish();
    assert_eq!(code, None, "killed");
    let left = w.containers_of(pid);
    assert_eq!(left.len(), 1, "the killed run's setup container stays");
    assert!(w.scratch(pid).is_dir());

    let dry = run(w
        .prebuilder()
        .args(["gc", "--dry-run", "--repository", &w.repo.name]));
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains(&format!("would remove container {}", left[0])),
        "{text}"
    );
    assert!(
        text.contains(&w.scratch(pid).display().to_string()),
        "{text}"
    );
    assert_eq!(w.containers_of(pid), left, "a dry run removes nothing");

    let out = w.build().run();
    let report = assert_installed(&w, &out);
    assert_eq!(layers(&report)[0].1, "miss");
    assert_eq!(w.containers_of(pid), Vec::<String>::new(), "swept");
    assert!(!w.scratch(pid).exists(), "swept");
}

/// SIGKILL while the layer is written leaves the layer's temporary files;
/// `gc` removes them and the container, and says so.
#[test]
fn after_sigkill_while_writing_the_layer_gc_removes_the_leftovers() {
    let w = World::new("killw", 100);
    let mut running = Running::spawn(w.build().command());
    running.wait_for("writing the layer");
    let pid = running.pid();
    running.signal("KILL");
    let (code, _) = running.finish();
    assert_eq!(code, None, "killed");
    let files = std::fs::read_dir(w.scratch(pid)).unwrap().count();
    assert!(files > 0, "the layer's temporary files were left");
    let left = w.containers_of(pid);
    assert_eq!(left.len(), 1);

    let gc = run(w.prebuilder().args(["gc", "--repository", &w.repo.name]));
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    let text = String::from_utf8_lossy(&gc.stdout);
    assert!(
        text.contains(&format!("removed container {}", left[0])),
        "{text}"
    );
    w.assert_nothing_left(pid, "gc after SIGKILL while writing the layer");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallFs(PathBuf);

impl SmallFs {
    /// `size` (mount's syntax, e.g. `40m`) at `dir`; `None` where this
    /// process may not mount (the test then says so and passes).
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "prebuilder-test",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 22: with the state directory on a 40 MB file system, a layer that
/// does not fit is named before anything is written (which directory, how
/// much is needed, PREBUILDER_STATE_DIR), not retried as a commit that the
/// check then refuses blaming the engine; nothing is left behind.
#[test]
fn a_state_directory_too_small_for_the_layer_is_named() {
    // 60 MB of files in the layer: more than the 40 MB there is, even for
    // the streaming path, which writes only the layer files there.
    let w = World::new("full", 60);
    let Some(_small) = SmallFs::mount(&w.state(), "40m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let running = Running::spawn(w.build().command());
    let pid = running.pid();
    let (code, lines) = running.finish();
    let text = lines.join("\n");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("not enough space to write the application layer"),
        "{text}"
    );
    assert!(
        text.contains(&w.scratch(pid).display().to_string()),
        "{text}"
    );
    assert!(text.contains("PREBUILDER_STATE_DIR"), "{text}");
    assert!(!text.contains("committing"), "no fallback: {text}");
    assert!(!text.contains("did not apply"), "{text}");
    w.assert_nothing_left(pid, "a full state directory");
}

/// Four identical runs, each with its own TMPDIR and the default state
/// root: one builds, the others wait for its lock and find its layer; one
/// image, no untagged copies.
#[test]
fn four_runs_with_different_tmpdirs_build_once() {
    let w = World::new("race", 5);
    let runs: Vec<Child> = (0..4)
        .map(|i| {
            let tmp = w.dir.path().join(format!("tmp{i}"));
            std::fs::create_dir(&tmp).unwrap();
            let child = w
                .build()
                .env_remove("PREBUILDER_STATE_DIR")
                .env("TMPDIR", &tmp)
                .command()
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            track(child.id());
            child
        })
        .collect();
    let mut ids = Vec::new();
    let mut misses = 0;
    for child in runs {
        let out = child.wait_with_output().unwrap();
        let report = assert_installed(&w, &out);
        ids.push(report["image_id"].as_str().unwrap().to_string());
        misses += layers(&report).iter().filter(|l| l.1 == "miss").count();
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one image: {ids:?}");
    assert_eq!(misses, 1, "built once");
    assert_eq!(w.images(), ids, "no untagged copies");
}

/// Issue 12: `--no-cache --push --tag stable` pushed a new digest under the
/// content tag and then failed on `stable`, leaving the registry's two tags
/// disagreeing. Issue 18: the rebuild is byte-identical, so it is pushed and
/// moves nothing (a rebuild with other bytes is refused: unit tests). A
/// `--tag` holding other content is refused before any work, and the
/// registry's tags stay as they were.
#[test]
fn tag_attacks_on_the_registry_are_refused_before_any_work() {
    let w = World::new("tags", 1);
    let registry = TestRegistry::start(None);
    let repo = format!("{}/rb-tags-{}", registry.addr, std::process::id());
    let path = repo.split_once('/').unwrap().1.to_string();
    let build = |wheel: &Path| w.build_of(wheel, &repo).push().tag("stable");
    let report = build(&w.wheel).ok();
    let digest = report["digest"].as_str().unwrap().to_string();
    let key_tag = report["image"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        registry.digest(&path, "stable", None).as_ref(),
        Some(&digest)
    );

    let no_cache = build(&w.wheel).arg("--no-cache").run();
    assert_eq!(no_cache.status.code(), Some(0), "{}", stderr(&no_cache));
    let err = stderr(&no_cache);
    assert!(err.contains("building"), "rebuilt: {err}");
    assert!(err.contains("the rebuild is identical"), "{err}");
    assert_eq!(json(&no_cache)["digest"], digest.as_str());

    let other = big_wheel(&w.dir.path().join("wheels"), &format!("{}b", w.name), 1);
    let conflict = build(&other).run();
    assert_eq!(conflict.status.code(), Some(2), "{}", stderr(&conflict));
    let err = stderr(&conflict);
    assert!(
        err.contains(&format!(
            "{repo}:stable already exists in the registry with other content"
        )),
        "{err}"
    );
    assert!(!err.contains("building"), "refused before any work: {err}");

    assert_eq!(
        registry.digest(&path, &key_tag, None).as_ref(),
        Some(&digest)
    );
    assert_eq!(registry.digest(&path, "stable", None), Some(digest));
    forget_local(&repo);
}

/// A base image of a few MB on `engine`: the host's sh, sleep and rm with
/// their libraries, and a boot that says it started, then sleeps.
fn import_tiny_base(engine: &Engine, reference: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    let boot_dir = root.join("opt/apache/beam");
    std::fs::create_dir_all(&boot_dir).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let mut files: Vec<String> = vec!["/bin/sh".into(), "/bin/sleep".into(), "/bin/rm".into()];
    let ldd = Command::new("ldd")
        .args(["/bin/sh", "/bin/sleep", "/bin/rm"])
        .output()
        .unwrap();
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') && !word.ends_with(':') {
            files.push(word.to_string());
        }
    }
    for f in &files {
        let to = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(f, &to).unwrap();
    }
    let boot = boot_dir.join("boot");
    std::fs::write(&boot, "#!/bin/sh\necho 'boot: setting up'\nsleep 120\n").unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&boot)
        .status()
        .unwrap();
    let tar = dir.path().join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let o = engine.docker(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/opt/apache/beam/boot\"]",
        tar.to_str().unwrap(),
        reference,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 12: an engine restart mid-build showed only hyper's "Connect".
/// Now the error says the engine went away during the setup and to run
/// again, and the build removes its setup container once the engine is back.
#[test]
fn an_engine_restarted_mid_setup_says_so_and_leaves_nothing() {
    let mut engine = Engine::dockerd().storage("vfs").start();
    import_tiny_base(&engine, "rb-tiny:1");
    let dir = tempfile::tempdir().unwrap();
    let req = unique_requirements(dir.path(), "six\n");
    let c = Build::new("rb-tiny:1")
        .text()
        .host(&engine.host())
        .env("PREBUILDER_STATE_DIR", dir.path().join("state"))
        .arg("--no-check")
        .repository("rb-test/restart")
        .requirements(&req)
        .command();
    let mut running = Running::spawn(c);
    running.wait_for("boot: setting up");
    engine.restart();
    let (code, seen) = running.finish();
    assert_eq!(code, Some(3), "unavailable, worth a retry: {seen:#?}");
    let text = seen.join("\n");
    assert!(
        text.contains("went away during the setup of the dependencies layer; the result was not tagged; run again"),
        "{text}"
    );
    assert!(text.contains("hint: check that the engine is up"), "{text}");
    let left = engine.docker(&["ps", "-a", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "no container left"
    );
    let tags = engine.docker(&["images", "-q", "rb-test/restart"]);
    assert_eq!(
        String::from_utf8_lossy(&tags.stdout).trim(),
        "",
        "nothing tagged"
    );
}

/// Issue 12: a staged file with a 254-character name failed inside the
/// engine ("file name too long": fuse-overlayfs keeps shorter names) with
/// the engine's "retry" hint. Staged files now go on a volume: it builds.
#[test]
fn a_254_character_staged_name_builds() {
    let fx = Fixtures::load();
    let repo = TestRepo::new("rb-longname");
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}.txt", "n".repeat(250));
    assert_eq!(name.len(), 254);
    let file = dir.path().join(&name);
    std::fs::write(&file, "staged\n").unwrap();
    let req = unique_requirements(dir.path(), "");
    let out = Build::new(&fx.beam_image)
        .env("PREBUILDER_STATE_DIR", dir.path().join("state"))
        .repository(&repo.name)
        .requirements(&req)
        .arg("--files-to-stage")
        .arg(&file)
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(setup_containers(), Vec::<String>::new());
}

//! The command the setup container runs: the base image's own boot in
//! setup-only mode (or, for PyFlink builds, `flink-setup.sh`: the step is the
//! mode's `run_setup` function, see `super::flink`), wrapped in a few lines of
//! `sh` that
//! - give pip `PIP_NO_INDEX=1` when the container has no network, so a
//!   missing requirement fails in seconds with pip's own message instead of a
//!   minute of retries; it is set in the script, not in the container's
//!   environment, because a commit copies the container's environment into
//!   the image;
//! - leave Python's version and `pip freeze --all` at `crate::record::RECORD_FILE`
//!   after a successful setup, for the image's record;
//! - delete the staged files after a successful setup, so the layer carries
//!   installed packages, not wheels (files created and deleted in one
//!   container never reach the layer);
//! - snapshot what the setup changed (`SNAPSHOT_DIR`), from which the build
//!   writes the layer without diffing the whole filesystem.

#[cfg(test)]
use crate::plan::ARTIFACTS_DIR;
use crate::plan::BOOT;
use crate::stage::SetupMode;

/// Where the setup script leaves the layer snapshot: `layer.tar` (what the
/// setup created or changed) and `deleted` (NUL-separated `./paths`).
pub const SNAPSHOT_DIR: &str = "/.prebuilder-snapshot";
/// The pip freeze's name in [`SNAPSHOT_DIR`] when the setup took a snapshot
/// (`setup.sh` writes it there, out of the walk's way; else at the record's path).
pub const FREEZE_NAME: &str = "freeze";
/// The tar of the `.dist-info/RECORD` files among the snapshot's paths, in
/// [`SNAPSHOT_DIR`] beside `layer.tar` whenever that is there: the split is
/// planned from it, so `layer.tar` is read once, as a stream.
pub const RECORDS_NAME: &str = "records.tar";
use crate::record::RECORD_FILE;
use crate::stage::MANIFEST_FILE;

/// The directory of the setup's volume (`ContainerSpec::volume`), if it
/// has one: Beam's artifacts directory. Its setup deletes the staged files
/// and its snapshot skips that directory; PyFlink's setup keeps files it
/// uploads, so it has none.
pub fn volume(mode: &SetupMode) -> Option<&'static str> {
    matches!(mode, SetupMode::Beam).then_some(crate::plan::ARTIFACTS_DIR)
}

/// The snapshot's bytes in [`volume`]: [`SNAPSHOT_DIR`] is a symbolic link
/// to this directory there (see `setup.sh`), off the storage driver.
const SPOOL_NAME: &str = ".prebuilder-snapshot";

/// The script (`setup.sh`): `$1` = 1 to set PIP_NO_INDEX, then the
/// top-level staged names to remove. The artifacts directory itself stays
/// (empty), as in Beam's own images. The boot's exit status is the script's.
use crate::plan::keys::SETUP_SCRIPT as SCRIPT;

/// Entrypoint and arguments of the setup container of a Beam build.
/// `epoch`: the layer's `SOURCE_DATE_EPOCH` (see `image::reproducible`).
pub fn command(no_index: bool, epoch: u64, names: &[&str]) -> Vec<String> {
    command_for(&SetupMode::Beam, no_index, epoch, names)
}

/// Entrypoint and arguments of the setup container: the script around the
/// mode's setup step (a `run_setup` function defined before it), with a
/// layer snapshot.
pub fn command_for(mode: &SetupMode, no_index: bool, epoch: u64, names: &[&str]) -> Vec<String> {
    command_with(mode, no_index, epoch, (Snapshot::OnVolume, None), names)
}

/// Whether the setup takes a snapshot, and where its bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// None: the container will be committed.
    No,
    /// In the container's own filesystem (through its storage driver).
    InContainer,
    /// On the setup's [`volume`] when it has one (see `setup.sh`), else
    /// in the container; for engines that read it there
    /// (`Engine::reads_volume_links`).
    OnVolume,
    /// [`Snapshot::OnVolume`], in the parts prebuilder lists while the
    /// setup waits ([`PARTS_DIR`], `build::layer`).
    InParts,
}

/// Where, in [`SNAPSHOT_DIR`], prebuilder leaves the part lists
/// ([`Snapshot::InParts`]), `NNN.start` as it starts reading each part
/// (the setup waits while they come), then [`PARTS_DONE`] once it has read
/// them all.
pub const PARTS_DIR: &str = "parts";
/// The file in [`PARTS_DIR`] that ends the setup's wait.
pub const PARTS_DONE: &str = "done";
/// The line the setup prints once the snapshot's lists are made and it
/// waits for prebuilder to read the parts.
pub const LISTED: &str = "prebuilder: snapshot listed";
/// What the setup prints, before the path of its `RECORD`, once pip has
/// finished installing a distribution (with the parts: `build::early`).
pub const INSTALLED: &str = "prebuilder: installed ";

/// The command that writes part `i`'s tar (its list's paths, as the setup's
/// own snapshot tar takes them) to standard output, run in the setup
/// container while the setup waits ([`Snapshot::InParts`]). GNU tar's
/// status 1 ("file changed as we read it") is not a failure there:
/// nothing writes once the setup has listed its snapshot.
pub fn part_tar_command(i: usize) -> Vec<String> {
    [
        "tar",
        "--null",
        "--no-recursion",
        "--numeric-owner",
        "-C",
        "/",
        "-cf",
        "-",
        "-T",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("{SNAPSHOT_DIR}/{PARTS_DIR}/{i:03}.list")])
    .collect()
}

/// Where, in [`SNAPSHOT_DIR`], prebuilder leaves each early layer's list
/// (`NNN.list`: the files pip has finished installing for one heavy layer,
/// read while the setup still runs, see `build::early`), and the marker its
/// `tar` touches first (`NNN.mark`).
pub const EARLY_DIR: &str = "early";

/// The command that writes early layer `i`'s tar to standard output, as
/// [`part_tar_command`] does, after touching its marker: a file whose
/// status changes after that is found by [`early_check_command`]. Status 1
/// is not a failure here either: the directories above the files change
/// while pip installs others (their dates are not kept), and the files
/// themselves are checked after pip.
pub fn early_tar_command(i: usize) -> Vec<String> {
    let dir = format!("{SNAPSHOT_DIR}/{EARLY_DIR}");
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "touch \"$1\" && exec tar --null --no-recursion --numeric-owner -C / -cf - -T \"$2\""
            .to_string(),
        "prebuilder-early".to_string(),
        format!("{dir}/{i:03}.mark"),
        format!("{dir}/{i:03}.list"),
    ]
}

/// The command that prints, for each of the first `n` early layers, the
/// first of its files (not directories) whose status changed after its
/// marker; nothing when none did. It fails when it cannot tell (a GNU find
/// without `-files0-from`, a file gone).
pub fn early_check_command(n: usize) -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "cd / && i=0 && while [ \"$i\" -lt \"$2\" ]; do f=$1/$(printf %03d \"$i\"); \
         find -files0-from \"$f.list\" -maxdepth 0 ! -type d -newercc \"$f.mark\" -print -quit || exit 1; \
         i=$((i + 1)); done"
            .to_string(),
        "prebuilder-early-check".to_string(),
        format!("{SNAPSHOT_DIR}/{EARLY_DIR}"),
        n.to_string(),
    ]
}

/// The exit statuses of [`part_tar_command`] that give a whole part.
pub const PART_TAR_OK: [i64; 2] = [0, 1];

/// `Snapshot::No` when the container will be committed: a commit would
/// carry the snapshot into the image, and nothing reads it. `base_beam`:
/// the apache-beam version the base must have and the platform, checked
/// before the setup step (a staged SDK wheel was left out:
/// `build::platform::sdk`).
pub fn command_with(
    mode: &SetupMode,
    no_index: bool,
    epoch: u64,
    (snapshot, base_beam): (Snapshot, Option<(&str, &str)>),
    names: &[&str],
) -> Vec<String> {
    let snapshot_dir = if snapshot == Snapshot::No {
        ""
    } else {
        SNAPSHOT_DIR
    };
    let artifacts = super::flink::artifacts_dir(mode);
    // The snapshot's bytes on the setup's volume, when it has one.
    let spool = match volume(mode) {
        Some(dir) if matches!(snapshot, Snapshot::OnVolume | Snapshot::InParts) => {
            format!("{dir}/{SPOOL_NAME}")
        }
        _ => String::new(),
    };
    let parts = if snapshot == Snapshot::InParts {
        "1"
    } else {
        ""
    };
    let manifest = format!("{artifacts}/{MANIFEST_FILE}");
    let (function, step) = super::flink::setup_step(mode);
    let step = super::flink::sh_quote(&step);
    let python = super::flink::sh_quote(super::flink::record_python(mode));
    let (beam, platform) = base_beam.unwrap_or_default();
    let (beam, platform) = (
        super::flink::sh_quote(beam),
        super::flink::sh_quote(platform),
    );
    // Paths go in as variables set at the top of the script (never through
    // the container's environment, for the reason above).
    let script = format!(
        "PREBUILDER_BOOT='{BOOT}'; PREBUILDER_ARTIFACTS='{artifacts}'; PREBUILDER_MANIFEST='{manifest}'; PREBUILDER_RECORD='{RECORD_FILE}'; PREBUILDER_SNAPSHOT='{snapshot_dir}'; PREBUILDER_SPOOL='{spool}'; PREBUILDER_ROOT=''; PREBUILDER_STEP={step}; PREBUILDER_PYTHON={python}; PREBUILDER_EPOCH='{epoch}'; PREBUILDER_BASE_BEAM={beam}; PREBUILDER_PLATFORM={platform}; PREBUILDER_PARTS='{parts}'\n{function}\n{SCRIPT}"
    );
    let mut tops: Vec<&str> = names
        .iter()
        .map(|n| n.split('/').next().unwrap_or(n))
        .collect();
    tops.sort_unstable();
    tops.dedup();
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script,
        "prebuilder-setup".to_string(),
        flag(no_index),
    ];
    cmd.extend(tops.into_iter().map(str::to_string));
    cmd
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_passes_names_as_arguments_not_script_text() {
        let c = command(
            true,
            0,
            &[
                "requirements.txt",
                "a b;rm -rf ~.whl",
                "sub/x.whl",
                "sub/y.whl",
            ],
        );
        assert_eq!(&c[..2], ["/bin/sh", "-c"]);
        assert_eq!(c[3], "prebuilder-setup");
        assert_eq!(c[4], "1");
        assert_eq!(&c[5..], ["a b;rm -rf ~.whl", "requirements.txt", "sub"]);
        assert!(!c[2].contains("a b;rm"));
        assert!(c[2].contains("--setup_only --artifacts"));
        assert!(c[2].contains("/opt/apache/beam/artifacts/artifacts_info.json"));
    }

    #[test]
    fn a_pyflink_command_runs_its_script_as_the_step() {
        let setup = crate::stage::flink::FlinkSetup {
            executable: Some("/opt/flink/python-archives/venv/bin/python".into()),
            client_executable: None,
            files_pythonpath: vec![],
            extra_pythonpath: vec![],
            archives: Default::default(),
            requirements_cache: true,
            requirements_input: None,
        };
        let c = command_for(
            &SetupMode::Flink(setup),
            true,
            0,
            &["archives/venv/venv.zip"],
        );
        assert_eq!(&c[3..], ["prebuilder-setup", "1", "archives"]);
        assert!(
            c[2].contains("PREBUILDER_ARTIFACTS='/tmp/artifacts'"),
            "{}",
            c[2]
        );
        assert!(c[2].contains("PREBUILDER_STEP='the PyFlink setup'"));
        assert!(c[2].contains("PREBUILDER_PYTHON='/opt/flink/python-archives/venv/bin/python'"));
        assert!(c[2].contains(crate::plan::keys::FLINK_SETUP_SCRIPT));
        assert!(c[2].contains("run_setup() ("));
        // Beam's: no function, the script's own default runs the boot.
        let beam = command(false, 0, &[]);
        let prefix = beam[2].split(SCRIPT).next().unwrap();
        assert!(!prefix.contains("run_setup"), "{prefix}");
        assert!(beam[2].contains("PREBUILDER_PYTHON='python'"));
    }

    /// The snapshot's bytes go on the volume only when asked (an engine that
    /// reads them there) and the mode has one (Beam); never without a snapshot.
    #[test]
    fn the_snapshot_is_spooled_on_the_volume_only_when_asked() {
        let spool = |c: &[String]| {
            c[2].split("PREBUILDER_SPOOL='")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap()
                .to_string()
        };
        let beam = SetupMode::Beam;
        let on = command_with(&beam, false, 0, (Snapshot::OnVolume, None), &[]);
        assert_eq!(spool(&on), format!("{ARTIFACTS_DIR}/.prebuilder-snapshot"));
        assert!(on[2].contains("PREBUILDER_SNAPSHOT='/.prebuilder-snapshot'"));
        let inside = command_with(&beam, false, 0, (Snapshot::InContainer, None), &[]);
        assert_eq!(spool(&inside), "");
        assert!(inside[2].contains("PREBUILDER_SNAPSHOT='/.prebuilder-snapshot'"));
        let none = command_with(&beam, false, 0, (Snapshot::No, None), &[]);
        assert_eq!(spool(&none), "");
        assert!(none[2].contains("PREBUILDER_SNAPSHOT=''"));
    }

    /// The setup command with its container paths pointed into a test directory.
    fn on_host(
        mut c: Vec<String>,
        boot: &std::path::Path,
        art: &std::path::Path,
        record: &std::path::Path,
        root: &std::path::Path,
    ) -> Vec<String> {
        c[2] = c[2]
            .replace(BOOT, boot.to_str().unwrap())
            .replace(ARTIFACTS_DIR, art.to_str().unwrap())
            .replace(RECORD_FILE, record.to_str().unwrap())
            .replace(
                "PREBUILDER_ROOT=''",
                &format!("PREBUILDER_ROOT='{}'", root.display()),
            );
        c
    }

    /// The snapshot holds what the setup created or changed, and lists what it deleted.
    #[test]
    fn snapshot_captures_created_changed_and_deleted_paths() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for d in ["olddir", "keepdir"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["keep.txt", "mod.txt", "gone.txt", "olddir/f", "keepdir/k"] {
            std::fs::write(root.join(f), "before").unwrap();
        }
        let art = dir.path().join("artifacts");
        std::fs::create_dir(&art).unwrap();
        std::fs::write(art.join("artifacts_info.json"), "[]").unwrap();
        let boot = dir.path().join("boot");
        let r = root.display();
        std::fs::write(
            &boot,
            format!("#!/bin/sh\necho new > {r}/new.txt\necho changed >> {r}/mod.txt\nrm {r}/gone.txt\nrm -r {r}/olddir\nmkdir {r}/zz {r}/aa {r}/mm\nfor d in zz aa mm; do for f in 9 1 5; do echo $f > {r}/$d/$f; done; done\nmkdir -p {r}/site/demo-1.0.dist-info\necho demo.py,, > {r}/site/demo-1.0.dist-info/RECORD\necho x > {r}/site/demo-1.0.dist-info/METADATA\n"),
        )
        .unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&boot)
            .status()
            .unwrap();
        let c = on_host(
            command(false, 1_000_000_000, &[]),
            &boot,
            &art,
            &dir.path().join("record"),
            &root,
        );
        let out = Command::new(&c[0]).args(&c[1..]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let snap = root.join(SNAPSHOT_DIR.trim_start_matches('/'));
        // A Beam setup's snapshot is on its volume, behind a link.
        assert!(std::fs::symlink_metadata(&snap)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_link(&snap)
            .unwrap()
            .ends_with("artifacts/.prebuilder-snapshot"));
        let deleted = std::fs::read(snap.join("deleted")).unwrap();
        let mut deleted: Vec<&str> = deleted
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        deleted.sort_unstable();
        assert_eq!(deleted, ["./gone.txt", "./olddir", "./olddir/f"]);
        let mut layer = tar::Archive::new(std::fs::File::open(snap.join("layer.tar")).unwrap());
        let names: Vec<String> = layer
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["./new.txt", "./mod.txt"] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(names, sorted, "entries in byte order, not the walk's");
        for n in &names {
            let parent = match n.trim_end_matches('/').rsplit_once('/') {
                Some((p, _)) => p,
                None => continue,
            };
            if parent != "." {
                assert!(
                    names.iter().any(|m| m.trim_end_matches('/') == parent),
                    "{parent} (above {n}) is in the layer: {names:?}"
                );
            }
        }
        // The RECORDs on their own, for the split's plan.
        let mut records = tar::Archive::new(std::fs::File::open(snap.join(RECORDS_NAME)).unwrap());
        let records: Vec<String> = records
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(records, ["./site/demo-1.0.dist-info/RECORD"]);
        for unwanted in ["./keep.txt", "./keepdir/k", "./.prebuilder-snapshot"] {
            assert!(
                !names.iter().any(|n| n.starts_with(unwanted)),
                "{unwanted} in {names:?}"
            );
        }
    }

    /// A root, an artifacts directory with an empty manifest, and a boot
    /// (not yet executable) that creates `new.txt` in the root, under `dir`.
    fn one_file_setup(
        dir: &std::path::Path,
    ) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let art = dir.join("artifacts");
        std::fs::create_dir(&art).unwrap();
        std::fs::write(art.join("artifacts_info.json"), "[]").unwrap();
        let boot = dir.join("boot");
        let r = root.display();
        std::fs::write(&boot, format!("#!/bin/sh\necho new > {r}/new.txt\n")).unwrap();
        (root, art, boot)
    }

    /// The setup command with its snapshot in parts, run on the host in
    /// `dir` (the record beside `root`).
    fn in_parts_on_host(
        dir: &std::path::Path,
        boot: &std::path::Path,
        art: &std::path::Path,
        root: &std::path::Path,
    ) -> Vec<String> {
        let mut c = on_host(command(false, 0, &[]), boot, art, &dir.join("record"), root);
        c[2] = c[2].replace("PREBUILDER_PARTS=''", "PREBUILDER_PARTS='1'");
        c
    }

    /// The snapshot in parts: the setup waits as long as prebuilder keeps
    /// starting parts (`NNN.start`), however long the whole takes, until
    /// `done`; with none for the wait's limit (prebuilder gone) it gives up
    /// (no snapshot), and ends either way.
    #[test]
    fn the_setup_waits_for_its_parts_while_they_keep_starting() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        for progress in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (root, art, boot) = one_file_setup(dir.path());
            Command::new("chmod")
                .arg("755")
                .arg(&boot)
                .status()
                .unwrap();
            let c = in_parts_on_host(dir.path(), &boot, &art, &root);
            // A limit of 2 s without a new part (40 ticks of 50 ms).
            let mut child = Command::new(&c[0])
                .args(&c[1..])
                .env("PREBUILDER_PARTS_TICKS", "40")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            assert!(lines.any(|l| l.unwrap() == LISTED), "the setup lists first");
            let parts = root
                .join(SNAPSHOT_DIR.trim_start_matches('/'))
                .join(PARTS_DIR);
            let started = std::time::Instant::now();
            if progress {
                std::fs::create_dir_all(&parts).unwrap();
                for i in 0..7 {
                    std::thread::sleep(std::time::Duration::from_millis(400));
                    std::fs::write(parts.join(format!("{i:03}.start")), "").unwrap();
                }
                std::fs::write(parts.join(PARTS_DONE), "").unwrap();
            }
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            let gave_up = stderr.contains("the snapshot's parts were not read");
            assert_eq!(gave_up, !progress, "{stderr}");
            if progress {
                // 2.8 s of parts, past the 2 s limit: it waited for them all.
                assert!(started.elapsed() >= std::time::Duration::from_millis(2800));
            }
        }
    }

    /// With the parts, the setup announces each distribution pip has
    /// finished (its RECORD listing INSTALLER, which pip writes last) once,
    /// while the step runs or as it ends, before the snapshot is listed;
    /// not one that was there before, nor one whose RECORD is still the
    /// wheel's.
    #[test]
    fn the_setup_announces_each_distribution_once_pip_has_finished_it() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let (root, art, boot) = one_file_setup(dir.path());
        let site = root.join("site");
        std::fs::create_dir_all(site.join("old-1.0.dist-info")).unwrap();
        std::fs::write(
            site.join("old-1.0.dist-info/RECORD"),
            "old-1.0.dist-info/INSTALLER,,\n",
        )
        .unwrap();
        let s = site.display();
        // pip's order: the wheel's RECORD, then the final one; a second
        // distribution never finished.
        std::fs::write(
            &boot,
            format!(
                "#!/bin/sh\nmkdir {s}/a-1.0.dist-info {s}/b-2.0.dist-info\n\
                 echo a.py,, > {s}/a-1.0.dist-info/RECORD\necho b.py,, > {s}/b-2.0.dist-info/RECORD\n\
                 sleep 0.8\nprintf 'a.py,,\\na-1.0.dist-info/INSTALLER,,\\n' > {s}/a-1.0.dist-info/RECORD.tmp\n\
                 mv {s}/a-1.0.dist-info/RECORD.tmp {s}/a-1.0.dist-info/RECORD\nsleep 0.8\n\
                 mkdir {s}/c-3.0.dist-info\nprintf 'c-3.0.dist-info/INSTALLER,,\\n' > {s}/c-3.0.dist-info/RECORD\n"
            ),
        )
        .unwrap();
        let python = dir.path().join("python");
        std::fs::write(&python, format!("#!/bin/sh\necho {s}\n")).unwrap();
        for f in [&boot, &python] {
            Command::new("chmod").arg("755").arg(f).status().unwrap();
        }
        let mut c = in_parts_on_host(dir.path(), &boot, &art, &root);
        c[2] = c[2].replace(
            "PREBUILDER_PYTHON='python'",
            &format!("PREBUILDER_PYTHON='{}'", python.display()),
        );
        let mut child = Command::new(&c[0])
            .args(&c[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut before_listed = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == LISTED {
                break;
            }
            before_listed.push(line);
        }
        let parts = root
            .join(SNAPSHOT_DIR.trim_start_matches('/'))
            .join(PARTS_DIR);
        std::fs::create_dir_all(&parts).unwrap();
        std::fs::write(parts.join(PARTS_DONE), "").unwrap();
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let announced: Vec<&String> = before_listed
            .iter()
            .filter(|l| l.starts_with("prebuilder: installed "))
            .collect();
        // The last one finished as the step ended: announced then.
        assert_eq!(
            announced,
            [
                &format!("prebuilder: installed {s}/a-1.0.dist-info/RECORD"),
                &format!("prebuilder: installed {s}/c-3.0.dist-info/RECORD"),
            ],
            "{before_listed:?}"
        );
        assert!(!rest.iter().any(|l| l.starts_with("prebuilder: installed")));
    }

    /// An early layer's tar reads its list after touching its marker; the
    /// check after pip names a file changed since then, says nothing when
    /// none did (directories are not files: pip adds to them), and fails
    /// when a file is gone.
    #[test]
    fn an_early_layers_files_are_checked_against_its_marker() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let early = d.join("early");
        std::fs::create_dir_all(early.join("x")).unwrap();
        std::fs::create_dir_all(d.join("site/pkg")).unwrap();
        for f in ["site/pkg/a.py", "site/pkg/b.so"] {
            std::fs::write(d.join(f), f).unwrap();
        }
        let rel = |p: &str| format!(".{}/{p}", d.display());
        let list: Vec<u8> = ["site", "site/pkg", "site/pkg/a.py", "site/pkg/b.so"]
            .iter()
            .flat_map(|p| rel(p).into_bytes().into_iter().chain([0]))
            .collect();
        std::fs::write(early.join("000.list"), &list).unwrap();
        let mut tar = early_tar_command(0);
        tar[4] = early.join("000.mark").display().to_string();
        tar[5] = early.join("000.list").display().to_string();
        let out = Command::new(&tar[0])
            .args(&tar[1..])
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let names: Vec<String> = tar::Archive::new(&out.stdout[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(early.join("000.mark").exists());
        let check = || {
            let mut c = early_check_command(1);
            c[4] = early.display().to_string();
            Command::new(&c[0]).args(&c[1..]).output().unwrap()
        };
        let quiet = check();
        assert!(quiet.status.success());
        assert_eq!(String::from_utf8_lossy(&quiet.stdout), "");
        // Another distribution installed beside it: its directory changes.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(d.join("site/other.py"), "x").unwrap();
        std::fs::write(d.join("site/pkg/new.py"), "x").unwrap();
        assert_eq!(String::from_utf8_lossy(&check().stdout), "");
        // One of its files rewritten.
        std::fs::write(d.join("site/pkg/b.so"), "changed").unwrap();
        let changed = check();
        assert!(changed.status.success());
        assert_eq!(
            String::from_utf8_lossy(&changed.stdout).trim(),
            rel("site/pkg/b.so")
        );
        // One gone.
        std::fs::remove_file(d.join("site/pkg/a.py")).unwrap();
        assert!(!check().status.success());
    }

    /// GNU tar's status 1 ("file changed as we read it", seen under qemu on
    /// a directory nothing wrote to) gets one more read; a second one means
    /// no snapshot (so the build says so), never a half-trusted layer.
    #[test]
    fn a_snapshot_that_changed_while_read_is_read_again_once() {
        use std::process::Command;
        for (fails, want_layer) in [(1, true), (2, false)] {
            let dir = tempfile::tempdir().unwrap();
            let (root, art, boot) = one_file_setup(dir.path());
            // A tar that writes the layer, then exits 1 its first `fails` times.
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).unwrap();
            let real = String::from_utf8(
                Command::new("sh")
                    .args(["-c", "command -v tar"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            let count = dir.path().join("count");
            std::fs::write(
                bin.join("tar"),
                format!(
                    "#!/bin/sh\ncase \"$*\" in *layer.tar*) n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; {real} \"$@\" || exit $?; [ $n -lt {fails} ] && exit 1; exit 0;; esac\nexec {real} \"$@\"\n",
                    c = count.display(),
                    real = real.trim()
                ),
            )
            .unwrap();
            Command::new("chmod")
                .arg("755")
                .arg(&boot)
                .arg(bin.join("tar"))
                .status()
                .unwrap();
            let c = on_host(
                command(false, 0, &[]),
                &boot,
                &art,
                &dir.path().join("record"),
                &root,
            );
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
            let out = Command::new(&c[0])
                .args(&c[1..])
                .env("PATH", path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(stderr.contains("reading it again"), "{stderr}");
            assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "2");
            let layer = root
                .join(SNAPSHOT_DIR.trim_start_matches('/'))
                .join("layer.tar");
            assert_eq!(layer.exists(), want_layer, "fails {fails}: {stderr}");
        }
    }

    /// The record's listing (see `crate::record::parse_listing`): what
    /// Python sees before the setup, and after it each distribution with its
    /// licence metadata, direct URL and wheel tags, from the real `python`
    /// of this machine, with a distribution the fake boot installs.
    #[test]
    fn the_listing_sees_what_the_setup_installed() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let art = dir.path().join("artifacts");
        std::fs::create_dir(&art).unwrap();
        std::fs::write(art.join("artifacts_info.json"), "[]").unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir(&site).unwrap();
        let info = site.join("demo_pkg-1.2.dist-info");
        let boot = dir.path().join("boot");
        std::fs::write(
            &boot,
            format!(
                r#"#!/bin/sh
mkdir -p {i}
printf 'Metadata-Version: 2.4\nName: demo_pkg\nVersion: 1.2\nLicense-Expression: MIT OR Apache-2.0\nClassifier: License :: OSI Approved :: MIT License\nClassifier: Topic :: Other\n' > {i}/METADATA
printf 'Wheel-Version: 1.0\nTag: py3-none-any\n' > {i}/WHEEL
printf '{{"url": "file:///opt/apache/beam/artifacts/demo_pkg-1.2-py3-none-any.whl", "archive_info": {{}}}}' > {i}/direct_url.json
"#,
                i = info.display()
            ),
        )
        .unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&boot)
            .status()
            .unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let c = on_host(
            command(true, 1, &[]),
            &boot,
            &art,
            &dir.path().join("record"),
            &root,
        );
        let out = Command::new(&c[0])
            .args(&c[1..])
            .env("PYTHONPATH", &site)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let freeze = root
            .join(SNAPSHOT_DIR.trim_start_matches('/'))
            .join(FREEZE_NAME);
        let freeze = std::fs::read_to_string(&freeze).unwrap();
        assert!(
            !freeze.is_empty(),
            "this test needs a `python` with pip on PATH, as the images have"
        );
        let (before, after) = crate::record::parse_listing(&freeze);
        assert!(
            !before.is_empty(),
            "the interpreter's own distributions: {freeze}"
        );
        assert!(
            !before.contains_key("demo-pkg"),
            "installed by the setup: {freeze}"
        );
        let demo = after.iter().find(|l| l.name == "demo_pkg").expect(&freeze);
        assert_eq!(demo.version.as_deref(), Some("1.2"));
        assert_eq!(
            demo.license_expression.as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(demo.classifiers, ["License :: OSI Approved :: MIT License"]);
        assert_eq!(demo.tags, ["py3-none-any"]);
        assert_eq!(
            demo.direct_url.as_deref(),
            Some("file:///opt/apache/beam/artifacts/demo_pkg-1.2-py3-none-any.whl")
        );
        let (_, packages) = crate::record::parse_freeze(&freeze);
        assert!(
            packages.contains_key("demo-pkg"),
            "pip's freeze sees it too"
        );
    }

    /// With a staged SDK wheel left out (`build::platform::sdk`), the setup
    /// goes on only on a base whose own apache-beam is the staged wheel's
    /// version (read as the real `python` of this machine lists it), and is
    /// refused before the boot runs otherwise, naming both versions and the
    /// platform.
    #[test]
    fn the_bases_apache_beam_must_be_the_left_out_sdks_version() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let art = dir.path().join("artifacts");
        std::fs::create_dir(&art).unwrap();
        let site = dir.path().join("site");
        let info = site.join("apache_beam-2.77.0.dist-info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("METADATA"),
            "Metadata-Version: 2.1\nName: apache-beam\nVersion: 2.77.0\n",
        )
        .unwrap();
        let ran = dir.path().join("boot-ran");
        let boot = dir.path().join("boot");
        std::fs::write(&boot, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(&boot)
            .status()
            .unwrap();
        let run = |want: &str, site: &std::path::Path| {
            let _ = std::fs::remove_file(&ran);
            std::fs::write(art.join("artifacts_info.json"), "[]").unwrap();
            let root = tempfile::tempdir().unwrap();
            let c = on_host(
                command_with(
                    &SetupMode::Beam,
                    true,
                    1,
                    (Snapshot::No, Some((want, "linux/arm64"))),
                    &[],
                ),
                &boot,
                &art,
                &dir.path().join("record"),
                root.path(),
            );
            let out = Command::new(&c[0])
                .args(&c[1..])
                .env("PYTHONPATH", site)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), text, ran.exists())
        };
        let (status, text, booted) = run("2.77.0", &site);
        assert_eq!(status, Some(0), "{text}");
        assert!(booted, "{text}");
        assert!(
            text.contains("linux/arm64: the base's own apache-beam 2.77.0 is used"),
            "{text}"
        );
        let (status, text, booted) = run("2.78.0", &site);
        assert_eq!(status, Some(96), "{text}");
        assert!(!booted, "refused before the boot: {text}");
        assert!(
            text.contains(
                "prebuilder: refused: linux/arm64: the base's apache-beam is 2.77.0, not 2.78.0"
            ),
            "{text}"
        );
        let tail: Vec<String> = text.lines().map(str::to_string).collect();
        assert!(super::super::flink::failing_step(&SetupMode::Beam, &tail)
            .starts_with("linux/arm64: the base's apache-beam is 2.77.0, not 2.78.0"));
        let (status, text, booted) = run("2.77.0", &dir.path().join("empty"));
        assert_eq!(status, Some(96), "{text}");
        assert!(!booted);
        assert!(
            text.contains("apache-beam is missing, not 2.77.0"),
            "{text}"
        );
        // Without the variable, nothing is checked.
        let c = command_with(&SetupMode::Beam, true, 1, (Snapshot::No, None), &[]);
        assert!(c[2].contains("PREBUILDER_BASE_BEAM=''"));
    }

    /// The script really runs under sh: staged files are removed on success,
    /// kept (and the status passed on) on failure.
    #[test]
    fn script_runs_under_sh() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let art = dir.path().join("artifacts");
        std::fs::create_dir(&art).unwrap();
        let boot = dir.path().join("boot");
        let record = dir.path().join("record");
        std::fs::write(art.join("artifacts_info.json"), "[]").unwrap();
        std::fs::write(art.join("a.whl"), "x").unwrap();
        let run = |exit: i32| {
            std::fs::write(
                &boot,
                format!("#!/bin/sh\necho \"PIP_NO_INDEX=${{PIP_NO_INDEX:-}} $*\"\necho \"SOURCE_DATE_EPOCH=${{SOURCE_DATE_EPOCH:-unset}}\"\nexit {exit}\n"),
            )
            .unwrap();
            Command::new("chmod")
                .arg("755")
                .arg(&boot)
                .status()
                .unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir_all(&root).unwrap();
            let c = on_host(command(true, 1234, &["a.whl"]), &boot, &art, &record, &root);
            Command::new(&c[0]).args(&c[1..]).output().unwrap()
        };
        let failed = run(3);
        assert_eq!(failed.status.code(), Some(3));
        assert!(art.join("a.whl").exists(), "nothing removed on failure");
        let ok = run(0);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(
            out.contains("PIP_NO_INDEX=1 --setup_only --artifacts"),
            "{out}"
        );
        assert!(
            out.contains("\nSOURCE_DATE_EPOCH=1234\n"),
            "the boot sees the layer's epoch: {out}"
        );
        let left: Vec<_> = std::fs::read_dir(&art).unwrap().collect();
        assert!(
            left.is_empty(),
            "staged files and the manifest are gone: {left:?}"
        );
        // The record's freeze, when the host has a `python` with pip: in the
        // snapshot directory (the host has GNU find/tar), never at the
        // record's path, which the snapshot's walk sees.
        assert!(
            !record.exists(),
            "the freeze is not written where the walk lists it"
        );
        let freeze = dir
            .path()
            .join("root")
            .join(SNAPSHOT_DIR.trim_start_matches('/'))
            .join(FREEZE_NAME);
        let freeze = std::fs::read_to_string(&freeze).unwrap();
        assert!(
            freeze.is_empty() || freeze.starts_with("# python 3."),
            "{freeze}"
        );
    }
}

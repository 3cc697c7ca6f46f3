//! A recording fake engine for unit tests: images and containers in memory,
//! every call recorded (`calls()`), any call made to fail once
//! (`fail_on`) or to hang forever, as an interrupted run would see it
//! (`hang_on`, then `reached()` resolves). Containers behave by role: a
//! `setup` container prints lines and exits with the configured status,
//! leaving a pip freeze and (unless told otherwise) a layer snapshot as the
//! real setup script does; a `probe` container prints the image's probe line.
//! `FakeRegistry` answers manifest lookups and receives the fake's pushes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{
    ByteStream, ContainerSpec, ContainerSummary, Engine, ImageInfo, ImageSummary, PushStatus, LABEL,
};
use crate::error::{Error, Result};
use crate::plan::BOOT;
use crate::registry::{BlobBody, Credential, Manifests, RawManifest};

/// A probe line for an image the base checks accept.
pub const GOOD_PROBE: &str = r#"prebuilder-probe: {"executable": "/usr/bin/python3", "version": "3.11.2", "apache_beam": "2.77.0", "pip": "23.0.1", "venv": true, "boot": "executable", "python": "/usr/bin/python", "python3": "/usr/bin/python3", "machine": "x86_64"}"#;

#[derive(Debug, Clone)]
struct FakeImage {
    info: ImageInfo,
    /// Paths in its filesystem (what `exists` sees).
    paths: BTreeSet<String>,
    created: i64,
    probe: String,
}

#[derive(Debug, Clone)]
struct FakeContainer {
    spec: ContainerSpec,
    labels: BTreeMap<String, String>,
    paths: BTreeSet<String>,
    files: BTreeMap<String, Vec<u8>>,
    /// The setup's snapshot entries (path, tar entry) while it waits for
    /// prebuilder to read its parts (`Engine::exec_output`).
    snapshot: Vec<(String, Vec<u8>)>,
}

/// How setup containers behave.
#[derive(Debug, Clone)]
pub struct Setup {
    pub status: i64,
    pub output: Vec<String>,
    /// Whether the setup leaves a layer snapshot (GNU find/tar in the base).
    pub snapshot: bool,
}

#[derive(Default)]
struct State {
    images: BTreeMap<String, FakeImage>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<String>,
    /// `commit` keeps the container's own config, as Podman 4's compat
    /// `/commit` does with the config it is sent.
    commit_ignores_config: bool,
    /// Paths a successful setup leaves in its container.
    leave: Vec<String>,
    fail: BTreeMap<String, usize>,
    hang: Option<String>,
    /// Calls of the op to let through before the one that hangs.
    hang_after: usize,
    /// Images noted by `note_partial_image`, for `remove_leftovers`.
    partial: Vec<String>,
    serial: u64,
    /// Every container spec passed to `create`, in order.
    created: Vec<ContainerSpec>,
    /// The bytes of every layer by diff id (what `export` writes).
    layer_bytes: BTreeMap<String, Vec<u8>>,
    /// The config bytes of loaded images (others get one made up on export).
    configs: BTreeMap<String, Vec<u8>>,
    /// Images a `pull` of their reference brings in (`add_remote_image`).
    remote: BTreeMap<String, FakeImage>,
    /// Answer as Docker's containerd image store does, through the adapter's
    /// translation (`as_containerd_store`): `Some(pulled)`, whether its
    /// images' layers are a registry's (gzip) or loaded ones.
    containerd_store: Option<bool>,
    /// The size the snapshot's tar header claims (`claim_snapshot_size`).
    snapshot_claims: Option<u64>,
    /// The setup starts its snapshot and cannot finish it (`break_snapshot`).
    snapshot_breaks: bool,
    /// Split snapshots are taken in parts (`snapshots_in_parts`), as on
    /// Docker's classic store; the part that fails to be written, if any.
    in_parts: bool,
    part_fails: Option<usize>,
    /// Files every snapshot holds besides `six.py` (`snapshot_adds`).
    snapshot_adds: Vec<(String, Vec<u8>)>,
    /// The setup announces each `RECORD` of its snapshot, as setup.sh does
    /// with the parts, then waits for this many loads before it lists
    /// (`announce_installs`); the file the early check finds changed.
    announces: Option<usize>,
    early_changed: Option<String>,
    /// Load archives from files only, as Podman and the containerd store
    /// do (`load_files_only`); else from streams, as the classic store.
    load_files_only: bool,
    /// Archives loaded from files (the others were streamed).
    loads_from_files: usize,
}

pub struct FakeEngine {
    state: Mutex<State>,
    setup: Mutex<Setup>,
    reached: Notify,
    pub registry: Arc<FakeRegistry>,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The manifest digest of an image [`FakeEngine::add_remote_image`] made:
/// the repo digest a pull of it records.
pub fn remote_manifest_digest(reference: &str) -> String {
    sha(format!("manifest of {reference}").as_bytes())
}

/// Whether the container's setup takes its snapshot in parts (setup.sh's
/// `PREBUILDER_PARTS`).
fn asks_for_parts(c: &FakeContainer) -> bool {
    c.spec
        .entrypoint
        .iter()
        .any(|a| a.contains("PREBUILDER_PARTS='1'"))
}

fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    tar_of_files(&[(name.to_string(), content.to_vec())])
}

fn tar_of_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &content[..])
            .expect("in-memory tar");
    }
    b.into_inner().expect("in-memory tar")
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine {
            state: Mutex::new(State::default()),
            setup: Mutex::new(Setup {
                status: 0,
                output: vec!["boot: installing requirements.txt".into()],
                snapshot: true,
            }),
            reached: Notify::new(),
            registry: Arc::new(FakeRegistry::new("localhost:5000")),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake engine state")
    }

    /// A Beam SDK-like base image (boot, /bin/sh, a passing probe) tagged `reference`.
    pub fn add_base(&self, reference: &str) -> String {
        self.add_image(reference, &[BOOT, "/bin/sh"], GOOD_PROBE)
    }

    /// Answer `inspect` as the adapter does on Docker's containerd image store
    /// (see `containerd`): the store's manifest-digest ids and repo digests,
    /// translated back; `pulled`: its layers are gzip, as a pull leaves them.
    pub fn as_containerd_store(&self, pulled: bool) {
        self.state().containerd_store = Some(pulled);
    }

    /// An image with these paths and probe output, tagged `reference`.
    pub fn add_image(&self, reference: &str, paths: &[&str], probe: &str) -> String {
        let id = sha(reference.as_bytes());
        let info = ImageInfo {
            id: id.clone(),
            entrypoint: vec![BOOT.into()],
            cmd: Vec::new(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            labels: BTreeMap::new(),
            repo_tags: vec![reference.to_string()],
            repo_digests: Vec::new(),
            created: Some("2026-01-01T00:00:00Z".into()),
            history: Vec::new(),
            os: "linux".into(),
            last_tagged: None,
            architecture: "amd64".into(),
            layers: vec![sha(b"base layer")],
            config: serde_json::json!({
                "Entrypoint": [BOOT],
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            }),
        };
        let image = FakeImage {
            info,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            created: 0,
            probe: probe.to_string(),
        };
        let mut s = self.state();
        s.images.insert(id.clone(), image);
        s.layer_bytes
            .insert(sha(b"base layer"), b"base layer".to_vec());
        id
    }

    /// Say the image `reference` is for `architecture` (images are amd64).
    pub fn set_architecture(&self, reference: &str, architecture: &str) {
        let id = sha(reference.as_bytes());
        if let Some(image) = self.state().images.get_mut(&id) {
            image.info.architecture = architecture.to_string();
        }
    }

    /// The registry manifests an image was pulled by (`repo@digest`).
    pub fn set_repo_digests(&self, reference: &str, digests: &[&str]) {
        let mut s = self.state();
        if let Some(i) = s
            .images
            .values_mut()
            .find(|i| i.info.repo_tags.iter().any(|t| t == reference))
        {
            i.info.repo_digests = digests.iter().map(|d| d.to_string()).collect();
        }
    }

    /// Another name for the image tagged `reference`.
    pub fn tag_as(&self, reference: &str, other: &str) {
        let mut s = self.state();
        if let Some(i) = s
            .images
            .values_mut()
            .find(|i| i.info.repo_tags.iter().any(|t| t == reference))
        {
            i.info.repo_tags.push(other.to_string());
        }
    }

    /// An image only its registry has: `pull reference` brings it in with
    /// the id [`FakeEngine::add_image`] would give it (what the registry's
    /// `image_id` must then report, see [`FakeRegistry::set_image_id`]).
    pub fn add_remote_image(&self, reference: &str, paths: &[&str], probe: &str) -> String {
        let id = self.add_image(reference, paths, probe);
        let mut s = self.state();
        if let Some(mut image) = s.images.remove(&id) {
            image.info.repo_digests = vec![format!(
                "{}@{}",
                crate::registry::ImageRef::parse(reference).written,
                remote_manifest_digest(reference)
            )];
            s.remote.insert(reference.to_string(), image);
        }
        id
    }

    /// Make this engine's image `id` pullable as `reference` by `other`:
    /// what a push from here to a registry both share gives a fresh runner.
    pub fn share(&self, id: &str, reference: &str, other: &FakeEngine) {
        let Some(mut image) = self.state().images.get(id).cloned() else {
            return;
        };
        image.info.repo_tags = vec![reference.to_string()];
        let bytes: Vec<(String, Vec<u8>)> = {
            let s = self.state();
            image
                .info
                .layers
                .iter()
                .filter_map(|l| s.layer_bytes.get(l).map(|b| (l.clone(), b.clone())))
                .collect()
        };
        let mut o = other.state();
        o.layer_bytes.extend(bytes);
        o.remote.insert(reference.to_string(), image);
    }

    /// Set a label on an image (what a build would have given it).
    pub fn set_label(&self, id: &str, key: &str, value: &str) {
        if let Some(i) = self.state().images.get_mut(id) {
            i.info.labels.insert(key.to_string(), value.to_string());
        }
    }

    pub fn set_setup(&self, setup: Setup) {
        *self.setup.lock().expect("fake setup") = setup;
    }

    /// Load a `docker save` archive read from `file` (`archive` names it).
    fn load_from<R: Read>(&self, file: R, archive: &Path) -> Result<()> {
        let mut layers: Vec<Vec<u8>> = Vec::new();
        let mut a = tar::Archive::new(file);
        let mut config_bytes = Vec::new();
        for entry in a.entries().map_err(|e| Error::io(archive, e))? {
            let mut entry = entry.map_err(|e| Error::io(archive, e))?;
            let name = entry
                .path()
                .map_err(|e| Error::io(archive, e))?
                .to_string_lossy()
                .into_owned();
            if name == "config.json" {
                entry
                    .read_to_end(&mut config_bytes)
                    .map_err(|e| Error::io(archive, e))?;
            } else if name.ends_with("layer.tar") {
                let mut layer = Vec::new();
                entry
                    .read_to_end(&mut layer)
                    .map_err(|e| Error::io(archive, e))?;
                layers.push(layer);
            }
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::Engine {
                engine: String::new(),
                action: "loading (fake)".into(),
                source: Box::new(e),
            })?;
        let diff_ids: Vec<String> =
            serde_json::from_value(doc["rootfs"]["diff_ids"].clone()).unwrap_or_default();
        let parent = {
            let s = self.state();
            s.images
                .values()
                .find(|i| {
                    i.info.layers[..] == diff_ids[..diff_ids.len().saturating_sub(layers.len())]
                })
                .map(|i| i.info.id.clone())
                .unwrap_or_default()
        };
        let id = crate::image::image_id(&config_bytes);
        {
            let mut s = self.state();
            for layer in layers {
                s.layer_bytes.insert(sha(&layer), layer);
            }
            s.configs.insert(id.clone(), config_bytes.clone());
        }
        self.new_image(
            &parent,
            &doc["config"],
            id.clone(),
            diff_ids,
            BTreeSet::new(),
        );
        // As an engine reports it: the config's own date and architecture.
        if let Some(image) = self.state().images.get_mut(&id) {
            image.info.created = doc["created"].as_str().map(str::to_string);
            if let Some(arch) = doc["architecture"].as_str() {
                image.info.architecture = arch.to_string();
            }
        }
        Ok(())
    }

    /// The snapshot's tar header claims `size` bytes (the stream holds the
    /// real few): a layer too big for the scratch directory, without one.
    /// Load archives from files only, as Podman and the containerd store do.
    /// Split snapshots in parts, as setup.sh takes them there (see
    /// [`Engine::snapshots_in_parts`]); `fails`: the part it cannot write.
    pub fn snapshot_in_parts(&self, fails: Option<usize>) {
        let mut s = self.state();
        s.in_parts = true;
        s.part_fails = fails;
    }

    /// With the parts, the setup announces each `RECORD` its snapshot
    /// holds (`prebuilder: installed <path>`, as setup.sh does while pip
    /// runs), then waits until `loads` archives were loaded (the layers
    /// made meanwhile; at most 10 s) before it lists its snapshot. The
    /// check of those layers' files finds `changed` changed, if given.
    pub fn announce_installs(&self, loads: usize, changed: Option<&str>) {
        let mut s = self.state();
        s.announces = Some(loads);
        s.early_changed = changed.map(str::to_string);
    }

    pub fn load_files_only(&self) {
        self.state().load_files_only = true;
    }

    /// How many archives were loaded from files (not streamed).
    pub fn loads_from_files(&self) -> usize {
        self.state().loads_from_files
    }

    pub fn claim_snapshot_size(&self, size: u64) {
        self.state().snapshot_claims = Some(size);
    }

    /// Every setup's snapshot also holds `files` (path relative to the
    /// root, content): a distribution's files and its `RECORD`, to split.
    pub fn snapshot_adds(&self, files: &[(&str, &[u8])]) {
        self.state().snapshot_adds = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_vec()))
            .collect();
    }

    /// The setup makes its snapshot directory and no `layer.tar`, as
    /// setup.sh does when its tar fails (a full disk in the container).
    pub fn break_snapshot(&self) {
        self.state().snapshot_breaks = true;
    }

    /// The next call of `op` fails.
    /// A successful setup leaves `path` in its container.
    pub fn setup_leaves(&self, path: &str) {
        self.state().leave.push(path.to_string());
    }

    pub fn commit_ignores_config(&self) {
        self.state().commit_ignores_config = true;
    }

    pub fn fail_on(&self, op: &str) {
        self.state().fail.insert(op.to_string(), 1);
    }

    /// The `n`th call of `op` from now fails (1 = the next).
    pub fn fail_on_nth(&self, op: &str, n: usize) {
        self.state().fail.insert(op.to_string(), n);
    }

    /// The next call of `op` never returns; [`FakeEngine::reached`] resolves.
    pub fn hang_on(&self, op: &str) {
        self.state().hang = Some(op.to_string());
    }

    /// The `n`th call of `op` from now never returns (1 = the next).
    pub fn hang_on_nth(&self, op: &str, n: usize) {
        let mut s = self.state();
        s.hang = Some(op.to_string());
        s.hang_after = n.saturating_sub(1);
    }

    /// Resolves once a call set by [`FakeEngine::hang_on`] is hanging.
    pub async fn reached(&self) {
        self.reached.notified().await
    }

    /// Every call so far, as `op args…`.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many calls start with `op `.
    pub fn count(&self, op: &str) -> usize {
        let prefix = format!("{op} ");
        self.calls()
            .iter()
            .filter(|c| c.starts_with(&prefix) || *c == op)
            .count()
    }

    /// A container another process left, with these labels (no files).
    pub fn add_container(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let mut s = self.state();
        s.serial += 1;
        let id = format!("container-{}", s.serial);
        let spec = ContainerSpec {
            name: name.to_string(),
            image: String::new(),
            entrypoint: Vec::new(),
            role: "setup".into(),
            network: super::Network::None,
            volume: None,
            platform: None,
        };
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.containers.insert(
            id.clone(),
            FakeContainer {
                spec,
                labels,
                paths: BTreeSet::new(),
                files: BTreeMap::new(),
                snapshot: Vec::new(),
            },
        );
        id
    }

    /// Every container spec `create` was given, in order.
    pub fn created(&self) -> Vec<ContainerSpec> {
        self.state().created.clone()
    }

    /// Containers that exist now.
    pub fn containers(&self) -> Vec<String> {
        self.state()
            .containers
            .values()
            .map(|c| c.spec.name.clone())
            .collect()
    }

    /// Every `repo:tag` on the engine.
    pub fn tags(&self) -> BTreeSet<String> {
        self.state()
            .images
            .values()
            .flat_map(|i| i.info.repo_tags.clone())
            .collect()
    }

    /// The image a `repo:tag` points at.
    pub fn tagged(&self, reference: &str) -> Option<ImageInfo> {
        self.state()
            .images
            .values()
            .find(|i| i.info.repo_tags.iter().any(|t| t == reference))
            .map(|i| i.info.clone())
    }

    pub fn image_count(&self) -> usize {
        self.state().images.len()
    }

    /// Record a call; fail or hang it when told to.
    async fn call(&self, op: &str, args: String) -> Result<()> {
        let (fail, hang) = {
            let mut s = self.state();
            s.calls.push(format!("{op} {args}"));
            let fail = match s.fail.get_mut(op) {
                Some(n) if *n <= 1 => {
                    s.fail.remove(op);
                    true
                }
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            };
            let mut hang = s.hang.as_deref() == Some(op);
            if hang && s.hang_after > 0 {
                s.hang_after -= 1;
                hang = false;
            } else if hang {
                s.hang = None;
            }
            (fail, hang)
        };
        if hang {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        if fail {
            return Err(Error::Engine {
                engine: String::new(),
                action: format!("{op} (fake)"),
                source: "injected failure".into(),
            });
        }
        Ok(())
    }

    fn find(&self, reference: &str) -> Option<FakeImage> {
        let s = self.state();
        s.images.get(reference).cloned().or_else(|| {
            s.images
                .values()
                .find(|i| i.info.repo_tags.iter().any(|t| t == reference))
                .cloned()
        })
    }

    fn container(&self, id: &str) -> Result<FakeContainer> {
        self.state()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Engine {
                engine: String::new(),
                action: format!("using container {id} (fake)"),
                source: "no such container".into(),
            })
    }

    /// What a setup container leaves behind when it succeeds.
    fn set_up(&self, id: &str) -> (i64, Vec<String>) {
        let setup = self.setup.lock().expect("fake setup").clone();
        if setup.status == 0 {
            let mut s = self.state();
            let leave = s.leave.clone();
            let breaks = s.snapshot_breaks;
            let adds = s.snapshot_adds.clone();
            let announces = s.announces.is_some();
            if let Some(c) = s.containers.get_mut(id) {
                // A snapshot when the base has the tools for it and the
                // command asks for one (a container to be committed does not).
                let snapshot = setup.snapshot
                    && c.spec
                        .entrypoint
                        .iter()
                        .any(|a| a.contains("PREBUILDER_SNAPSHOT='/.prebuilder-snapshot'"));
                // What the setup installs depends on its inputs only (the
                // container's name carries the layer's key), as a real
                // setup's snapshot does: same inputs, same layer.
                let installed = c.spec.name.clone().into_bytes();
                // As setup.sh does: the staged files and the manifest go
                // (the artifacts directory itself stays).
                let staged = format!("{}/", crate::plan::ARTIFACTS_DIR);
                c.files.retain(|path, _| !path.starts_with(&staged));
                c.paths.retain(|path| !path.starts_with(&staged));
                for path in &leave {
                    c.paths.insert(path.clone());
                }
                // The freeze: in the snapshot directory when there is a
                // snapshot, else at the record's path (as setup.sh writes it).
                // And the listing: pip in the base, six installed from
                // the wheel the unit tests stage.
                let freeze = concat!(
                    "# python 3.11.2\npip==23.2.1\nsix==1.16.0\n",
                    "# before [\"pip\", \"23.2.1\"]\n",
                    "# dist {\"name\": \"pip\", \"version\": \"23.2.1\", \"license\": \"MIT\"}\n",
                    "# dist {\"name\": \"six\", \"version\": \"1.16.0\", \"license\": \"MIT\", \"tags\": [\"py3-none-any\"]}\n",
                )
                .as_bytes()
                .to_vec();
                let freeze_path = if snapshot {
                    "/.prebuilder-snapshot/freeze"
                } else {
                    crate::record::RECORD_FILE
                };
                c.files.insert(freeze_path.to_string(), freeze);
                if snapshot {
                    // As in a real container, the directory is there (a
                    // commit would carry it: `verify` looks for it).
                    c.paths.insert("/.prebuilder-snapshot".to_string());
                    if !breaks {
                        let mut files = vec![(
                            "./usr/lib/python3/dist-packages/six.py".to_string(),
                            installed,
                        )];
                        files.extend(adds.into_iter().map(|(p, c)| (format!("./{p}"), c)));
                        files.sort();
                        if announces {
                            // Read while the setup runs: the RECORDs at
                            // their paths, the files for an early tar.
                            for (p, content) in files.iter().filter(|(p, _)| p.ends_with("/RECORD"))
                            {
                                c.files
                                    .insert(p.trim_start_matches('.').to_string(), content.clone());
                            }
                            c.snapshot = files.clone();
                        }
                        let inner = tar_of_files(&files);
                        c.files
                            .insert("/.prebuilder-snapshot/layer.tar".to_string(), inner);
                        // As setup.sh does: the RECORDs on their own too.
                        let records: Vec<(String, Vec<u8>)> = files
                            .iter()
                            .filter(|(p, _)| p.ends_with(".dist-info/RECORD"))
                            .cloned()
                            .collect();
                        c.files.insert(
                            "/.prebuilder-snapshot/records.tar".to_string(),
                            tar_of_files(&records),
                        );
                    }
                    c.files
                        .insert("/.prebuilder-snapshot/deleted".to_string(), Vec::new());
                }
            }
        }
        (setup.status, setup.output)
    }

    /// What setup.sh does with PREBUILDER_PARTS once its snapshot is listed:
    /// says so and waits for prebuilder to read the parts (`exec_output`
    /// runs the part's tar) until it leaves `parts/done`.
    async fn snapshot_parts(
        &self,
        container: &str,
        on_output: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) {
        const DIR: &str = "/.prebuilder-snapshot";
        {
            let mut s = self.state();
            let Some(c) = s.containers.get_mut(container) else {
                return;
            };
            if !asks_for_parts(c) {
                return;
            }
            let Some(whole) = c.files.remove(&format!("{DIR}/layer.tar")) else {
                return;
            };
            let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
            let mut a = tar::Archive::new(&whole[..]);
            for e in a.entries().expect("fake snapshot") {
                let mut e = e.expect("fake snapshot");
                let path = e
                    .path()
                    .expect("fake snapshot")
                    .to_string_lossy()
                    .into_owned();
                let mut body = Vec::new();
                e.read_to_end(&mut body).expect("fake snapshot");
                entries.push((path, body));
            }
            let all: Vec<u8> = entries
                .iter()
                .flat_map(|(p, _)| p.bytes().chain(std::iter::once(0)))
                .collect();
            c.files.insert(format!("{DIR}/all"), all);
            c.snapshot = entries;
        }
        on_output(false, b"prebuilder: snapshot listed\n");
        // How the wait ended, among the calls: `parts-read` (prebuilder
        // left `done`), else `parts-unread` (the setup gave up).
        let done = format!("{DIR}/parts/done");
        for _ in 0..10_000 {
            match self.container(container) {
                Ok(c) if !c.files.contains_key(&done) => {}
                Ok(_) => {
                    self.state().calls.push(format!("parts-read {container}"));
                    return;
                }
                Err(_) => break,
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.state().calls.push(format!("parts-unread {container}"));
    }

    /// With `announce_installs` and the parts: each RECORD of the snapshot
    /// announced, then a wait for the loads asked for.
    async fn announce(&self, container: &str, on_output: &mut (dyn FnMut(bool, &[u8]) + Send)) {
        let (loads, records) = {
            let s = self.state();
            let Some(c) = s.containers.get(container) else {
                return;
            };
            let asked = asks_for_parts(c);
            let records: Vec<String> = c
                .snapshot
                .iter()
                .filter(|(p, _)| p.ends_with("/RECORD"))
                .map(|(p, _)| p.trim_start_matches('.').to_string())
                .collect();
            match s.announces {
                Some(loads) if asked => (loads, records),
                _ => return,
            }
        };
        for r in records.iter().rev() {
            on_output(false, format!("prebuilder: installed {r}\n").as_bytes());
        }
        for _ in 0..10_000 {
            if self.count("load") >= loads {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    fn new_image(
        &self,
        parent: &str,
        config: &serde_json::Value,
        id: String,
        layers: Vec<String>,
        added: BTreeSet<String>,
    ) {
        let mut s = self.state();
        s.serial += 1;
        let created = s.serial as i64;
        let parent = s.images.get(parent).cloned();
        let labels = config
            .get("Labels")
            .and_then(|l| serde_json::from_value::<BTreeMap<String, String>>(l.clone()).ok())
            .unwrap_or_default();
        let strings = |field: &str| -> Vec<String> {
            config
                .get(field)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let info = ImageInfo {
            id: id.clone(),
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            labels,
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            created: None,
            history: Vec::new(),
            os: "linux".into(),
            last_tagged: None,
            // A commit or load on a parent keeps its architecture (a load's
            // config may say otherwise: `load` sets it then).
            architecture: parent
                .as_ref()
                .map_or_else(|| "amd64".into(), |p| p.info.architecture.clone()),
            layers,
            config: config.clone(),
        };
        let (mut paths, probe) = parent
            .map(|p| (p.paths, p.probe))
            .unwrap_or_else(|| (BTreeSet::new(), String::new()));
        paths.extend(added);
        s.images.insert(
            id,
            FakeImage {
                info,
                paths,
                created,
                probe,
            },
        );
    }
}

impl Engine for FakeEngine {
    async fn inspect(&self, reference: &str) -> Result<Option<ImageInfo>> {
        self.call("inspect", reference.to_string()).await?;
        let Some(info) = self.find(reference).map(|i| i.info) else {
            return Ok(None);
        };
        let Some(pulled) = self.state().containerd_store else {
            return Ok(Some(info));
        };
        // What the containerd store answers (its id a manifest digest, a
        // repo digest of it for every name), then the adapter's translation.
        let bytes = super::containerd::manifest_for(&info.id, &info.layers, pulled);
        let m = super::containerd::parse_manifest(&bytes).expect("a manifest");
        let mut raw = info.clone();
        raw.id = sha(&bytes);
        if !pulled {
            raw.repo_digests = raw
                .repo_tags
                .iter()
                .map(|t| {
                    format!(
                        "{}@{}",
                        t.rsplit_once(':').map_or(t.as_str(), |(r, _)| r),
                        raw.id
                    )
                })
                .collect();
        }
        assert_ne!(raw.id, info.id, "the store's id is not the config digest");
        Ok(Some(super::containerd::identify(raw, &m)))
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageSummary>> {
        self.call("list_images", label.to_string()).await?;
        let (key, value) = match label.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (label, None),
        };
        Ok(self
            .state()
            .images
            .values()
            .filter(|i| match (i.info.labels.get(key), value) {
                (Some(v), Some(want)) => v == want,
                (Some(_), None) => true,
                _ => false,
            })
            .map(|i| ImageSummary {
                id: i.info.id.clone(),
                labels: i.info.labels.clone(),
                tags: i.info.repo_tags.clone(),
                created: i.created,
            })
            .collect())
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>> {
        self.call("list_containers", label.to_string()).await?;
        let (key, value) = match label.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (label, None),
        };
        Ok(self
            .state()
            .containers
            .iter()
            .filter(|(_, c)| match (c.labels.get(key), value) {
                (Some(v), Some(want)) => v == want,
                (Some(_), None) => true,
                _ => false,
            })
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                name: c.spec.name.clone(),
                labels: c.labels.clone(),
            })
            .collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        self.call(
            "create",
            format!("{} {} {}", spec.role, spec.name, spec.image),
        )
        .await?;
        self.state().created.push(spec.clone());
        let image = self.find(&spec.image).ok_or_else(|| Error::Engine {
            engine: String::new(),
            action: format!("creating container {} (fake)", spec.name),
            source: format!("no such image {}", spec.image).into(),
        })?;
        let mut s = self.state();
        s.serial += 1;
        let id = format!("container-{}", s.serial);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                labels: std::iter::once((LABEL.to_string(), spec.role.clone()))
                    .chain(crate::state::owner_labels())
                    .collect(),
                paths: image.paths,
                files: BTreeMap::new(),
                snapshot: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn exists(&self, container: &str, path: &str) -> Result<bool> {
        self.call("exists", format!("{container} {path}")).await?;
        let c = self.container(container)?;
        Ok(c.paths.contains(path) || c.files.contains_key(path))
    }

    async fn upload(&self, container: &str, dir: &str, mut tar: ByteStream) -> Result<()> {
        self.call("upload", format!("{container} {dir}")).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = tar.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| Error::Engine {
                engine: String::new(),
                action: "uploading (fake)".into(),
                source: Box::new(e),
            })?);
        }
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().map_err(|e| Error::io(dir, e))? {
            let mut entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path().map_err(|e| Error::io(dir, e))?;
            let full = format!("{}/{}", dir.trim_end_matches('/'), path.display());
            let mut content = Vec::new();
            entry
                .read_to_end(&mut content)
                .map_err(|e| Error::io(dir, e))?;
            files.insert(full.trim_end_matches('/').to_string(), content);
        }
        let mut s = self.state();
        let c = s
            .containers
            .get_mut(container)
            .ok_or_else(|| Error::Engine {
                engine: String::new(),
                action: "uploading (fake)".into(),
                source: "no such container".into(),
            })?;
        for (path, content) in files {
            c.paths.insert(path.clone());
            c.files.insert(path, content);
        }
        Ok(())
    }

    async fn download(&self, container: &str, path: &str) -> Result<Option<ByteStream>> {
        self.call("download", format!("{container} {path}")).await?;
        let c = self.container(container)?;
        let name = path.rsplit('/').next().unwrap_or(path);
        let claims = self.state().snapshot_claims;
        let tar = match (c.files.get(path), claims) {
            (Some(content), Some(size)) if path.ends_with("/layer.tar") => {
                let mut h = tar::Header::new_gnu();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_path(name).expect("a short name");
                h.set_cksum();
                [h.as_bytes().as_slice(), content].concat()
            }
            (Some(content), _) => tar_of(name, content),
            (None, _) if c.paths.iter().any(|p| p.starts_with(&format!("{path}/"))) => {
                tar_of(&format!("{name}/boot"), b"boot")
            }
            (None, _) => return Ok(None),
        };
        Ok(Some(
            futures_util::stream::once(async move { Ok(bytes::Bytes::from(tar)) }).boxed(),
        ))
    }

    async fn run_attached(
        &self,
        container: &str,
        on_output: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<i64> {
        self.call("run", container.to_string()).await?;
        let c = self.container(container)?;
        if c.spec.role == "probe" {
            let probe = self
                .find(&c.spec.image)
                .map(|i| i.probe)
                .unwrap_or_default();
            on_output(false, format!("{probe}\n").as_bytes());
            return Ok(0);
        }
        let (status, output) = self.set_up(container);
        for line in output {
            on_output(false, format!("{line}\n").as_bytes());
        }
        if status == 0 {
            self.announce(container, on_output).await;
            self.snapshot_parts(container, on_output).await;
        }
        Ok(status)
    }

    async fn commit(
        &self,
        container: &str,
        config: &serde_json::Value,
        comment: &str,
    ) -> Result<String> {
        self.call("commit", format!("{container} {comment}"))
            .await?;
        let c = self.container(container)?;
        let parent = self
            .find(&c.spec.image)
            .map(|i| i.info)
            .unwrap_or_else(|| panic!("container {container} of a missing image"));
        let id = sha(format!("{container}{comment}{config}").as_bytes());
        let mut layers = parent.layers.clone();
        layers.push(sha(container.as_bytes()));
        self.state()
            .layer_bytes
            .insert(sha(container.as_bytes()), container.as_bytes().to_vec());
        let added = c.paths.iter().chain(c.files.keys()).cloned().collect();
        let own;
        let config = if self.state().commit_ignores_config {
            own = serde_json::json!({
                "Entrypoint": c.spec.entrypoint,
                "Env": ["TERM=xterm", "container=podman"],
                "Labels": {crate::engine::LABEL: c.spec.role},
            });
            &own
        } else {
            config
        };
        self.new_image(&parent.id, config, id.clone(), layers, added);
        Ok(id)
    }

    async fn load(&self, archive: &Path) -> Result<()> {
        self.call("load", String::new()).await?;
        self.state().loads_from_files += 1;
        let file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
        self.load_from(file, archive)
    }

    fn reads_volume_links(&self) -> bool {
        true
    }

    fn snapshots_in_parts(&self) -> bool {
        self.state().in_parts
    }

    /// Runs only the setup's part tar (`build::setup::part_tar_command`):
    /// the entries of the listed paths, from the snapshot the setup keeps
    /// while it waits; the part `snapshot_in_parts` names fails after its
    /// output, as GNU tar's status comes.
    async fn exec_output(&self, container: &str, cmd: &[String], ok: &[i64]) -> Result<ByteStream> {
        self.call("exec", format!("{container} {}", cmd.join(" ")))
            .await?;
        let c = self.container(container)?;
        if cmd.get(3).map(String::as_str) == Some("prebuilder-early-check") {
            let changed = self.state().early_changed.clone().unwrap_or_default();
            let out = bytes::Bytes::from(changed.into_bytes());
            return Ok(futures_util::stream::once(async move { Ok(out) }).boxed());
        }
        let list = cmd.last().cloned().unwrap_or_default();
        let index = list
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_suffix(".list"))
            .and_then(|n| n.parse::<usize>().ok());
        let names = c.files.get(&list).cloned().unwrap_or_default();
        let part: Vec<(String, Vec<u8>)> = names
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .filter_map(|n| c.snapshot.iter().find(|(p, _)| p.as_bytes() == n).cloned())
            .collect();
        let mut tar = tar_of_files(&part);
        tar.resize(tar.len().div_ceil(10240) * 10240, 0);
        let failed = index.is_none() || (index == self.state().part_fails && !ok.contains(&2));
        let end = failed.then(|| {
            std::io::Error::other(super::ExecFailed {
                command: cmd.join(" "),
                status: 2,
                stderr: format!("tar: {list}: the fake cannot write this part"),
            })
        });
        let chunks = std::iter::once(Ok(bytes::Bytes::from(tar))).chain(end.map(Err));
        Ok(futures_util::stream::iter(chunks).boxed())
    }

    /// Streams as the classic Docker store does, unless `load_files_only`.
    fn loads_streams(&self) -> bool {
        !self.state().load_files_only
    }

    async fn load_stream(&self, mut archive: ByteStream) -> Result<()> {
        self.call("load", String::new()).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = archive.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| Error::io("<load stream>", e))?);
        }
        self.load_from(&bytes[..], Path::new("<load stream>"))
    }

    async fn tag(&self, image_id: &str, repo: &str, tag: &str) -> Result<()> {
        self.call("tag", format!("{image_id} {repo}:{tag}")).await?;
        let reference = format!("{repo}:{tag}");
        let mut s = self.state();
        if !s.images.contains_key(image_id) {
            return Err(Error::Engine {
                engine: String::new(),
                action: format!("tagging {image_id} (fake)"),
                source: "no such image".into(),
            });
        }
        for i in s.images.values_mut() {
            i.info.repo_tags.retain(|t| *t != reference);
        }
        if let Some(i) = s.images.get_mut(image_id) {
            i.info.repo_tags.push(reference);
        }
        Ok(())
    }

    async fn export(&self, images: &[String]) -> Result<ByteStream> {
        self.call("export", images.join(" ")).await?;
        let s = self.state();
        let mut b = tar::Builder::new(Vec::new());
        let mut manifest = Vec::new();
        let mut written = BTreeSet::new();
        let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).expect("in-memory tar");
        };
        for id in images {
            let image = s.images.get(id).ok_or_else(|| Error::Engine {
                engine: String::new(),
                action: format!("exporting {id} (fake)"),
                source: "no such image".into(),
            })?;
            let layers = &image.info.layers;
            let mut names = Vec::new();
            for l in layers {
                let name = format!("{}/layer.tar", &l[7..]);
                if written.insert(name.clone()) {
                    let bytes = s.layer_bytes.get(l).ok_or_else(|| Error::Engine {
                        engine: String::new(),
                        action: format!("exporting {id} (fake)"),
                        source: format!("no bytes for layer {l}").into(),
                    })?;
                    add(&mut b, &name, bytes);
                }
                names.push(name);
            }
            let config = s.configs.get(id).cloned().unwrap_or_else(|| {
                serde_json::json!({"fake": id, "rootfs": {"type": "layers", "diff_ids": layers}})
                    .to_string()
                    .into_bytes()
            });
            let config_name = format!("{}.json", &id[7..]);
            add(&mut b, &config_name, &config);
            manifest.push(
                serde_json::json!({"Config": config_name, "RepoTags": null, "Layers": names}),
            );
        }
        add(
            &mut b,
            "manifest.json",
            serde_json::Value::from(manifest).to_string().as_bytes(),
        );
        let bytes = bytes::Bytes::from(b.into_inner().expect("in-memory tar"));
        Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed())
    }

    async fn pull(
        &self,
        reference: &str,
        _credential: Option<&Credential>,
        _status: PushStatus<'_>,
    ) -> Result<()> {
        self.call("pull", reference.to_string()).await?;
        let mut s = self.state();
        if let Some(image) = s.remote.get(reference).cloned() {
            s.images.insert(image.info.id.clone(), image);
            return Ok(());
        }
        Err(Error::PullFailed {
            image: reference.to_string(),
            registry: "fake".into(),
            credentials: String::new(),
            reason: "the fake engine pulls nothing".into(),
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.call("remove_image", reference.to_string()).await?;
        let mut s = self.state();
        s.images.retain(|id, _| id != reference);
        for i in s.images.values_mut() {
            i.info.repo_tags.retain(|t| t != reference);
        }
        Ok(())
    }

    async fn remove_container(&self, container: &str) {
        self.state()
            .calls
            .push(format!("remove_container {container}"));
        self.state().containers.remove(container);
    }

    async fn remove_leftovers(&self) -> usize {
        self.state().calls.push("remove_leftovers".into());
        let partial = std::mem::take(&mut self.state().partial);
        for image in partial {
            let _ = self.remove_image(&image).await;
        }
        let mut s = self.state();
        let n = s.containers.len();
        s.containers.clear();
        n
    }

    fn note_partial_image(&self, id: &str) {
        self.state().partial.push(id.to_string());
    }

    fn forget_partial_image(&self, id: &str) {
        self.state().partial.retain(|i| i != id);
    }

    fn name(&self) -> crate::error::EngineName {
        crate::error::EngineName {
            description: "the fake engine".into(),
            endpoint: "fake://".into(),
            unreachable_hint: "the fake engine always answers".into(),
        }
    }
}

/// A registry of tag → manifest digest, manifests by digest, and blobs; it
/// records every blob upload and mount.
pub struct FakeRegistry {
    host: String,
    path: String,
    manifests: Mutex<BTreeMap<String, String>>,
    /// Manifests put through the API, by digest.
    stored: Mutex<BTreeMap<String, RawManifest>>,
    blobs: Mutex<BTreeSet<String>>,
    /// The bytes of blobs uploaded or added with content.
    contents: Mutex<BTreeMap<String, Vec<u8>>>,
    /// `repository digest` pairs a mount may link from.
    mountable: Mutex<BTreeSet<String>>,
    /// Tag → image id (config digest), what `image_id` reads.
    ids: Mutex<BTreeMap<String, String>>,
    fail: Mutex<bool>,
    pub lookups: Mutex<Vec<String>>,
    /// `upload <digest>`, `mount <digest> <from>`, `referrer <digest>` and
    /// `tag <tag>` (a referrers tag put), in order.
    pub writes: Mutex<Vec<String>>,
    /// Whether it has the OCI referrers API (else: the referrers tag schema).
    referrers_api: Mutex<bool>,
    /// Subject digest → its referrers, as the referrers API indexes them.
    indexed: Mutex<BTreeMap<String, Vec<crate::registry::referrers::Descriptor>>>,
    /// Another writer's referrers index, put over the next referrers tag
    /// put, as a runner that read the tag before it would.
    race: Mutex<Option<RawManifest>>,
}

impl FakeRegistry {
    pub fn new(host: &str) -> FakeRegistry {
        FakeRegistry::at(host, "team/sdk")
    }

    pub fn at(host: &str, path: &str) -> FakeRegistry {
        FakeRegistry {
            host: host.to_string(),
            path: path.to_string(),
            manifests: Mutex::new(BTreeMap::new()),
            stored: Mutex::new(BTreeMap::new()),
            blobs: Mutex::new(BTreeSet::new()),
            contents: Mutex::new(BTreeMap::new()),
            mountable: Mutex::new(BTreeSet::new()),
            ids: Mutex::new(BTreeMap::new()),
            fail: Mutex::new(false),
            lookups: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
            referrers_api: Mutex::new(false),
            indexed: Mutex::new(BTreeMap::new()),
            race: Mutex::new(None),
        }
    }

    /// Give it the OCI referrers API (by default it has none, as
    /// distribution 2.8).
    pub fn with_referrers_api(self) -> FakeRegistry {
        *self.referrers_api.lock().expect("fake registry") = true;
        self
    }

    /// The next put of a referrers tag (`sha256-…`) is overwritten by
    /// `index`, as a racing runner that read the tag before that put does.
    pub fn race_next_referrers_put(&self, index: RawManifest) {
        *self.race.lock().expect("fake registry") = Some(index);
    }

    /// A manifest stored by digest (put by digest, or under a tag).
    pub fn stored_by_digest(&self, digest: &str) -> Option<RawManifest> {
        self.stored
            .lock()
            .expect("fake registry")
            .get(digest)
            .cloned()
    }

    /// The bytes of a blob uploaded or added with content.
    pub fn blob_content(&self, digest: &str) -> Option<Vec<u8>> {
        self.contents
            .lock()
            .expect("fake registry")
            .get(digest)
            .cloned()
    }

    pub fn put(&self, tag: &str, digest: &str) {
        self.manifests
            .lock()
            .expect("fake registry")
            .insert(tag.to_string(), digest.to_string());
    }

    /// Store a manifest under `tag` (as a push from elsewhere would).
    pub fn put_raw(&self, tag: &str, manifest: RawManifest) {
        self.put(tag, &manifest.digest);
        self.stored
            .lock()
            .expect("fake registry")
            .insert(manifest.digest.clone(), manifest);
    }

    pub fn get(&self, tag: &str) -> Option<String> {
        self.manifests
            .lock()
            .expect("fake registry")
            .get(tag)
            .cloned()
    }

    /// The manifest put under `tag`, as stored.
    pub fn stored(&self, tag: &str) -> Option<RawManifest> {
        let digest = self.get(tag)?;
        self.stored
            .lock()
            .expect("fake registry")
            .get(&digest)
            .cloned()
    }

    pub fn add_blob(&self, digest: &str) {
        self.blobs
            .lock()
            .expect("fake registry")
            .insert(digest.to_string());
    }

    /// A blob with its bytes (its digest is theirs); returns the digest.
    pub fn add_blob_content(&self, bytes: &[u8]) -> String {
        let digest = sha(bytes);
        self.add_blob(&digest);
        self.contents
            .lock()
            .expect("fake registry")
            .insert(digest.clone(), bytes.to_vec());
        digest
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blobs.lock().expect("fake registry").contains(digest)
    }

    /// A mount of `digest` from repository `from` succeeds.
    pub fn allow_mount(&self, from: &str, digest: &str) {
        self.mountable
            .lock()
            .expect("fake registry")
            .insert(format!("{from} {digest}"));
    }

    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().expect("fake registry").clone()
    }

    /// `image_id(tag)` answers `id`, as a registry holding an image does
    /// (its manifest digest is set apart, with `put`).
    pub fn set_image_id(&self, tag: &str, id: &str) {
        self.ids
            .lock()
            .expect("fake registry")
            .insert(tag.to_string(), id.to_string());
    }

    /// Every lookup fails (the registry is down) until told otherwise.
    pub fn set_down(&self, down: bool) {
        *self.fail.lock().expect("fake registry") = down;
    }

    fn check_up(&self) -> Result<()> {
        if *self.fail.lock().expect("fake registry") {
            return Err(Error::RegistryUnreachable {
                registry: self.host.clone(),
                source: "connection refused (fake)".into(),
            });
        }
        Ok(())
    }
}

impl Manifests for FakeRegistry {
    fn host(&self) -> &str {
        &self.host
    }

    fn path(&self) -> &str {
        &self.path
    }

    async fn manifest_digest(&self, tag: &str) -> Result<Option<String>> {
        self.lookups
            .lock()
            .expect("fake registry")
            .push(tag.to_string());
        self.check_up()?;
        Ok(self.get(tag))
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        self.check_up()?;
        let digest = {
            let m = self.manifests.lock().expect("fake registry");
            m.get(reference)
                .cloned()
                .or_else(|| m.values().find(|d| *d == reference).cloned())
        };
        let Some(digest) = digest else {
            // Put by digest only (a referrer): no tag names it.
            return Ok(self.stored_by_digest(reference));
        };
        if let Some(stored) = self.stored.lock().expect("fake registry").get(&digest) {
            return Ok(Some(stored.clone()));
        }
        Ok(Some(RawManifest {
            media_type: "application/vnd.fake".into(),
            bytes: digest.as_bytes().to_vec(),
            digest,
        }))
    }

    async fn put_manifest(&self, tag: &str, manifest: &RawManifest) -> Result<()> {
        self.check_up()?;
        self.put_raw(tag, manifest.clone());
        if tag.starts_with("sha256-") {
            self.writes
                .lock()
                .expect("fake registry")
                .push(format!("tag {tag}"));
            if let Some(other) = self.race.lock().expect("fake registry").take() {
                self.put_raw(tag, other);
            }
        }
        Ok(())
    }

    async fn referrers(
        &self,
        subject: &str,
    ) -> Result<Option<Vec<crate::registry::referrers::Descriptor>>> {
        self.check_up()?;
        if !*self.referrers_api.lock().expect("fake registry") {
            return Ok(None);
        }
        Ok(Some(
            self.indexed
                .lock()
                .expect("fake registry")
                .get(subject)
                .cloned()
                .unwrap_or_default(),
        ))
    }

    async fn put_referrer(&self, manifest: &RawManifest) -> Result<bool> {
        use crate::registry::referrers::{read_referrer, Descriptor};
        self.check_up()?;
        // A real registry refuses a manifest naming blobs it lacks.
        if let Some(r) = read_referrer(&manifest.bytes) {
            assert!(self.has_blob(&r.blob), "referrer blob {} missing", r.blob);
            assert!(
                self.has_blob(&crate::registry::referrers::empty_config_digest()),
                "the empty config is missing"
            );
        }
        self.stored
            .lock()
            .expect("fake registry")
            .insert(manifest.digest.clone(), manifest.clone());
        self.writes
            .lock()
            .expect("fake registry")
            .push(format!("referrer {}", manifest.digest));
        if !*self.referrers_api.lock().expect("fake registry") {
            return Ok(false);
        }
        if let Some(r) = read_referrer(&manifest.bytes) {
            let mut indexed = self.indexed.lock().expect("fake registry");
            let list = indexed.entry(r.subject).or_default();
            if !list.iter().any(|d| d.digest == manifest.digest) {
                list.push(Descriptor::of(manifest, Some(&r.artifact_type)));
            }
        }
        Ok(true)
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        self.lookups
            .lock()
            .expect("fake registry")
            .push(format!("image_id {reference}"));
        self.check_up()?;
        Ok(self
            .ids
            .lock()
            .expect("fake registry")
            .get(reference)
            .cloned())
    }

    async fn image_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        self.manifest(reference).await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        self.check_up()?;
        Ok(self.has_blob(digest))
    }

    async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        self.check_up()?;
        let ok = self
            .mountable
            .lock()
            .expect("fake registry")
            .contains(&format!("{from} {digest}"));
        if ok {
            self.add_blob(digest);
            self.writes
                .lock()
                .expect("fake registry")
                .push(format!("mount {digest} {from}"));
        }
        Ok(ok)
    }

    async fn upload_blob(&self, digest: &str, body: BlobBody<'_>) -> Result<()> {
        self.check_up()?;
        let bytes = match body {
            BlobBody::Bytes(b) => b.to_vec(),
            BlobBody::File(p, _) => std::fs::read(p).map_err(|e| Error::io(p, e))?,
        };
        // A real registry checks the digest of what it receives.
        assert_eq!(sha(&bytes), digest, "uploaded bytes are not {digest}");
        self.add_blob_content(&bytes);
        self.writes
            .lock()
            .expect("fake registry")
            .push(format!("upload {digest}"));
        Ok(())
    }

    async fn download_blob(&self, digest: &str, dst: &Path) -> Result<()> {
        self.download(digest, dst).await
    }
}

impl FakeRegistry {
    async fn download(&self, digest: &str, dst: &Path) -> Result<()> {
        self.check_up()?;
        let bytes = self
            .contents
            .lock()
            .expect("fake registry")
            .get(digest)
            .cloned()
            .ok_or_else(|| Error::Registry {
                registry: self.host.clone(),
                action: format!("downloading blob {digest} (fake)"),
                source: "HTTP 404".into(),
            })?;
        std::fs::write(dst, bytes).map_err(|e| Error::io(dst, e))
    }
}

impl Manifests for Arc<FakeRegistry> {
    fn host(&self) -> &str {
        FakeRegistry::host(self)
    }

    fn path(&self) -> &str {
        Manifests::path(&**self)
    }

    async fn manifest_digest(&self, tag: &str) -> Result<Option<String>> {
        FakeRegistry::manifest_digest(self, tag).await
    }

    async fn manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        FakeRegistry::manifest(self, reference).await
    }

    async fn put_manifest(&self, tag: &str, manifest: &RawManifest) -> Result<()> {
        FakeRegistry::put_manifest(self, tag, manifest).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        FakeRegistry::image_id(self, reference).await
    }

    async fn image_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        FakeRegistry::image_manifest(self, reference).await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        FakeRegistry::blob_exists(self, digest).await
    }

    async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        FakeRegistry::mount_blob(self, digest, from).await
    }

    async fn upload_blob(&self, digest: &str, body: BlobBody<'_>) -> Result<()> {
        FakeRegistry::upload_blob(self, digest, body).await
    }

    async fn download_blob(&self, digest: &str, dst: &Path) -> Result<()> {
        self.download(digest, dst).await
    }

    async fn referrers(
        &self,
        subject: &str,
    ) -> Result<Option<Vec<crate::registry::referrers::Descriptor>>> {
        FakeRegistry::referrers(self, subject).await
    }

    async fn put_referrer(&self, manifest: &RawManifest) -> Result<bool> {
        FakeRegistry::put_referrer(self, manifest).await
    }
}

//! The build's decisions against the recording fake engine and registry: no
//! daemon (`DOCKER_HOST` is never read here). Each test builds a small
//! staged set on disk and asserts what the build called, tagged, pushed,
//! left behind and reported.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::*;
use crate::engine::fake::{FakeEngine, FakeRegistry, Setup};
use crate::engine::{ImageInfo, LABEL_ARTIFACTS, LABEL_KEY, LABEL_LAYER};
use crate::progress::{Event, Silent};
use crate::stage::{Artifact, Role};

const BASE: &str = "beam:2.77.0";
const REPO: &str = "localhost:5000/team/sdk";

/// Events as `Debug` text, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Reporter for Recorder {
    fn event(&self, event: Event<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

impl Recorder {
    fn saw(&self, what: &str) -> bool {
        self.0.lock().unwrap().iter().any(|e| e.contains(what))
    }
}

struct World {
    engine: FakeEngine,
    files: tempfile::TempDir,
    locks: tempfile::TempDir,
}

fn world() -> World {
    let engine = FakeEngine::new();
    engine.add_base(BASE);
    World {
        engine,
        files: tempfile::tempdir().unwrap(),
        locks: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn artifact(&self, name: &str, content: &str, role: Role) -> Artifact {
        let path = self.files.path().join(name);
        std::fs::write(&path, content).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        Artifact {
            name: name.to_string(),
            path,
            size: content.len() as u64,
            sha256: digest.clone(),
            content_digest: digest,
            role,
            origin: None,
        }
    }

    /// requirements + a wheel (dependencies), workflow (application).
    fn set(&self, app: &str) -> StagedSet {
        let artifacts = vec![
            self.artifact("requirements.txt", "six==1.16.0\n", Role::Requirements),
            self.artifact(
                "six-1.16.0-py3-none-any.whl",
                "wheel",
                Role::RequirementsCache,
            ),
            self.artifact("workflow.tar.gz", app, Role::Workflow),
        ];
        StagedSet::new(artifacts, self.files.path().to_path_buf(), None)
    }

    fn opts(&self) -> Options {
        Options {
            base: BASE.into(),
            repository: REPO.into(),
            tags: Vec::new(),
            push: false,
            replace_tags: false,
            no_cache: false,
            no_check: true,
            boot_from: None,
            network: Network::None,
            lock_dir: self.locks.path().to_path_buf(),
            blob_map: self.locks.path().join("blobs"),
            scratch_dir: self.locks.path().to_path_buf(),
            commit: false,
            labels: Default::default(),
            pull: super::PullPolicy::Never,
            settings: Default::default(),
            attestations: attest::Attestations::off(),
            builder: super::Builder::Engine,
            launch_python: "python3".into(),
            platform: None,
            split: Some(crate::image::split::Rule::default()),
            output: None,
        }
    }

    async fn build(&self, opts: &Options, set: &StagedSet, rec: &Recorder) -> Result<Report> {
        let registry = self.engine.registry.clone();
        run(
            &self.engine,
            opts,
            set,
            || {
                Ok(Some(Remote {
                    registry,
                    credential: None,
                    base: None,
                    boot: None,
                }))
            },
            rec,
        )
        .await
    }

    async fn quick(&self, opts: &Options, set: &StagedSet) -> Result<Report> {
        self.build(opts, set, &Recorder::default()).await
    }

    fn result_tags(&self) -> Vec<String> {
        self.engine
            .tags()
            .into_iter()
            .filter(|t| t.starts_with(REPO))
            .collect()
    }
}

fn caches(r: &Report) -> Vec<CacheOutcome> {
    r.layers.iter().map(|l| l.cache).collect()
}

use sha2::Digest as _;
use CacheOutcome::{Hit, Miss, Registry as InRegistry};

mod attestations;
mod boot;
mod cache;
mod checks;
mod direct;
mod failures;
mod flink;
mod image_stores;
mod layers;
mod no_cache_push;
mod platform;
mod platform_arch;
mod platform_direct;
mod push;
mod push_progress;
mod registry;
mod sources;

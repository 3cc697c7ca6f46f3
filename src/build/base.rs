//! What a build's layers sit on, and the checks that run on it first.
//!
//! Without `--boot-from` that is the base image. With it, a first `boot` layer
//! adds the boot image's /opt/apache/beam to the base and makes the boot its
//! entrypoint; its key (base id + boot image id) is the parent of the first
//! installing layer, and its config (the boot entrypoint) is what every later
//! layer keeps.
//!
//! The image-side checks (`crate::check::image_findings`) run once, right
//! before the first thing is built, so a broken base is refused in seconds with
//! every finding instead of failing in the middle of an install, and a fully
//! cached build probes nothing. With `--boot-from` and no boot layer yet, the
//! base is checked before the boot is copied (minus the boot and entrypoint,
//! which the layer provides), and the boot image's Beam version is compared
//! with the base's.

use std::collections::BTreeMap;
use std::time::Instant;

use super::ground::{Ground, Side};
use super::{boot, lock, pull, round, Options};
use crate::check::{self, image_facts, ImageRules};
use crate::engine::{
    ops, Engine, ImageInfo, LABEL_BASE, LABEL_BOOT_FROM, LABEL_KEY, LABEL_LAYER, LABEL_PARENT,
    LABEL_VERSION,
};
use crate::error::{Error, Result};
use crate::plan::{BOOT_LAYER, LAYER_TAG_PREFIX, TAG_HEX_LEN};
use crate::progress::{Event, Layer, Reporter};
use crate::report::{CacheOutcome, LayerReport};
use crate::stage::flink::FlinkSetup;
use crate::stage::{Role, StagedSet};

/// What the installing layers are built on, on the engine.
pub struct Footing {
    /// The image the first installing layer starts from.
    pub from_image: String,
    /// The image whose config (entrypoint, cmd, env, …) committed layers keep.
    pub config: ImageInfo,
    /// The base, as the engine has it.
    pub base: ImageInfo,
    /// The boot layer's report, when there is one.
    pub layers: Vec<LayerReport>,
    pending: Option<Pending>,
    /// A PyFlink build's check, instead of Beam's.
    pending_flink: Option<PendingFlink>,
}

/// The PyFlink check not run yet (see `crate::check::flink`).
struct PendingFlink {
    image: String,
    name: String,
    setup: FlinkSetup,
}

/// A check not run yet.
struct Pending {
    /// What to probe (an image id).
    image: String,
    /// How messages name it.
    name: String,
    rules: ImageRules,
}

/// The footing of a build: the base itself (`base`: the engine's view of
/// `ground.base`), or the base plus a boot layer, found or built.
pub async fn prepare<E: Engine>(
    engine: &E,
    opts: &Options,
    set: &StagedSet,
    (ground, base): (&Ground, &ImageInfo),
    reporter: &dyn Reporter,
) -> Result<Footing> {
    let sdk_staged = set.with_role(Role::Sdk).next().is_some();
    if let Some(setup) = set.mode.flink() {
        // PyFlink bases have no Beam boot to add (the CLI refuses --boot-from).
        return Ok(Footing {
            from_image: base.id.clone(),
            config: base.clone(),
            base: base.clone(),
            layers: Vec::new(),
            pending: None,
            pending_flink: (!opts.no_check).then(|| PendingFlink {
                image: base.id.clone(),
                name: opts.base.clone(),
                setup: with_launch_python(setup, opts),
            }),
        });
    }
    let (Some(boot), Some(key)) = (&ground.boot, ground.boot_key()) else {
        return Ok(Footing {
            from_image: base.id.clone(),
            config: base.clone(),
            base: base.clone(),
            layers: Vec::new(),
            pending_flink: None,
            pending: (!opts.no_check).then(|| Pending {
                image: base.id.clone(),
                name: opts.base.clone(),
                rules: ImageRules {
                    boot_added: false,
                    sdk_staged,
                },
            }),
        });
    };
    let started = Instant::now();
    let boot_ref = boot.reference.as_str();
    let (id, cache, checked) =
        boot_layer(engine, opts, (base, boot), key, sdk_staged, reporter).await?;
    // Not a result: tagged like the layers under one, so `gc` knows.
    let tag = format!("{LAYER_TAG_PREFIX}{}", &key[..TAG_HEX_LEN]);
    engine.tag(&id, &opts.repository, &tag).await?;
    let config = engine.inspect(&id).await?.ok_or_else(|| Error::Engine {
        engine: String::new(),
        action: format!("inspecting the boot layer {id}"),
        source: "the engine no longer has it".into(),
    })?;
    Ok(Footing {
        pending_flink: None,
        pending: (!checked).then(|| Pending {
            image: id.clone(),
            name: format!("{} with the boot of {boot_ref}", opts.base),
            rules: ImageRules {
                boot_added: false,
                sdk_staged,
            },
        }),
        from_image: id.clone(),
        config,
        base: base.clone(),
        layers: vec![LayerReport {
            name: BOOT_LAYER.to_string(),
            cache,
            seconds: round(started.elapsed().as_secs_f64()),
            image_id: id,
            parts: Vec::new(),
            committed: false,
        }],
    })
}

/// The boot layer's image, found or built (the boot image pulled when it
/// must be and is not here, the base checked first); and whether the base
/// checks ran.
async fn boot_layer<E: Engine>(
    engine: &E,
    opts: &Options,
    (base, boot): (&ImageInfo, &Side),
    key: &str,
    sdk_staged: bool,
    reporter: &dyn Reporter,
) -> Result<(String, CacheOutcome, bool)> {
    let boot_ref = boot.reference.as_str();
    let tag = &key[..TAG_HEX_LEN];
    let mut found = if opts.no_cache {
        None
    } else {
        ops::find_layer(engine, key).await?
    };
    let mut _lock = None;
    if found.is_none() {
        _lock = lock::acquire(&opts.lock_dir, key, reporter).await;
        if !opts.no_cache && _lock.is_some() {
            found = ops::find_layer(engine, key).await?;
        }
    }
    if let Some(found) = found {
        reporter.event(Event::LayerHit {
            layer: Layer::Boot,
            tag,
        });
        return Ok((found.id, CacheOutcome::Hit, opts.no_check));
    }
    let boot_image = match &boot.local {
        Some(info) => info.clone(),
        None => pull::ensure_boot(engine, opts, boot_ref, reporter).await?,
    };
    let boot_image = &boot_image;
    if !opts.no_check {
        let rules = ImageRules {
            boot_added: true,
            sdk_staged,
        };
        let boot = Some((boot_image.id.as_str(), boot_ref));
        check_base(engine, &base.id, &opts.base, rules, boot, reporter).await?;
    }
    reporter.event(Event::BootBuilding {
        boot_ref,
        base: &opts.base,
    });
    let build = boot::BootBuild {
        base,
        boot_image,
        boot_ref,
        key,
        labels: labels(key, base, boot_image),
    };
    let id = boot::build(engine, &build, reporter).await?;
    Ok((id, CacheOutcome::Miss, true))
}

/// The setup to check, its launching Python taken from the environment
/// (`PYFLINK_CLIENT_EXECUTABLE`) when `python.client.executable` names none.
fn with_launch_python(setup: &FlinkSetup, opts: &Options) -> FlinkSetup {
    let mut setup = setup.clone();
    if setup.client_executable.is_none() {
        setup.client_executable = opts
            .settings
            .var(crate::stage::flink::CLIENT_PYTHON_ENV)
            .map(str::to_string);
    }
    setup
}

impl Footing {
    /// The base as a build with no engine holds it: nothing to check (no
    /// container can probe it; direct mode's boot refuses what Beam's would).
    pub fn held(base: ImageInfo) -> Footing {
        Footing {
            from_image: base.id.clone(),
            config: base.clone(),
            base,
            layers: Vec::new(),
            pending: None,
            pending_flink: None,
        }
    }

    /// A layer of this build already sits on this footing (found by its key,
    /// on the engine or in the registry): the build that made it checked the
    /// image (or was told not to), and Beam's image-side checks read nothing
    /// but the image, so probing it again would only repeat that verdict, at
    /// the price of a probe container (about half a second, every code-only
    /// change). PyFlink's check also compares the base with the launching
    /// Python, which is not part of any key: it still runs.
    pub fn proven_by_a_layer(&mut self) {
        self.pending = None;
    }

    /// Run the base checks, once: call before building a layer.
    pub async fn check<E: Engine>(&mut self, engine: &E, reporter: &dyn Reporter) -> Result<()> {
        if let Some(p) = self.pending_flink.take() {
            return check::flink::check_base(engine, &p.image, &p.name, &p.setup, reporter).await;
        }
        match self.pending.take() {
            Some(p) => check_base(engine, &p.image, &p.name, p.rules, None, reporter).await,
            None => Ok(()),
        }
    }
}

async fn check_base<E: Engine>(
    engine: &E,
    image: &str,
    name: &str,
    rules: ImageRules,
    boot: Option<(&str, &str)>,
    reporter: &dyn Reporter,
) -> Result<()> {
    reporter.event(Event::CheckingBase { name });
    let facts = image_facts(engine, image, name).await?;
    let mut findings = check::image_findings(&facts, rules);
    if let Some((boot_id, boot_ref)) = boot {
        let boot_facts = image_facts(engine, boot_id, boot_ref).await?;
        findings.extend(check::boot_findings(&facts, &boot_facts));
    }
    if findings.is_empty() {
        Ok(())
    } else {
        Err(Error::BaseRefused {
            image: name.to_string(),
            boot: findings.iter().any(|f| f.check == "boot"),
            findings: check::list(&findings),
        })
    }
}

/// Labels of a boot layer image (a later layer's commit overrides all but
/// [`LABEL_BOOT_FROM`], which every image built on it keeps).
fn labels(key: &str, base: &ImageInfo, boot_image: &ImageInfo) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_KEY.to_string(), key.to_string()),
        (LABEL_LAYER.to_string(), BOOT_LAYER.to_string()),
        (LABEL_PARENT.to_string(), base.id.clone()),
        (LABEL_BASE.to_string(), base.id.clone()),
        (
            LABEL_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (LABEL_BOOT_FROM.to_string(), boot_image.id.clone()),
    ])
}

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

use super::build::lock_layer;
use super::check::image_facts;
use crate::check::{self, ImageRules};
use crate::cli::BuildArgs;
use crate::engine::{
    BootBuild, Engine, ImageInfo, ImageTools, LABEL_BASE, LABEL_BOOT_FROM, LABEL_KEY, LABEL_LAYER,
    LABEL_PARENT, LABEL_VERSION,
};
use crate::error::{Error, Result};
use crate::plan::{self, BOOT_LAYER, LAYER_TAG_PREFIX, TAG_HEX_LEN};
use crate::progress::Reporter;
use crate::report::{CacheOutcome, LayerReport};
use crate::stage::{Role, StagedSet};

/// The ground the installing layers are built on.
pub struct Prepared {
    /// The image the first installing layer starts from.
    pub from_image: String,
    /// The image whose config (entrypoint, cmd, env, …) committed layers keep.
    pub config: ImageInfo,
    /// What the first installing layer's key chains on.
    pub parent: String,
    /// The boot layer's report, when there is one.
    pub layers: Vec<LayerReport>,
    pending: Option<Pending>,
}

/// A check not run yet.
struct Pending {
    /// What to probe (an image id).
    image: String,
    /// How messages name it.
    name: String,
    rules: ImageRules,
}

pub async fn prepare<E: Engine + ImageTools>(
    engine: &E,
    args: &BuildArgs,
    set: &StagedSet,
    base: &ImageInfo,
    reporter: &dyn Reporter,
) -> Result<Prepared> {
    let sdk_staged = set.with_role(Role::Sdk).next().is_some();
    let Some(boot_ref) = args.boot_from.as_deref() else {
        return Ok(Prepared {
            from_image: base.id.clone(),
            config: base.clone(),
            parent: base.id.clone(),
            layers: Vec::new(),
            pending: (!args.no_check).then(|| Pending {
                image: base.id.clone(),
                name: args.base.clone(),
                rules: ImageRules {
                    boot_added: false,
                    sdk_staged,
                },
            }),
        });
    };

    let started = Instant::now();
    let boot_image = engine
        .image(boot_ref)
        .await?
        .ok_or_else(|| Error::ImageMissing {
            what: "--boot-from image",
            image: boot_ref.to_string(),
        })?;
    let key = plan::boot_key(&base.id, &boot_image.id);
    let tag = &key[..TAG_HEX_LEN];
    let mut found = if args.no_cache {
        None
    } else {
        engine.find_layer(&key).await?
    };
    let mut _lock = None;
    if found.is_none() {
        _lock = lock_layer(&key, reporter).await;
        if !args.no_cache && _lock.is_some() {
            found = engine.find_layer(&key).await?;
        }
    }
    let mut checked = args.no_check;
    let (id, cache) = match found {
        Some(found) => {
            reporter.step(&format!("{BOOT_LAYER}: cache hit ({tag})"));
            (found.id, CacheOutcome::Hit)
        }
        None => {
            if !checked {
                let rules = ImageRules {
                    boot_added: true,
                    sdk_staged,
                };
                check_base(
                    engine,
                    &base.id,
                    &args.base,
                    rules,
                    Some((&boot_image.id, boot_ref)),
                    reporter,
                )
                .await?;
                checked = true;
            }
            reporter.step(&format!(
                "{BOOT_LAYER}: building (the boot of {boot_ref} on {})",
                args.base
            ));
            let build = BootBuild {
                base,
                boot_image: &boot_image,
                boot_ref,
                key: &key,
                labels: labels(&key, base, &boot_image),
            };
            (
                engine.build_boot_layer(build, reporter).await?,
                CacheOutcome::Miss,
            )
        }
    };
    // Not a result: tagged like the layers under one, so `gc` knows.
    engine
        .tag(&id, &args.repository, &format!("{LAYER_TAG_PREFIX}{tag}"))
        .await?;
    let config = engine.image(&id).await?.ok_or_else(|| Error::Engine {
        action: format!("inspecting the boot layer {id}"),
        reason: "the engine no longer has it".into(),
    })?;
    Ok(Prepared {
        pending: (!checked).then(|| Pending {
            image: id.clone(),
            name: format!("{} with the boot of {boot_ref}", args.base),
            rules: ImageRules {
                boot_added: false,
                sdk_staged,
            },
        }),
        from_image: id.clone(),
        config,
        parent: key,
        layers: vec![LayerReport {
            name: BOOT_LAYER.to_string(),
            cache,
            seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            image_id: id,
        }],
    })
}

impl Prepared {
    /// Run the base checks, once: call before building a layer.
    pub async fn check<E: Engine + ImageTools>(
        &mut self,
        engine: &E,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        match self.pending.take() {
            Some(p) => check_base(engine, &p.image, &p.name, p.rules, None, reporter).await,
            None => Ok(()),
        }
    }
}

async fn check_base<E: Engine + ImageTools>(
    engine: &E,
    image: &str,
    name: &str,
    rules: ImageRules,
    boot: Option<(&str, &str)>,
    reporter: &dyn Reporter,
) -> Result<()> {
    reporter.step(&format!(
        "checking {name} before installing anything (a probe container, no network)"
    ));
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
            findings,
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

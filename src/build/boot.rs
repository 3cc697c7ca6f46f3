//! The `boot` layer of `build --boot-from`: a base with Python and apache-beam
//! but no Beam boot (a GPU image, say) gets a Beam SDK image's /opt/apache/beam
//! and the boot as its entrypoint — `COPY --from=<sdk> /opt/apache/beam …` and
//! `ENTRYPOINT ["/opt/apache/beam/boot"]` through the engine's primitives. The
//! directory is streamed from one container's archive into the other's, never
//! held whole in memory; neither container is started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;

use super::local;
use crate::engine::{ops, Engine, ImageInfo, LABEL};
use crate::error::{Error, Result};
use crate::image;
use crate::plan::{BEAM_DIR, BOOT};
use crate::progress::{Event, Reporter};

/// What building a boot layer needs.
pub struct BootBuild<'a> {
    /// The base: its config is what the layer keeps, except the entrypoint.
    pub base: &'a ImageInfo,
    /// The Beam SDK image the boot comes from.
    pub boot_image: &'a ImageInfo,
    /// How the user named the boot image, for messages.
    pub boot_ref: &'a str,
    /// The layer's key (the commit comment names its prefix).
    pub key: &'a str,
    /// Labels the committed image gets on top of the base's.
    pub labels: BTreeMap<String, String>,
}

/// /opt/apache/beam's parent; the archive of BEAM_DIR is extracted here.
const BEAM_PARENT: &str = "/opt/apache";

/// Build the boot layer; the committed image's id. Both containers are
/// removed on every path.
pub async fn build<E: Engine>(
    engine: &E,
    b: &BootBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<String> {
    let source = engine
        .create(&ops::inert(&b.boot_image.id, "boot-source"))
        .await?;
    let target = match engine.create(&ops::inert(&b.base.id, "boot-layer")).await {
        Ok(t) => t,
        Err(e) => {
            engine.remove_container(&source).await;
            return Err(e);
        }
    };
    let result = copy_and_commit(engine, &source, &target, b, reporter).await;
    engine.remove_container(&source).await;
    engine.remove_container(&target).await;
    result
}

async fn copy_and_commit<E: Engine>(
    engine: &E,
    source: &str,
    target: &str,
    b: &BootBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<String> {
    let missing = || Error::BootSourceMissing {
        image: b.boot_ref.to_string(),
        path: BOOT.to_string(),
    };
    if !engine.exists(source, BOOT).await? {
        return Err(missing());
    }
    // The archive endpoint extracts into an existing directory only.
    if !engine.exists(target, BEAM_PARENT).await? {
        let dirs: &[&str] = if engine.exists(target, "/opt").await? {
            &["opt/apache/"]
        } else {
            &["opt/", "opt/apache/"]
        };
        let tar = image::dirs_tar(dirs).map_err(local("writing the tar of /opt/apache"))?;
        let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(tar)) }).boxed();
        engine.upload(target, "/", body).await?;
    }
    reporter.event(Event::BootCopying {
        boot_ref: b.boot_ref,
    });
    let copied = Arc::new(AtomicU64::new(0));
    let counter = copied.clone();
    let download = engine
        .download(source, BEAM_DIR)
        .await?
        .ok_or_else(missing)?;
    let counted = download
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            chunk
        })
        .boxed();
    engine.upload(target, BEAM_PARENT, counted).await?;
    reporter.event(Event::BootCopied {
        bytes: copied.load(Ordering::Relaxed),
    });
    let mut labels = b.labels.clone();
    labels.insert(LABEL.to_string(), "image".to_string());
    let mut config = image::layer_config(&b.base.config, &labels);
    config["Entrypoint"] = serde_json::json!([BOOT]);
    // As in a Dockerfile, a new ENTRYPOINT drops the base's CMD (`python3`
    // would reach the boot as an argument).
    config["Cmd"] = serde_json::json!([]);
    let comment = format!(
        "prebuilder boot layer {} from {}",
        &b.key[..b.key.len().min(32)],
        b.boot_ref
    );
    engine.commit(target, &config, &comment).await
}

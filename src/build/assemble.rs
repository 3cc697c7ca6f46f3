//! What the layer loads are made of: the image config of a parent plus
//! layer files ([`image_of`]), the load archive of one layer of it
//! ([`one_layer_body`]), files put into a setup container ([`put_files`]),
//! and the room check before layer files are written ([`enough_room`]).
//! Shared by the layer built after the setup (`super::layer`) and the
//! layers made while it runs (`super::early`).

use std::path::Path;

use futures_util::StreamExt;

use super::local;
use crate::engine::{ByteStream, Engine, ImageInfo, LABEL_SPLIT};
use crate::error::{Error, Result};
use crate::image::{self, split};

use super::setup::SNAPSHOT_DIR;

/// `files` (path in the snapshot directory, content) into the container.
pub async fn put_files<E: Engine>(
    engine: &E,
    container: &str,
    files: &[(&str, &[u8])],
) -> Result<()> {
    let bytes = image::files_tar(files, 0)
        .map_err(local("writing the snapshot's part lists".to_string()))?;
    let body = futures_util::stream::once(async move { Ok(bytes::Bytes::from(bytes)) }).boxed();
    engine.upload(container, SNAPSHOT_DIR, body).await
}

/// The load archive of `layer` as the `index`th of an image of `layers`
/// layers whose config is `config`: its bytes, then, once `wait` says the
/// image below is in (dropped: it was not), the config and manifest.
pub fn one_layer_body(
    layer: &split::Written,
    index: usize,
    layers: usize,
    config: &[u8],
    wait: Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<ByteStream> {
    use futures_util::TryStreamExt;
    let (head, pad, tail) = image::archive_one_layer(index, layer.size, config, layers)
        .map_err(local("writing a layer archive's header".to_string()))?;
    let path = layer.path.clone();
    let bytes = futures_util::stream::once(async move { tokio::fs::File::open(path).await })
        .map_ok(|f| tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
        .try_flatten();
    let tail = futures_util::stream::once(async move {
        if let Some(wait) = wait {
            wait.await
                .map_err(|_| std::io::Error::other("the layer below was not loaded"))?;
        }
        Ok(bytes::Bytes::from(tail))
    });
    let chunk = |b: Vec<u8>| futures_util::stream::once(async move { Ok(bytes::Bytes::from(b)) });
    Ok(chunk(head)
        .chain(bytes)
        .chain(chunk(pad))
        .chain(tail)
        .try_filter(|b| std::future::ready(!b.is_empty()))
        .boxed())
}

/// The image config of the parent plus `layers` (with the split's label
/// in `config` when there are several): its bytes, the image id and the
/// container config.
pub fn image_of(
    layers: &[split::Written],
    parent: &ImageInfo,
    mut config: serde_json::Value,
    (epoch, entry): (u64, serde_json::Value),
) -> (Vec<u8>, String, serde_json::Value) {
    if layers.len() > 1 {
        let parts: Vec<&split::Part> = layers.iter().map(|l| &l.part).collect();
        if let Some(labels) = config.get_mut("Labels").and_then(|l| l.as_object_mut()) {
            labels.insert(LABEL_SPLIT.to_string(), split::label(&parts).into());
        }
    }
    let mut diff_ids = parent.layers.clone();
    diff_ids.extend(layers.iter().map(|l| l.diff_id.clone()));
    // The parent's history, then what this layer installed (one entry per
    // layer of the split: `docker history` pairs entries with layers).
    let mut history = crate::history::from_engine(&parent.history);
    history.extend(split::history(&entry, layers.iter().map(|l| &l.part)));
    let image_config = image::image_config(
        &parent.os,
        &parent.architecture,
        config.clone(),
        &diff_ids,
        image::rfc3339(epoch),
        history,
    );
    let id = image::image_id(&image_config);
    (image_config, id, config)
}

/// `Ok` when the file system of `dir` has `needed` bytes free (or cannot
/// say); else [`Error::DiskFull`] naming it, before anything is written.
pub fn enough_room(what: &str, dir: &Path, needed: u64) -> Result<()> {
    match crate::state::available_space(dir) {
        Ok(available) if available < needed => Err(Error::DiskFull {
            what: what.to_string(),
            dir: dir.to_path_buf(),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

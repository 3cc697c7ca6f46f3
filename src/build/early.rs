//! Heavy layers made and loaded while the setup's pip still runs (issue 22:
//! on a GPU-size set pip installs on one core for minutes while the other
//! idles; the layers were read, cut and loaded only after it). What is
//! decided here needs an engine; the pure part (the prediction, the layer's
//! files and bytes, the check) is `crate::image::split::early`.
//!
//! With the snapshot in parts, setup.sh announces each distribution pip has
//! finished (`prebuilder: installed <its RECORD>`). The split's heavy
//! layers are predicted from the staged wheels' `RECORD`s; while the setup
//! runs, each predicted layer whose distribution is announced, and every
//! one below it made, is read (a `tar` of its files in the container,
//! which first touches a marker), cut, and loaded as an image of the layers
//! so far. After pip the whole snapshot's split must begin with exactly
//! those layers and none of their files may have changed since its marker
//! ([`verify`]); then the parts path skips them. Otherwise their images are
//! removed and the parts path makes every layer, as before.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::assemble::{enough_room, image_of, one_layer_body, put_files};
use super::setup;
use crate::engine::{ops, Engine, ImageInfo};
use crate::error::{Error, Result};
use crate::image::split::early::{self, Prediction};
use crate::image::split::{self, Distribution, Rule};
use crate::plan::LayerName;
use crate::progress::{Event, Reporter};
use crate::stage::Artifact;

/// The most one `RECORD` may take (read into memory; torch's is 2 MB).
const MAX_RECORD: usize = 64 << 20;

/// The split's first layers as `rule` cuts what the staged `artifacts`
/// install (their wheels' `RECORD`s): `None` when no heavy layer is
/// expected (or the layer is not split). What enters the image is never
/// read from here: it comes from the container, checked after pip.
pub(super) async fn predict(rule: Option<Rule>, artifacts: &[&Artifact]) -> Option<Prediction> {
    let rule = rule?;
    let wheels: Vec<PathBuf> = artifacts
        .iter()
        .filter(|a| a.name.ends_with(".whl"))
        .map(|a| a.path.clone())
        .collect();
    let records = tokio::task::spawn_blocking(move || {
        wheels
            .iter()
            .filter_map(|w| match wheel_record(w) {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!("no RECORD read from {}: {e}", w.display());
                    None
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .ok()?;
    let prediction = Prediction::from_wheels(&records, rule);
    (!prediction.order.is_empty()).then_some(prediction)
}

/// A wheel's `.dist-info` name (without the suffix) and its `RECORD`.
fn wheel_record(path: &Path) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(path)?).map_err(std::io::Error::other)?;
    let name = zip.file_names().find_map(|n| {
        let stem = n.strip_suffix(".dist-info/RECORD")?;
        (!stem.contains('/')).then(|| (n.to_string(), stem.to_string()))
    });
    let Some((member, stem)) = name else {
        return Ok(None);
    };
    let entry = zip.by_name(&member).map_err(std::io::Error::other)?;
    let mut bytes = Vec::new();
    entry.take(MAX_RECORD as u64).read_to_end(&mut bytes)?;
    Ok(Some((stem, bytes)))
}

/// One layer made while the setup ran: its distribution (with the files
/// its layer holds), its layer (the file is gone once loaded) and the
/// image of the layers up to it.
pub(super) struct Made {
    pub dist: Distribution,
    pub written: split::Written,
    pub image: String,
}

/// What the early layers are made with.
pub(super) struct Early<'a> {
    pub prediction: Prediction,
    pub container: &'a str,
    pub layer: LayerName,
    /// The image the setup started from: the layers go on it.
    pub from_image: &'a str,
    /// Where their files go (each removed once loaded).
    pub dir: &'a Path,
    /// The scratch directory `dir` is in: its room is checked first.
    pub scratch: &'a Path,
    /// The layer's epoch, a provisional config of its images (the record
    /// is made after pip; only the last image of the split is kept) and
    /// its history entry.
    pub epoch: u64,
    pub config: serde_json::Value,
    pub entry: serde_json::Value,
}

/// While the setup runs: each announced `RECORD` path from `announced`
/// (closed once the setup has listed its snapshot); makes the predicted
/// layers in order as their distributions are announced, each loaded
/// while the next is read, until the listing's announcements are done.
/// The layers made; any failure ends the early layers (logged): the parts
/// path makes the rest.
pub(super) async fn run<E: Engine>(
    engine: &E,
    early: &Early<'_>,
    announced: tokio::sync::mpsc::UnboundedReceiver<String>,
    reporter: &dyn Reporter,
) -> Vec<Made> {
    let (give, take) = tokio::sync::mpsc::channel(1);
    let ((), made) = tokio::join!(
        write_each(engine, early, announced, give),
        load_each(engine, early, take, reporter)
    );
    made
}

/// The predicted layers' files, each once its distribution is announced
/// (and every one below it written), tarred in the container and cut into
/// its layer file, to `give` in order; stops once every announcement up to
/// the listing is done, at the first failure (logged) or when the loads
/// stop.
async fn write_each<E: Engine>(
    engine: &E,
    early: &Early<'_>,
    mut announced: tokio::sync::mpsc::UnboundedReceiver<String>,
    give: tokio::sync::mpsc::Sender<(Distribution, split::Written)>,
) {
    let mut installed: HashMap<String, String> = HashMap::new();
    let order = &early.prediction.order;
    let mut next = 0;
    while let Some(record) = announced.recv().await {
        if let Some(name) = dist_name(&record) {
            installed.insert(name, record);
        }
        // Past the listing too, for what was announced before it: the
        // setup announces every distribution by then.
        while let Some(record) = order.get(next).and_then(|n| installed.get(n)) {
            match write_one(engine, early, next, record).await {
                Ok(layer) => {
                    if give.send(layer).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        "the layers made while the setup runs stop at {}: {e}; the rest are made after it",
                        order[next]
                    );
                    return;
                }
            }
        }
    }
}

/// Each layer from `take`, in order, loaded as the image of the layers so
/// far; the layers loaded (at the first failure, logged, the ones before).
async fn load_each<E: Engine>(
    engine: &E,
    early: &Early<'_>,
    mut take: tokio::sync::mpsc::Receiver<(Distribution, split::Written)>,
    reporter: &dyn Reporter,
) -> Vec<Made> {
    let mut made: Vec<Made> = Vec::new();
    let mut parent: Option<ImageInfo> = None;
    while let Some((dist, written)) = take.recv().await {
        let loaded = match &parent {
            Some(p) => load_one(engine, early, p, &made, &written).await,
            None => match ops::require(engine, early.from_image, "layer parent image").await {
                Ok(p) => {
                    let loaded = load_one(engine, early, &p, &made, &written).await;
                    parent = Some(p);
                    loaded
                }
                Err(e) => Err(e),
            },
        };
        let _ = tokio::fs::remove_file(&written.path).await;
        match loaded {
            Ok(image) => {
                reporter.event(Event::EarlyLayer {
                    layer: early.layer,
                    part: &dist.name,
                    index: made.len() + 1,
                    of: early.prediction.order.len(),
                });
                made.push(Made {
                    dist,
                    written,
                    image,
                });
            }
            Err(e) => {
                tracing::warn!(
                    "the layers made while the setup runs stop at {}: {e}; the rest are made after it",
                    dist.name
                );
                break;
            }
        }
    }
    made
}

/// `torch-2.5.1` of `/…/torch-2.5.1.dist-info/RECORD`.
fn dist_name(record: &str) -> Option<String> {
    let info = Path::new(record).parent()?.file_name()?.to_str()?;
    info.strip_suffix(".dist-info").map(str::to_string)
}

/// Early layer `i`: `record`'s distribution read from the container, its
/// files tarred there, cut into its layer file.
async fn write_one<E: Engine>(
    engine: &E,
    early: &Early<'_>,
    i: usize,
    record: &str,
) -> Result<(Distribution, split::Written)> {
    let bytes = ops::download_file_up_to(engine, early.container, record, MAX_RECORD)
        .await?
        .ok_or_else(|| gone(early.container, record))?;
    let dist = early
        .prediction
        .layer_of(record, &bytes)
        .ok_or_else(|| gone(early.container, record))?;
    let what = format!("{} layer", early.layer);
    enough_room(&what, early.scratch, dist.size.saturating_add(4 << 20))?;
    let list = early::list(&dist);
    let list_path = format!("{}/{i:03}.list", setup::EARLY_DIR);
    put_files(engine, early.container, &[(&list_path, &list)]).await?;
    let stream = engine
        .exec_output(
            early.container,
            &setup::early_tar_command(i),
            &setup::PART_TAR_OK,
        )
        .await?;
    let path = early.dir.join(format!("early-{i}.tar"));
    let epoch = early.epoch;
    let (file, d) = (path.clone(), dist.clone());
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let mut reader = std::io::BufReader::with_capacity(1 << 20, reader);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
        let id = early::write_layer(&mut reader, &d, epoch, &mut out)?;
        // Past the tar's end: where its exit status shows.
        std::io::copy(&mut reader, &mut std::io::sink())?;
        std::io::Write::flush(&mut out)?;
        drop(out);
        Ok((id, std::fs::metadata(&file)?.len()))
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing an early layer".into(),
        source,
    })?;
    let (diff_id, size) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(super::local(format!("writing {}", path.display()))(e));
        }
    };
    let part = split::Part::Distribution {
        name: dist.name.clone(),
        size: dist.size,
    };
    let written = split::Written {
        part,
        path,
        size,
        diff_id,
    };
    Ok((dist, written))
}

/// `written` loaded as the image of the layers `made` and it (with a
/// provisional config: the record is made after pip, and only the last
/// image of the whole split is kept): that image's id.
async fn load_one<E: Engine>(
    engine: &E,
    early: &Early<'_>,
    parent: &ImageInfo,
    made: &[Made],
    written: &split::Written,
) -> Result<String> {
    let mut so_far: Vec<split::Written> = made.iter().map(|m| m.written.clone()).collect();
    so_far.push(written.clone());
    let history = (early.epoch, early.entry.clone());
    let (bytes, image, _) = image_of(&so_far, parent, early.config.clone(), history);
    let base = parent.layers.len();
    let i = made.len();
    let body = one_layer_body(written, base + i, base + i + 1, &bytes, None)?;
    engine.load_stream(body).await?;
    engine.note_partial_image(&image);
    Ok(image)
}

fn gone(container: &str, record: &str) -> Error {
    Error::Engine {
        engine: String::new(),
        action: format!("reading {record} from container {container}"),
        source: "it is not there, or not a RECORD".into(),
    }
}

/// Whether the layers `made` while the setup ran are the first of `split`
/// (the whole snapshot's), their files unchanged since each was read:
/// `Err` says why not.
pub(super) async fn verify<E: Engine>(
    engine: &E,
    container: &str,
    split: &split::Split,
    made: &[Made],
) -> std::result::Result<(), String> {
    let dists: Vec<Distribution> = made.iter().map(|m| m.dist.clone()).collect();
    if !early::holds(split, &dists) {
        return Err("the split of what pip installed begins otherwise".into());
    }
    let changed = async {
        let stream = engine
            .exec_output(container, &setup::early_check_command(made.len()), &[0])
            .await?;
        let mut stream = std::pin::pin!(stream);
        let mut out = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(super::local("checking the early layers' files"))?;
            out.extend_from_slice(&chunk);
        }
        Ok::<_, Error>(out)
    };
    match changed.await {
        Ok(out) if out.is_empty() => Ok(()),
        Ok(out) => Err(format!(
            "{} changed after its layer was read",
            String::from_utf8_lossy(&out).trim()
        )),
        Err(e) => Err(format!("their files could not be checked: {e}")),
    }
}

/// Remove the images of layers made early (not used after all).
pub(super) async fn drop_made<E: Engine>(engine: &E, made: &[Made]) {
    for m in made.iter().rev() {
        if let Err(e) = engine.remove_image(&m.image).await {
            tracing::warn!("could not remove the early layer image {}: {e}", m.image);
        }
        engine.forget_partial_image(&m.image);
    }
}

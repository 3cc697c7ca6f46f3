//! One installing layer: a setup container from the layer below, the
//! layer's artifacts uploaded into it, the boot run in setup-only mode, the
//! record read back, then the layer saved: preferably the setup's snapshot
//! assembled into a layer (`crate::image`) and loaded, else (no GNU tools in
//! the base, or `PREBUILDER_COMMIT`) a commit of the container. The container
//! is removed on every path.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use futures_util::StreamExt;

use super::assemble::{enough_room, image_of, one_layer_body, put_files};
use super::setup::{self, SNAPSHOT_DIR};
use super::{early, flink, local, record, upload, verify};
use crate::engine::{
    ops, ByteStream, ContainerSpec, Engine, ImageInfo, Network, LABEL, LABEL_BASE, LABEL_BOOT_FROM,
    LABEL_COMMITTED,
};
use crate::error::{Error, Result};
use crate::image::{self, split};
use crate::plan::{LayerName, LayerPlan, BEAM_DIR};
use crate::progress::{Event, Reporter};
use crate::record::{LABEL_RECORD, RECORD_FILE, RECORD_NAME};
use crate::stage::SetupMode;

/// Lines of setup output kept for the error message when the setup fails.
const TAIL_LINES: usize = 25;

/// What one layer build needs.
pub struct LayerBuild<'a> {
    /// The image the setup container starts from (base or previous layer).
    pub from_image: &'a str,
    /// The image whose config (entrypoint, cmd, env, …) the layer keeps:
    /// the base, or the boot layer.
    pub config_image: &'a ImageInfo,
    pub layer: &'a LayerPlan<'a>,
    /// Labels the layer image gets on top of the base's.
    pub labels: BTreeMap<String, String>,
    pub network: &'a Network,
    /// Commit the container instead of loading the snapshot.
    pub commit: bool,
    /// Where the layer's temporary files go (snapshot, layer and image tars).
    pub scratch: &'a Path,
    /// What the setup runs (Beam's boot or PyFlink's setup) and the config it adds.
    pub mode: &'a SetupMode,
    /// `SOURCE_DATE_EPOCH`, when set.
    pub source_date_epoch: Option<&'a str>,
    /// `--platform`'s platform this layer is built for (the engine's own when `None`).
    pub platform: Option<&'a str>,
    /// The apache-beam version the base must have (`Options::base_beam`).
    pub base_beam: Option<&'a str>,
    /// How the dependency layer is cut into per-distribution layers
    /// (`crate::image::split`; `None`: one layer). Not part of the key:
    /// the cut changes the layers, never the file tree.
    pub split: Option<split::Rule>,
    /// Make the split's heavy layers while the setup runs, when the
    /// snapshot is in parts (`super::early`; `PREBUILDER_EARLY_LAYERS=off`
    /// turns it off).
    pub early: bool,
}

impl LayerBuild<'_> {
    /// The date of everything in the layer (see `image::reproducible`):
    /// `SOURCE_DATE_EPOCH`, else the `created` of the image whose config the
    /// layer keeps (the base, or the boot layer).
    fn epoch(&self) -> u64 {
        image::reproducible::epoch(self.source_date_epoch, self.config_image.created.as_deref())
    }

    /// Whether the setup takes a snapshot, and where ([`setup::Snapshot`]):
    /// in parts ([`in_parts`]) where the engine loads each layer as it
    /// comes and the layer is split, with the snapshot on the volume.
    fn snapshot<E: Engine>(&self, engine: &E) -> setup::Snapshot {
        let parts = engine.snapshots_in_parts()
            && self.split_rule().is_some()
            && setup::volume(self.mode).is_some();
        match (self.commit, engine.reads_volume_links(), parts) {
            (true, _, _) => setup::Snapshot::No,
            (false, true, true) => setup::Snapshot::InParts,
            (false, true, false) => setup::Snapshot::OnVolume,
            (false, false, _) => setup::Snapshot::InContainer,
        }
    }

    /// The split rule for this layer: the dependency layer only (the
    /// application layer is the pipeline's own: nothing in it is shared).
    fn split_rule(&self) -> Option<split::Rule> {
        self.split
            .filter(|_| self.layer.name == LayerName::Dependencies)
    }
}

/// Build the layer; the new image's id.
pub async fn build<E: Engine>(
    engine: &E,
    b: &LayerBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<String> {
    let layer = b.layer;
    let names: Vec<&str> = layer.artifacts.iter().map(|a| a.name.as_str()).collect();
    let spec = ContainerSpec {
        name: format!(
            "prebuilder-setup-{}-{}-{}",
            layer.name,
            &layer.key[..12],
            std::process::id()
        ),
        image: b.from_image.to_string(),
        // No snapshot when the container is committed: the commit would carry it.
        entrypoint: setup::command_with(
            b.mode,
            matches!(b.network, Network::None),
            b.epoch(),
            (
                b.snapshot(engine),
                b.base_beam.map(|v| (v, b.platform.unwrap_or_default())),
            ),
            &names,
        ),
        role: "setup".into(),
        network: b.network.clone(),
        // The staged files live on a volume: fast to write and delete on any
        // storage driver (issue 12: 50,000 files took 148 s to upload and
        // 300 s to delete on fuse-overlayfs), and outside the layer anyway.
        // Beam only (`setup::volume`); its snapshot's bytes go there too.
        volume: setup::volume(b.mode).map(str::to_string),
        platform: b.platform.map(str::to_string),
    };
    reporter.event(Event::CreatingContainer {
        layer: layer.name,
        name: &spec.name,
    });
    let container = engine.create(&spec).await?;
    let result = set_up_and_save(engine, &container, b, reporter).await;
    engine.remove_container(&container).await;
    let (id, config, leftovers) = result?;
    // Before anything is tagged: the image is what was asked for.
    verify::check(engine, &id, &config, leftovers).await?;
    Ok(id)
}

/// Everything between "container created" and "layer image saved"; the
/// caller removes the container whatever happens here. The image id, the
/// config asked for and the setup leftovers seen in the container.
async fn set_up_and_save<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<(String, serde_json::Value, Vec<String>)> {
    for &path in flink::required_paths(b.mode) {
        if !engine.exists(container, path).await? {
            return Err(Error::BootMissing {
                image: b.from_image.to_string(),
                path: path.to_string(),
            });
        }
    }
    upload_artifacts(engine, container, b.layer, b.mode, reporter).await?;
    let parts = b.snapshot(engine) == setup::Snapshot::InParts;
    if parts {
        if let Some((image, config)) = in_parts(engine, container, b, reporter).await? {
            return Ok((image, config, Vec::new()));
        }
    } else {
        run_setup(engine, container, b.layer.name, b.mode, reporter, None).await?;
    }
    let (file, mut config) = record_and_config(engine, container, b, reporter).await?;
    let file = file.as_deref();
    if !b.commit {
        // No fallback to a commit once a snapshot was taken: the container
        // holds it, the commit would carry it, and the check below would
        // refuse the image blaming the engine (issue 22: a full disk read
        // as an engine that ignored the config).
        let loaded = match parts {
            true => None,
            false => load_snapshot(engine, container, b, config.clone(), file, reporter).await?,
        };
        match loaded {
            Some((image, config)) => return Ok((image, config, Vec::new())),
            None => reporter.event(Event::NoSnapshot {
                layer: b.layer.name,
            }),
        }
    }
    let names: Vec<&str> = b.layer.artifacts.iter().map(|a| a.name.as_str()).collect();
    let artifacts = flink::artifacts_dir(b.mode);
    let leftovers = verify::leftovers(engine, container, artifacts, &names).await?;
    if let Some(file) = file {
        ops::upload_file(engine, container, BEAM_DIR, RECORD_NAME, file).await?;
    }
    reporter.event(Event::Committing {
        layer: b.layer.name,
    });
    // A committed layer holds the engine's bytes: its label and the report
    // say so (outside the same-digest-on-every-engine promise).
    if let Some(labels) = config.get_mut("Labels").and_then(|l| l.as_object_mut()) {
        labels.insert(LABEL_COMMITTED.to_string(), "true".into());
    }
    let comment = format!("prebuilder {} layer {}", b.layer.name, b.layer.tag());
    let id = engine.commit(container, &config, &comment).await?;
    Ok((id, config, leftovers))
}

/// The environment's record (pip freeze and inputs, `record::make`) and
/// the layer image's config with it: the record file's bytes (none when
/// the setup left no freeze) and the config.
async fn record_and_config<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<(Option<Vec<u8>>, serde_json::Value)> {
    let context = record::Context {
        layer: b.layer,
        from_image: b.from_image,
        base: b
            .labels
            .get(LABEL_BASE)
            .map_or(b.config_image.id.as_str(), String::as_str),
        boot_from: b
            .config_image
            .labels
            .get(LABEL_BOOT_FROM)
            .map(String::as_str),
        snapshot: !b.commit,
    };
    let record = record::make(engine, container, &context, reporter).await?;
    let mut labels = b.labels.clone();
    if let Some((_, label)) = &record {
        labels.insert(LABEL_RECORD.to_string(), label.clone());
    }
    // Overrides the setup container's `prebuilder=setup`, which a commit copies.
    labels.insert(LABEL.to_string(), "image".to_string());
    let mut config = image::layer_config(&b.config_image.config, &labels);
    flink::adjust_config(b.mode, b.layer.name, &b.config_image.config, &mut config);
    Ok((record.map(|(f, _)| f), config))
}

/// Stream the layer's artifacts (and its manifest) into the container.
async fn upload_artifacts<E: Engine>(
    engine: &E,
    container: &str,
    layer: &LayerPlan<'_>,
    mode: &SetupMode,
    reporter: &dyn Reporter,
) -> Result<()> {
    let files: Vec<upload::UploadFile> = layer
        .artifacts
        .iter()
        .map(|a| upload::UploadFile {
            name: a.name.clone(),
            path: a.path.clone(),
            size: a.size,
            verify: a.origin.as_ref().map(|_| a.sha256.clone()),
        })
        .collect();
    reporter.event(Event::Uploading {
        layer: layer.name,
        files: files.len(),
        bytes: files.iter().map(|f| f.size).sum(),
    });
    let (chunks, writer) = upload::start(layer.manifest.clone(), files);
    let body =
        futures_util::stream::unfold(
            chunks,
            |mut rx| async move { rx.recv().await.map(|c| (c, rx)) },
        )
        .boxed();
    let uploaded = engine
        .upload(container, flink::upload_dir(mode), body)
        .await;
    // The writer's error names the file at fault: prefer it.
    writer.await.map_err(|source| Error::Task {
        action: "streaming the artifacts".into(),
        source,
    })??;
    uploaded
}

/// Run the setup attached, its output as events, line by line; a non-zero
/// exit status is [`Error::SetupFailed`] with the last lines.
async fn run_setup<E: Engine>(
    engine: &E,
    container: &str,
    layer: LayerName,
    mode: &SetupMode,
    reporter: &dyn Reporter,
    tell: Option<Tell<'_>>,
) -> Result<()> {
    reporter.event(Event::RunningSetup {
        layer,
        step: &flink::setup_step(mode).1,
    });
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut partial = Vec::new();
    let (listed, mut installed) = match tell {
        Some(t) => (Some(t.listed), t.installed),
        None => (None, None),
    };
    let mut emit = |line: &[u8]| {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        reporter.event(Event::SetupOutput { layer, line: &line });
        if let (Some(record), Some(to)) = (line.strip_prefix(setup::INSTALLED), &installed) {
            let _ = to.send(record.to_string());
        }
        if line == setup::LISTED {
            let _ = listed.map(|l| l.send(()));
            // The setup has announced every distribution by now: the early
            // layers end with those (`early::run`).
            installed = None;
        }
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    };
    // stdout and stderr interleave as the boot wrote them.
    let mut on_output = |_: bool, chunk: &[u8]| {
        partial.extend_from_slice(chunk);
        while let Some(pos) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            emit(&line[..line.len() - 1]);
        }
    };
    let status = engine.run_attached(container, &mut on_output).await?;
    if !partial.is_empty() {
        emit(&partial);
    }
    if status == 0 {
        return Ok(());
    }
    let tail: Vec<String> = tail.into_iter().collect();
    let shown = if tail.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = tail.iter().map(|l| format!("  | {l}")).collect();
        format!("\nlast lines of the setup's output:\n{}", lines.join("\n"))
    };
    Err(Error::SetupFailed {
        layer: layer.to_string(),
        step: flink::failing_step(mode, &tail),
        status,
        tail: shown,
    })
}

/// Told once the setup has listed its snapshot in parts
/// ([`setup::Snapshot::InParts`]: it prints [`setup::LISTED`] and waits).
type Listed = tokio::sync::mpsc::UnboundedSender<()>;

/// Whom [`run_setup`] tells of the setup's listing, and of each
/// distribution it announces before it (the `RECORD`'s path; closed at
/// the listing).
struct Tell<'a> {
    listed: &'a Listed,
    installed: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// The setup with its snapshot in parts (issue 22): once the setup has
/// listed what it changed, its record is made and the split planned, the
/// part lists ([`split::Split::part_lists`]) go into the container, and
/// each part is read from a `tar` run in the container as it writes it
/// (no copy of the snapshot on any disk), cut, and its layer loaded while
/// the next is read ([`read_parts`]); then the setup ends. `None` when the
/// setup took no snapshot (no GNU tools in the base): the caller commits.
async fn in_parts<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
    reporter: &dyn Reporter,
) -> Result<Option<(String, serde_json::Value)>> {
    let (listed, said) = tokio::sync::mpsc::unbounded_channel();
    let rule = b.split_rule().filter(|_| b.early);
    let prediction = early::predict(rule, &b.layer.artifacts).await;
    let early_dir = match prediction {
        Some(_) => Some(layer_dir(b.scratch)?),
        None => None,
    };
    let (installed, announced) = tokio::sync::mpsc::unbounded_channel();
    let installed = prediction.is_some().then_some(installed);
    let setup = async {
        let tell = Tell {
            listed: &listed,
            installed,
        };
        let ran = run_setup(
            engine,
            container,
            b.layer.name,
            b.mode,
            reporter,
            Some(tell),
        )
        .await;
        drop(listed);
        ran
    };
    let (made_early, early_made) = tokio::sync::oneshot::channel();
    let early = async {
        let made = match (prediction, &early_dir) {
            (Some(prediction), Some(dir)) => {
                let epoch = b.epoch();
                let e = early::Early {
                    prediction,
                    container,
                    layer: b.layer.name,
                    from_image: b.from_image,
                    dir: dir.path(),
                    scratch: b.scratch,
                    epoch,
                    config: image::layer_config(&b.config_image.config, &b.labels),
                    entry: crate::history::entry(b.layer, &image::rfc3339(epoch)),
                };
                early::run(engine, &e, announced, reporter).await
            }
            _ => Vec::new(),
        };
        if let Err(made) = made_early.send(made) {
            // The build failed meanwhile.
            early::drop_made(engine, &made).await;
        }
        Ok(())
    };
    let parts = read_parts(engine, container, b, reporter, (said, early_made));
    let (_, _, made) = tokio::try_join!(setup, early, parts)?;
    Ok(made)
}

/// The most a snapshot's list of paths may take (read into memory).
const MAX_LIST: usize = 256 << 20;

/// [`in_parts`]' side of the snapshot: `None` if the setup ends without
/// listing one.
async fn read_parts<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
    reporter: &dyn Reporter,
    (mut said, early_made): (
        tokio::sync::mpsc::UnboundedReceiver<()>,
        tokio::sync::oneshot::Receiver<Vec<early::Made>>,
    ),
) -> Result<Option<(String, serde_json::Value)>> {
    if said.recv().await.is_none() {
        return Ok(None);
    }
    // The layers made while the setup ran (their images are removed by
    // the loads below, or by the build's end when it fails first).
    let made = early_made.await.unwrap_or_default();
    let (record, config) = record_and_config(engine, container, b, reporter).await?;
    let deleted = ops::download_file(engine, container, &format!("{SNAPSHOT_DIR}/deleted"))
        .await?
        .unwrap_or_default();
    let split = plan_split(engine, container, b.split_rule()).await?;
    let made = keep_early(engine, container, (&split, made), b.layer.name, reporter).await;
    let all = download_list(engine, container, &format!("{SNAPSHOT_DIR}/all")).await?;
    let mut lists = split.part_lists(&all);
    // Their parts are not read again (part 0 holds the directories).
    for list in lists.iter_mut().skip(1).take(made.len()) {
        list.clear();
    }
    give_part_lists(engine, container, &lists).await?;
    let parent = ops::require(engine, b.from_image, "layer parent image").await?;
    reporter.event(Event::WritingLayer {
        layer: b.layer.name,
    });
    let what = format!("{} layer", b.layer.name);
    // The room the layer files need, from what the RECORDs say was
    // installed, checked before anything is written (each part's own size
    // is checked again as it comes).
    let installed: u64 = split
        .parts
        .iter()
        .map(|p| match p {
            split::Part::Distribution { size, .. } | split::Part::Group { size, .. } => *size,
            split::Part::Top => 0,
        })
        .sum();
    let needed = scratch_needed(installed, true);
    enough_room(&what, b.scratch, needed)?;
    let tmp = layer_dir(b.scratch)?;
    let written = Written::new(tmp.path(), (&what, b.scratch), needed);
    let epoch = b.epoch();
    let entry = crate::history::entry(b.layer, &image::rfc3339(epoch));
    let top = (deleted, record, epoch);
    let layer = b.layer.name;
    let left = || reporter.event(Event::LoadingLayer { layer });
    let parts = Parts {
        lists: lists.len(),
        early: made.len(),
        container,
        layer,
        from: b.from_image,
    };
    let early: Vec<(String, split::Written)> =
        made.into_iter().map(|m| (m.image, m.written)).collect();
    let made = parts_into_layers(
        engine,
        parts,
        split,
        top,
        &written,
        (&parent, config, entry),
        (early, &left),
    )
    .await?;
    Ok(Some(made))
}

/// The layers made while the setup ran that begin `split` (the whole
/// snapshot's), their files unchanged ([`early::verify`]), each with its
/// part as the split names it; none (their images removed, and said) when
/// they do not.
async fn keep_early<E: Engine>(
    engine: &E,
    container: &str,
    (split, mut made): (&split::Split, Vec<early::Made>),
    layer: LayerName,
    reporter: &dyn Reporter,
) -> Vec<early::Made> {
    if made.is_empty() {
        return made;
    }
    match early::verify(engine, container, split, &made).await {
        Ok(()) => {
            for (m, part) in made.iter_mut().zip(&split.parts) {
                m.written.part = part.clone();
            }
            made
        }
        Err(reason) => {
            reporter.event(Event::EarlyLayersDropped {
                layer,
                count: made.len(),
                reason: &reason,
            });
            early::drop_made(engine, &made).await;
            Vec::new()
        }
    }
}

/// The snapshot's list of paths (`all`, NUL-separated) from the container.
async fn download_list<E: Engine>(engine: &E, container: &str, path: &str) -> Result<Vec<u8>> {
    ops::download_file_up_to(engine, container, path, MAX_LIST)
        .await?
        .ok_or_else(|| Error::Engine {
            engine: String::new(),
            action: format!("reading {path} from container {container}"),
            source: "the setup's snapshot has no list of its paths".into(),
        })
}

/// The part lists into the container's snapshot directory (`parts/NNN.list`).
async fn give_part_lists<E: Engine>(engine: &E, container: &str, lists: &[Vec<u8>]) -> Result<()> {
    let names: Vec<String> = (0..lists.len())
        .map(|i| format!("{}/{i:03}.list", setup::PARTS_DIR))
        .collect();
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(lists.iter().map(Vec::as_slice))
        .collect();
    put_files(engine, container, &files).await
}

/// The setup's parts as prebuilder reads them: how many, whose.
struct Parts<'a> {
    lists: usize,
    /// Parts 1 to `early` are layers made while the setup ran: not read.
    early: usize,
    container: &'a str,
    /// The layer's name and the image its setup started from (for errors).
    layer: LayerName,
    from: &'a str,
}

impl Parts<'_> {
    /// What reading them is, for an error.
    fn reading(&self) -> String {
        format!(
            "reading the {} layer's snapshot from container {} (from {})",
            self.layer, self.container, self.from
        )
    }
}

/// Read each part (a `tar` run in the container, its output streamed, see
/// [`setup::part_tar_command`]), cut it into the layers
/// (`split::split_parts`, in a blocking task) and load each layer as it is
/// complete ([`load_as_written`]): the image's id and config.
async fn parts_into_layers<E: Engine>(
    engine: &E,
    parts: Parts<'_>,
    split: split::Split,
    (deleted, record, epoch): (Vec<u8>, Option<Vec<u8>>, u64),
    to: &Written<'_>,
    (parent, config, entry): (&ImageInfo, serde_json::Value, serde_json::Value),
    (early, left): (Vec<(String, split::Written)>, &(dyn Fn() + Sync)),
) -> Result<(String, serde_json::Value)> {
    let (give, take) = tokio::sync::mpsc::channel::<std::io::Result<PartReader>>(1);
    let (ready, layers) = tokio::sync::mpsc::unbounded_channel();
    let n = split.parts.len();
    let made = early.len();
    let dir = to.dir.to_path_buf();
    let write = tokio::task::spawn_blocking(move || {
        let mut take = take;
        let incoming = std::iter::from_fn(move || take.blocking_recv());
        let mut hand_over = |i: usize, w: &split::Written| {
            ready.send((i, w.clone())).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the engine stopped loading the layers",
                )
            })
        };
        split::split_parts(
            incoming,
            (&deleted, record.as_deref().map(|r| (RECORD_FILE, r)), epoch),
            (split, made),
            (&dir, &mut hand_over),
        )
    });
    let container = parts.container;
    let reading = parts.reading();
    let write = async {
        let wrote = write
            .await
            .map_err(|source| Error::Task {
                action: "writing the layer".into(),
                source,
            })?
            .map_err(|e| match exec_failure(&e) {
                Some(failed) => Error::Engine {
                    engine: String::new(),
                    action: reading.clone(),
                    source: failed.to_string().into(),
                },
                None => to.error("writing the layer")(e),
            })?;
        left();
        // Every part is read: the setup may end.
        let done = format!("{}/{}", setup::PARTS_DIR, setup::PARTS_DONE);
        put_files(engine, container, &[(&done, b"")]).await?;
        Ok(wrote)
    };
    let fetch = fetch_parts(engine, parts, give);
    // Each layer file goes once loaded (nothing reads it back in parts:
    // a hard link is a file of its own there), before the kernel writes
    // it out: gigabytes of writes saved.
    let load = load_as_written(
        engine,
        (layers, true, early),
        n,
        parent,
        config,
        (epoch, entry),
    );
    let (fetched, wrote, loaded) = tokio::join!(fetch, write, load);
    first_cause(fetched, wrote, loaded)
}

/// The parts' outcome by its first cause: a part that could not be read
/// (its `tar` could not start, or failed), else the engine's load, else
/// the writing (which stops when either stops).
fn first_cause<W, T>(fetched: Result<()>, wrote: Result<W>, loaded: Result<T>) -> Result<T> {
    fetched?;
    match (wrote, loaded) {
        (Err(e @ Error::Engine { .. }), _) => Err(e),
        (Err(Error::Local { source, .. }), Err(e))
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Err(e)
        }
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Ok(made)) => Ok(made),
    }
}

/// The failure of a part's `tar` in the container, when that is what `e`
/// (from the writer reading its output) is.
fn exec_failure(e: &std::io::Error) -> Option<&crate::engine::ExecFailed> {
    e.get_ref()?.downcast_ref()
}

/// A part of the snapshot as the writer reads it.
type PartReader = Box<dyn std::io::Read + Send>;

/// Each part's tar, read from the container as `tar` writes it, to `give`
/// (in order). [`parts_into_layers`] tells the setup it may end
/// ([`setup::PARTS_DONE`]) once the writer has read them all: the setup's
/// end stops the container, and any `tar` still running in it.
async fn fetch_parts<E: Engine>(
    engine: &E,
    parts: Parts<'_>,
    give: tokio::sync::mpsc::Sender<std::io::Result<PartReader>>,
) -> Result<()> {
    for i in 0..parts.lists {
        if (1..=parts.early).contains(&i) {
            // Made while the setup ran: an empty part (its layer is loaded).
            let empty: PartReader = Box::new(std::io::Cursor::new(vec![0u8; 1024]));
            if give.send(Ok(empty)).await.is_err() {
                return Ok(());
            }
            continue;
        }
        // The setup waits as long as parts keep starting (setup.sh).
        let start = format!("{}/{i:03}.start", setup::PARTS_DIR);
        put_files(engine, parts.container, &[(&start, b"")]).await?;
        let stream = engine
            .exec_output(
                parts.container,
                &setup::part_tar_command(i),
                &setup::PART_TAR_OK,
            )
            .await
            .map_err(|e| match e {
                Error::Engine { source, .. } => Error::Engine {
                    engine: String::new(),
                    action: format!("{}: part {i}", parts.reading()),
                    source,
                },
                other => other,
            })?;
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let reader: PartReader = Box::new(std::io::BufReader::with_capacity(1 << 20, reader));
        if give.send(Ok(reader)).await.is_err() {
            // The writer stopped: its error says why.
            return Ok(());
        }
    }
    Ok(())
}

/// Assemble the setup's snapshot into a layer (or the layers of its split)
/// and load it; the new image's id and its config (`config` with the
/// split's label). `Ok(None)` when the setup left no snapshot (no GNU
/// find/tar in the base).
///
/// One pass over the snapshot (issue 22): the split is planned from the
/// `RECORD`s the setup put beside it ([`setup::RECORDS_NAME`]), then
/// `layer.tar` is read once, as a stream from the container, and cut,
/// hashed and written as it arrives into the layer files, the only copy
/// on disk; the load archive is streamed to the engine from them (written
/// to a file first only for an engine that loads files, see
/// [`Engine::loads_streams`]).
async fn load_snapshot<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
    config: serde_json::Value,
    record: Option<&[u8]>,
    reporter: &dyn Reporter,
) -> Result<Option<(String, serde_json::Value)>> {
    let deleted = ops::download_file(engine, container, &format!("{SNAPSHOT_DIR}/deleted"))
        .await?
        .unwrap_or_default();
    let split = plan_split(engine, container, b.split_rule()).await?;
    let Some(stream) = open_snapshot(engine, container, b).await? else {
        return Ok(None);
    };
    let parent = ops::require(engine, b.from_image, "layer parent image").await?;
    reporter.event(Event::WritingLayer {
        layer: b.layer.name,
    });
    let what = format!("{} layer", b.layer.name);
    let streamed = engine.loads_streams();
    let (stream, needed) = sized(stream, container, &what, b.scratch, streamed).await?;
    let tmp = layer_dir(b.scratch)?;
    let written = Written::new(tmp.path(), (&what, b.scratch), needed);
    let snapshot = Snapshot {
        stream,
        deleted,
        record: record.map(<[u8]>::to_vec),
        split,
    };
    // Every date in the image comes from one epoch, never the clock: the
    // same inputs must give the same image id (issue 11).
    let epoch = b.epoch();
    let entry = crate::history::entry(b.layer, &image::rfc3339(epoch));
    let (image_id, config) = if streamed {
        let layer = b.layer.name;
        write_and_load(
            engine,
            snapshot,
            &written,
            (&parent, config),
            (epoch, entry),
            &|| reporter.event(Event::LoadingLayer { layer }),
        )
        .await?
    } else {
        let layers = write_layers(snapshot, epoch, &written, None).await?;
        let (image_config, image_id, config) = image_of(&layers, &parent, config, (epoch, entry));
        reporter.event(Event::LoadingLayer {
            layer: b.layer.name,
        });
        let total = parent.layers.len() + layers.len();
        let archive = write_archive(image_config, total, layers, &written).await?;
        engine.load(&archive).await?;
        (image_id, config)
    };
    match engine.inspect(&image_id).await? {
        Some(_) => Ok(Some((image_id, config))),
        None => Err(Error::Engine {
            engine: String::new(),
            action: "loading the layer image".into(),
            source: format!("the engine did not keep {image_id}").into(),
        }),
    }
}

/// Write the layers of `snapshot` and load each into the engine as soon as
/// it is complete ([`load_as_written`]): the image's id and config. `left`
/// is told when the snapshot is all in (what remains is loading).
async fn write_and_load<E: Engine>(
    engine: &E,
    snapshot: Snapshot,
    written: &Written<'_>,
    (parent, config): (&ImageInfo, serde_json::Value),
    history: (u64, serde_json::Value),
    left: &(dyn Fn() + Sync),
) -> Result<(String, serde_json::Value)> {
    let (ready, layers) = tokio::sync::mpsc::unbounded_channel();
    let parts = snapshot.split.parts.len();
    let write = write_layers(snapshot, history.0, written, Some(ready));
    let load = load_as_written(
        engine,
        (layers, false, Vec::new()),
        parts,
        parent,
        config,
        history,
    );
    let (wrote, loaded) = tokio::join!(
        async {
            let wrote = write.await;
            left();
            wrote
        },
        load
    );
    match (wrote, loaded) {
        // The loader stopped first: its error says why.
        (Err(Error::Local { source, .. }), Err(e))
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Err(e)
        }
        (Err(e), _) => Err(e),
        (Ok(_), loaded) => loaded,
    }
}

/// A temporary directory for a layer's files in `scratch` (gone when dropped).
fn layer_dir(scratch: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("layer-")
        .tempdir_in(scratch)
        .map_err(local(format!(
            "creating a temporary directory in {}",
            scratch.display()
        )))
}

/// The most the `RECORD`s of one layer may take (read into memory): torch's
/// CUDA set's are a few MB.
const MAX_RECORDS: usize = 256 << 20;

/// The split of this layer, planned from the `RECORD`s the setup put beside
/// its snapshot (one layer when `rule` is `None`, or when there are none).
async fn plan_split<E: Engine>(
    engine: &E,
    container: &str,
    rule: Option<split::Rule>,
) -> Result<split::Split> {
    if rule.is_none() {
        return Ok(split::plan_from_records(&[], None));
    }
    let path = format!("{SNAPSHOT_DIR}/{}", setup::RECORDS_NAME);
    let Some(records) = ops::download_file_up_to(engine, container, &path, MAX_RECORDS).await?
    else {
        // No records.tar: the setup took no snapshot (it makes that
        // first), or it failed making it; nothing will be split.
        return Ok(split::plan_from_records(&[], None));
    };
    let records = split::records_in(std::io::Cursor::new(records)).map_err(|e| Error::Engine {
        engine: String::new(),
        action: format!("reading {path} from container {container}"),
        source: Box::new(e),
    })?;
    Ok(split::plan_from_records(&records, rule))
}

/// The engine's tar stream of the setup's `layer.tar`. `Ok(None)` when the
/// setup left none (no GNU find/tar in the base); [`Error::SnapshotFailed`]
/// when it started one and could not finish it.
async fn open_snapshot<E: Engine>(
    engine: &E,
    container: &str,
    b: &LayerBuild<'_>,
) -> Result<Option<ByteStream>> {
    let layer_tar = format!("{SNAPSHOT_DIR}/layer.tar");
    if let Some(stream) = engine.download(container, &layer_tar).await? {
        return Ok(Some(stream));
    }
    // The setup made its snapshot directory and no layer.tar: its tar
    // failed (a full disk in the container). A commit would carry it.
    if engine.exists(container, SNAPSHOT_DIR).await? {
        return Err(Error::SnapshotFailed {
            layer: b.layer.name.to_string(),
            image: b.from_image.to_string(),
        });
    }
    Ok(None)
}

/// What the setup's snapshot gives the layer: the engine's tar stream of
/// `layer.tar`, the deleted paths, the record, the split.
struct Snapshot {
    stream: ByteStream,
    deleted: Vec<u8>,
    record: Option<Vec<u8>>,
    split: split::Split,
}

/// Where the layer files go, and the room they were found to need.
struct Written<'a> {
    dir: &'a Path,
    space: Space<'a>,
    needed: u64,
}

impl<'a> Written<'a> {
    /// Layer files in `dir`, for the `what` whose scratch is `space.1`.
    fn new(dir: &'a Path, (what, scratch): (&'a str, &'a Path), needed: u64) -> Self {
        Written {
            dir,
            space: Space { what, dir: scratch },
            needed,
        }
    }

    fn error(&self, action: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let action = format!("{action} in {}", self.dir.display());
        move |e| {
            Error::or_full(
                e,
                self.space.what,
                self.space.dir,
                self.needed,
                local(action),
            )
        }
    }
}

/// The snapshot stream cut into the layer files (`split::split_stream`):
/// one pass, in a blocking task fed by the stream. Each layer goes to
/// `ready` (index, layer) as soon as it is complete.
async fn write_layers(
    s: Snapshot,
    epoch: u64,
    to: &Written<'_>,
    ready: Option<Ready>,
) -> Result<Vec<split::Written>> {
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(s.stream));
    let dir = to.dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hand_over = |i: usize, w: &split::Written| match &ready {
            Some(ready) => ready.send((i, w.clone())).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the engine stopped loading the layers",
                )
            }),
            None => Ok(()),
        };
        split::split_stream(
            std::io::BufReader::with_capacity(1 << 20, reader),
            &s.deleted,
            s.record.as_deref().map(|r| (RECORD_FILE, r)),
            epoch,
            s.split,
            (&dir, &mut hand_over),
        )
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing the layer".into(),
        source,
    })?
    .map_err(to.error("writing the layer"))
}

/// Where [`write_layers`] hands each complete layer.
type Ready = tokio::sync::mpsc::UnboundedSender<(usize, split::Written)>;
/// What the loads take them from.
type Incoming = tokio::sync::mpsc::UnboundedReceiver<(usize, split::Written)>;

/// Load a split's layers as [`write_layers`] completes them (issue 22):
/// one request per layer, in image order, each an image of the layers so
/// far; a request streams its layer while the one below is applied, and
/// sends its config and manifest (which the engine reads only then) once
/// that one is in. The last request is the image (its id and config
/// returned); the images below it are removed (their layers stay, the
/// image holds them), on failure too. With `layers.1`, each layer file is
/// removed once loaded. `layers.2`: the first layers, already loaded
/// while the setup ran (`super::early`), each with the image of the
/// layers up to it; the writer's layers at their indices are not loaded.
async fn load_as_written<E: Engine>(
    engine: &E,
    (layers, drop_loaded, early): (Incoming, bool, Vec<(String, split::Written)>),
    parts: usize,
    parent: &ImageInfo,
    config: serde_json::Value,
    history: (u64, serde_json::Value),
) -> Result<(String, serde_json::Value)> {
    let mut loaded: Vec<String> = early.iter().map(|(id, _)| id.clone()).collect();
    let so_far: Vec<split::Written> = early.into_iter().map(|(_, w)| w).collect();
    let result = load_each(
        engine,
        (layers, drop_loaded, so_far),
        parts,
        parent,
        (config, history),
        &mut loaded,
    )
    .await;
    let image = result.as_ref().ok().map(|(id, _)| id.clone());
    for id in loaded.iter().filter(|id| Some(*id) != image.as_ref()) {
        if let Err(e) = engine.remove_image(id).await {
            tracing::warn!("could not remove the partial layer image {id}: {e}");
        }
        engine.forget_partial_image(id);
    }
    if let Some(image) = &image {
        engine.forget_partial_image(image);
    }
    result
}

/// [`load_as_written`]'s requests; every image loaded goes to `loaded`.
async fn load_each<E: Engine>(
    engine: &E,
    (layers, drop_loaded, mut so_far): (Incoming, bool, Vec<split::Written>),
    parts: usize,
    parent: &ImageInfo,
    (config, history): (serde_json::Value, (u64, serde_json::Value)),
    loaded: &mut Vec<String>,
) -> Result<(String, serde_json::Value)> {
    let base = parent.layers.len();
    // The layers already loaded: the first request is on their image.
    let start = so_far.len();
    let mut gate: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let requests = in_image_order(layers, start)
        .map(|written| {
            so_far.push(written);
            let (bytes, id, config) = image_of(&so_far, parent, config.clone(), history.clone());
            let (done, next) = tokio::sync::oneshot::channel();
            let wait = gate.replace(next);
            let k = so_far.len() - 1;
            let body = one_layer_body(&so_far[k], base + k, base + k + 1, &bytes, wait);
            let file = so_far[k].path.clone();
            async move {
                engine.load_stream(body?).await?;
                if drop_loaded {
                    let _ = tokio::fs::remove_file(&file).await;
                }
                let _ = done.send(());
                Ok::<_, Error>((id, config))
            }
        })
        .buffered(2);
    let mut requests = std::pin::pin!(requests);
    let mut last = None;
    while let Some(request) = requests.next().await {
        let (id, config) = request?;
        // Removed by `remove_leftovers` if this future is dropped (Ctrl-C).
        engine.note_partial_image(&id);
        loaded.push(id.clone());
        last = Some((id, config));
    }
    match last {
        Some(image) if loaded.len() == parts => Ok(image),
        _ => Err(Error::Engine {
            engine: String::new(),
            action: "loading the layer image".into(),
            source: format!("{} of {parts} layers were written", loaded.len()).into(),
        }),
    }
}

/// The layers as [`write_layers`] completes them, in image order, from
/// index `start` (those below are loaded already: their files, empty
/// parts, are removed).
fn in_image_order(
    layers: Incoming,
    start: usize,
) -> impl futures_util::Stream<Item = split::Written> {
    let pending: BTreeMap<usize, split::Written> = BTreeMap::new();
    futures_util::stream::unfold(
        (layers, pending, start),
        move |(mut rx, mut pending, next)| async move {
            loop {
                if let Some(w) = pending.remove(&next) {
                    return Some((w, (rx, pending, next + 1)));
                }
                let (i, w) = rx.recv().await?;
                if i < start {
                    let _ = tokio::fs::remove_file(&w.path).await;
                    continue;
                }
                pending.insert(i, w);
            }
        },
    )
}

/// Write the load archive of `layers` (the `total` layers' image config
/// first) into `out`; the layer files are removed once in it. Blocking.
fn archive_into<W: std::io::Write>(
    out: W,
    image_config: &[u8],
    total: usize,
    layers: &[split::Written],
) -> std::io::Result<W> {
    let mut new = Vec::with_capacity(layers.len());
    for l in layers {
        new.push((
            BufReader::with_capacity(1 << 20, std::fs::File::open(&l.path)?),
            l.size,
        ));
    }
    let out = image::write_archive_layers(out, image_config, total, new)?;
    for l in layers {
        let _ = std::fs::remove_file(&l.path);
    }
    Ok(out)
}

/// The load archive of `layers` as a file in `to.dir` (for an engine that
/// loads files): its path.
async fn write_archive(
    image_config: Vec<u8>,
    total: usize,
    layers: Vec<split::Written>,
    to: &Written<'_>,
) -> Result<PathBuf> {
    let archive = to.dir.join("image.tar");
    let path = archive.clone();
    tokio::task::spawn_blocking(move || {
        let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut out = archive_into(file, &image_config, total, &layers)?;
        std::io::Write::flush(&mut out)
    })
    .await
    .map_err(|source| Error::Task {
        action: "writing the layer archive".into(),
        source,
    })?
    .map_err(to.error("writing the layer archive"))?;
    Ok(archive)
}

/// Scratch space a snapshot of `size` bytes takes on its way to the
/// engine: the layer files written from the stream, with a little room
/// for headers and whiteouts; for an engine that loads files (`streamed`
/// false), the load archive as well, written from them (each file goes
/// once it is in, so at most twice the layers).
pub(crate) fn scratch_needed(size: u64, streamed: bool) -> u64 {
    let copies = if streamed { 1 } else { 2 };
    size.saturating_mul(copies)
        .saturating_add(size / 64)
        .saturating_add(4 << 20)
}

/// The size of the first file in a tar whose start is `head`, once `head`
/// holds its header (and a pax header before it); `None` until then.
fn first_file_size(head: &[u8]) -> Option<u64> {
    let mut archive = tar::Archive::new(head);
    let entry = archive.entries().ok()?.next()?.ok()?;
    Some(entry.size())
}

/// Where the layer's files go and what they are called in a [`Error::DiskFull`].
struct Space<'a> {
    what: &'a str,
    dir: &'a Path,
}

/// The snapshot stream as it was (its first chunks read back in front) and
/// the scratch space the layer needs ([`scratch_needed`]): before anything
/// is written, the snapshot's size (from the tar's first header) tells it,
/// and a file system without that much room is refused. Errors in the
/// stream name the container.
async fn sized(
    mut stream: ByteStream,
    container: &str,
    what: &str,
    dir: &Path,
    streamed: bool,
) -> Result<(ByteStream, u64)> {
    let action = format!("reading the snapshot from container {container}");
    let mut head: Vec<u8> = Vec::new();
    let mut size = None;
    // A header, or a pax header and the one after it: a few KiB at most.
    while size.is_none() && head.len() < 64 << 10 {
        let Some(chunk) = stream.next().await else {
            break;
        };
        head.extend_from_slice(&chunk.map_err(|e| Error::Engine {
            engine: String::new(),
            action: action.clone(),
            source: Box::new(e),
        })?);
        size = first_file_size(&head);
    }
    let needed = scratch_needed(size.unwrap_or(0), streamed);
    enough_room(what, dir, needed)?;
    let rest = stream.map(move |c| c.map_err(|e| std::io::Error::other(format!("{action}: {e}"))));
    let whole = futures_util::stream::once(async move { Ok(bytes::Bytes::from(head)) })
        .chain(rest)
        .boxed();
    Ok((whole, needed))
}

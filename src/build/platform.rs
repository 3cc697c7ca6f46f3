//! `--platform P[,P…]`: one build per platform, each on its own base image
//! and with its own keys, then (for two or more) one OCI image index over
//! the platforms' manifests. Before any work, every platform is checked:
//! the base has an image for it (read from the base's registry: each
//! platform's base is then addressed by its manifest digest, never by a tag
//! a classic image store would re-point on every pull), the staged wheels
//! serve it (each pinned requirement has a wheel for its architecture), the
//! staged SDK and the PyFlink inputs can be used on it, and the engine can
//! run a container for it (a probe image of one static binary, made here,
//! so a remote engine is asked too and nothing is pulled).

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::{Options, Remote};
use crate::engine::{ContainerSpec, Engine, Network};
use crate::error::{Error, Result};
use crate::plan::TAG_HEX_LEN;
use crate::progress::Reporter;
use crate::registry::{ImageRef, Manifests, RawManifest};
use crate::report::{CacheOutcome, LayerReport, PlatformReport, Report};
use crate::stage::{Role, StagedSet};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One platform, in docker's spelling (`linux/arm64`, `linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// Kept only where it tells images apart (`arm/v7`); `arm64/v8` is `arm64`.
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform> {
        let bad = |why: &str| {
            Error::Usage {
            message: format!("--platform {text:?} is not a platform: {why}"),
            hint: "name platforms as docker does: linux/amd64, linux/arm64 (or linux/arm64/v8), comma-separated".into(),
        }
        };
        let parts: Vec<&str> = text.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return Err(bad("expected OS/ARCH[/VARIANT]")),
        };
        if os != "linux" {
            return Err(bad("only linux images run Beam's boot"));
        }
        let architecture = match arch {
            "amd64" | "x86_64" => "amd64",
            "arm64" | "aarch64" => "arm64",
            "arm" | "ppc64le" | "s390x" | "386" | "riscv64" => arch,
            _ => return Err(bad("unknown architecture")),
        };
        let variant = match (architecture, variant) {
            ("arm64", Some("v8")) | (_, None) => None,
            (_, Some(v)) => Some(v.to_string()),
        };
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant,
        })
    }

    /// `--platform`'s comma-separated list, deduplicated, in the order given.
    pub fn parse_list(text: &str) -> Result<Vec<Platform>> {
        let mut out: Vec<Platform> = Vec::new();
        for p in text.split(',').filter(|p| !p.trim().is_empty()) {
            let p = Platform::parse(p)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Platform::parse(text).map(|p| vec![p]);
        }
        Ok(out)
    }

    /// `linux/arm64`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// `uname -m` inside a container of this platform, and the architecture
    /// part of a manylinux wheel tag for it.
    pub fn machine(&self) -> &str {
        match self.architecture.as_str() {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            "386" => "i686",
            "arm" => "armv7l",
            other => other,
        }
    }

    /// Whether an index entry's (or image config's) platform is this one.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let variant = match (architecture, variant) {
            ("arm64", Some("v8")) => None,
            (_, v) => v,
        };
        self.os == os
            && self.architecture == architecture
            && (self.variant.is_none() || self.variant.as_deref() == variant)
    }

    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            v["variant"] = variant.clone().into();
        }
        v
    }
}

/// The wheel platform tags a pinned requirement may use on `platform`:
/// pure ones and those naming its machine (`manylinux2014_aarch64`, …).
fn wheel_fits(file: &str, platform: &Platform) -> bool {
    let Some(stem) = file.strip_suffix(".whl") else {
        // An sdist: pip builds it on the platform itself.
        return true;
    };
    let Some(tags) = stem.rsplit('-').next() else {
        return false;
    };
    tags.split('.')
        .any(|t| t == "any" || t.ends_with(&format!("_{}", platform.machine())))
}

/// `name==version` pins of a requirements file (others are left to pip).
fn pins(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split(" #").next()?.split(';').next()?.trim();
            let (name, version) = l.split_once("==")?;
            let name = name.split('[').next()?.trim();
            let version = version.split_whitespace().next()?;
            (!name.is_empty() && !name.starts_with(['-', '#'])).then(|| {
                (
                    crate::record::normalize(name),
                    version.trim_matches(',').to_string(),
                )
            })
        })
        .collect()
}

/// The staged distribution name and version of a cache file
/// (`numpy-2.2.6-cp311-…whl`, `tabulate-0.9.0.tar.gz`).
fn dist_of(file: &str) -> Option<(String, String)> {
    let stem = file
        .strip_suffix(".whl")
        .or_else(|| file.strip_suffix(".tar.gz"))
        .or_else(|| file.strip_suffix(".zip"))?;
    let mut parts = stem.splitn(3, '-');
    let name = parts.next()?;
    let version = parts.next()?;
    Some((crate::record::normalize(name), version.to_string()))
}

/// Refuse a set that cannot serve `platform`: a pinned requirement staged
/// only as wheels for other machines, a staged SDK wheel for another
/// machine (Beam's boot accepts only x86_64 SDK wheel names), PyFlink on a
/// platform other than amd64.
pub fn check_set(set: &StagedSet, platform: &Platform) -> Result<()> {
    let refuse = |input: String, reason: String, hint: &str| Error::PlatformRefused {
        platform: platform.name(),
        input,
        reason,
        hint: hint.to_string(),
    };
    if set.mode.flink().is_some() && platform.architecture != "amd64" {
        return Err(refuse(
            "the PyFlink inputs".into(),
            "the PyFlink base's Java home and PYFLINK_* settings are made for amd64 only here"
                .into(),
            "build PyFlink images for linux/amd64 only (drop the other platforms from --platform)",
        ));
    }
    for sdk in set.with_role(Role::Sdk) {
        if sdk.name.ends_with(".whl") && !wheel_fits(&sdk.name, platform) {
            return Err(refuse(
                format!("the staged SDK {}", sdk.name),
                format!("it is not built for {}, and Beam's boot installs only x86_64 SDK wheels", platform.machine()),
                "drop --sdk-location: the base's own apache-beam is used when it is the launch's version",
            ));
        }
    }
    let Some(requirements) = set.with_role(Role::Requirements).next() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&requirements.path)
        .map_err(|e| Error::io(&requirements.path, e))?;
    let cache: Vec<&str> = set
        .with_role(Role::RequirementsCache)
        .map(|a| a.name.as_str())
        .collect();
    for (name, version) in pins(&text) {
        let staged: Vec<&&str> = cache
            .iter()
            .filter(|f| dist_of(f).is_some_and(|(n, v)| n == name && v == version))
            .collect();
        if !staged.is_empty() && !staged.iter().any(|f| wheel_fits(f, platform)) {
            return Err(refuse(
                format!("requirement {name}=={version}"),
                format!("the requirements cache has no wheel for {} (only {})", platform.machine(), staged.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")),
                &format!("download that platform's wheels (`pip download --platform manylinux2014_{} --only-binary=:all: -r requirements.txt -d DIR`) and pass --requirements-cache {}=DIR", platform.machine(), platform.name()),
            ));
        }
    }
    Ok(())
}

/// One platform's image of the base: its manifest digest and `repo@digest`.
#[derive(Debug, Clone)]
pub struct PlatformBase {
    pub reference: String,
    pub digest: String,
}

/// Each platform's base image, read from the base's registry (an index is
/// looked up per platform; a single manifest serves only the platform its
/// config names). A platform the base lacks is refused, listing those it has.
pub async fn bases<R: Manifests>(
    registry: &R,
    base: &str,
    platforms: &[Platform],
    scratch: &Path,
) -> Result<Vec<PlatformBase>> {
    let image = ImageRef::parse(base);
    let unreadable = |why: String| {
        Error::PlatformRefused {
        platform: platforms.iter().map(Platform::name).collect::<Vec<_>>().join(","),
        input: format!("base {base}"),
        reason: why,
        hint: "push the base (an image index with every platform) to a registry prebuilder can read, and name it there".into(),
    }
    };
    let top = registry
        .manifest(image.tag_or_digest())
        .await?
        .ok_or_else(|| unreadable(format!("{} has no such image", registry.host())))?;
    let parsed: serde_json::Value = serde_json::from_slice(&top.bytes)
        .map_err(|e| unreadable(format!("its manifest is not JSON: {e}")))?;
    let entries = match parsed["manifests"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|d| {
                let p = &d["platform"];
                Some((
                    d["digest"].as_str()?.to_string(),
                    p["os"].as_str()?.to_string(),
                    p["architecture"].as_str()?.to_string(),
                    p["variant"].as_str().map(str::to_string),
                ))
            })
            .collect::<Vec<_>>(),
        None => {
            let (os, arch, variant) = config_platform(registry, &parsed, scratch).await?;
            vec![(top.digest.clone(), os, arch, variant)]
        }
    };
    platforms
        .iter()
        .map(|p| {
            let found = entries
                .iter()
                .find(|(_, os, arch, v)| p.matches(os, arch, v.as_deref()));
            match found {
                Some((digest, ..)) => Ok(PlatformBase {
                    reference: format!("{}@{digest}", image.written),
                    digest: digest.clone(),
                }),
                None => Err(Error::PlatformMissing {
                    image: base.to_string(),
                    registry: registry.host().to_string(),
                    platform: p.name(),
                    available: entries
                        .iter()
                        .filter(|(_, os, ..)| os != "unknown")
                        .map(|(_, os, arch, v)| match v {
                            Some(v) => format!("{os}/{arch}/{v}"),
                            None => format!("{os}/{arch}"),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        })
        .collect()
}

/// The platform a single image manifest's config names.
async fn config_platform<R: Manifests>(
    registry: &R,
    manifest: &serde_json::Value,
    scratch: &Path,
) -> Result<(String, String, Option<String>)> {
    let digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let file = scratch.join("base-config.json");
    registry.download_blob(digest, &file).await?;
    let text = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let _ = std::fs::remove_file(&file);
    let config: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    Ok((
        config["os"].as_str().unwrap_or("linux").to_string(),
        config["architecture"]
            .as_str()
            .unwrap_or("amd64")
            .to_string(),
        config["variant"].as_str().map(str::to_string),
    ))
}

/// A static ELF executable that exits 0 at once: the probe container's
/// whole filesystem. `None` for a machine prebuilder has no probe for.
fn probe_binary(platform: &Platform) -> Option<Vec<u8>> {
    let (machine, big_endian, code): (u16, bool, &[u8]) = match platform.architecture.as_str() {
        // xor edi, edi; mov eax, 60 (exit); syscall
        "amd64" => (62, false, &[0x31, 0xff, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05]),
        // mov x0, #0; mov x8, #93 (exit); svc #0
        "arm64" => (
            183,
            false,
            &[
                0x00, 0x00, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
            ],
        ),
        // lghi %r2, 0; svc 1 (exit)
        "s390x" => (22, true, &[0xa7, 0x29, 0x00, 0x00, 0x0a, 0x01]),
        _ => return None,
    };
    const BASE: u64 = 0x40_0000;
    let size = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    let data = if big_endian { 2 } else { 1 };
    elf.extend_from_slice(&[
        0x7f, b'E', b'L', b'F', 2, data, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let u16s = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32s = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u64s = |v: u64| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    elf.extend_from_slice(&u16s(2)); // ET_EXEC
    elf.extend_from_slice(&u16s(machine));
    elf.extend_from_slice(&u32s(1));
    elf.extend_from_slice(&u64s(BASE + 120)); // entry
    elf.extend_from_slice(&u64s(64)); // program headers
    elf.extend_from_slice(&u64s(0)); // no section headers
    elf.extend_from_slice(&u32s(0));
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&u16s(v));
    }
    elf.extend_from_slice(&u32s(1)); // PT_LOAD
    elf.extend_from_slice(&u32s(5)); // R+X
    for v in [0, BASE, BASE, size, size, 0x1000] {
        elf.extend_from_slice(&u64s(v));
    }
    elf.extend_from_slice(code);
    Some(elf)
}

/// A `docker load` archive of the probe image for `platform`, tagged `tag`;
/// the image's id (the digest of its config), `None` without a probe binary.
fn probe_archive(platform: &Platform, tag: &str, dst: &Path) -> Result<Option<String>> {
    let Some(binary) = probe_binary(platform) else {
        return Ok(None);
    };
    let io = |e| Error::io(dst, e);
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    layer
        .append_data(&mut header, "probe", binary.as_slice())
        .map_err(io)?;
    let layer = layer.into_inner().map_err(io)?;
    let diff_id = format!("sha256:{:x}", Sha256::digest(&layer));
    let mut config = serde_json::json!({
        "os": platform.os, "architecture": platform.architecture,
        "config": {"Entrypoint": ["/probe"], "Labels": {crate::engine::LABEL: "probe"}},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    if let Some(v) = &platform.variant {
        config["variant"] = v.clone().into();
    }
    let config = config.to_string().into_bytes();
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}])
            .to_string();
    let file = std::fs::File::create(dst).map_err(io)?;
    let mut archive = tar::Builder::new(file);
    for (name, bytes) in [
        ("layer.tar", layer.as_slice()),
        ("config.json", config.as_slice()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        archive.append_data(&mut h, name, bytes).map_err(io)?;
    }
    archive.finish().map_err(io)?;
    Ok(Some(crate::image::image_id(&config)))
}

/// Whether `engine` runs a container for `platform`: a probe image of one
/// static binary (loaded, never pulled), run with no network, then removed.
/// Refused, saying how to add emulation, when it cannot.
pub async fn probe<E: Engine>(engine: &E, platform: &Platform, scratch: &Path) -> Result<()> {
    let tag = format!(
        "prebuilder-probe:{}-{}",
        platform.name().replace('/', "-"),
        std::process::id()
    );
    let archive = scratch.join(format!("probe-{}.tar", platform.name().replace('/', "-")));
    let Some(id) = probe_archive(platform, &tag, &archive)? else {
        // No probe binary for it: the setup itself will say.
        return Ok(());
    };
    engine.load(&archive).await?;
    let _ = std::fs::remove_file(&archive);
    let spec = ContainerSpec {
        name: crate::engine::ops::container_name("probe"),
        image: id.clone(),
        entrypoint: vec!["/probe".into()],
        role: "probe".into(),
        network: Network::None,
        volume: None,
        platform: Some(platform.name()),
    };
    let outcome = match engine.create(&spec).await {
        Ok(container) => {
            let status = engine.run_attached(&container, &mut |_, _| {}).await;
            engine.remove_container(&container).await;
            status
        }
        Err(e) => Err(e),
    };
    // By tag, else by id: Podman loads the probe's archive untagged.
    if let Err(e) = engine.remove_image(&tag).await {
        if let Err(e2) = engine.remove_image(&id).await {
            tracing::debug!("probe image {tag} ({id}) not removed: {e}; {e2}");
        }
    }
    let reason = match outcome {
        Ok(0) => return Ok(()),
        Ok(status) => format!("a {} probe exited with status {status}", platform.name()),
        Err(e) => e.to_string(),
    };
    Err(Error::EmulationMissing {
        platform: platform.name(),
        engine: String::new(),
        reason,
    })
}

/// What one platform's build needs beside the shared options.
pub struct Job<'a> {
    pub platform: Platform,
    pub set: &'a StagedSet,
}

/// Two or more platforms make an image index, which only a registry holds:
/// refused without `--push` (`alternative` adds to the hint).
pub(crate) fn index_needs_push(
    platforms: &[Platform],
    opts: &Options,
    alternative: &str,
) -> Result<()> {
    if platforms.len() > 1 && !opts.push {
        return Err(Error::Usage {
            message: format!("--platform {} builds an image index, which lives in a registry", names(platforms)),
            hint: format!("add --push and a --repository in a registry (e.g. localhost:5000/team/sdk), or build one platform{alternative}"),
        });
    }
    Ok(())
}

/// Build every platform (checks first, then one build each), then with two
/// or more platforms put the OCI image index over their manifests in the
/// result's registry. `remote` makes the result's registry for each build.
pub async fn run<E: Engine, R: Manifests>(
    engine: &E,
    opts: &Options,
    jobs: &[Job<'_>],
    base_registry: Option<&R>,
    remote: &dyn Fn() -> Result<Option<Remote<R>>>,
    reporter: &dyn Reporter,
) -> Result<Report> {
    let started = std::time::Instant::now();
    let platforms: Vec<Platform> = jobs.iter().map(|j| j.platform.clone()).collect();
    index_needs_push(&platforms, opts, "")?;
    if opts.builder.with_engine() == super::Builder::Direct {
        return Err(Error::PlatformRefused {
            platform: names(&platforms),
            input: "--builder direct".into(),
            reason: "on an engine, platforms are built in setup containers; direct mode builds them with no engine".into(),
            hint: "run `prebuilder build --builder direct --platform …` (it asks no engine; build::platform::direct::run), or build with --builder engine".into(),
        });
    }
    // The staged SDK wheels each platform's boot would not install, left out.
    let sdks: Vec<_> = jobs
        .iter()
        .map(|j| sdk::for_boot(j.set, &j.platform))
        .collect();
    for (job, (own, _)) in jobs.iter().zip(&sdks) {
        check_set(own.as_ref().unwrap_or(job.set), &job.platform)?;
    }
    for p in &platforms {
        probe(engine, p, &opts.scratch_dir).await?;
    }
    // One platform the engine's copy of the base is for: that image, as
    // without --platform; else each platform's image in the base's registry.
    let bases = match (local_base(engine, opts, &platforms).await, base_registry) {
        (Ok(local), _) => local,
        // The engine failed to show its copy: that, not the registry, is at fault.
        (Err(e @ Error::Engine { .. }), _) => return Err(e),
        (Err(_), Some(r)) => {
            let found = bases(r, &opts.base, &platforms, &opts.scratch_dir).await?;
            arch::check_bases(r, &platforms, &found, &opts.scratch_dir).await?;
            found
        }
        (Err(e), None) => return Err(e),
    };
    let mut reports = Vec::new();
    for ((job, base), (own, need)) in jobs.iter().zip(&bases).zip(&sdks) {
        let mut o = direct::options_for(opts, &job.platform, jobs.len() > 1);
        o.base = base.reference.clone();
        if let Some(b) = need {
            tracing::info!("{}: Beam's boot would not install the staged SDK {} here; the base's own apache-beam is used (it must be {})", job.platform.name(), b.wheel, b.version);
        }
        o.base_beam = need.clone();
        let set = own.as_ref().unwrap_or(job.set);
        let mut report = super::run(engine, &o, set, remote, reporter).await?;
        report.sdk = need.as_ref().map(sdk::BaseBeam::report);
        check_architecture(engine, &job.platform, &report).await?;
        arch::check_result(remote, &job.platform, &report, &opts.scratch_dir).await?;
        reports.push(report);
    }
    put_index(opts, jobs, reports, remote, started).await
}

/// One platform's report as it is; two or more: the OCI image index over
/// their pushed manifests put in the result's registry (its content tag and
/// every `--tag`), and the combined report.
async fn put_index<R: Manifests>(
    opts: &Options,
    jobs: &[Job<'_>],
    mut reports: Vec<Report>,
    remote: &dyn Fn() -> Result<Option<Remote<R>>>,
    started: std::time::Instant,
) -> Result<Report> {
    if reports.len() == 1 {
        return Ok(reports.remove(0));
    }
    let platforms: Vec<Platform> = jobs.iter().map(|j| j.platform.clone()).collect();
    let registry = remote()?.ok_or_else(|| Error::Usage {
        message: "an image index needs the result's registry".into(),
        hint: "name a --repository in a registry and add --push".into(),
    })?;
    let (tag, index) = index_of(&registry.registry, &platforms, &reports).await?;
    registry.registry.put_manifest(&tag, &index).await?;
    for t in &opts.tags {
        registry.registry.put_manifest(t, &index).await?;
    }
    Ok(combined(
        opts,
        jobs,
        reports,
        (&tag, &index.digest),
        started,
    ))
}

/// Every layer image of `report` on the engine records `platform`'s
/// architecture in its config (Docker 20.10's commit records the host's).
pub async fn check_architecture<E: Engine>(
    engine: &E,
    platform: &Platform,
    report: &Report,
) -> Result<()> {
    for layer in report.layers.iter().filter(|l| !l.image_id.is_empty()) {
        let Some(info) = engine.inspect(&layer.image_id).await? else {
            continue;
        };
        if !platform.matches(&info.os, &info.architecture, None) {
            return Err(Error::PlatformRefused {
                platform: platform.name(),
                input: format!("layer {} ({})", layer.name, layer.image_id),
                reason: format!("the engine recorded it as {}/{}", info.os, info.architecture),
                hint: "leave PREBUILDER_COMMIT unset (a commit records the engine's own architecture), and report it with `docker version`".into(),
            });
        }
    }
    Ok(())
}

/// The base on the engine: it serves a single platform, the one its config
/// names.
async fn local_base<E: Engine>(
    engine: &E,
    opts: &Options,
    platforms: &[Platform],
) -> Result<Vec<PlatformBase>> {
    let info = engine.inspect(&opts.base).await?;
    match (info, platforms) {
        (Some(info), [p]) if p.matches(&info.os, &info.architecture, None) => {
            Ok(vec![PlatformBase {
                reference: opts.base.clone(),
                digest: info.id,
            }])
        }
        (info, _) => Err(Error::PlatformRefused {
            platform: names(platforms),
            input: format!("base {}", opts.base),
            reason: match info {
                Some(i) => format!(
                    "its registry cannot be read, and the engine's copy is {}/{}",
                    i.os, i.architecture
                ),
                None => "its registry cannot be read and the engine does not have it".into(),
            },
            hint: "name the base in a registry (an image index with every platform asked for)"
                .into(),
        }),
    }
}

fn names(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(Platform::name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The index over each platform's pushed manifest, and its content tag (a
/// hash of the platforms and their manifests' digests).
async fn index_of<R: Manifests>(
    registry: &R,
    platforms: &[Platform],
    reports: &[Report],
) -> Result<(String, RawManifest)> {
    let mut manifests = Vec::new();
    let mut key = Sha256::new();
    for (p, r) in platforms.iter().zip(reports) {
        let digest = r.digest.clone().unwrap_or_default();
        let m = registry
            .manifest(&digest)
            .await?
            .ok_or_else(|| Error::Registry {
                registry: registry.host().to_string(),
                action: format!("reading the {} manifest {digest} for the index", p.name()),
                source: "the registry does not have it after the push".into(),
            })?;
        key.update(format!("{}\n{}\n", p.name(), m.digest));
        manifests.push(serde_json::json!({
            "mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len(),
            "platform": p.json(),
        }));
    }
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .unwrap_or_default();
    let tag = format!("{:x}", key.finalize())[..TAG_HEX_LEN].to_string();
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    Ok((
        tag,
        RawManifest {
            media_type: OCI_INDEX.into(),
            bytes,
            digest,
        },
    ))
}

/// The multi-platform report: the index's tag and digest, each layer name's
/// outcome over the platforms (a miss anywhere is a miss), every platform's
/// own image.
fn combined(
    opts: &Options,
    jobs: &[Job<'_>],
    reports: Vec<Report>,
    (tag, digest): (&str, &str),
    started: std::time::Instant,
) -> Report {
    let mut layers: BTreeMap<String, LayerReport> = BTreeMap::new();
    let mut order = Vec::new();
    for l in reports.iter().flat_map(|r| &r.layers) {
        let entry = layers.entry(l.name.clone()).or_insert_with(|| {
            order.push(l.name.clone());
            LayerReport {
                name: l.name.clone(),
                cache: l.cache,
                seconds: 0.0,
                image_id: String::new(),
                // Each platform's own split is in its `platforms` entry.
                parts: Vec::new(),
                committed: false,
            }
        });
        entry.seconds = super::round(entry.seconds + l.seconds);
        if l.cache == CacheOutcome::Miss || entry.cache == CacheOutcome::Miss {
            entry.cache = CacheOutcome::Miss;
        } else if l.cache == CacheOutcome::Registry {
            entry.cache = CacheOutcome::Registry;
        }
    }
    let first = &reports[0];
    let mut report = Report {
        image: format!("{}:{tag}", opts.repository),
        image_id: None,
        digest: Some(digest.to_string()),
        sdk_container_image: format!("{}@{digest}", opts.repository),
        cached: reports.iter().all(|r| r.cached),
        layers: order.iter().filter_map(|n| layers.remove(n)).collect(),
        base: crate::report::BaseReport {
            reference: opts.base.clone(),
            id: first.base.id.clone(),
        },
        tags: opts
            .tags
            .iter()
            .map(|t| format!("{}:{t}", opts.repository))
            .collect(),
        seconds: super::round(started.elapsed().as_secs_f64()),
        builder: first.builder.clone(),
        flink: first.flink.clone(),
        platforms: Vec::new(),
        sdk: None,
    };
    report.platforms = jobs
        .iter()
        .zip(reports)
        .map(|(j, r)| PlatformReport {
            platform: j.platform.name(),
            image: r.image,
            image_id: r.image_id,
            digest: r.digest,
            layers: r.layers,
            sdk: r.sdk,
        })
        .collect();
    report
}

pub mod arch;
pub mod direct;
pub mod sdk;

#[cfg(test)]
mod tests;

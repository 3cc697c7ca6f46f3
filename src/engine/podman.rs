//! What Podman's Docker-compatible API (4.x) does differently, and how
//! prebuilder meets it. Found by reading Podman's compat handlers
//! (`pkg/api/handlers/compat/images.go`):
//!
//! - `POST /images/load` goes through containers/image, whose
//!   `docker-archive` source insists on every layer file the archive's
//!   manifest names ("Some layer tarfiles are missing in the tarball"), where
//!   Docker skips the layers it already has. Its `oci-archive` source reads
//!   blobs lazily, and the copy into containers-storage first reuses any layer
//!   it holds with the same uncompressed digest. So for Podman the layer goes
//!   in as an OCI archive naming the parent's layers by diff id (uncompressed
//!   media type) and carrying only the new layer's blob, converted from the
//!   `docker load` archive prebuilder writes ([`oci_from_docker_archive`]).
//! - `POST /commit` decodes the JSON config body and then ignores it: only the
//!   `changes` query (Dockerfile instructions) reaches the image. The commit
//!   fallback therefore also sends the config as instructions ([`changes`]).
//! - ids come back without `sha256:` from some endpoints, and tags come back
//!   fully qualified (`docker.io/library/name:tag`): both are normalised to
//!   Docker's form ([`normalize_id`], [`familiar`]).
//! - `GET /images/{name}/history` (4.3) dereferences each entry's `created`
//!   and answers 500 "nil pointer dereference" for an image whose history
//!   entries carry no date (the OCI spec makes it optional; debootstrap-made
//!   bases and some other tools leave it out). The compat API serves no other
//!   view of the config's history, so such a base's history is one undated
//!   entry per layer ([`undated_history`]) and a warning says so.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use bollard::models::{ContainerConfig, SystemVersion};
use sha2::{Digest, Sha256};

use super::containerd::Descriptor;

/// Whether a failed `/images/{name}/history` is Podman 4's crash on
/// history entries without a date (see the module's notes).
pub fn history_has_no_dates(status: u16, message: &str) -> bool {
    status == 500 && message.contains("nil pointer dereference")
}

/// The history of an image Podman cannot show it for: one entry per layer
/// (newest first, as the history API gives it), undated, saying why, so a
/// layer made on it still pairs each layer with an entry.
pub fn undated_history(layers: &[String]) -> Vec<crate::history::EngineEntry> {
    layers
        .iter()
        .rev()
        .map(|diff_id| crate::history::EngineEntry {
            created: 0,
            created_by: String::new(),
            comment: format!("history of layer {diff_id} not readable through Podman's API"),
            size: 1,
        })
        .collect()
}

/// Whether `/version` is Podman's.
pub fn is_podman(version: &SystemVersion) -> bool {
    version.components.as_ref().is_some_and(|c| {
        c.iter()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"))
    })
}

/// `Podman 4.3.1` or `Docker 20.10.24`, for messages.
pub fn product(version: &SystemVersion) -> String {
    let name = if is_podman(version) {
        "Podman"
    } else {
        "Docker"
    };
    format!(
        "{name} {}",
        version.version.as_deref().unwrap_or("(unknown version)")
    )
}

/// `abc…` → `sha256:abc…`; ids that have a prefix are kept.
pub fn normalize_id(id: &str) -> String {
    if id.contains(':') || id.is_empty() {
        id.to_string()
    } else {
        format!("sha256:{id}")
    }
}

/// A reference as Docker shows it: `docker.io/library/x:t` → `x:t`,
/// `docker.io/org/x:t` → `org/x:t`; anything else unchanged.
pub fn familiar(reference: &str) -> String {
    if let Some(rest) = reference.strip_prefix("docker.io/library/") {
        if !rest.contains('/') {
            return rest.to_string();
        }
    }
    reference
        .strip_prefix("docker.io/")
        .unwrap_or(reference)
        .to_string()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h
}

/// An OCI image layout archive (`oci-archive:`) of one image: `config`,
/// whose `rootfs.diff_ids` are `diff_ids`, and the files of its last
/// layers only (`new`: each size, bottom up; `write_layers` appends them to
/// the tar, in that order, with [`append_layer`]). Podman's OCI loader
/// reuses the layers it holds by digest; uncompressed layers' digests are
/// their diff ids. The layers below the new ones are named by `below` when
/// given (the blobs the engine holds: the containerd store wants their
/// exact digests and sizes, see `containerd`), else by their diff ids. The
/// writer and the manifest's bytes (its digest is the image's id on the
/// containerd store).
pub fn write_oci_archive_with<W: Write>(
    out: W,
    config: &[u8],
    (diff_ids, below): (&[String], Option<&[Descriptor]>),
    new: &[u64],
    write_layers: impl FnOnce(&mut tar::Builder<W>) -> io::Result<()>,
) -> io::Result<(W, Vec<u8>)> {
    let config_digest = digest(config);
    let first_new = diff_ids.len().saturating_sub(new.len());
    if below.is_some_and(|b| b.len() != first_new) {
        return Err(io::Error::other(
            "the blobs named for the layers below do not match the config's diff ids",
        ));
    }
    let layers: Vec<Descriptor> = diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| match (i.checked_sub(first_new), below) {
            (Some(k), _) => Descriptor::uncompressed(d, new[k]),
            (None, Some(below)) => below[i].clone(),
            // Sizes of the layers Podman holds are not known here; it
            // reuses them by digest and never reads a size.
            (None, None) => Descriptor::uncompressed(d, 0),
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    })
    .to_string();
    let manifest_digest = digest(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
        }],
    })
    .to_string();
    let mut b = tar::Builder::new(out);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    for (name, bytes) in [
        ("oci-layout".to_string(), &layout[..]),
        ("index.json".to_string(), index.as_bytes()),
        (blob_path(&manifest_digest), manifest.as_bytes()),
        (blob_path(&config_digest), config),
    ] {
        b.append_data(&mut header(bytes.len() as u64), name, bytes)?;
    }
    write_layers(&mut b)?;
    Ok((b.into_inner()?, manifest.into_bytes()))
}

/// One layer's file (`size` bytes of `layer`, whose diff id is `diff_id`)
/// into an archive [`write_oci_archive_with`] writes.
pub fn append_layer<W: Write>(
    b: &mut tar::Builder<W>,
    diff_id: &str,
    layer: impl Read,
    size: u64,
) -> io::Result<()> {
    b.append_data(&mut header(size), blob_path(diff_id), layer)
}

/// [`write_oci_archive_with`] of one new layer, into the file at `path`.
pub fn write_oci_archive(
    path: &Path,
    config: &[u8],
    diff_ids: &[String],
    layer: impl Read,
    layer_size: u64,
) -> io::Result<()> {
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let last = diff_ids.last().cloned();
    write_oci_archive_with(
        out,
        config,
        (diff_ids, None),
        &[layer_size],
        |b| match &last {
            Some(last) => append_layer(b, last, layer, layer_size),
            None => Ok(()),
        },
    )?
    .0
    .flush()
}

/// The OCI archive ([`write_oci_archive_with`]) of a `docker load` archive
/// that carries its config and manifest first and only its last layers'
/// files (what prebuilder writes: one layer, or a split's). Two passes: the
/// layer files' sizes (seeking past their bytes), then the files streamed,
/// not held in memory. The layers below the new ones are described by
/// `parents` (given their diff ids; [`podman_parents`] for Podman). The
/// manifest's bytes.
pub fn oci_from_docker_archive(
    src: &Path,
    dst: &Path,
    parents: impl FnOnce(&[String]) -> io::Result<Option<Vec<Descriptor>>>,
) -> io::Result<Vec<u8>> {
    let bad = |what: &str| io::Error::other(format!("{}: {what}", src.display()));
    let mut files: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut sizes: std::collections::HashMap<String, u64> = Default::default();
    let mut archive = tar::Archive::new(std::fs::File::open(src)?);
    for entry in archive.entries_with_seek()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            files.insert(name, bytes);
        } else {
            sizes.insert(name, entry.header().size()?);
        }
    }
    if sizes.is_empty() {
        return Err(bad("no layer file"));
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        files
            .get("manifest.json")
            .ok_or_else(|| bad("no manifest.json"))?,
    )
    .map_err(|e| bad(&e.to_string()))?;
    let config_name = manifest[0]["Config"]
        .as_str()
        .ok_or_else(|| bad("the manifest names no config"))?;
    let config = files
        .get(config_name)
        .ok_or_else(|| bad("no config file"))?;
    let diff_ids = crate::image::export::diff_ids(config).map_err(|e| bad(&e.to_string()))?;
    let names: Vec<&str> = manifest[0]["Layers"]
        .as_array()
        .map(|l| l.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default();
    // The files it has: the last layers, by the manifest's names.
    let first_new = names.iter().position(|n| sizes.contains_key(*n));
    let Some(first_new) = first_new.filter(|_| names.len() == diff_ids.len()) else {
        return Err(bad("no layer file"));
    };
    let new: Vec<u64> = names[first_new..]
        .iter()
        .map(|n| {
            sizes
                .get(*n)
                .copied()
                .ok_or_else(|| bad(&format!("no {n}")))
        })
        .collect::<io::Result<_>>()?;
    let by_name: std::collections::HashMap<&str, &String> =
        names.iter().copied().zip(&diff_ids).collect();
    let below = parents(&diff_ids[..first_new])?;
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(dst)?);
    let (mut out, manifest) =
        write_oci_archive_with(out, config, (&diff_ids, below.as_deref()), &new, |b| {
            let mut archive = tar::Archive::new(std::fs::File::open(src)?);
            for entry in archive.entries()? {
                let entry = entry?;
                let name = entry.path()?.to_string_lossy().into_owned();
                if let Some(diff_id) = by_name.get(name.as_str()) {
                    let size = entry.header().size()?;
                    append_layer(b, diff_id, entry, size)?;
                }
            }
            Ok(())
        })?;
    out.flush()?;
    Ok(manifest)
}

/// Podman's parents: each layer by its diff id (it reuses its layers by
/// digest and never reads a size).
pub fn podman_parents(_: &[String]) -> io::Result<Option<Vec<Descriptor>>> {
    Ok(None)
}

/// The config as Dockerfile instructions for Podman's `/commit`, which
/// ignores the JSON body: ENTRYPOINT and CMD always (empty ones clear what
/// the setup container had), then WORKDIR, USER, ENV and LABEL.
pub fn changes(config: &ContainerConfig) -> String {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut out = vec![
        format!(
            "ENTRYPOINT {}",
            json(config.entrypoint.as_ref().unwrap_or(&Vec::new()))
        ),
        format!("CMD {}", json(config.cmd.as_ref().unwrap_or(&Vec::new()))),
    ];
    if let Some(w) = config.working_dir.as_deref().filter(|w| !w.is_empty()) {
        out.push(format!("WORKDIR {w}"));
    }
    if let Some(u) = config.user.as_deref().filter(|u| !u.is_empty()) {
        out.push(format!("USER {u}"));
    }
    for e in config.env.iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            out.push(format!("ENV {k}={}", quote(v)));
        }
    }
    let mut labels: Vec<(&String, &String)> = config.labels.iter().flatten().collect();
    labels.sort();
    for (k, v) in labels {
        out.push(format!("LABEL {}={}", quote(k), quote(v)));
    }
    out.join("\n")
}

/// A Dockerfile word for buildah's change parser, which strips the outer
/// double quotes and keeps everything between them as it is (backslashes
/// included, so nothing is escaped). Newlines would end the instruction.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn undated_history_is_recognised_and_gives_one_entry_per_layer() {
        assert!(history_has_no_dates(
            500,
            "runtime error: invalid memory address or nil pointer dereference"
        ));
        assert!(!history_has_no_dates(500, "storage is corrupt"));
        assert!(!history_has_no_dates(404, "nil pointer dereference"));
        let layers = ["sha256:a".to_string(), "sha256:b".to_string()];
        let h = undated_history(&layers);
        // Newest first, as the history API answers; no layer marked empty.
        assert_eq!(h.len(), 2);
        assert!(h[0].comment.contains("sha256:b") && h[1].comment.contains("sha256:a"));
        assert!(h.iter().all(|e| e.created == 0 && e.size > 0));
        let config = crate::history::from_engine(&h);
        assert!(config.iter().all(|e| e.get("empty_layer").is_none()));
    }

    #[test]
    fn ids_and_tags_in_dockers_form() {
        assert_eq!(normalize_id("abc"), "sha256:abc");
        assert_eq!(normalize_id("sha256:abc"), "sha256:abc");
        assert_eq!(familiar("docker.io/library/beam:1"), "beam:1");
        assert_eq!(familiar("docker.io/org/beam:1"), "org/beam:1");
        assert_eq!(familiar("localhost/beam:1"), "localhost/beam:1");
        assert_eq!(familiar("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(familiar("beam:1"), "beam:1");
    }

    fn entries(archive: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut files = std::collections::BTreeMap::new();
        let mut a = tar::Archive::new(std::fs::File::open(archive).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().into_owned(), body);
        }
        files
    }

    #[test]
    fn oci_archive_of_a_docker_archive_names_every_layer_and_carries_only_the_last() {
        let dir = tempfile::tempdir().unwrap();
        // A docker archive as engine::layer writes it: config, manifest, last layer.
        let config = serde_json::json!({
            "config": {"Entrypoint": ["/opt/apache/beam/boot"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:aa", "sha256:bb"]},
        })
        .to_string();
        let docker = dir.path().join("docker.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&docker).unwrap());
        let manifest =
            r#"[{"Config":"config.json","RepoTags":null,"Layers":["0/layer.tar","1/layer.tar"]}]"#;
        for (name, bytes) in [
            ("config.json", config.as_bytes()),
            ("manifest.json", manifest.as_bytes()),
            ("1/layer.tar", &b"layer bytes"[..]),
        ] {
            b.append_data(&mut header(bytes.len() as u64), name, bytes)
                .unwrap();
        }
        b.into_inner().unwrap();

        let oci = dir.path().join("oci.tar");
        oci_from_docker_archive(&docker, &oci, podman_parents).unwrap();
        let files = entries(&oci);
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest_bytes = &files[&blob_path(m)];
        assert_eq!(digest(manifest_bytes), m, "blobs are content-addressed");
        let manifest: serde_json::Value = serde_json::from_slice(manifest_bytes).unwrap();
        assert_eq!(manifest["config"]["digest"], digest(config.as_bytes()));
        assert_eq!(
            files[&blob_path(&digest(config.as_bytes()))],
            config.as_bytes(),
            "the config is kept byte for byte: its digest is the image id"
        );
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers, ["sha256:aa", "sha256:bb"]);
        assert_eq!(manifest["layers"][1]["size"], 11);
        assert_eq!(files[&blob_path("sha256:bb")], b"layer bytes");
        assert!(
            !files.contains_key(&blob_path("sha256:aa")),
            "parent blobs stay out"
        );
        assert!(files.contains_key("oci-layout"));
    }

    /// Issue 22: a split's layers load in one archive: each file it
    /// carries becomes its blob, under its own diff id.
    #[test]
    fn oci_archive_of_a_docker_archive_with_several_new_layers() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ["sha256:aa", "sha256:bb", "sha256:cc"];
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": ids}}).to_string();
        let docker = dir.path().join("docker.tar");
        crate::image::write_archive_layers(
            std::fs::File::create(&docker).unwrap(),
            config.as_bytes(),
            3,
            vec![(&b"torch"[..], 5), (&b"the rest"[..], 8)],
        )
        .unwrap();
        let oci = dir.path().join("oci.tar");
        oci_from_docker_archive(&docker, &oci, podman_parents).unwrap();
        let files = entries(&oci);
        assert_eq!(files[&blob_path("sha256:bb")], b"torch");
        assert_eq!(files[&blob_path("sha256:cc")], b"the rest");
        assert!(!files.contains_key(&blob_path("sha256:aa")));
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&files[&blob_path(m)]).unwrap();
        let sizes: Vec<u64> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, [0, 5, 8]);
    }

    #[test]
    fn a_docker_archive_without_a_layer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&docker).unwrap());
        b.append_data(&mut header(2), "manifest.json", &b"[]"[..])
            .unwrap();
        b.into_inner().unwrap();
        let err = oci_from_docker_archive(&docker, &dir.path().join("o.tar"), podman_parents)
            .unwrap_err();
        assert!(err.to_string().contains("no layer file"), "{err}");
    }

    #[test]
    fn changes_carry_the_whole_config() {
        let config = ContainerConfig {
            entrypoint: Some(vec!["/opt/apache/beam/boot".into()]),
            cmd: None,
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "Q=a \"b\"".into()]),
            working_dir: Some("/w".into()),
            user: Some("1000".into()),
            labels: Some([("prebuilder.key".to_string(), "k".to_string())].into()),
            ..Default::default()
        };
        let c = changes(&config);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(
            lines,
            [
                "ENTRYPOINT [\"/opt/apache/beam/boot\"]",
                "CMD []",
                "WORKDIR /w",
                "USER 1000",
                "ENV PATH=\"/usr/bin:/bin\"",
                "ENV Q=\"a \"b\"\"",
                "LABEL \"prebuilder.key\"=\"k\"",
            ]
        );
    }
}

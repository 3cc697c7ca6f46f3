//! `prebuilder gc`: remove the images prebuilder built that no result needs.
//!
//! A *result* is an image tagged by its own key (`REPO:<key>`, what a build
//! report names) or by a user's `--tag`; layers below results are tagged
//! `REPO:layer-<key>`. A result needs itself and its chain of parent layers
//! (the `prebuilder.parent` label). Everything else prebuilder built, and
//! every untagged prebuilder image, is garbage. `--keep N` keeps only the N
//! newest results (results with a user tag are always kept).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::engine::{ops, Engine, LayerImage};
use crate::error::{Error, Result};
use crate::plan::{LAYER_TAG_PREFIX, TAG_HEX_LEN};
use crate::registry::reference;
use crate::state;

/// One image to remove: by its tags in scope, or by id when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub id: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub removed: Vec<Removal>,
    pub kept: usize,
    /// Removals the engine refused (e.g. an image a container uses).
    pub failed: Vec<String>,
    /// Containers left by prebuilder processes that are gone (removed, or
    /// that would be with `--dry-run`).
    pub containers: Vec<String>,
    /// Scratch directories of prebuilder processes that are gone.
    pub temp_dirs: Vec<String>,
}

/// `repo:tag` → (`repo`, `tag`), by the one reference grammar.
fn split_ref(r: &str) -> (&str, &str) {
    let (name, tag) = reference::split_tag(r);
    (name, tag.unwrap_or(""))
}

/// Decide what to remove. Pure, so every rule is unit-tested.
pub fn select(
    images: &[LayerImage],
    repository: Option<&str>,
    keep: Option<usize>,
) -> (Vec<Removal>, usize) {
    let in_scope = |tag: &str| repository.is_none_or(|r| split_ref(tag).0 == r);
    let scoped: Vec<(&LayerImage, Vec<String>)> = images
        .iter()
        .filter_map(|i| {
            let tags: Vec<String> = i.tags.iter().filter(|t| in_scope(t)).cloned().collect();
            // Untagged images belong to no repository: only a global gc takes them.
            (!tags.is_empty() || (repository.is_none() && i.tags.is_empty())).then_some((i, tags))
        })
        .collect();

    let is_user_tag = |img: &LayerImage, tag: &str| {
        let t = split_ref(tag).1;
        !t.starts_with(LAYER_TAG_PREFIX) && img.key.get(..TAG_HEX_LEN) != Some(t)
    };
    let mut roots: Vec<&(&LayerImage, Vec<String>)> = scoped
        .iter()
        .filter(|(_, tags)| {
            tags.iter()
                .any(|t| !split_ref(t).1.starts_with(LAYER_TAG_PREFIX))
        })
        .collect();
    roots.sort_by(|a, b| {
        b.0.created
            .cmp(&a.0.created)
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    let mut kept_roots: Vec<&LayerImage> = Vec::new();
    for (n, (img, tags)) in roots.iter().enumerate() {
        if keep.is_none_or(|k| n < k) || tags.iter().any(|t| is_user_tag(img, t)) {
            kept_roots.push(img);
        }
    }

    // Every image a kept root stands on, through the parent keys.
    let by_key: HashMap<&str, Vec<&LayerImage>> = images.iter().fold(HashMap::new(), |mut m, i| {
        m.entry(i.key.as_str()).or_default().push(i);
        m
    });
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&LayerImage> = kept_roots.clone();
    while let Some(img) = stack.pop() {
        if needed.insert(img.id.as_str()) {
            stack.extend(by_key.get(img.parent.as_str()).into_iter().flatten());
        }
    }

    let mut removals: Vec<(&LayerImage, Removal)> = scoped
        .iter()
        .filter(|(i, _)| !needed.contains(i.id.as_str()))
        .map(|(i, tags)| {
            (
                *i,
                Removal {
                    id: i.id.clone(),
                    tags: tags.clone(),
                },
            )
        })
        .collect();
    // Children first: an image with a child cannot be removed by id.
    removals.sort_by(|a, b| {
        b.0.created
            .cmp(&a.0.created)
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    (removals.into_iter().map(|(_, r)| r).collect(), needed.len())
}

/// Remove what [`select`] picks, the containers of processes that are gone
/// (`ops::orphan_containers`) and their scratch directories under
/// `state_root`; with `dry_run`, only list them. An image the engine refuses
/// to remove is reported in `failed` (with the containers that use it),
/// never in `removed`.
pub async fn run<E: Engine>(
    engine: &E,
    repository: Option<&str>,
    keep: Option<usize>,
    dry_run: bool,
    state_root: Option<&Path>,
) -> Result<GcReport> {
    let containers = if dry_run {
        ops::orphan_containers(engine)
            .await?
            .into_iter()
            .map(|c| c.name)
            .collect()
    } else {
        // First: an orphan container holds its image, which could not go.
        ops::sweep_orphans(engine).await
    };
    let temp_dirs = state_root
        .map(|root| state::sweep_scratch(root, dry_run))
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    let images = ops::layer_images(engine).await?;
    let (selected, kept) = select(&images, repository, keep);
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for r in selected {
        if dry_run {
            removed.push(r);
            continue;
        }
        let refs: Vec<&str> = if r.tags.is_empty() {
            vec![r.id.as_str()]
        } else {
            r.tags.iter().map(String::as_str).collect()
        };
        let mut ok = true;
        for reference in refs {
            if let Err(e) = engine.remove_image(reference).await {
                failed.push(match e.hint() {
                    Some(hint) => format!("{e} ({hint})"),
                    None => e.to_string(),
                });
                ok = false;
            }
        }
        if ok {
            removed.push(r);
        }
    }
    Ok(GcReport {
        dry_run,
        removed,
        kept,
        failed,
        containers,
        temp_dirs,
    })
}

impl GcReport {
    pub fn to_text(&self) -> String {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut out = String::new();
        for c in &self.containers {
            out.push_str(&format!(
                "{verb} container {c} (its prebuilder process is gone)\n"
            ));
        }
        for d in &self.temp_dirs {
            out.push_str(&format!(
                "{verb} {d} (temporary files of a prebuilder process that is gone)\n"
            ));
        }
        for r in &self.removed {
            let what = if r.tags.is_empty() {
                "(untagged)".to_string()
            } else {
                r.tags.join(" ")
            };
            out.push_str(&format!(
                "{verb} {} {what}\n",
                crate::report::short_id(&r.id)
            ));
        }
        for f in &self.failed {
            out.push_str(&format!("not removed: {f}\n"));
        }
        out.push_str(&format!(
            "{verb} {} image(s); {} still needed by results",
            self.removed.len(),
            self.kept
        ));
        if !self.failed.is_empty() {
            out.push_str(&format!("; {} removal(s) refused", self.failed.len()));
        }
        out.push('\n');
        out
    }

    /// The report's own error when some removals failed (exit status 2).
    pub fn error(&self) -> Option<Error> {
        (!self.failed.is_empty()).then(|| Error::Engine {
            engine: String::new(),
            action: "removing unneeded images".into(),
            source: self.failed.join("; ").into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn img(id: &str, k: char, parent: &str, tags: &[&str], created: i64) -> LayerImage {
        LayerImage {
            id: id.into(),
            key: key(k),
            parent: parent.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created,
        }
    }

    fn t(repo: &str, k: char) -> String {
        format!("{repo}:{}", &key(k)[..TAG_HEX_LEN])
    }

    fn l(repo: &str, k: char) -> String {
        format!("{repo}:layer-{}", &key(k)[..TAG_HEX_LEN])
    }

    /// deps(a) <- app1(b) result, app2(c) result (newer); deps(d) orphan layer.
    fn world() -> Vec<LayerImage> {
        vec![
            img("A", 'a', "sha256:base", &[&l("r", 'a')], 1),
            img("B", 'b', &key('a'), &[&t("r", 'b')], 2),
            img("C", 'c', &key('a'), &[&t("r", 'c')], 3),
            img("D", 'd', "sha256:base", &[&l("r", 'd')], 4),
        ]
    }

    fn ids(r: &[Removal]) -> Vec<&str> {
        r.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn results_and_their_layers_stay_orphan_layers_go() {
        let (removed, kept) = select(&world(), None, None);
        assert_eq!(ids(&removed), ["D"]);
        assert_eq!(removed[0].tags, [l("r", 'd')]);
        assert_eq!(kept, 3);
    }

    #[test]
    fn keep_n_removes_older_results_but_not_shared_layers() {
        let (removed, _) = select(&world(), None, Some(1));
        assert_eq!(ids(&removed), ["D", "B"], "children first, newest first");
    }

    #[test]
    fn keep_zero_removes_everything() {
        let (removed, kept) = select(&world(), None, Some(0));
        assert_eq!(ids(&removed), ["D", "C", "B", "A"]);
        assert_eq!(kept, 0);
    }

    #[test]
    fn user_tags_pin_results() {
        let mut w = world();
        w[1].tags.push("r:production".into());
        let (removed, _) = select(&w, None, Some(0));
        assert_eq!(ids(&removed), ["D", "C"], "B is pinned and needs A");
    }

    #[test]
    fn untagged_images_go_in_a_global_gc_only() {
        let mut w = world();
        w.push(img("E", 'e', "sha256:base", &[], 5));
        assert!(ids(&select(&w, None, None).0).contains(&"E"));
        assert!(!ids(&select(&w, Some("r"), None).0).contains(&"E"));
    }

    #[test]
    fn a_repository_scope_touches_only_its_tags() {
        let mut w = world();
        w.push(img("F", 'f', "sha256:base", &[&l("other", 'f')], 6));
        w[3].tags.push(l("other", 'd'));
        let (removed, _) = select(&w, Some("r"), None);
        assert_eq!(ids(&removed), ["D"]);
        assert_eq!(
            removed[0].tags,
            [l("r", 'd')],
            "the other repository's tag stays"
        );
    }

    #[test]
    fn a_layer_that_is_also_a_result_is_a_root() {
        let mut w = world();
        w[3].tags.push(t("r", 'd'));
        assert!(select(&w, None, None).0.is_empty());
    }

    #[test]
    fn refs_with_registry_ports_split_at_the_tag() {
        assert_eq!(
            split_ref("localhost:5000/a/b:tag"),
            ("localhost:5000/a/b", "tag")
        );
        assert_eq!(split_ref("localhost:5000/a/b"), ("localhost:5000/a/b", ""));
        assert_eq!(split_ref("repo:t"), ("repo", "t"));
    }

    #[test]
    fn text_says_what_happened() {
        let report = GcReport {
            dry_run: true,
            removed: vec![Removal {
                id: "sha256:0123456789abcdef".into(),
                tags: vec![],
            }],
            kept: 2,
            failed: vec![],
            containers: vec![],
            temp_dirs: vec![],
        };
        let text = report.to_text();
        assert!(
            text.contains("would remove 0123456789ab (untagged)"),
            "{text}"
        );
        assert!(
            text.contains("would remove 1 image(s); 2 still needed"),
            "{text}"
        );
        assert!(report.error().is_none());
    }

    /// A process id that is certainly not running (above the kernel's pid_max).
    const DEAD_PID: &str = "4194305";

    /// Issue 12: gc printed "removed" for an image the engine then refused.
    #[tokio::test]
    async fn a_refused_removal_is_reported_as_such_never_as_removed() {
        use crate::engine::fake::FakeEngine;
        use crate::engine::{LABEL_KEY, LABEL_PARENT};
        let engine = FakeEngine::new();
        for (reference, k) in [("r:layer-aaaa", 'a'), ("r:layer-dddd", 'd')] {
            let id = engine.add_image(reference, &[], "");
            engine.set_label(&id, LABEL_KEY, &key(k));
            engine.set_label(&id, LABEL_PARENT, "sha256:base");
        }
        engine.fail_on("remove_image");
        let report = run(&engine, None, None, false, None).await.unwrap();
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(
            report.removed.len(),
            1,
            "only the one that went: {report:?}"
        );
        let gone = &report.removed[0].tags[0];
        assert!(!engine.tags().contains(gone));
        let text = report.to_text();
        assert_eq!(
            text.matches("removed ").count(),
            2,
            "one image + the summary: {text}"
        );
        assert!(text.contains("not removed: "), "{text}");
        assert!(text.contains("1 removal(s) refused"), "{text}");
        assert!(report.error().is_some());
    }

    /// Issue 12: containers of killed runs are swept (listed with --dry-run);
    /// those of live processes and other hosts stay.
    #[tokio::test]
    async fn orphan_containers_are_swept_and_listed_in_a_dry_run() {
        use crate::engine::fake::FakeEngine;
        use crate::state::{host, LABEL_HOST, LABEL_PID};
        let engine = FakeEngine::new();
        let host = host();
        let me = std::process::id().to_string();
        engine.add_container("orphan", &[(LABEL_PID, DEAD_PID), (LABEL_HOST, &host)]);
        engine.add_container("live", &[(LABEL_PID, &me), (LABEL_HOST, &host)]);
        engine.add_container(
            "elsewhere",
            &[(LABEL_PID, DEAD_PID), (LABEL_HOST, "other-host")],
        );
        engine.add_container("old", &[("prebuilder", "setup")]);
        let root = tempfile::tempdir().unwrap();
        let dead_dir = root.path().join(format!("tmp/{host}-{DEAD_PID}"));
        std::fs::create_dir_all(&dead_dir).unwrap();

        let dry = run(&engine, None, None, true, Some(root.path()))
            .await
            .unwrap();
        assert_eq!(dry.containers, ["orphan"]);
        assert_eq!(dry.temp_dirs, [dead_dir.display().to_string()]);
        assert_eq!(engine.containers().len(), 4, "a dry run removes nothing");
        assert!(dead_dir.exists());
        assert!(
            dry.to_text().contains("would remove container orphan"),
            "{}",
            dry.to_text()
        );

        let done = run(&engine, None, None, false, Some(root.path()))
            .await
            .unwrap();
        assert_eq!(done.containers, ["orphan"]);
        let mut left = engine.containers();
        left.sort();
        assert_eq!(left, ["elsewhere", "live", "old"]);
        assert!(!dead_dir.exists());
    }
}

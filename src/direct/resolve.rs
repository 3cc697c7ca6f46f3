//! One `pip install` as pip 20.3+'s resolver decides it, for the inputs
//! direct mode accepts: named requirements pinned with `==` (found among
//! the installed distributions or the staged files of `--find-links`), or
//! one staged file named by path; with or without `--no-deps`,
//! `--force-reinstall`, hash checking. What it decides:
//!
//! - a requirement the installed set satisfies is skipped ("already
//!   satisfied"), unless forced; a local wheel of the installed version is
//!   skipped, a local sdist is reinstalled;
//! - otherwise the best staged wheel is chosen: highest version the
//!   constraints allow, then the base's tag order, then build tag; an sdist
//!   pip would build is refused (direct mode builds only the workflow);
//! - dependencies (`Requires-Dist`, markers evaluated for the base) come
//!   from the installed set, else the staged files; a constraint nothing
//!   satisfies fails as pip's resolver fails; a dependency only an index
//!   could provide fails with that said;
//! - the chosen wheels are installed dependencies first, each replacing the
//!   installed version where pip would uninstall it (see
//!   [`super::install::State::uninstall`]);
//! - afterwards, pip's conflict check: the warnings pip prints for installed
//!   packages the change breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;

use pep440_rs::{Version, VersionSpecifiers};
use pep508_rs::{ExtraName, MarkerEnvironment, Requirement, VersionOrUrl};
use sha2::{Digest, Sha256};

use super::index::Distribution;
use super::install::{InstallOptions, State, Wheel};
use super::requirements::Line;
use super::tags::{Supported, WheelName};
use crate::error::{Error, Result};
use crate::record::normalize;

/// A staged file pip may find through `--find-links <workdir>`.
#[derive(Debug, Clone)]
pub struct Staged {
    pub name: String,
    pub path: PathBuf,
}

/// A root requirement of one pip call.
#[derive(Debug, Clone)]
pub enum Root {
    /// A requirements-file line.
    Line(Line),
    /// A staged file named by path (`pip install /dir/file.whl[extras]`);
    /// `wheel` is the file itself, or the wheel built from it (an sdist).
    Path {
        staged: String,
        url: String,
        wheel: PathBuf,
        sdist: bool,
        extras: Vec<String>,
    },
}

/// One `pip install`.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// What the boot was installing, for messages (`requirements.txt`).
    pub what: String,
    pub roots: Vec<Root>,
    pub no_deps: bool,
    pub force_reinstall: bool,
    /// `--find-links <workdir>`: the layer's staged files.
    pub find_links: Vec<Staged>,
    pub require_hashes: bool,
}

/// Why a call did not install: pip fails (the boot may go on, as after its
/// first requirements round), or direct mode refuses (never ignored).
#[derive(Debug)]
pub enum Failure {
    Pip(String),
    Refused(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Refused(e)
    }
}

/// What a successful call did.
#[derive(Debug, Default, Clone)]
pub struct Done {
    /// `name version` of each distribution installed, in order.
    pub installed: Vec<String>,
    pub satisfied: Vec<String>,
    pub warnings: Vec<String>,
}

/// A chosen candidate.
#[derive(Debug, Clone)]
enum Choice {
    Installed(Box<Distribution>),
    Wheel {
        wheel: Box<Wheel>,
        root: Option<usize>,
    },
}

impl Choice {
    fn version(&self) -> String {
        match self {
            Choice::Installed(d) => d.version.clone(),
            Choice::Wheel { wheel, .. } => wheel.version().to_string(),
        }
    }

    fn requires(&self) -> Vec<String> {
        match self {
            Choice::Installed(d) => d.requires.clone(),
            Choice::Wheel { wheel, .. } => wheel.metadata.requires_dist(),
        }
    }
}

/// A staged distribution file of a project.
#[derive(Debug, Clone)]
struct Candidate {
    staged: Staged,
    version: Version,
    /// The best rank of its tags (`None` for an sdist).
    rank: Option<usize>,
    build: Option<String>,
}

const SDIST_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar"];

/// Staged files of a project: wheels (supported or not) and sdists.
fn files_of(
    key: &str,
    staged: &[Staged],
    supported: &Supported,
) -> (Vec<Candidate>, Vec<Staged>, Vec<Staged>) {
    let mut wheels = Vec::new();
    let mut unsupported = Vec::new();
    let mut sdists = Vec::new();
    for s in staged {
        if s.name.contains('/') {
            continue;
        }
        if let Some(w) = WheelName::parse(&s.name) {
            if normalize(&w.name) != key {
                continue;
            }
            let Ok(version) = Version::from_str(&w.version) else {
                continue;
            };
            match supported.rank(&w) {
                Some(rank) => wheels.push(Candidate {
                    staged: s.clone(),
                    version,
                    rank: Some(rank),
                    build: w.build.clone(),
                }),
                None => unsupported.push(s.clone()),
            }
            continue;
        }
        if let Some(stem) = SDIST_SUFFIXES.iter().find_map(|x| s.name.strip_suffix(x)) {
            // pip's _extract_version_from_fragment
            for (i, c) in stem.char_indices() {
                if c == '-' && normalize(&stem[..i]) == key {
                    if Version::from_str(&stem[i + 1..]).is_ok() {
                        sdists.push(s.clone());
                    }
                    break;
                }
            }
        }
    }
    (wheels, unsupported, sdists)
}

fn sdist_version(s: &Staged, key: &str) -> Option<Version> {
    let stem = SDIST_SUFFIXES.iter().find_map(|x| s.name.strip_suffix(x))?;
    stem.char_indices()
        .find(|(i, c)| *c == '-' && normalize(&stem[..*i]) == key)
        .and_then(|(i, _)| Version::from_str(&stem[i + 1..]).ok())
}

fn sha256_file(path: &std::path::Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(h.finalize()))
}

/// A constraint on a project, and where it came from.
#[derive(Debug, Clone)]
struct Constraint {
    specs: VersionSpecifiers,
    from: String,
}

/// Everything the call needs from the base.
pub struct Env<'a> {
    pub markers: &'a MarkerEnvironment,
    pub supported: &'a Supported,
    pub python: &'a Version,
}

fn allows_pre(specs: &[Constraint]) -> bool {
    specs
        .iter()
        .any(|c| c.specs.iter().any(|s| s.any_prerelease()))
}

/// Run one call against the state.
pub fn run(state: &mut State, call: &Call, env: &Env) -> std::result::Result<Done, Failure> {
    let mut r = Resolver {
        call,
        env,
        done: Done::default(),
        chosen: BTreeMap::new(),
        order: Vec::new(),
        extras: BTreeMap::new(),
        constraints: BTreeMap::new(),
        edges: Vec::new(),
    };
    // 1. Roots.
    for (ri, root) in call.roots.iter().enumerate() {
        match root {
            Root::Line(line) => r.line(state, ri, line)?,
            Root::Path {
                staged,
                wheel,
                sdist,
                extras,
                ..
            } => r.path(state, ri, (staged, wheel, *sdist), extras)?,
        }
    }
    // 2. Dependencies, breadth first, installed first.
    if !call.no_deps {
        r.dependencies(state)?;
    }
    // 3. Install the chosen wheels, dependencies first.
    let to_install = r.install(state)?;
    // 4. pip's conflict check over what changed and what depends on it.
    let mut done = r.done;
    if !to_install.is_empty() {
        done.warnings = conflicts(state, &to_install.into_iter().collect(), env);
    }
    Ok(done)
}

/// One call's resolution under way.
struct Resolver<'c> {
    call: &'c Call,
    env: &'c Env<'c>,
    done: Done,
    /// What each project resolved to.
    chosen: BTreeMap<String, Choice>,
    /// Projects in the order they were chosen (a project whose extras grew
    /// comes again).
    order: Vec<String>,
    extras: BTreeMap<String, BTreeSet<String>>,
    constraints: BTreeMap<String, Vec<Constraint>>,
    /// (dependent, dependency).
    edges: Vec<(String, String)>,
}

impl Resolver<'_> {
    fn constrain(&mut self, key: &str, specs: VersionSpecifiers, from: String) {
        self.constraints
            .entry(key.to_string())
            .or_default()
            .push(Constraint { specs, from });
    }

    fn choose(&mut self, key: String, choice: Choice) {
        self.order.push(key.clone());
        self.chosen.insert(key, choice);
    }

    /// A requirements-file line: the installed version when it satisfies
    /// the line (unless `--force-reinstall`), else the best staged wheel.
    fn line(&mut self, state: &State, ri: usize, line: &Line) -> std::result::Result<(), Failure> {
        let req = &line.requirement;
        if !req.evaluate_markers(self.env.markers, &[]) {
            return Ok(()); // pip: "Ignoring …: markers … don't match your environment"
        }
        let key = line.key();
        let specs = match &req.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(s)) => s.clone(),
            _ => VersionSpecifiers::empty(),
        };
        let from = format!("{} line {}", self.call.what, line.number);
        self.constrain(&key, specs.clone(), from);
        self.extras
            .entry(key.clone())
            .or_default()
            .extend(req.extras.iter().map(|e| e.to_string()));
        if self.chosen.contains_key(&key) {
            return Ok(());
        }
        let choice = match state.index.find(&key).cloned() {
            Some(d)
                if !self.call.force_reinstall
                    && Version::from_str(&d.version).is_ok_and(|v| specs.contains(&v)) =>
            {
                self.done
                    .satisfied
                    .push(format!("{}=={}", d.name, d.version));
                Choice::Installed(Box::new(d))
            }
            _ => {
                let all = &self.constraints[&key];
                let c = best(&key, all, self.call, self.env, &line.hashes, true)?;
                Choice::Wheel {
                    wheel: Box::new(c),
                    root: Some(ri),
                }
            }
        };
        self.choose(key, choice);
        Ok(())
    }

    /// A staged file named by path: a supported wheel for this Python, left
    /// when it is the installed version (unless forced, or built from an sdist).
    fn path(
        &mut self,
        state: &State,
        ri: usize,
        (staged, wheel, sdist): (&str, &std::path::Path, bool),
        ex: &[String],
    ) -> std::result::Result<(), Failure> {
        let w = Wheel::open(wheel)?;
        let wn = WheelName::parse(&w.file_name);
        if wn
            .as_ref()
            .is_none_or(|n| self.env.supported.rank(n).is_none())
        {
            return Err(Failure::Pip(format!(
                "ERROR: {staged} is not a supported wheel on this platform (the base accepts {} first)",
                self.env.supported_first()
            )));
        }
        check_python(&w, staged, self.env)?;
        let key = normalize(w.name());
        self.extras
            .entry(key.clone())
            .or_default()
            .extend(ex.iter().cloned());
        let choice = match state.index.find(&key).cloned() {
            // A local wheel of the installed version: pip leaves it.
            Some(d) if !self.call.force_reinstall && !sdist && d.version == w.version() => {
                self.done.satisfied.push(format!(
                    "{} is already installed with the same version as the provided wheel",
                    d.name
                ));
                Choice::Installed(Box::new(d))
            }
            _ => Choice::Wheel {
                wheel: Box::new(w),
                root: Some(ri),
            },
        };
        if let Ok(v) = VersionSpecifiers::from_str(&format!("=={}", choice.version())) {
            self.constrain(&key, v, staged.to_string());
        }
        self.choose(key, choice);
        Ok(())
    }

    /// Every chosen project's requirements, breadth first.
    fn dependencies(&mut self, state: &State) -> std::result::Result<(), Failure> {
        let mut i = 0;
        while i < self.order.len() {
            let key = self.order[i].clone();
            i += 1;
            let Some(choice) = self.chosen.get(&key).cloned() else {
                continue;
            };
            let ex: Vec<ExtraName> = self
                .extras
                .get(&key)
                .map(|s| {
                    s.iter()
                        .filter_map(|e| ExtraName::from_str(e).ok())
                        .collect()
                })
                .unwrap_or_default();
            for dep in choice.requires() {
                self.dependency(state, (&key, &choice), &ex, &dep)?;
            }
        }
        Ok(())
    }

    /// One requirement `dep` of the chosen `key`: constrain it, and choose
    /// (or reconsider) what meets it.
    fn dependency(
        &mut self,
        state: &State,
        (key, choice): (&str, &Choice),
        ex: &[ExtraName],
        dep: &str,
    ) -> std::result::Result<(), Failure> {
        let Ok(req) = Requirement::<pep508_rs::VerbatimUrl>::from_str(dep) else {
            return Err(Failure::Pip(format!(
                "{key} {} declares an invalid requirement {dep:?}",
                choice.version()
            )));
        };
        if !req.evaluate_markers(self.env.markers, ex) {
            return Ok(());
        }
        let dkey = normalize(req.name.as_ref());
        let specs = match &req.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(s)) => s.clone(),
            Some(VersionOrUrl::Url(_)) => {
                return Err(Failure::Refused(Error::DirectRefused {
                    input: format!("{key} {}", choice.version()),
                    reason: format!("it depends on {dep}, a direct URL"),
                }))
            }
            None => VersionSpecifiers::empty(),
        };
        self.edges.push((key.to_string(), dkey.clone()));
        let from = format!("{} {}", choice_name(key, choice), choice.version());
        self.constrain(&dkey, specs.clone(), from);
        let new_extras: Vec<String> = req.extras.iter().map(|e| e.to_string()).collect();
        let known = self.extras.entry(dkey.clone()).or_default();
        let grew = new_extras.iter().any(|e| !known.contains(e));
        known.extend(new_extras);
        if let Some(existing) = self.chosen.get(&dkey).cloned() {
            return self.reconsider(&dkey, &existing, &specs, grew);
        }
        let all = self.constraints[&dkey].clone();
        let choice = match state.index.find(&dkey).cloned() {
            Some(d)
                if Version::from_str(&d.version)
                    .is_ok_and(|v| all.iter().all(|c| c.specs.contains(&v))) =>
            {
                Choice::Installed(Box::new(d))
            }
            _ => {
                if self.call.require_hashes {
                    return Err(Failure::Pip(format!(
                        "ERROR: Hashes are required in --require-hashes mode, but they are missing from some requirements: {dep} (required by {key})"
                    )));
                }
                let w = best(&dkey, &all, self.call, self.env, &[], false)?;
                Choice::Wheel {
                    wheel: Box::new(w),
                    root: None,
                }
            }
        };
        self.choose(dkey, choice);
        Ok(())
    }

    /// A project chosen already, required again with `specs`: kept when it
    /// meets them (visited again when its extras grew); else another staged
    /// version meeting every constraint, or pip's conflict.
    fn reconsider(
        &mut self,
        dkey: &str,
        existing: &Choice,
        specs: &VersionSpecifiers,
        grew: bool,
    ) -> std::result::Result<(), Failure> {
        let v = Version::from_str(&existing.version()).ok();
        if v.is_some_and(|v| specs.contains(&v)) {
            if grew {
                self.order.push(dkey.to_string());
            }
            return Ok(());
        }
        // A root is pinned: pip's resolver cannot change it.
        let root_pinned = matches!(existing, Choice::Wheel { root: Some(_), .. })
            || self.call.roots.iter().any(|r| match r {
                Root::Line(l) => l.key() == dkey,
                Root::Path { .. } => false,
            });
        let all = &self.constraints[dkey];
        if root_pinned {
            return Err(Failure::Pip(conflict(dkey, all)));
        }
        match best(dkey, all, self.call, self.env, &[], false) {
            Ok(w) => {
                let choice = Choice::Wheel {
                    wheel: Box::new(w),
                    root: None,
                };
                self.choose(dkey.to_string(), choice);
                Ok(())
            }
            Err(_) => Err(Failure::Pip(conflict(dkey, all))),
        }
    }

    /// Install the chosen wheels, dependencies first, each replacing the
    /// installed version; the projects installed.
    fn install(&mut self, state: &mut State) -> std::result::Result<Vec<String>, Failure> {
        let to_install: Vec<String> = topological(&self.order, &self.edges)
            .into_iter()
            .filter(|k| matches!(self.chosen.get(k), Some(Choice::Wheel { .. })))
            .collect();
        for key in &to_install {
            let Some(Choice::Wheel { wheel, root }) = self.chosen.get(key) else {
                continue;
            };
            if let Some(existing) = state.index.find(key).cloned() {
                state.uninstall(&existing)?;
            }
            let (requested, direct_url) = match root.map(|r| &self.call.roots[r]) {
                Some(Root::Line(_)) => (true, None),
                Some(Root::Path { url, .. }) => (true, Some(url.clone())),
                None => (false, None),
            };
            state.install_wheel(
                wheel,
                &InstallOptions {
                    requested,
                    direct_url,
                },
            )?;
            self.done
                .installed
                .push(format!("{} {}", wheel.name(), wheel.version()));
        }
        Ok(to_install)
    }
}

fn choice_name(key: &str, c: &Choice) -> String {
    match c {
        Choice::Installed(d) => d.name.clone(),
        Choice::Wheel { wheel, .. } => {
            let n = wheel.name();
            if n.is_empty() {
                key.to_string()
            } else {
                n.to_string()
            }
        }
    }
}

fn conflict(key: &str, all: &[Constraint]) -> String {
    let list: Vec<String> = all
        .iter()
        .map(|c| format!("{} requires {key}{}", c.from, c.specs))
        .collect();
    format!(
        "ERROR: Cannot install these requirements because of conflicting dependencies: {}",
        list.join("; ")
    )
}

fn check_python(w: &Wheel, what: &str, env: &Env) -> std::result::Result<(), Failure> {
    if let Some(rp) = w.metadata.requires_python() {
        if let Ok(specs) = VersionSpecifiers::from_str(rp) {
            if !specs.contains(env.python) {
                return Err(Failure::Pip(format!(
                    "ERROR: Package '{}' requires a different Python: {} not in '{rp}' ({what})",
                    w.name(),
                    env.python
                )));
            }
        }
    }
    Ok(())
}

/// The best staged wheel for a project under its constraints, as pip's
/// finder ranks them; a refusal when pip would build an sdist.
fn best(
    key: &str,
    constraints: &[Constraint],
    call: &Call,
    env: &Env,
    hashes: &[String],
    root: bool,
) -> std::result::Result<Wheel, Failure> {
    let (wheels, unsupported, sdists) = files_of(key, &call.find_links, env.supported);
    let pre = allows_pre(constraints);
    let ok = |v: &Version| {
        constraints.iter().all(|c| c.specs.contains(v)) && (pre || !v.any_prerelease())
    };
    let mut fits: Vec<&Candidate> = wheels.iter().filter(|c| ok(&c.version)).collect();
    if !pre && fits.is_empty() {
        // packaging: prereleases are taken when nothing else matches.
        fits = wheels
            .iter()
            .filter(|c| constraints.iter().all(|x| x.specs.contains(&c.version)))
            .collect();
    }
    let wanted = constraints
        .iter()
        .map(|c| format!("{key}{}", c.specs))
        .collect::<Vec<_>>()
        .join(", ");
    let from = constraints
        .iter()
        .map(|c| c.from.clone())
        .collect::<Vec<_>>()
        .join(", ");
    // Hash-checking mode: only files with an allowed hash.
    if call.require_hashes && root {
        fits = hash_checked(fits, hashes, (&wanted, &from))?;
    }
    // A staged sdist of a version no wheel offers: pip would build it.
    let sdist_better = sdists.iter().find(|s| {
        sdist_version(s, key).is_some_and(|v| ok(&v) && fits.iter().all(|c| c.version < v))
    });
    if let Some(s) = sdist_better {
        return Err(Failure::Refused(Error::DirectRefused {
            input: s.name.clone(),
            reason: format!(
                "it is an sdist in the requirements cache, and pip would build it for {wanted} ({from}); direct mode installs wheels only (stage a wheel for {}, e.g. `pip download --only-binary=:all: --platform manylinux2014_{} --python-version {}`)",
                env.supported_platform(),
                env.machine(),
                env.python_short()
            ),
        }));
    }
    // pip: highest version, then tag rank, then build tag.
    fits.sort_by(|a, b| {
        b.version
            .cmp(&a.version)
            .then(a.rank.cmp(&b.rank))
            .then(build_key(&b.build).cmp(&build_key(&a.build)))
    });
    let mut reasons = Vec::new();
    for c in fits {
        let w = Wheel::open(&c.staged.path)?;
        if normalize(w.name()) != key {
            continue;
        }
        match check_python(&w, &c.staged.name, env) {
            Ok(()) => return Ok(w),
            Err(Failure::Pip(m)) => reasons.push(m),
            Err(e) => return Err(e),
        }
    }
    if !reasons.is_empty() {
        return Err(Failure::Pip(reasons.join("; ")));
    }
    Err(no_match(
        key,
        (&wanted, &from),
        (&wheels, &unsupported, &sdists),
        env,
    ))
}

/// pip's hash-checking mode: the fitting files whose sha256 the line allows.
fn hash_checked<'c>(
    fits: Vec<&'c Candidate>,
    hashes: &[String],
    (wanted, from): (&str, &str),
) -> std::result::Result<Vec<&'c Candidate>, Failure> {
    if hashes.is_empty() {
        return Err(Failure::Pip(format!(
            "ERROR: Hashes are required in --require-hashes mode, but they are missing from some requirements: {wanted} ({from})"
        )));
    }
    let mut matching = Vec::new();
    for c in &fits {
        if hashes.contains(&sha256_file(&c.staged.path)?) {
            matching.push(*c);
        }
    }
    if let (true, Some(c)) = (matching.is_empty(), fits.first()) {
        return Err(Failure::Pip(format!(
            "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE: {} has sha256 {}, expected one of {} ({from})",
            c.staged.name,
            sha256_file(&c.staged.path)?,
            hashes.join(", ")
        )));
    }
    Ok(matching)
}

/// pip's "No matching distribution", saying why none of the staged files fits.
fn no_match(
    key: &str,
    (wanted, from): (&str, &str),
    (wheels, unsupported, sdists): (&[Candidate], &[Staged], &[Staged]),
    env: &Env,
) -> Failure {
    let why = if !unsupported.is_empty() {
        format!(
            "the requirements cache has {} but no wheel for this base's platform (its best tag is {})",
            unsupported
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
                .join(", "),
            env.supported_first()
        )
    } else if wheels.is_empty() && sdists.is_empty() {
        format!("the requirements cache holds no distribution of {key}")
    } else {
        format!("no staged version of {key} satisfies it")
    };
    Failure::Pip(format!(
        "ERROR: No matching distribution found for {wanted} ({from}): {why}; pip would have to reach a package index, which direct mode never does (stage it in the requirements cache, or build with --builder engine)"
    ))
}

fn build_key(b: &Option<String>) -> (u64, String) {
    match b {
        None => (0, String::new()),
        Some(s) => {
            let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse().unwrap_or(0), s[digits.len()..].to_string())
        }
    }
}

impl Env<'_> {
    fn supported_first(&self) -> String {
        self.supported.first().unwrap_or_default()
    }

    fn supported_platform(&self) -> String {
        self.supported_first()
            .splitn(3, '-')
            .nth(2)
            .unwrap_or("")
            .to_string()
    }

    fn machine(&self) -> String {
        self.markers.platform_machine().to_string()
    }

    fn python_short(&self) -> String {
        self.markers.python_version().to_string()
    }
}

/// `order` with every dependency before its dependents (pip installs
/// dependencies first); ties keep `order`.
fn topological(order: &[String], edges: &[(String, String)]) -> Vec<String> {
    let mut unique: Vec<String> = Vec::new();
    for k in order {
        if !unique.contains(k) {
            unique.push(k.clone());
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut visiting: BTreeSet<String> = BTreeSet::new();
    fn visit(
        k: &str,
        edges: &[(String, String)],
        out: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) {
        if out.iter().any(|o| o == k) || !visiting.insert(k.to_string()) {
            return;
        }
        for (a, b) in edges {
            if a == k {
                visit(b, edges, out, visiting);
            }
        }
        out.push(k.to_string());
    }
    for k in &unique {
        visit(k, edges, &mut out, &mut visiting);
    }
    out.retain(|k| unique.contains(k));
    out
}

/// pip's `check_install_conflicts`: missing and conflicting dependencies
/// of the packages just installed and of those that depend on them.
pub fn conflicts(state: &State, changed: &BTreeSet<String>, env: &Env) -> Vec<String> {
    let seen = state.index.freeze_versions();
    let mut out = Vec::new();
    for d in first_of_each(&state.index.distributions) {
        let key = d.key();
        let depends_on_changed = d.requires.iter().any(|r| {
            Requirement::<pep508_rs::VerbatimUrl>::from_str(r)
                .is_ok_and(|q| changed.contains(&normalize(q.name.as_ref())))
        });
        if !changed.contains(&key) && !depends_on_changed {
            continue;
        }
        out.extend(check_one(d, &seen, env));
    }
    out
}

fn first_of_each(dists: &[Distribution]) -> Vec<&Distribution> {
    let mut seen = BTreeSet::new();
    dists.iter().filter(|d| seen.insert(d.key())).collect()
}

/// `pip check` for one distribution: its requirements (no extras) against
/// the installed versions.
pub fn check_one(d: &Distribution, installed: &BTreeMap<String, String>, env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for r in &d.requires {
        let Ok(req) = Requirement::<pep508_rs::VerbatimUrl>::from_str(r) else {
            continue;
        };
        if !req.evaluate_markers(env.markers, &[]) {
            continue;
        }
        let dkey = normalize(req.name.as_ref());
        match installed.get(&dkey) {
            None => out.push(format!(
                "{} {} requires {}, which is not installed.",
                d.key(),
                d.version,
                req.name
            )),
            Some(v) => {
                if let Some(VersionOrUrl::VersionSpecifier(specs)) = &req.version_or_url {
                    if !Version::from_str(v).is_ok_and(|v| specs.contains(&v)) {
                        out.push(format!(
                            "{} {} has requirement {}{specs}, but you have {} {v}.",
                            d.key(),
                            d.version,
                            req.name,
                            req.name
                        ));
                    }
                }
            }
        }
    }
    out
}

impl super::index::Index {
    /// Normalized name → installed version, first on sys.path.
    pub fn freeze_versions(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for d in &self.distributions {
            out.entry(d.key()).or_insert_with(|| d.version.clone());
        }
        out
    }
}

impl Supported {
    /// The best tag.
    pub fn first(&self) -> Option<String> {
        self.best().map(str::to_string)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::direct::index::tests::debian_index;
    use crate::direct::install::tests::make_wheel;
    use crate::direct::requirements;

    pub struct Fixture {
        pub dir: tempfile::TempDir,
        pub staged: Vec<Staged>,
    }

    impl Fixture {
        pub fn new() -> Fixture {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                staged: Vec::new(),
            }
        }

        /// A pure wheel `name-version` with `requires` and optional Requires-Python.
        pub fn wheel(
            &mut self,
            file: &str,
            requires: &[&str],
            requires_python: Option<&str>,
        ) -> PathBuf {
            let w = WheelName::parse(file).unwrap();
            let (n, v) = (w.name.clone(), w.version.clone());
            let mut meta = format!("Metadata-Version: 2.1\nName: {n}\nVersion: {v}\n");
            for r in requires {
                meta.push_str(&format!("Requires-Dist: {r}\n"));
            }
            if let Some(rp) = requires_python {
                meta.push_str(&format!("Requires-Python: {rp}\n"));
            }
            let info = format!("{n}-{v}.dist-info");
            let pkg = n.to_lowercase();
            let record = format!(
                "{pkg}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n"
            );
            let path = make_wheel(
                self.dir.path(),
                file,
                &[
                    (&format!("{pkg}/__init__.py"), "v = 1\n", 0o644),
                    (&format!("{info}/METADATA"), &meta, 0o644),
                    (
                        &format!("{info}/WHEEL"),
                        "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n",
                        0o644,
                    ),
                    (&format!("{info}/RECORD"), &record, 0o644),
                ],
            );
            self.staged.push(Staged {
                name: file.into(),
                path: path.clone(),
            });
            path
        }

        pub fn sdist(&mut self, file: &str) {
            let path = self.dir.path().join(file);
            std::fs::write(&path, b"not really").unwrap();
            self.staged.push(Staged {
                name: file.into(),
                path,
            });
        }
    }

    fn call(reqs: &str, f: &Fixture, no_deps: bool) -> Call {
        let file = requirements::parse("requirements.txt", reqs).unwrap();
        Call {
            what: "requirements.txt".into(),
            roots: file.lines.into_iter().map(Root::Line).collect(),
            no_deps,
            force_reinstall: false,
            find_links: f.staged.clone(),
            require_hashes: file.require_hashes,
        }
    }

    fn go(state: &mut State, c: &Call) -> std::result::Result<Done, Failure> {
        let markers = state.index.markers().unwrap();
        let supported = Supported::new(&state.index.tags);
        let python = Version::from_str(&state.index.python.version).unwrap();
        let env = Env {
            markers: &markers,
            supported: &supported,
            python: &python,
        };
        run(state, c, &env)
    }

    fn pip_error(r: std::result::Result<Done, Failure>) -> String {
        match r {
            Err(Failure::Pip(m)) => m,
            other => panic!("expected pip's failure, got {other:?}"),
        }
    }

    fn refused(r: std::result::Result<Done, Failure>) -> String {
        match r {
            Err(Failure::Refused(e)) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn satisfied_lines_are_skipped_and_missing_ones_installed_with_dependencies() {
        let mut f = Fixture::new();
        f.wheel("tabulate-0.8.0-py3-none-any.whl", &[], None);
        f.wheel(
            "slug-1.0-py3-none-any.whl",
            &["unidecode>=1.0", "tabulate"],
            None,
        );
        f.wheel("unidecode-1.3-py3-none-any.whl", &[], None);
        f.wheel("unidecode-1.2-py3-none-any.whl", &[], None);
        let mut st = State::new(debian_index());
        let done = go(&mut st, &call("tabulate==0.8.0\nslug==1.0\n", &f, false)).unwrap();
        assert_eq!(done.satisfied, ["tabulate==0.8.0"]);
        assert_eq!(
            done.installed,
            ["unidecode 1.3", "slug 1.0"],
            "dependencies first, highest version"
        );
        let slug = st.index.find("slug").unwrap();
        assert!(slug.requested);
        assert!(
            !st.index.find("unidecode").unwrap().requested,
            "a dependency gets no REQUESTED"
        );
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);
    }

    #[test]
    fn another_version_replaces_a_local_one_and_shadows_apts() {
        let mut f = Fixture::new();
        f.wheel("tabulate-0.9.0-py3-none-any.whl", &[], None);
        f.wheel("six-1.17.0-py2.py3-none-any.whl", &[], None);
        let mut st = State::new(debian_index());
        let done = go(&mut st, &call("tabulate==0.9.0\nsix==1.17.0\n", &f, true)).unwrap();
        assert_eq!(done.installed.len(), 2);
        let site = "/usr/local/lib/python3.11/dist-packages";
        assert!(st
            .deleted
            .contains(&format!("{site}/tabulate-0.8.0.dist-info")));
        assert_eq!(st.index.find("tabulate").unwrap().version, "0.9.0");
        // six: the apt copy stays, the new one comes first on sys.path.
        let sixes: Vec<(&str, &str)> = st
            .index
            .distributions
            .iter()
            .filter(|d| d.key() == "six")
            .map(|d| (d.version.as_str(), d.location.as_str()))
            .collect();
        assert_eq!(
            sixes,
            [
                ("1.17.0", site),
                ("1.16.0", "/usr/lib/python3/dist-packages")
            ]
        );
        assert_eq!(st.index.freeze()["six"], "1.17.0");
        assert!(st.notes.iter().any(|n| n.contains("Not uninstalling six")));
    }

    #[test]
    fn wheels_are_chosen_by_the_bases_tag_order() {
        let mut f = Fixture::new();
        f.wheel("fast-2.0-py3-none-any.whl", &[], None);
        f.wheel(
            "fast-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            &[],
            None,
        );
        f.wheel("fast-2.0-cp311-cp311-manylinux_2_28_x86_64.whl", &[], None);
        f.wheel("fast-2.0-cp311-cp311-musllinux_1_1_x86_64.whl", &[], None);
        let mut st = State::new(debian_index());
        go(&mut st, &call("fast==2.0\n", &f, true)).unwrap();
        let installed: Vec<&String> = st
            .upper
            .keys()
            .filter(|k| k.contains("fast-2.0.dist-info"))
            .collect();
        assert!(!installed.is_empty());
        // The RECORD of the installed wheel came from the manylinux_2_28 file.
        let c = f.staged.iter().find(|s| s.name.contains("2_28")).unwrap();
        let from = st.upper.values().find_map(|u| match u {
            crate::direct::install::Upper::File {
                content: crate::direct::install::Content::Zip { wheel, .. },
                ..
            } => Some(wheel.as_ref().clone()),
            _ => None,
        });
        assert_eq!(from.unwrap(), c.path);
    }

    #[test]
    fn refusals_and_failures_name_the_input() {
        // No wheel for this platform.
        let mut f = Fixture::new();
        f.wheel("native-1.0-cp311-cp311-win_amd64.whl", &[], None);
        let mut st = State::new(debian_index());
        let m = pip_error(go(&mut st, &call("native==1.0\n", &f, true)));
        assert!(
            m.contains("native-1.0-cp311-cp311-win_amd64.whl")
                && m.contains("no wheel for this base's platform"),
            "{m}"
        );
        // An sdist pip would build.
        let mut f = Fixture::new();
        f.sdist("crcmod-1.7.tar.gz");
        let m = refused(go(&mut st, &call("crcmod==1.7\n", &f, true)));
        assert!(
            m.contains("crcmod-1.7.tar.gz") && m.contains("sdist"),
            "{m}"
        );
        // An unmet dependency pip would fail on.
        let mut f = Fixture::new();
        f.wheel("app-1.0-py3-none-any.whl", &["missing-dep>=2"], None);
        let m = pip_error(go(&mut st, &call("app==1.0\n", &f, false)));
        assert!(m.contains("missing-dep>=2") && m.contains("app 1.0"), "{m}");
        // Requires-Python.
        let mut f = Fixture::new();
        f.wheel("new-1.0-py3-none-any.whl", &[], Some(">=3.12"));
        let m = pip_error(go(&mut st, &call("new==1.0\n", &f, true)));
        assert!(m.contains("requires a different Python: 3.11.2"), "{m}");
        // A dependency conflicting with a pinned line.
        let mut f = Fixture::new();
        f.wheel("a-1.0-py3-none-any.whl", &["b>=2"], None);
        f.wheel("b-1.0-py3-none-any.whl", &[], None);
        f.wheel("b-2.0-py3-none-any.whl", &[], None);
        let m = pip_error(go(&mut st, &call("a==1.0\nb==1.0\n", &f, false)));
        assert!(
            m.contains("conflicting dependencies") && m.contains("b>=2"),
            "{m}"
        );
        assert!(st.upper.is_empty(), "nothing installed by failed calls");
    }

    #[test]
    fn hashes_are_checked_as_pip_checks_them() {
        let mut f = Fixture::new();
        let p = f.wheel("h-1.0-py3-none-any.whl", &[], None);
        let good = sha256_file(&p).unwrap();
        let mut st = State::new(debian_index());
        let m = pip_error(go(&mut st, &call("h==1.0 --hash=sha256:00\n", &f, true)));
        assert!(
            m.contains("DO NOT MATCH THE HASHES") && m.contains(&good),
            "{m}"
        );
        go(
            &mut st,
            &call(&format!("h==1.0 --hash=sha256:{good}\n"), &f, true),
        )
        .unwrap();
        // A dependency with no hash, in hash-checking mode.
        let mut f2 = Fixture::new();
        let p2 = f2.wheel("k-1.0-py3-none-any.whl", &["dep"], None);
        f2.wheel("dep-1.0-py3-none-any.whl", &[], None);
        let hk = sha256_file(&p2).unwrap();
        let m = pip_error(go(
            &mut st,
            &call(&format!("k==1.0 --hash=sha256:{hk}\n"), &f2, false),
        ));
        assert!(m.contains("Hashes are required"), "{m}");
    }

    #[test]
    fn conflicts_pip_warns_about() {
        let mut f = Fixture::new();
        f.wheel("tabulate-0.9.0-py3-none-any.whl", &[], None);
        f.wheel(
            "user-1.0-py3-none-any.whl",
            &["tabulate<0.9", "absent"],
            None,
        );
        let mut st = State::new(debian_index());
        let done = go(&mut st, &call("user==1.0\n", &f, true)).unwrap();
        assert_eq!(
            done.warnings,
            ["user 1.0 requires absent, which is not installed."]
        );
        let done = go(&mut st, &call("tabulate==0.9.0\n", &f, true)).unwrap();
        assert!(
            done.warnings.iter().any(|w| w == "user 1.0 has requirement tabulate<0.9, but you have tabulate 0.9.0."),
            "{:?}",
            done.warnings
        );
    }
}

//! The staged SDK on an engine, per platform. Beam's boot installs a staged
//! SDK wheel only when its name is on its acceptable-wheel list, and that
//! list names x86_64 wheels only ([`boot_accepts`]); any other wheel is
//! passed over, and the image keeps the apache-beam it has. So a platform
//! whose boot would not install the staged wheel (linux/arm64 always) does
//! not get it: its base's own apache-beam is used when it is the staged
//! wheel's version (the launch's), which the setup script checks before
//! the boot runs (`setup.sh`, `PREBUILDER_BASE_BEAM`), refusing otherwise
//! and naming both versions and the platform. The direct path installs
//! the platform's own wheel instead ([`super::direct::platform_sdk`]).

use super::{dist_of, wheel_fits, Platform};
use crate::stage::{Role, StagedSet};

/// Beam's rule (sdks/python/container/boot.go `setupAcceptableWheelSpecs`,
/// piputil.go `findBeamSdkWhl`): the boot installs a staged file as the SDK
/// wheel when its name starts with `apache_beam` and ends with
/// `cpXY-cpXY-manylinux_2_17_x86_64.manylinux2014_x86_64.whl`, `XY` the
/// major and minor of the image's `python -V` (`python`, e.g. `311`) — on
/// every architecture. Any other name is passed over.
pub fn boot_accepts(file: &str, python: &str) -> bool {
    file.starts_with("apache_beam")
        && file.ends_with(&format!(
            "cp{python}-cp{python}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        ))
}

/// The `XY` of a wheel's `cpXY` interpreter tag (`311`).
fn python_tag(file: &str) -> Option<&str> {
    let stem = file.strip_suffix(".whl")?;
    // name-version[-build]-python-abi-platform
    let mut parts = stem.rsplit('-');
    parts.next()?;
    parts.next()?;
    parts.next()?.strip_prefix("cp")
}

/// Whether the boot of a `platform` image installs the staged SDK wheel
/// `file`: its name is on the boot's list (for the Python the wheel is
/// built for) and the wheel is built for the platform's machine.
pub fn boot_installs(file: &str, platform: &Platform) -> bool {
    python_tag(file).is_some_and(|py| boot_accepts(file, py)) && wheel_fits(file, platform)
}

/// A staged SDK wheel left out of a platform's setup: the base's own
/// apache-beam must be `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBeam {
    pub version: String,
    pub wheel: String,
}

impl BaseBeam {
    /// The report's `sdk`: the base's own apache-beam was used.
    pub fn report(&self) -> crate::report::SdkReport {
        crate::report::SdkReport {
            source: "base".into(),
            version: self.version.clone(),
            left_out: self.wheel.clone(),
        }
    }
}

/// The set a platform's engine build hands to the boot (`None`: `set` as
/// it is) and the apache-beam version its base must then have. The staged
/// SDK wheels the platform's boot would not install are left out; when no
/// other SDK stays (a wheel it installs, or the source tarball the boot
/// falls back to), the base's apache-beam must be the left-out wheel's
/// version. A wheel whose version cannot be read stays (and
/// [`super::check_set`] refuses it when it does not fit).
pub fn for_boot(set: &StagedSet, platform: &Platform) -> (Option<StagedSet>, Option<BaseBeam>) {
    let left_out = |a: &crate::stage::Artifact| {
        a.role == Role::Sdk
            && a.name.ends_with(".whl")
            && !boot_installs(&a.name, platform)
            && dist_of(&a.name).is_some()
    };
    let Some(first) = set.artifacts.iter().find(|a| left_out(a)) else {
        return (None, None);
    };
    let version = dist_of(&first.name).map(|(_, v)| v).unwrap_or_default();
    let wheel = first.name.clone();
    let kept = set.without(left_out);
    let need = kept
        .with_role(Role::Sdk)
        .next()
        .is_none()
        .then_some(BaseBeam { version, wheel });
    (Some(kept), need)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Beam 2.77.0's published wheels, as PyPI lists them.
    const X86: &str =
        "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";
    const ARM: &str =
        "apache_beam-2.77.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl";
    const MAC: &str = "apache_beam-2.77.0-cp311-cp311-macosx_11_0_arm64.whl";
    const X86_312: &str =
        "apache_beam-2.77.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl";

    fn artifact(name: &str, role: Role) -> crate::stage::Artifact {
        crate::stage::Artifact::named(name, role)
    }

    fn set(names: &[(&str, Role)]) -> StagedSet {
        StagedSet::new(
            names.iter().map(|(n, r)| artifact(n, *r)).collect(),
            "/tmp".into(),
            None,
        )
    }

    fn arm64() -> Platform {
        Platform::parse("linux/arm64").unwrap()
    }
    fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn the_boots_rule_accepts_only_its_x86_64_wheel_name_for_its_python() {
        assert!(boot_accepts(X86, "311"));
        // Another Python's wheel, the aarch64 and macOS wheels, the older
        // manylinux2014-only spelling, a source tarball: passed over.
        assert!(!boot_accepts(X86_312, "311"));
        assert!(boot_accepts(X86_312, "312"));
        assert!(!boot_accepts(ARM, "311"));
        assert!(!boot_accepts(MAC, "311"));
        assert!(!boot_accepts(
            "apache_beam-2.77.0-cp311-cp311-manylinux2014_x86_64.whl",
            "311"
        ));
        // The tag order newer auditwheel writes (the fixtures' wheel from
        // PyPI): not the boot's suffix either, so its boot passes it over.
        assert!(!boot_accepts(
            "apache_beam-2.77.0-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
            "311"
        ));
        assert!(!boot_accepts("apache_beam-2.77.0.tar.gz", "311"));
        assert!(!boot_accepts("dataflow_python_sdk.tar", "311"));
    }

    #[test]
    fn only_the_accepted_wheel_for_the_platforms_machine_is_installed_by_the_boot() {
        assert!(boot_installs(X86, &amd64()));
        assert!(boot_installs(X86_312, &amd64()));
        // The boot's list names x86_64: an arm64 image's boot passes over
        // its own wheel, and pip could not install the x86_64 one.
        assert!(!boot_installs(ARM, &arm64()));
        assert!(!boot_installs(X86, &arm64()));
        assert!(!boot_installs(MAC, &arm64()));
        assert_eq!(python_tag(X86), Some("311"));
        assert_eq!(python_tag("apache_beam-2.77.0.tar.gz"), None);
    }

    #[test]
    fn a_wheel_the_boot_would_not_install_is_left_out_and_the_bases_version_required() {
        let s = set(&[
            (X86, Role::Sdk),
            (
                "numpy-2.2.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                Role::RequirementsCache,
            ),
        ]);
        // amd64: handed to the boot as staged.
        let (kept, need) = for_boot(&s, &amd64());
        assert!(kept.is_none() && need.is_none());
        // arm64: left out, the base must have apache-beam 2.77.0.
        let (kept, need) = for_boot(&s, &arm64());
        let kept = kept.unwrap();
        assert!(kept.with_role(Role::Sdk).next().is_none());
        assert_eq!(kept.artifacts.len(), 1);
        assert_eq!(
            need,
            Some(BaseBeam {
                version: "2.77.0".into(),
                wheel: X86.into()
            })
        );
        super::super::check_set(&kept, &arm64()).unwrap();
        // The platform's own wheel too: the boot passes over its name.
        let (_, need) = for_boot(&set(&[(ARM, Role::Sdk)]), &arm64());
        assert_eq!(need.unwrap().wheel, ARM);
    }

    #[test]
    fn a_staged_sdk_tarball_is_what_the_boot_falls_back_to() {
        let s = set(&[(X86, Role::Sdk), ("dataflow_python_sdk.tar", Role::Sdk)]);
        let (kept, need) = for_boot(&s, &arm64());
        let kept = kept.unwrap();
        let names: Vec<&str> = kept.with_role(Role::Sdk).map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["dataflow_python_sdk.tar"]);
        assert!(need.is_none());
        // Nothing staged: nothing to decide.
        let (kept, need) = for_boot(&set(&[("requirements.txt", Role::Requirements)]), &arm64());
        assert!(kept.is_none() && need.is_none());
    }
}

//! `prebuilder template`: Dockerfile equivalents of what prebuilder does, for
//! people who prefer `docker build`. The templates live in `templates/`.

use crate::cli::{Template, TemplateArgs};
use crate::error::{Error, Result};
use crate::registry::reference;

const CUSTOM_BASE: &str = include_str!("../../templates/custom-base.Dockerfile");

pub fn run(args: &TemplateArgs) -> Result<String> {
    match &args.template {
        Template::CustomBase(a) => custom_base(&a.base, &a.boot_from),
    }
}

/// The custom-base Dockerfile: `base` plus the boot of `boot_from`.
pub fn custom_base(base: &str, boot_from: &str) -> Result<String> {
    check_reference("--base", base)?;
    check_reference("--boot-from", boot_from)?;
    Ok(CUSTOM_BASE
        .replace("{{base}}", base)
        .replace("{{boot_from}}", boot_from)
        .replace("{{version}}", env!("CARGO_PKG_VERSION")))
}

/// An image reference goes into a Dockerfile line verbatim: only what the
/// reference grammar accepts (which nothing that could end the line or the
/// instruction passes).
fn check_reference(flag: &str, value: &str) -> Result<()> {
    reference::parse(value).map(|_| ()).map_err(|rule| Error::Usage {
        message: format!("{flag} {value:?} is not an image reference: {rule}"),
        hint: "pass an image as [registry/]repository[:tag][@digest], e.g. apache/beam_python3.11_sdk:2.77.0".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_images_and_the_entrypoint() {
        let d = custom_base(
            "nvcr.io/nvidia/pytorch:24.01-py3",
            "apache/beam_python3.11_sdk:2.77.0",
        )
        .unwrap();
        assert!(
            d.contains("FROM apache/beam_python3.11_sdk:2.77.0 AS beam_sdk\n"),
            "{d}"
        );
        assert!(
            d.contains("\nFROM nvcr.io/nvidia/pytorch:24.01-py3\n"),
            "{d}"
        );
        assert!(
            d.contains("COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam\n"),
            "{d}"
        );
        assert!(
            d.contains("ENTRYPOINT [\"/opt/apache/beam/boot\"]\n"),
            "{d}"
        );
        assert!(!d.contains("{{"), "every placeholder is filled: {d}");
        // Every non-comment line is an instruction.
        for line in d.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let word = line.split_whitespace().next().unwrap();
            assert!(["FROM", "COPY", "ENTRYPOINT"].contains(&word), "{line}");
        }
    }

    #[test]
    fn digests_are_references_too() {
        assert!(custom_base("base@sha256:0123abcd", "localhost:5000/beam:2.77.0").is_ok());
    }

    #[test]
    fn refuses_what_could_inject_instructions() {
        for bad in ["", "x\nRUN rm -rf /", "a b", "--privileged", "x;y", "x\"y"] {
            let e = custom_base(bad, "apache/beam_python3.11_sdk:2.77.0").unwrap_err();
            assert!(e.to_string().contains("--base"), "{bad:?}: {e}");
            assert!(custom_base("ok", bad).is_err(), "{bad:?}");
        }
    }
}

//! Command-line definitions of the commands that look at images rather than
//! build them: `check`, `inspect`, `diff`, `sbom`, `verify`, `template`
//! (clap derive only).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::Format;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The image to check (must be on the engine; it is never pulled).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The Python that launches the pipeline, to compare with the image. Default: `python3`
    /// on PATH, when it has apache-beam.
    #[arg(long, value_name = "PATH")]
    pub launch_python: Option<PathBuf>,

    /// Check the image alone, without comparing it with a launch Python.
    #[arg(long, conflicts_with = "launch_python")]
    pub no_launch: bool,

    /// The pickle library the pipeline uses (its --pickle_library). Default: apache-beam's
    /// default at launch.
    #[arg(long, value_name = "LIB", value_parser = ["cloudpickle", "dill", "dill_unsafe"])]
    pub pickle_library: Option<String>,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// An image built by prebuilder.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The image before.
    #[arg(value_name = "IMAGE_A")]
    pub image_a: String,

    /// The image after.
    #[arg(value_name = "IMAGE_B")]
    pub image_b: String,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// An image prebuilder built: `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:…` for the SBOM
    /// attached to it there, or an image on the engine (its record).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The SBOM's format: spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON).
    #[arg(long, value_enum, default_value = "spdx")]
    pub format: SbomFormatArg,
}

/// `sbom --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormatArg {
    Spdx,
    Cyclonedx,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A pushed image: `REGISTRY/REPO:TAG` or `REGISTRY/REPO@sha256:…`.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub template: Template,
}

#[derive(Debug, Subcommand)]
pub enum Template {
    /// The Dockerfile equivalent of `build --base BASE --boot-from SDK_IMAGE`'s boot layer:
    /// a custom base (e.g. a GPU image with Python and apache-beam) with Beam's boot.
    CustomBase(CustomBaseArgs),
}

#[derive(Debug, Args)]
pub struct CustomBaseArgs {
    /// The custom base image (it must have Python and the launch's apache-beam version).
    #[arg(long, value_name = "IMAGE")]
    pub base: String,

    /// The Beam SDK image to take /opt/apache/beam from, e.g. apache/beam_python3.11_sdk:2.77.0.
    #[arg(long, value_name = "IMAGE")]
    pub boot_from: String,
}

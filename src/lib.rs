//! prebuilder: turn a pipeline's staged Python dependencies into a prebuilt SDK image.
//!
//! 1. `stage` reads a Beam staging context (or stages Beam-style flags) and digests every artifact;
//! 2. `plan` splits the artifacts into ordered layers and computes each layer's content-addressed key;
//! 3. `build` finds each layer (engine, registry), locks and builds what is missing by
//!    running the base image's boot in setup-only mode through `engine`'s primitives;
//! 4. `image` assembles each layer from the setup's snapshot; `build` tags and pushes;
//! 5. `report` tells the caller which image to launch with.
//!
//! Around it: `check` probes images (and the launch Python) for what Beam's boot
//! needs, `record` describes what a built image holds, for `inspect` and `diff`.

pub mod attest;
pub mod build;
pub mod cancel;
pub mod check;
pub mod cli;
pub mod commands;
pub mod direct;
pub mod engine;
pub mod error;
pub mod history;
pub mod image;
pub mod labels;
pub mod outputs;
pub mod plan;
pub mod progress;
pub mod record;
pub mod redact;
pub mod registry;
pub mod render;
pub mod report;
pub mod settings;
pub mod stage;
pub mod state;
pub mod wheels;

pub use error::{Error, Result};

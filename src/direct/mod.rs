//! Direct mode: produce a layer with no container engine at all, by doing
//! what the base's boot and pip would do in a setup container, from files.
//!
//! 1. [`index`] reads the base (config and layers, from an engine's export
//!    or a registry) into the set pip would see there: interpreter, install
//!    scheme, `sys.path`, wheel tags, pip, every installed distribution;
//! 2. [`boot`] replays Beam's boot in setup-only mode over a layer's staged
//!    artifacts, deciding as pip would (already satisfied, replace, shadow,
//!    install from the staged cache) and refusing, first, what it cannot
//!    decide exactly;
//! 3. [`install`] installs the chosen wheels as pip does (PEP 427/491) into
//!    an overlay of the installed set;
//! 4. [`layer`] writes the overlay as a deterministic layer tar with the
//!    image's record, and returns the installed set after it.
//!
//! Why: notebooks and Kubernetes CI runners have no engine, and Beam's
//! staging hands over binary wheels and a pure-Python sdist that need no
//! container to install.

pub mod boot;
pub mod host;
pub mod index;
pub mod install;
pub mod layer;
pub mod metadata;
pub mod pyfacts;
pub mod requirements;
pub mod resolve;
pub mod rootfs;
pub mod sbom;
pub mod tags;

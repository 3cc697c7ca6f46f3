//! Integration tests: the real `prebuilder` binary against the real engine,
//! real pip inside the fixture images, and staging contexts written by real
//! apache-beam. Fixtures come from `make fixtures` (integration/fixtures/build.sh).
//! Run one at a time (`--test-threads=1`): builds share the engine's CPU and cache.

mod daemons;
mod support;

mod attest;
mod build;
mod cache;
mod custom;
mod direct;
mod engines;
mod errors;
mod flink;
mod fresh;
mod matrix;
mod outputs;
mod platform;
mod progress;
mod pull;
mod registry;
mod reproducible;
mod robustness;
mod split;

//! Cairn: a durable, air-gapped-first CI/CD pipeline engine.
//!
//! Dependencies point one way: `cli → agents → {exec, pipeline, store}`. See `ARCHITECTURE.md`
//! at the repository root for the map and the glossary.

pub mod agents;
pub mod api;
pub mod exec;
pub mod llm;
pub mod pipeline;
pub mod retention;
pub mod secrets;
pub mod store;
pub mod trigger;

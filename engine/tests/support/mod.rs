//! Shared helpers for the engine's integration tests.

pub mod openai_server;
pub mod router_harness;
pub mod secret_corpus;

//! Shared helpers for the engine's integration tests.

pub mod openai_server;

//! The engine's one sandbox, chosen at start: agents reach it from deep inside their work
//! (the test agent's gate) without every call threading it through.

use std::sync::{Arc, LazyLock, RwLock};

use super::command::Sandbox;

static CURRENT: LazyLock<RwLock<Arc<Sandbox>>> =
    LazyLock::new(|| RwLock::new(Arc::new(Sandbox::off())));

/// Makes `sandbox` the one every later step process uses (the benchmark swaps it to compare).
pub fn install(sandbox: Sandbox) {
    let sandbox = Arc::new(sandbox);
    match CURRENT.write() {
        Ok(mut current) => *current = sandbox,
        Err(poisoned) => *poisoned.into_inner() = sandbox,
    }
}

/// The installed sandbox; without one (library tests), no isolation but a clean environment.
pub fn current() -> Arc<Sandbox> {
    match CURRENT.read() {
        Ok(current) => current.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

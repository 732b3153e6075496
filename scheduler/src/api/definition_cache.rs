//! The function definitions that direct executions and API function calls read on every
//! request, kept in memory until the database announces that a function changed.
//!
//! Every write to `functions` notifies `functions_changed` (see the migrations), which the
//! notification listener turns into [`DefinitionCache::forget_all`]; this scheduler's own API
//! writes forget at once, so a caller always reads its own change. Entries are only kept while
//! the listener is connected, since a change made while it is not would never be heard of,
//! and never for longer than `MAX_AGE`, in case the connection dies without a word.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::db::StoreError;
use common::db::functions::Functions;
use common::domain::FunctionDefinition;

/// The channel the database announces function changes on.
pub const FUNCTIONS_CHANNEL: &str = "functions_changed";
/// Longest a definition is used without reading it again.
const MAX_AGE: Duration = Duration::from_secs(10);
/// Most definitions kept; a caller cycling through more names only misses the cache.
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
pub struct DefinitionCache {
    functions: Functions,
    state: Arc<Mutex<CacheState>>,
}

#[derive(Default)]
struct CacheState {
    listening: bool,
    /// Counts forgets, so that a definition read before one is not kept after it.
    generation: u64,
    entries: HashMap<String, (Instant, FunctionDefinition)>,
}

impl DefinitionCache {
    pub fn new(functions: Functions) -> Self {
        DefinitionCache {
            functions,
            state: Arc::default(),
        }
    }

    /// Where the definitions are read from, for everything else.
    pub fn store(&self) -> &Functions {
        &self.functions
    }

    /// The definition of `name`, from memory when it is there and fresh.
    pub async fn get(&self, name: &str) -> Result<Option<FunctionDefinition>, StoreError> {
        let generation = {
            let state = self.lock();
            if let Some((read_at, function)) = state.entries.get(name)
                && read_at.elapsed() < MAX_AGE
            {
                return Ok(Some(function.clone()));
            }
            state.listening.then_some(state.generation)
        };
        let read_at = Instant::now();
        let found = self.functions.get(name).await?;
        if let (Some(generation), Some(function)) = (generation, &found) {
            let mut state = self.lock();
            if state.listening && state.generation == generation {
                if state.entries.len() >= MAX_ENTRIES {
                    state.entries.retain(|_, (at, _)| at.elapsed() < MAX_AGE);
                }
                if state.entries.len() < MAX_ENTRIES {
                    state
                        .entries
                        .insert(name.to_owned(), (read_at, function.clone()));
                }
            }
        }
        Ok(found)
    }

    /// Some function changed: every definition is read again.
    pub fn forget_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.entries.clear();
    }

    /// Whether the listener hears of changes now; whichever it is, what was kept is dropped.
    pub fn set_listening(&self, listening: bool) {
        self.lock().listening = listening;
        self.forget_all();
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // The state is consistent after every statement, so a panicked holder left it usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

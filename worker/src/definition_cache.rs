//! The function definitions this worker has loaded, by name and version. A claim returns the
//! version of the task's function, and versions never repeat (a function deleted and created
//! again gets a new one), so a definition of the same version is still the stored one:
//! running a task of a known function takes no query and no decryption of its environment.

use std::collections::HashMap;
use std::sync::Mutex;

use common::domain::FunctionDefinition;

/// More functions than this, and the cache starts over: a worker serving that many functions
/// spends its time starting runtime processes, not loading definitions.
const MOST_FUNCTIONS: usize = 1024;

#[derive(Default)]
pub struct DefinitionCache(Mutex<HashMap<String, FunctionDefinition>>);

impl DefinitionCache {
    /// The definition of `name` at `version`, if loaded before.
    pub fn get(&self, name: &str, version: i64) -> Option<FunctionDefinition> {
        let cache = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.get(name).filter(|d| d.version == version).cloned()
    }

    pub fn keep(&self, definition: &FunctionDefinition) {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.len() >= MOST_FUNCTIONS && !cache.contains_key(definition.name.as_str()) {
            cache.clear();
        }
        cache.insert(definition.name.as_str().to_owned(), definition.clone());
    }
}

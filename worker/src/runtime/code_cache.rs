//! Function code unpacked on local disk, one directory per content hash, shared by every
//! process of every version that has the same code.

use std::path::{Path, PathBuf};

use common::db::Functions;
use common::domain::{TaskError, TaskErrorType};

pub struct CodeCache {
    root: PathBuf,
    functions: Functions,
}

impl CodeCache {
    pub fn new(root: PathBuf, functions: Functions) -> Self {
        CodeCache { root, functions }
    }

    /// The directory holding the unpacked code with this hash, unpacking it first if needed.
    pub async fn directory(&self, sha256: &str) -> Result<PathBuf, TaskError> {
        let invalid = |message: String| TaskError {
            kind: TaskErrorType::Invocation,
            name: "InvalidFunctionCode".to_owned(),
            message,
        };
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(format!("malformed code hash `{sha256}`")));
        }
        let directory = self.root.join(sha256);
        if directory.is_dir() {
            return Ok(directory);
        }
        let archive = self
            .functions
            .code(sha256)
            .await
            .map_err(|e| invalid(format!("could not load the function code: {e}")))?
            .ok_or_else(|| invalid("the function code is missing from the database".into()))?;
        if common::code::hex_sha256(&archive) != sha256 {
            return Err(invalid(
                "the stored function code does not match its hash".into(),
            ));
        }
        let root = self.root.clone();
        let target = directory.clone();
        tokio::task::spawn_blocking(move || unpack_atomically(&root, &target, &archive))
            .await
            .map_err(|e| invalid(e.to_string()))?
            .map_err(invalid)?;
        Ok(directory)
    }
}

/// Unpacks into a temporary directory and renames it into place, so a concurrent reader never
/// sees half an archive; losing the race to another unpacker is fine.
fn unpack_atomically(root: &Path, target: &Path, archive: &[u8]) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let temporary = root.join(format!(".unpack-{}", common::id::ObjectId::generate()));
    std::fs::create_dir_all(&temporary).map_err(|e| e.to_string())?;
    let unpacked = common::code::unpack(archive, &temporary).map_err(|e| e.to_string());
    let moved = unpacked.and_then(|()| match std::fs::rename(&temporary, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => Ok(()),
        Err(e) => Err(e.to_string()),
    });
    let _ = std::fs::remove_dir_all(&temporary);
    moved
}

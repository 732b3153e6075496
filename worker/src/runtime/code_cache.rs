//! Function code unpacked on local disk, one directory per content hash, shared by every
//! process of every version that has the same code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::db::Functions;
use common::domain::{TaskError, TaskErrorType};

/// The error name of code no function uses any more, deleted from the database (a
/// definition read just before its function's code was replaced refers to it).
pub const CODE_RELEASED: &str = "FunctionCodeReleased";

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
            .ok_or_else(|| TaskError {
                kind: TaskErrorType::Invocation,
                name: CODE_RELEASED.to_owned(),
                message: "the function code is no longer stored: the function's code was replaced or the function deleted".to_owned(),
            })?;
        if common::code::hex_sha256(&archive) != sha256 {
            return Err(invalid(
                "the stored function code does not match its hash".into(),
            ));
        }
        // Unpacked into a temporary directory and renamed into place, so a concurrent reader
        // never sees half an archive; losing the race to another unpacker is fine.
        let temporary = self
            .root
            .join(format!(".unpack-{}", common::id::ObjectId::generate()));
        let into = temporary.clone();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            std::fs::create_dir_all(&into).map_err(|e| e.to_string())?;
            common::code::unpack(&archive, &into).map_err(|e| e.to_string())?;
            Ok(contains_python(&into))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|unpacked| unpacked);
        let placed = async {
            if unpacked? {
                precompile_python(&temporary, &directory).await;
            }
            match std::fs::rename(&temporary, &directory) {
                Err(_) if directory.is_dir() => Ok(()),
                renamed => renamed.map_err(|e| e.to_string()),
            }
        }
        .await;
        let _ = std::fs::remove_dir_all(&temporary);
        placed.map_err(invalid)?;
        Ok(directory)
    }
}

/// Longest the byte-code compilation of one archive may take; past it, the processes compile
/// what they import themselves, as without it.
const PRECOMPILE_TIMEOUT: Duration = Duration::from_secs(30);

/// Compiles the python files of freshly unpacked code to byte code, as if it had been
/// imported once. Function processes cannot write `__pycache__` into their read-only code,
/// so without this every process of every version would compile every module it imports
/// again. Compiling parses the files and runs none of them; the compiler gets an empty
/// environment and ignores the user's site and `PYTHON*` variables (`-I`). Files that do not
/// compile are left as they are: importing them reports the error as before.
async fn precompile_python(unpacked: &Path, final_directory: &Path) {
    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-I", "-m", "compileall", "-q", "-d"])
        .arg(final_directory)
        .arg(unpacked)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(PRECOMPILE_TIMEOUT, command.status()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::debug!(%error, "could not precompile python code"),
        Err(_) => tracing::warn!("precompiling python code took too long; left to the processes"),
    }
}

/// Whether a directory tree holds any `.py` file.
fn contains_python(directory: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => contains_python(&path),
            Ok(kind) if kind.is_file() => path.extension().is_some_and(|e| e == "py"),
            _ => false,
        }
    })
}

//! Function code unpacked on local disk, one directory per content hash, shared by every
//! process of every version that has the same code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::db::{Functions, patiently};
use common::domain::{TaskError, TaskErrorType};

/// The error name of code no function uses any more, deleted from the database (a
/// definition read just before its function's code was replaced refers to it).
pub const CODE_RELEASED: &str = "FunctionCodeReleased";

/// Name prefixes of directories being unpacked or deleted.
const UNPACKING: &str = ".unpack-";
const DELETING: &str = ".delete-";

/// Where the code of one database's functions is unpacked, under `cache_dir`. Workers of
/// several deployments may share a cache directory, and each deletes the code its own
/// database no longer holds: in a directory of their own, they never delete each other's.
pub fn code_root(cache_dir: &Path, database_url: &str) -> PathBuf {
    // The server and the database, not the credentials the URL may hold.
    let database = match database_url.parse::<deadpool_postgres::tokio_postgres::Config>() {
        Ok(config) => format!(
            "{:?} {:?} {}",
            config.get_hosts(),
            config.get_ports(),
            config.get_dbname().unwrap_or_default()
        ),
        Err(_) => database_url.to_owned(),
    };
    let key = common::code_archive::hex_sha256(database.as_bytes());
    cache_dir.join("code").join(&key[..16])
}

/// Unpacked code whose archive the database no longer holds, by content hash, and since when
/// this worker has seen it missing.
#[derive(Default)]
pub struct ReleasedCode(HashMap<String, Instant>);

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
        if !is_content_hash(sha256) {
            return Err(invalid(format!("malformed code hash `{sha256}`")));
        }
        let directory = self.root.join(sha256);
        if directory.is_dir() {
            return Ok(directory);
        }
        // An attempt that owns its task waits out a database outage rather than failing it.
        let archive = patiently("load the code of a function", || self.functions.code(sha256))
            .await
            .map_err(|e| invalid(format!("could not load the function code: {e}")))?
            .ok_or_else(|| TaskError {
                kind: TaskErrorType::Invocation,
                name: CODE_RELEASED.to_owned(),
                message: "the function code is no longer stored: the function's code was replaced or the function deleted".to_owned(),
            })?;
        if common::code_archive::hex_sha256(&archive) != sha256 {
            return Err(invalid(
                "the stored function code does not match its hash".into(),
            ));
        }
        // Unpacked into a temporary directory and renamed into place, so a concurrent reader
        // never sees half an archive; losing the race to another unpacker is fine.
        let temporary = self
            .root
            .join(format!("{UNPACKING}{}", common::id::ObjectId::generate()));
        let into = temporary.clone();
        let unpacked = tokio::task::spawn_blocking(move || -> Result<bool, String> {
            std::fs::create_dir_all(&into).map_err(|e| e.to_string())?;
            common::code_archive::unpack(&archive, &into).map_err(|e| e.to_string())?;
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

    /// Deletes the unpacked code no function uses any more (its archive is deleted from the
    /// database then) once it has been missing from the database for `grace`: a task that
    /// started on it just before, here or in another worker sharing this cache directory, has
    /// ended by then. Also deletes what an unpack or a deletion interrupted by a crash left
    /// behind more than `grace` ago. Returns how many directories went.
    pub async fn delete_released(
        &self,
        released: &mut ReleasedCode,
        grace: Duration,
    ) -> anyhow::Result<usize> {
        let root = self.root.clone();
        let (unpacked, mut doomed) =
            tokio::task::spawn_blocking(move || scan(&root, grace)).await??;
        let stored = self.functions.stored_code(&unpacked).await?;
        let now = Instant::now();
        // Forget what was deleted meanwhile or stored again (the same code uploaded anew).
        released
            .0
            .retain(|hash, _| unpacked.contains(hash) && !stored.contains(hash));
        for hash in unpacked.iter().filter(|hash| !stored.contains(*hash)) {
            let since = *released.0.entry(hash.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                released.0.remove(hash);
                doomed.push(self.root.join(hash));
            }
        }
        let root = self.root.clone();
        let deleted = tokio::task::spawn_blocking(move || {
            doomed
                .into_iter()
                .filter(|directory| delete(&root, directory))
                .count()
        })
        .await?;
        Ok(deleted)
    }
}

/// The content hashes unpacked under `root`, and the directories an unpack or a deletion left
/// there more than `grace` ago.
fn scan(root: &Path, grace: Duration) -> std::io::Result<(Vec<String>, Vec<PathBuf>)> {
    let mut unpacked = Vec::new();
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_content_hash(&name) {
            unpacked.push(name);
        } else if (name.starts_with(UNPACKING) || name.starts_with(DELETING))
            && entry
                .metadata()?
                .modified()?
                .elapsed()
                .is_ok_and(|age| age >= grace)
        {
            leftovers.push(entry.path());
        }
    }
    Ok((unpacked, leftovers))
}

/// Deletes a directory of the cache; says whether this call did. It is renamed first, so no
/// worker finds half of the code under its hash (one that needs it again unpacks it anew),
/// and of workers sharing the directory only one deletes it.
fn delete(root: &Path, directory: &Path) -> bool {
    let doomed = root.join(format!("{DELETING}{}", common::id::ObjectId::generate()));
    match std::fs::rename(directory, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed)) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => {
            tracing::warn!(%error, directory = %directory.display(), "could not delete unused function code");
            false
        }
    }
}

fn is_content_hash(name: &str) -> bool {
    name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit())
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

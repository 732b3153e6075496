//! Functions for tests: archives of the folders under `tests/fixtures/` (functions only the
//! suite uses) and `deploy/examples/functions/` (the examples users start from), and zips built
//! in memory.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::services::TestScheduler;

/// The repository's root directory.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Zips a directory (recursively, keeping executable bits).
pub fn zip_directory(directory: &Path) -> Vec<u8> {
    let mut files = Vec::new();
    collect_files(directory, directory, &mut files);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (relative, path) in files {
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode()
        };
        #[cfg(not(unix))]
        let mode = 0o644;
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        writer.start_file(relative, options).expect("zip entry");
        writer
            .write_all(&std::fs::read(&path).expect("read file"))
            .expect("zip write");
    }
    writer.finish().expect("zip finish").into_inner()
}

fn collect_files(root: &Path, directory: &Path, files: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(directory)
        .expect("read dir")
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            collect_files(root, &path, files);
        } else {
            let relative = path
                .strip_prefix(root)
                .expect("inside root")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((relative, path));
        }
    }
}

/// Zips files given in memory.
pub fn zip_files(files: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, contents) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        writer.write_all(contents.as_bytes()).expect("zip write");
    }
    writer.finish().expect("zip finish").into_inner()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Base64 zip of the function folder `name`: a fixture of `tests/fixtures/`, or else an example
/// of `deploy/examples/functions/`.
pub fn function_code(name: &str) -> String {
    let root = repository_root();
    let directory = [
        root.join("tests/fixtures"),
        root.join("deploy/examples/functions"),
    ]
    .into_iter()
    .map(|folder| folder.join(name))
    .find(|directory| directory.is_dir())
    .unwrap_or_else(|| panic!("no fixture or example function named {name}"));
    base64(&zip_directory(&directory))
}

impl TestScheduler {
    /// Creates a python function that returns `{"ok": true}`; returns its name.
    pub async fn create_noop_function(&self, name: &str) -> Value {
        let (status, body) = self
            .post(
                "/tasks/v1/functions/",
                &serde_json::json!({
                    "name": name,
                    "code": function_code("noop"),
                    "entryPoint": "handler.handle",
                    "runtime": "python3.11",
                }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Creates a function from a fixture or example folder (see [`function_code`]).
    pub async fn create_function(
        &self,
        name: &str,
        folder: &str,
        runtime: &str,
        entry_point: &str,
        extra: Value,
    ) -> Value {
        let mut body = serde_json::json!({
            "name": name,
            "code": function_code(folder),
            "entryPoint": entry_point,
            "runtime": runtime,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let (status, created) = self.post("/tasks/v1/functions", &body).await;
        assert_eq!(status, 200, "{created}");
        created
    }
}

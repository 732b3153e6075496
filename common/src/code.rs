//! Function code archives: a base64 zip on the wire, stored once per content hash, unpacked
//! by workers into a cache directory named after that hash.

use std::io::{Cursor, Read};
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

/// Largest accepted zip archive (decoded), as the reference's ~10 MB package limit.
pub const MAX_ARCHIVE_BYTES: usize = 10 * 1024 * 1024;
/// Largest total unpacked size, so a small archive cannot expand into a disk-filling bomb.
pub const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("the function code is not valid base64")]
    NotBase64,
    #[error("the function code archive is larger than {MAX_ARCHIVE_BYTES} bytes")]
    TooLarge,
    #[error("the function code is not a zip archive: {0}")]
    NotZip(String),
    #[error("the function code archive contains no files")]
    Empty,
    #[error(
        "the function code archive unpacks to more than {MAX_UNPACKED_BYTES} bytes or {MAX_ENTRIES} entries"
    )]
    UnpackedTooLarge,
    #[error("the function code archive contains an unsafe path: {0}")]
    UnsafePath(String),
    #[error("could not write the unpacked function code: {0}")]
    Io(String),
}

/// A validated zip archive and its content address.
#[derive(Debug, Clone)]
pub struct CodeArchive {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl CodeArchive {
    /// Decodes and validates the base64 `code` field of a function.
    pub fn from_base64(text: &str) -> Result<CodeArchive, CodeError> {
        // Reject before decoding: base64 grows data by 4/3.
        if text.len() > MAX_ARCHIVE_BYTES / 3 * 4 + 4 {
            return Err(CodeError::TooLarge);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CodeError::NotBase64)?;
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<CodeArchive, CodeError> {
        if bytes.len() > MAX_ARCHIVE_BYTES {
            return Err(CodeError::TooLarge);
        }
        inspect(&bytes)?;
        let sha256 = hex_sha256(&bytes);
        Ok(CodeArchive { bytes, sha256 })
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks the central directory: at least one file, safe relative paths, bounded size.
fn inspect(bytes: &[u8]) -> Result<(), CodeError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CodeError::NotZip(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::UnpackedTooLarge);
    }
    let mut files = 0usize;
    let mut unpacked = 0u64;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| CodeError::NotZip(e.to_string()))?;
        if entry.enclosed_name().is_none() {
            return Err(CodeError::UnsafePath(shown_name(entry.name())));
        }
        if entry.is_file() {
            files += 1;
        }
        unpacked = unpacked.saturating_add(entry.size());
    }
    if files == 0 {
        return Err(CodeError::Empty);
    }
    if unpacked > MAX_UNPACKED_BYTES {
        return Err(CodeError::UnpackedTooLarge);
    }
    Ok(())
}

/// An entry name as it can be shown in an error message.
fn shown_name<E>(name: Result<std::borrow::Cow<'_, str>, E>) -> String {
    name.map(|n| n.chars().take(200).collect())
        .unwrap_or_else(|_| "(undecodable name)".to_owned())
}

/// Unpacks a validated archive into `destination` (which must exist and be empty), keeping the
/// executable bit of files that had it. Directories end up 0755 and files 0644 (0755 when
/// executable), whatever the umask: the code is read by function processes running as other
/// users, none of which may change it. Sizes are re-checked while reading, because the sizes in
/// a zip's directory are only claims.
pub fn unpack(bytes: &[u8], destination: &Path) -> Result<(), CodeError> {
    inspect(bytes)?;
    let io = |e: std::io::Error| CodeError::Io(e.to_string());
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CodeError::NotZip(e.to_string()))?;
    let mut budget = MAX_UNPACKED_BYTES;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| CodeError::NotZip(e.to_string()))?;
        let relative = entry
            .enclosed_name()
            .ok_or_else(|| CodeError::UnsafePath(shown_name(entry.name())))?;
        let path = destination.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(io)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut contents = Vec::new();
        let read = (&mut entry)
            .take(budget + 1)
            .read_to_end(&mut contents)
            .map_err(|e| CodeError::NotZip(e.to_string()))? as u64;
        if read > budget {
            return Err(CodeError::UnpackedTooLarge);
        }
        budget -= read;
        std::fs::write(&path, contents).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let executable = entry.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
            let mode = if executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
    }
    #[cfg(unix)]
    open_directories(destination).map_err(io)?;
    Ok(())
}

/// Sets `directory` and every directory below it to 0755.
#[cfg(unix)]
fn open_directories(directory: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755))?;
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        // file_type does not follow links; unpacking creates none anyway.
        if entry.file_type()?.is_dir() {
            open_directories(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, contents) in files {
            writer
                .start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(contents.as_bytes()).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn accepts_a_zip_and_hashes_it() {
        let bytes = zip_of(&[("index.py", "def handler(e, c): return 1")]);
        let archive = CodeArchive::from_base64(&b64(&bytes)).unwrap();
        assert_eq!(archive.sha256.len(), 64);
        assert_eq!(archive.bytes, bytes);
    }

    #[test]
    fn rejects_bad_archives() {
        assert_eq!(
            CodeArchive::from_base64("not base64!").unwrap_err(),
            CodeError::NotBase64
        );
        assert!(matches!(
            CodeArchive::from_base64(&b64(b"plain text")).unwrap_err(),
            CodeError::NotZip(_)
        ));
        assert_eq!(
            CodeArchive::from_base64(&b64(&zip_of(&[]))).unwrap_err(),
            CodeError::Empty
        );
        assert!(matches!(
            CodeArchive::from_base64(&b64(&zip_of(&[("../evil.py", "x")]))).unwrap_err(),
            CodeError::UnsafePath(_)
        ));
        let huge = "A".repeat(MAX_ARCHIVE_BYTES / 3 * 4 + 8);
        assert_eq!(
            CodeArchive::from_base64(&huge).unwrap_err(),
            CodeError::TooLarge
        );
    }

    #[test]
    fn unpacks_into_a_directory() {
        let bytes = zip_of(&[("a/b.txt", "hello"), ("c.txt", "world")]);
        let dir =
            std::env::temp_dir().join(format!("code-unpack-{}", crate::id::ObjectId::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        unpack(&bytes, &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a/b.txt")).unwrap(),
            "hello"
        );
        assert_eq!(std::fs::read_to_string(dir.join("c.txt")).unwrap(), "world");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &str| {
                std::fs::metadata(dir.join(path))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(""), 0o755);
            assert_eq!(mode("a"), 0o755);
            assert_eq!(mode("a/b.txt"), 0o644);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Function code archives: a base64 zip on the wire, stored once per content hash, unpacked
//! by workers into a cache directory named after that hash.

use std::io::{Cursor, Read, Write};
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
    #[error("the function code archive holds both a file and a directory named `{0}`")]
    FileAndDirectory(String),
    #[error("the function code archive's entry `{name}` cannot be read: {reason}")]
    Unreadable { name: String, reason: String },
    #[error(
        "the function code archive's entry `{name}` claims {claimed} bytes but unpacks to {real}"
    )]
    SizeMismatch {
        name: String,
        claimed: u64,
        real: u64,
    },
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
        // Decompressed without writing anything: what fails to unpack is refused now rather
        // than when the function first runs.
        unpack_into(&bytes, |_, _| Ok(None::<std::io::Sink>))?;
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

/// Checks the central directory: at least one file, safe relative paths, no name both a file
/// and a directory, bounded size.
fn inspect(bytes: &[u8]) -> Result<(), CodeError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CodeError::NotZip(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(CodeError::UnpackedTooLarge);
    }
    let mut files = 0usize;
    let mut unpacked = 0u64;
    let mut paths = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| CodeError::NotZip(e.to_string()))?;
        let Some(path) = entry.enclosed_name() else {
            return Err(CodeError::UnsafePath(shown_name(entry.name())));
        };
        if entry.is_file() {
            files += 1;
        }
        unpacked = unpacked.saturating_add(entry.size());
        paths.push((comparable(&path), entry.is_dir()));
    }
    if files == 0 {
        return Err(CodeError::Empty);
    }
    if unpacked > MAX_UNPACKED_BYTES {
        return Err(CodeError::UnpackedTooLarge);
    }
    file_and_directory(paths)
}

/// A path as a string whose order is that of its components: joined by NUL, which sorts
/// before every character an entry name may hold (the zip reader refuses NUL in names).
fn comparable(path: &Path) -> String {
    path.components()
        .map(|component| component.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("\0")
}

/// Refuses a name that is both a file and a directory (explicitly, or as the parent of
/// another entry): unpacking could create only one of them. In component order, whatever
/// lies under a path comes right after it, so comparing neighbours is enough.
fn file_and_directory(mut paths: Vec<(String, bool)>) -> Result<(), CodeError> {
    paths.sort_unstable();
    for pair in paths.windows(2) {
        let [(first, first_is_dir), (second, second_is_dir)] = pair else {
            continue;
        };
        let clash = if first == second {
            first_is_dir != second_is_dir
        } else {
            !first_is_dir
                && second
                    .strip_prefix(first.as_str())
                    .is_some_and(|rest| rest.starts_with('\0'))
        };
        if clash {
            return Err(CodeError::FileAndDirectory(
                first.replace('\0', "/").chars().take(200).collect(),
            ));
        }
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
/// users, none of which may change it.
pub fn unpack(bytes: &[u8], destination: &Path) -> Result<(), CodeError> {
    inspect(bytes)?;
    let io = |e: std::io::Error| CodeError::Io(e.to_string());
    unpack_into(bytes, |relative, executable| {
        let path = destination.join(relative);
        let Some(executable) = executable else {
            std::fs::create_dir_all(&path).map_err(io)?;
            return Ok(None);
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::File::create(&path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if executable { 0o755 } else { 0o644 };
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io)?;
        }
        Ok(Some(file))
    })?;
    #[cfg(unix)]
    open_directories(destination).map_err(io)?;
    Ok(())
}

/// Decompresses every entry of an archive `inspect` accepted into what `open` gives for it
/// (its relative path, and for a file whether it is executable; `None` for a directory),
/// when it gives anything. Sizes are counted while reading, because the sizes in a zip's
/// directory are only claims: the whole stays within [`MAX_UNPACKED_BYTES`], and an entry
/// that holds other than the size it claims is refused.
fn unpack_into<W: Write>(
    bytes: &[u8],
    mut open: impl FnMut(&Path, Option<bool>) -> Result<Option<W>, CodeError>,
) -> Result<(), CodeError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CodeError::NotZip(e.to_string()))?;
    let mut budget = MAX_UNPACKED_BYTES;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| CodeError::NotZip(e.to_string()))?;
        let name = shown_name(entry.name());
        let relative = entry
            .enclosed_name()
            .ok_or_else(|| CodeError::UnsafePath(name.clone()))?;
        let executable = entry
            .is_file()
            .then(|| entry.unix_mode().is_some_and(|mode| mode & 0o111 != 0));
        let destination = open(&relative, executable)?;
        let unreadable = |e: std::io::Error| CodeError::Unreadable {
            name: name.clone(),
            reason: e.to_string(),
        };
        let mut limited = (&mut entry).take(budget + 1);
        let real = match destination {
            Some(mut file) => std::io::copy(&mut limited, &mut file),
            None => std::io::copy(&mut limited, &mut std::io::sink()),
        }
        .map_err(unreadable)?;
        if real > budget {
            return Err(CodeError::UnpackedTooLarge);
        }
        budget -= real;
        if real != entry.size() {
            return Err(CodeError::SizeMismatch {
                name,
                claimed: entry.size(),
                real,
            });
        }
    }
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
    fn refuses_a_name_that_is_both_a_file_and_a_directory() {
        let clash = |files: &[(&str, &str)]| CodeArchive::from_bytes(zip_of(files)).unwrap_err();
        for files in [
            &[("lib", "f"), ("lib/a.py", "x")][..],
            &[("lib/a.py", "x"), ("lib-x", "y"), ("lib", "f")],
            &[("a/lib/b/c.py", "x"), ("a/lib", "f")],
        ] {
            let expected = if files[0].0.starts_with("a/") {
                "a/lib"
            } else {
                "lib"
            };
            assert_eq!(
                clash(files),
                CodeError::FileAndDirectory(expected.into()),
                "{files:?}"
            );
        }
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        writer.add_directory("lib/", options).unwrap();
        writer.start_file("lib", options).unwrap();
        let explicit = writer.finish().unwrap().into_inner();
        assert_eq!(
            CodeArchive::from_bytes(explicit).unwrap_err(),
            CodeError::FileAndDirectory("lib".into())
        );
        // Names that only begin alike are no clash.
        CodeArchive::from_bytes(zip_of(&[
            ("lib", "f"),
            ("lib-x/a.py", "x"),
            ("libs/b", "y"),
        ]))
        .unwrap();
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

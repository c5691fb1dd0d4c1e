//! Judge0's `additional_files`: a zip archive (always base64, whatever `base64_encoded` says)
//! whose files go into the program's directory beside its source, as Judge0's `unzip -n` puts
//! them: a name already taken (the source file, or an earlier entry) keeps its first content.
//! The archive is read here, on the host, with its sizes measured as it inflates (never taken
//! from its headers), and every entry's name must stay inside the directory.

use std::io::{Cursor, Read};

use kiln_core::FileInput;

/// Why an archive was refused: the message of Judge0's 422 under `additional_files`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not a zip archive.
    #[error("is not a valid zip archive ({0})")]
    NotZip(String),
    /// An entry could not be read.
    #[error("entry {name:?} cannot be read ({reason})")]
    Entry {
        /// The entry's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// An entry's name leaves the directory, or is absolute.
    #[error("entry {0:?} is outside the program's directory")]
    Outside(String),
    /// An entry's name is empty, or is a directory of another file's (or the other way round).
    #[error("entry {0:?} clashes with another file's name")]
    Clash(String),
    /// An entry is a symbolic link.
    #[error("entry {0:?} is a symbolic link")]
    Symlink(String),
    /// The archive inflates to more than allowed.
    #[error("extracts to more than {0} KB")]
    TooLarge(u64),
    /// The archive holds more files than a job may have.
    #[error("holds more than {0} files")]
    TooMany(usize),
}

/// The files of `archive`, at most `max_bytes` inflated in all and `max_files` of them, less
/// those whose name is in `taken`.
pub fn extract(
    archive: &[u8],
    max_bytes: u64,
    max_files: usize,
    taken: &[String],
) -> Result<Vec<FileInput>, ExtractError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive))
        .map_err(|e| ExtractError::NotZip(e.to_string()))?;
    let mut out: Vec<FileInput> = Vec::new();
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| ExtractError::Entry {
            name: format!("#{i}"),
            reason: e.to_string(),
        })?;
        let raw = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        if entry.is_symlink() {
            return Err(ExtractError::Symlink(raw));
        }
        let name = entry
            .enclosed_name()
            .filter(|p| p.is_relative() && !raw.starts_with(['/', '\\']))
            .and_then(|p| p.to_str().map(|s| s.replace('\\', "/")))
            .ok_or_else(|| ExtractError::Outside(raw.clone()))?;
        let mut content = Vec::new();
        let room = max_bytes.saturating_sub(total);
        (&mut entry)
            .take(room.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| ExtractError::Entry {
                name: raw.clone(),
                reason: e.to_string(),
            })?;
        total = total.saturating_add(content.len() as u64);
        if total > max_bytes {
            return Err(ExtractError::TooLarge(max_bytes / 1000));
        }
        if taken.contains(&name) || out.iter().any(|f| f.name == name) {
            continue;
        }
        let inside =
            |dir: &str, file: &str| file.starts_with(dir) && file[dir.len()..].starts_with('/');
        let clashes = name.is_empty()
            || taken
                .iter()
                .map(String::as_str)
                .chain(out.iter().map(|f| f.name.as_str()))
                .any(|other| inside(other, &name) || inside(&name, other));
        if clashes {
            return Err(ExtractError::Clash(raw));
        }
        if out.len() == max_files {
            return Err(ExtractError::TooMany(max_files));
        }
        out.push(FileInput { name, content });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn files_come_out_beside_the_source_and_never_replace_it() {
        let zip = archive(&[
            ("lib/util.py", b"X = 1\n"),
            ("main.py", b"overwritten?"),
            ("data.txt", b"first"),
        ]);
        let files = extract(&zip, 1 << 20, 10, &["main.py".into()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["lib/util.py", "data.txt"]);
        assert_eq!(files[1].content, b"first");
    }

    #[test]
    fn escapes_bombs_and_garbage_are_refused() {
        let err = extract(&archive(&[("../etc/x", b"x")]), 1 << 20, 10, &[]).unwrap_err();
        assert_eq!(err, ExtractError::Outside("../etc/x".into()));
        let err = extract(&archive(&[("/abs", b"x")]), 1 << 20, 10, &[]).unwrap_err();
        assert!(matches!(err, ExtractError::Outside(_)), "{err}");
        // A megabyte of zeros deflates to a kilobyte: the cap counts what comes out.
        let bomb = archive(&[("zeros", &vec![0u8; 1 << 20])]);
        assert!(bomb.len() < 8 << 10, "{}", bomb.len());
        let err = extract(&bomb, 100_000, 10, &[]).unwrap_err();
        assert_eq!(err, ExtractError::TooLarge(100));
        let err = extract(&archive(&[("a", b"1"), ("b", b"2")]), 1 << 20, 1, &[]).unwrap_err();
        assert_eq!(err, ExtractError::TooMany(1));
        let err = extract(&archive(&[("a", b"1"), ("a/b", b"2")]), 1 << 20, 10, &[]).unwrap_err();
        assert_eq!(err, ExtractError::Clash("a/b".into()));
        let taken = ["main.py".to_string()];
        let err = extract(&archive(&[("main.py/x", b"1")]), 1 << 20, 10, &taken).unwrap_err();
        assert_eq!(err, ExtractError::Clash("main.py/x".into()));
        let err = extract(b"not a zip", 1 << 20, 10, &[]).unwrap_err();
        assert!(matches!(err, ExtractError::NotZip(_)), "{err}");
    }
}

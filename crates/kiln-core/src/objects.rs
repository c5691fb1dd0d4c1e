//! Bytes kept by key: the uploaded blobs and the jobs' artifacts. [`ObjectStore`] is what the
//! service needs of it (an S3-compatible bucket would do); [`DiskObjects`] keeps each object as a
//! file under one directory, written to a temporary name and renamed into place, so a reader
//! never sees half an object, on blocking threads, never on the async ones.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

/// An object store error, with the step and the key.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A key that is not `segment/segment/...` of `[A-Za-z0-9._-]` (no `.` or `..` segment).
    #[error("object key {0:?} is not a valid key")]
    BadKey(String),
    /// The file system failed.
    #[error("object store: {step} {key}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The object's key.
        key: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// An object's bytes, in chunks.
pub type ObjectStream = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// The size of the chunks an opened object is read in.
const CHUNK: usize = 64 << 10;

/// Where objects live.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `bytes` under `key`, replacing what was there.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError>;

    /// Stores the file at `path` (made by this process, in [`ObjectStore::staging_dir`] when it
    /// has one, and no longer written) under `key`; the file is gone afterwards.
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), ObjectError>;

    /// Where files for [`ObjectStore::put_file`] are best made (on the store's own file system,
    /// so that putting one is a rename).
    fn staging_dir(&self) -> PathBuf;

    /// The object under `key`, if there is one.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError>;

    /// The object under `key` as a stream of chunks, with its size, if there is one: for
    /// readers that pass it on without holding it whole.
    async fn open(&self, key: &str) -> Result<Option<(u64, ObjectStream)>, ObjectError>;

    /// Deletes the object under `key` (nothing if there is none).
    async fn remove(&self, key: &str) -> Result<(), ObjectError>;

    /// Deletes every object whose key starts with `prefix/`.
    async fn remove_all(&self, prefix: &str) -> Result<(), ObjectError>;

    /// The keys under `prefix/` with their sizes.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError>;
}

/// Objects as files under a directory.
#[derive(Debug, Clone)]
pub struct DiskObjects {
    root: PathBuf,
}

fn check_key(key: &str) -> Result<(), ObjectError> {
    let ok = !key.is_empty()
        && key.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(ObjectError::BadKey(key.to_string()))
    }
}

fn io<'k>(step: &'static str, key: &'k str) -> impl FnOnce(std::io::Error) -> ObjectError + 'k {
    move |source| ObjectError::Io {
        step,
        key: key.to_string(),
        source,
    }
}

impl DiskObjects {
    /// Objects under `root` (made if missing). Temporary files a previous process left are
    /// removed.
    pub fn open(root: &Path) -> Result<Self, ObjectError> {
        let tmp = root.join(".tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io("make the directory", ".tmp"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, bytes: &[u8]) -> Result<(), ObjectError> {
        use std::io::Write;
        let path = self.path(key)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("make the directory of", key))?;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join(".tmp"))
            .map_err(io("make a temporary file for", key))?;
        tmp.write_all(bytes).map_err(io("write", key))?;
        tmp.persist(&path)
            .map_err(|e| io("rename into place", key)(e.error))?;
        Ok(())
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let dir = self.path(prefix)?;
        let mut out = Vec::new();
        let mut pending = vec![(dir, prefix.to_string())];
        while let Some((dir, key)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("list", &key)(e)),
            };
            for entry in entries {
                let entry = entry.map_err(io("list", &key))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let meta = entry.metadata().map_err(io("list", &key))?;
                let child = format!("{key}/{name}");
                if meta.is_dir() {
                    pending.push((entry.path(), child));
                } else if check_key(&child).is_ok() {
                    out.push((child, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    key: &str,
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Io {
            step: "run the file task of",
            key: key.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?
}

#[async_trait]
impl ObjectStore for DiskObjects {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ObjectError> {
        let this = self.clone();
        let k = key.to_string();
        blocking(key, move || this.put_blocking(&k, &bytes)).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), ObjectError> {
        let dest = self.path(key)?;
        let from = path.to_path_buf();
        let k = key.to_string();
        blocking(key, move || {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(io("make the directory of", &k))?;
            }
            match std::fs::rename(&from, &dest) {
                Ok(()) => Ok(()),
                // Another file system: copy, then drop the original.
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    std::fs::copy(&from, &dest).map_err(io("copy into place", &k))?;
                    let _ = std::fs::remove_file(&from);
                    Ok(())
                }
                Err(e) => Err(io("rename into place", &k)(e)),
            }
        })
        .await
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join(".tmp")
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectError> {
        let path = self.path(key)?;
        let k = key.to_string();
        blocking(key, move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &k)(e)),
        })
        .await
    }

    async fn open(&self, key: &str) -> Result<Option<(u64, ObjectStream)>, ObjectError> {
        use futures_util::StreamExt as _;
        use tokio::io::AsyncReadExt as _;
        let path = self.path(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("open", key)(e)),
        };
        let size = file.metadata().await.map_err(io("open", key))?.len();
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(Some((size, chunks.boxed())))
    }

    async fn remove(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        let k = key.to_string();
        blocking(key, move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("delete", &k)(e)),
            _ => Ok(()),
        })
        .await
    }

    async fn remove_all(&self, prefix: &str) -> Result<(), ObjectError> {
        let path = self.path(prefix)?;
        let k = prefix.to_string();
        blocking(prefix, move || match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("delete", &k)(e)),
            _ => Ok(()),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, ObjectError> {
        let this = self.clone();
        let k = prefix.to_string();
        blocking(prefix, move || this.list_blocking(&k)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn objects_round_trip_and_keys_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskObjects::open(dir.path()).unwrap();
        store
            .put("a/b/one", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store.put("a/two", Bytes::from_static(b"22")).await.unwrap();
        assert_eq!(store.get("a/b/one").await.unwrap().unwrap(), &b"1"[..]);
        // Opened, a large object comes in chunks that add up to it.
        let big = Bytes::from(vec![7u8; 3 * CHUNK + 5]);
        store.put("big", big.clone()).await.unwrap();
        let (size, chunks) = store.open("big").await.unwrap().unwrap();
        assert_eq!(size, big.len() as u64);
        let parts: Vec<Bytes> = futures_util::StreamExt::collect::<Vec<_>>(chunks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.concat(), big);
        store.remove("big").await.unwrap();
        assert!(store.open("big").await.unwrap().is_none());
        assert_eq!(
            store.list("a").await.unwrap(),
            vec![("a/b/one".to_string(), 1), ("a/two".to_string(), 2)]
        );
        store.remove("a/two").await.unwrap();
        assert!(store.get("a/two").await.unwrap().is_none());
        store.remove_all("a").await.unwrap();
        assert!(store.list("a").await.unwrap().is_empty());
        for bad in ["", "../x", "a/../b", "a//b", "/a", "a/./b", "a b"] {
            assert!(
                matches!(
                    store.put(bad, Bytes::new()).await,
                    Err(ObjectError::BadKey(_))
                ),
                "{bad:?}"
            );
        }
    }
}

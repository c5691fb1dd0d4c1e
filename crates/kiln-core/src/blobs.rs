//! Content-addressed blobs: file contents uploaded once and named by their SHA-256, so a job can
//! give a large file by reference (`files[].ref`). Each token holds the blobs it uploaded; a
//! token can only use, or learn of, a blob it holds (the bytes of two tokens' equal uploads are
//! stored once). A hold lasts while it is used (check, upload, finalize, a job's use refresh
//! it) and goes after `ttl` idle; a blob goes with its last hold. The bytes are hashed on the
//! way in (a PUT whose bytes are not its hash stores nothing) and again on every use. Bytes held
//! are counted against a total and a per-token quota.
//!
//! The bytes live in an [`ObjectStore`] (`blobs/<hex>`), each hold as an empty object
//! (`holds/<owner>/<hex>`), so a restarted service still has them (their idle clocks restart).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::objects::{ObjectError, ObjectStore};

/// A blob's name: the SHA-256 of its bytes, written `sha256:<64 lowercase hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(Self(out))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    fn key(&self) -> String {
        format!("blobs/{}", self.hex())
    }
}

impl std::fmt::Display for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// The blob store's settings.
#[derive(Debug, Clone)]
pub struct BlobConfig {
    /// How long a hold lasts unused.
    pub ttl: Duration,
    /// Largest blob.
    pub max_blob_bytes: u64,
    /// Bytes stored, all tokens together.
    pub storage_bytes: u64,
    /// Bytes one token may hold.
    pub owner_storage_bytes: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            max_blob_bytes: 64 << 20,
            storage_bytes: 2 << 30,
            owner_storage_bytes: 512 << 20,
        }
    }
}

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes are not the blob they were sent as.
    #[error("the bytes' hash is {actual}, not {expected}")]
    Mismatch {
        /// The hash the upload was for.
        expected: BlobHash,
        /// The bytes' hash.
        actual: BlobHash,
    },
    /// Larger than one blob may be.
    #[error("a blob of {bytes} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The token holds as much as it may.
    #[error("{owner} holds {held} bytes of blobs; {bytes} more would pass its {cap}-byte quota")]
    OwnerQuota {
        /// The token's name.
        owner: String,
        /// What it holds.
        held: u64,
        /// The blob's size.
        bytes: u64,
        /// Its quota.
        cap: u64,
    },
    /// The store is full.
    #[error("the blob store holds {used} bytes; {bytes} more would pass its {cap}-byte quota")]
    StorageFull {
        /// Bytes stored.
        used: u64,
        /// The blob's size.
        bytes: u64,
        /// The quota.
        cap: u64,
    },
    /// The token holds no such blob (never uploaded by it, or expired).
    #[error("no blob {0} (never uploaded with this token, or expired)")]
    Missing(BlobHash),
    /// The stored bytes no longer hash to their name (they are dropped).
    #[error("blob {0} is damaged in the store and was dropped; upload it again")]
    Damaged(BlobHash),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] ObjectError),
    /// An upload's file could not be written.
    #[error("blob upload: {step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// An upload under way: its bytes go to a file of the store's staging directory as they come,
/// hashed and counted, so that none is held in memory whole.
#[derive(Debug)]
pub struct BlobUpload {
    hash: BlobHash,
    file: tokio::fs::File,
    path: tempfile::TempPath,
    hasher: Sha256,
    size: u64,
    max: u64,
    staging: Arc<AtomicU64>,
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        self.staging.fetch_sub(self.max, Ordering::SeqCst);
    }
}

impl BlobUpload {
    /// Adds `chunk` to the upload; past the largest blob it is refused.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        use tokio::io::AsyncWriteExt as _;
        let size = self.size + chunk.len() as u64;
        if size > self.max {
            return Err(BlobError::TooLarge {
                bytes: size,
                max: self.max,
            });
        }
        self.size = size;
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .await
            .map_err(|source| BlobError::Io {
                step: "write an upload's file",
                source,
            })
    }
}

#[derive(Debug)]
struct Blob {
    bytes: u64,
    /// Whether its bytes are in the store (not only reserved by an upload under way).
    stored: bool,
    holds: HashMap<String, Instant>,
}

#[derive(Debug, Default)]
struct Index {
    blobs: HashMap<BlobHash, Blob>,
    /// Bytes each owner holds (or has reserved by an upload under way).
    held: HashMap<String, u64>,
    /// Bytes stored or reserved.
    total: u64,
}

impl Index {
    /// Whether `owner` holds stored blob `hash` (its idle clock then restarts); if not, whether
    /// `bytes` more fit its quota (the error if they do not).
    fn held_or_room(
        &mut self,
        cfg: &BlobConfig,
        owner: &str,
        hash: &BlobHash,
        bytes: u64,
    ) -> Result<bool, BlobError> {
        if let Some(at) = self
            .blobs
            .get_mut(hash)
            .filter(|b| b.stored)
            .and_then(|b| b.holds.get_mut(owner))
        {
            *at = Instant::now();
            return Ok(true);
        }
        let held = self.held.get(owner).copied().unwrap_or(0);
        if held.saturating_add(bytes) > cfg.owner_storage_bytes {
            return Err(BlobError::OwnerQuota {
                owner: owner.to_string(),
                held,
                bytes,
                cap: cfg.owner_storage_bytes,
            });
        }
        Ok(false)
    }
}

/// What the store holds, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlobStats {
    /// Blobs stored.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// The blob store.
#[derive(Debug)]
pub struct BlobService {
    cfg: BlobConfig,
    objects: Arc<dyn ObjectStore>,
    index: Mutex<Index>,
    /// Held while blob files are put into place or deleted, so that a deletion never takes a
    /// file that a new upload of the same bytes just put there.
    files: tokio::sync::Mutex<()>,
    /// Bytes of uploads under way (their declared lengths), counted against the total quota.
    staging: Arc<AtomicU64>,
}

/// What [`BlobService::begin`] found.
#[derive(Debug)]
pub enum Begun {
    /// The token holds the blob already (its idle clock restarted): nothing to send.
    Held,
    /// Send its bytes.
    Upload(Box<BlobUpload>),
}

/// A token's name as a key segment.
fn owner_key(owner: &str) -> String {
    hex::encode(owner.as_bytes())
}

fn hold_key(owner: &str, hash: &BlobHash) -> String {
    format!("holds/{}/{}", owner_key(owner), hash.hex())
}

/// The hash of `bytes`, off the async threads.
async fn hash_of(bytes: Bytes) -> BlobHash {
    tokio::task::spawn_blocking(move || BlobHash::of(&bytes))
        .await
        .expect("hashing does not panic")
}

impl BlobService {
    /// The store over `objects`, with what a previous process left: blobs with their holds
    /// (idle from now), and neither a hold without its blob nor a blob without a hold.
    pub async fn open(cfg: BlobConfig, objects: Arc<dyn ObjectStore>) -> Result<Self, BlobError> {
        let mut index = Index::default();
        let now = Instant::now();
        for (key, bytes) in objects.list("blobs").await? {
            if let Some(hash) = key
                .strip_prefix("blobs/")
                .and_then(|h| BlobHash::parse(&format!("sha256:{h}")))
            {
                index.blobs.insert(
                    hash,
                    Blob {
                        bytes,
                        stored: true,
                        holds: HashMap::new(),
                    },
                );
            } else {
                objects.remove(&key).await?;
            }
        }
        for (key, _) in objects.list("holds").await? {
            let mut parts = key.split('/').skip(1);
            let (Some(owner), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                objects.remove(&key).await?;
                continue;
            };
            let owner = hex::decode(owner)
                .ok()
                .and_then(|o| String::from_utf8(o).ok());
            let blob = BlobHash::parse(&format!("sha256:{hex}"))
                .and_then(|h| index.blobs.get_mut(&h).map(|b| (h, b)));
            match (owner, blob) {
                (Some(owner), Some((_, blob))) => {
                    *index.held.entry(owner.clone()).or_default() += blob.bytes;
                    blob.holds.insert(owner, now);
                }
                _ => objects.remove(&key).await?,
            }
        }
        let unheld: Vec<BlobHash> = index
            .blobs
            .iter()
            .filter(|(_, b)| b.holds.is_empty())
            .map(|(h, _)| *h)
            .collect();
        for hash in unheld {
            index.blobs.remove(&hash);
            objects.remove(&hash.key()).await?;
        }
        index.total = index.blobs.values().map(|b| b.bytes).sum();
        Ok(Self {
            cfg,
            objects,
            index: Mutex::new(index),
            files: tokio::sync::Mutex::new(()),
            staging: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BlobConfig {
        &self.cfg
    }

    /// What is stored.
    pub fn stats(&self) -> BlobStats {
        let index = self.index.lock().expect("blob index lock");
        let stored = index.blobs.values().filter(|b| b.stored);
        BlobStats {
            blobs: stored.clone().count(),
            bytes: stored.map(|b| b.bytes).sum(),
        }
    }

    /// Bytes `owner` holds.
    pub fn held_by(&self, owner: &str) -> u64 {
        let index = self.index.lock().expect("blob index lock");
        index.held.get(owner).copied().unwrap_or(0)
    }

    /// The size of blob `hash`, if `owner` holds it (its clock is not restarted).
    pub fn size_held(&self, owner: &str, hash: &BlobHash) -> Option<u64> {
        let index = self.index.lock().expect("blob index lock");
        index
            .blobs
            .get(hash)
            .filter(|b| b.stored && b.holds.contains_key(owner))
            .map(|b| b.bytes)
    }

    /// Whether `owner` holds each of `hashes` (a held one's idle clock restarts).
    pub fn check(&self, owner: &str, hashes: &[BlobHash]) -> Vec<bool> {
        let mut index = self.index.lock().expect("blob index lock");
        let now = Instant::now();
        hashes
            .iter()
            .map(|h| match index.blobs.get_mut(h) {
                Some(b) if b.stored => match b.holds.get_mut(owner) {
                    Some(at) => {
                        *at = now;
                        true
                    }
                    None => false,
                },
                _ => false,
            })
            .collect()
    }

    /// Restarts the idle clocks of `hashes`, which `owner` must all hold; the first it does not
    /// hold is the error.
    pub fn finalize(&self, owner: &str, hashes: &[BlobHash]) -> Result<(), (usize, BlobError)> {
        let held = self.check(owner, hashes);
        match held.iter().position(|h| !h) {
            Some(i) => Err((i, BlobError::Missing(hashes[i]))),
            None => Ok(()),
        }
    }

    /// Starts an upload of blob `hash` by `owner` of `declared` bytes: nothing to do if the
    /// token holds it; refused past one blob's limit or a quota (the bytes of uploads under way
    /// count against the total, so staged files stay within it too). Its bytes then go to a file
    /// as they come ([`BlobUpload::write`]), and [`BlobService::finish`] checks and stores them.
    pub async fn begin(
        &self,
        owner: &str,
        hash: BlobHash,
        declared: u64,
    ) -> Result<Begun, BlobError> {
        if declared > self.cfg.max_blob_bytes {
            return Err(BlobError::TooLarge {
                bytes: declared,
                max: self.cfg.max_blob_bytes,
            });
        }
        {
            let mut index = self.index.lock().expect("blob index lock");
            if index.held_or_room(&self.cfg, owner, &hash, declared)? {
                return Ok(Begun::Held);
            }
            // Whether another token stored these bytes does not change the answer: it would
            // tell this token that someone holds them.
            let used = index.total + self.staging.load(Ordering::SeqCst);
            if used.saturating_add(declared) > self.cfg.storage_bytes {
                return Err(BlobError::StorageFull {
                    used,
                    bytes: declared,
                    cap: self.cfg.storage_bytes,
                });
            }
            self.staging.fetch_add(declared, Ordering::SeqCst);
        }
        let staging = Arc::clone(&self.staging);
        let dir = self.objects.staging_dir();
        let made = tokio::task::spawn_blocking(move || tempfile::NamedTempFile::new_in(dir))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        let file = match made {
            Ok(f) => f,
            Err(source) => {
                staging.fetch_sub(declared, Ordering::SeqCst);
                return Err(BlobError::Io {
                    step: "make an upload's file",
                    source,
                });
            }
        };
        let (file, path) = file.into_parts();
        Ok(Begun::Upload(Box::new(BlobUpload {
            hash,
            file: tokio::fs::File::from_std(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            max: declared,
            staging,
        })))
    }

    /// Stores an upload's bytes as its blob held by `owner`: refused unless they hash to it and
    /// fit the quotas (nothing is stored then). Bytes another token already stored are not
    /// stored again, but this token must still send them to hold them. Once the bytes are
    /// checked, storing them runs to its end even if the caller goes away.
    pub async fn finish(
        self: &Arc<Self>,
        owner: &str,
        mut upload: Box<BlobUpload>,
    ) -> Result<(), BlobError> {
        use tokio::io::AsyncWriteExt as _;
        upload.file.flush().await.map_err(|source| BlobError::Io {
            step: "write an upload's file",
            source,
        })?;
        let actual = BlobHash(upload.hasher.clone().finalize().into());
        if actual != upload.hash {
            return Err(BlobError::Mismatch {
                expected: upload.hash,
                actual,
            });
        }
        let this = Arc::clone(self);
        let owner = owner.to_string();
        tokio::spawn(async move { this.commit(&owner, upload).await })
            .await
            .map_err(|e| BlobError::Io {
                step: "store an upload",
                source: std::io::Error::other(e.to_string()),
            })?
    }

    async fn commit(&self, owner: &str, upload: Box<BlobUpload>) -> Result<(), BlobError> {
        let (hash, size) = (upload.hash, upload.size);
        let _files = self.files.lock().await;
        // Reserve first, so that two uploads at once cannot both pass a quota.
        let must_store = {
            let mut index = self.index.lock().expect("blob index lock");
            let index = &mut *index;
            let now = Instant::now();
            if index.held_or_room(&self.cfg, owner, &hash, size)? {
                return Ok(());
            }
            let exists = index.blobs.contains_key(&hash);
            if !exists {
                index.total += size;
            }
            if !index
                .blobs
                .get(&hash)
                .is_some_and(|b| b.holds.contains_key(owner))
            {
                *index.held.entry(owner.to_string()).or_default() += size;
            }
            let blob = index.blobs.entry(hash).or_insert_with(|| Blob {
                bytes: size,
                stored: false,
                holds: HashMap::new(),
            });
            blob.holds.insert(owner.to_string(), now);
            !blob.stored
        };
        let written = async {
            if must_store {
                self.objects.put_file(&hash.key(), &upload.path).await?;
            }
            self.objects
                .put(&hold_key(owner, &hash), Bytes::new())
                .await
        }
        .await;
        drop(upload);
        match written {
            Ok(()) => {
                let mut index = self.index.lock().expect("blob index lock");
                if let Some(b) = index.blobs.get_mut(&hash) {
                    b.stored = true;
                }
                Ok(())
            }
            Err(e) => {
                self.drop_holds_locked(&[(hash, owner.to_string())], None)
                    .await;
                Err(e.into())
            }
        }
    }

    /// [`BlobService::begin`], one write of `bytes` and [`BlobService::finish`].
    pub async fn upload(
        self: &Arc<Self>,
        owner: &str,
        hash: BlobHash,
        bytes: Bytes,
    ) -> Result<(), BlobError> {
        match self.begin(owner, hash, bytes.len() as u64).await? {
            Begun::Held => Ok(()),
            Begun::Upload(mut upload) => {
                upload.write(&bytes).await?;
                self.finish(owner, upload).await
            }
        }
    }

    /// The bytes of blob `hash`, which `owner` must hold, checked against their hash (its idle
    /// clock restarts).
    pub async fn read(&self, owner: &str, hash: BlobHash) -> Result<Bytes, BlobError> {
        if self.check(owner, &[hash]) != [true] {
            return Err(BlobError::Missing(hash));
        }
        let bytes = self.objects.get(&hash.key()).await?;
        let intact = match &bytes {
            Some(b) => hash_of(b.clone()).await == hash,
            None => false,
        };
        if !intact {
            let holders: Vec<(BlobHash, String)> = {
                let index = self.index.lock().expect("blob index lock");
                index
                    .blobs
                    .get(&hash)
                    .map(|b| b.holds.keys().map(|o| (hash, o.clone())).collect())
                    .unwrap_or_default()
            };
            tracing::error!(blob = %hash, "a stored blob is gone or does not match its hash; dropped");
            self.drop_holds(&holders, None).await;
            return Err(BlobError::Damaged(hash));
        }
        Ok(bytes.unwrap_or_default())
    }

    /// Drops the holds unused for longer than the TTL (and the blobs no one holds any more);
    /// returns how many holds went.
    pub async fn reap(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<(BlobHash, String)> = {
            let index = self.index.lock().expect("blob index lock");
            index
                .blobs
                .iter()
                .filter(|(_, b)| b.stored)
                .flat_map(|(h, b)| {
                    b.holds
                        .iter()
                        .filter(|(_, at)| now.duration_since(**at) > self.cfg.ttl)
                        .map(|(o, _)| (*h, o.clone()))
                })
                .collect()
        };
        let cutoff = now.checked_sub(self.cfg.ttl).unwrap_or(now);
        self.drop_holds(&expired, Some(cutoff)).await;
        expired.len()
    }

    /// Drops `holds` (for the reaper, only those still unused since `idle_since`), and the
    /// blobs no one holds any more.
    async fn drop_holds(&self, holds: &[(BlobHash, String)], idle_since: Option<Instant>) {
        let _files = self.files.lock().await;
        self.drop_holds_locked(holds, idle_since).await;
    }

    async fn drop_holds_locked(&self, holds: &[(BlobHash, String)], idle_since: Option<Instant>) {
        let mut gone = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut index = self.index.lock().expect("blob index lock");
            let index = &mut *index;
            for (hash, owner) in holds {
                let Some(blob) = index.blobs.get_mut(hash) else {
                    continue;
                };
                let used_since = blob
                    .holds
                    .get(owner)
                    .zip(idle_since)
                    .is_some_and(|(at, since)| *at > since);
                if used_since {
                    continue;
                }
                if blob.holds.remove(owner).is_some() {
                    dropped.push((*hash, owner.clone()));
                    if let Some(n) = index.held.get_mut(owner) {
                        *n = n.saturating_sub(blob.bytes);
                        if *n == 0 {
                            index.held.remove(owner);
                        }
                    }
                }
                if blob.holds.is_empty() {
                    index.total = index.total.saturating_sub(blob.bytes);
                    index.blobs.remove(hash);
                    gone.push(*hash);
                }
            }
        }
        for (hash, owner) in &dropped {
            if let Err(e) = self.objects.remove(&hold_key(owner, hash)).await {
                tracing::warn!(error = %e, "deleting a blob's hold");
            }
        }
        for hash in gone {
            if let Err(e) = self.objects.remove(&hash.key()).await {
                tracing::warn!(error = %e, "deleting a blob");
            }
        }
    }
}

#[cfg(test)]
mod tests;

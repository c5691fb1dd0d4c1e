//! Host uids for sandboxes. Each sandbox maps its root and its user onto a pair of host uids that
//! nothing else on the host uses while it lives: its files, its processes and the kernel's per-user
//! counters (inotify instances and watches, queued signals, user namespaces) are its own.
//!
//! The uids come from a range no one else hands out: by default `0x7000_0000..0x7FFE_0000`,
//! which systemd leaves unused (below it are container ranges, above it the foreign-uid range),
//! minus anything `/etc/subuid` or `/etc/subgid` delegates. A Kiln process claims one block of the
//! range with an exclusive `flock` on `<lock dir>/block-<n>` and hands its slots out one sandbox
//! at a time; the kernel drops the lock when the process dies. So two Kiln processes on one host,
//! in any PID namespace that shares the lock directory, never give two sandboxes the same uids.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::FlockOperation;

/// Host uids per sandbox: one for its root (the warden), one for its user.
pub const UIDS_PER_SANDBOX: u32 = 2;
/// Sandboxes per block: a Kiln process can have this many alive at once.
pub const SLOTS_PER_BLOCK: u32 = 1 << 16;
const BLOCK_UIDS: u32 = SLOTS_PER_BLOCK * UIDS_PER_SANDBOX;

/// Where the block locks live unless configured otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/kiln/uid-blocks";

/// A range of host uids (and the same gids) that Kiln may give sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        Self {
            first: 0x7000_0000,
            count: 0x7FFE_0000 - 0x7000_0000,
        }
    }
}

/// Why no block of uids could be claimed.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The lock directory or a lock file.
    #[error("uid block lock {path}: {source}")]
    Lock {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Every block is held by another Kiln process or overlaps a subordinate id range.
    #[error("no free block of {BLOCK_UIDS} host uids in {first}..{end} (each Kiln process holds one; /etc/subuid and /etc/subgid ranges are skipped)")]
    Exhausted {
        /// The range's first uid.
        first: u32,
        /// One past its last.
        end: u64,
    },
}

/// One Kiln process's block of host uids.
#[derive(Debug)]
pub struct UidBlock {
    first: u32,
    index: u32,
    slots: Mutex<Slots>,
    _lock: File,
}

#[derive(Debug)]
struct Slots {
    used: Vec<u64>,
    next: u32,
}

/// One sandbox's pair of host uids, given back to the block when dropped.
#[derive(Debug)]
pub struct UidLease {
    block: Arc<UidBlock>,
    slot: u32,
}

impl UidLease {
    /// The host uid of the sandbox's root (the warden); the same number is its gid.
    pub fn root(&self) -> u32 {
        self.block.first + self.slot * UIDS_PER_SANDBOX
    }

    /// The host uid of the sandbox's user; the same number is its gid.
    pub fn user(&self) -> u32 {
        self.root() + 1
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        let mut slots = self.block.slots.lock().expect("uid slots lock");
        let (word, bit) = (self.slot as usize / 64, self.slot % 64);
        slots.used[word] &= !(1u64 << bit);
    }
}

/// `start..end` ranges of `/etc/subuid` or `/etc/subgid` (`name:start:count` lines).
fn subordinate_ranges(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let _owner = parts.next()?;
            let start: u64 = parts.next()?.trim().parse().ok()?;
            let count: u64 = parts.next()?.trim().parse().ok()?;
            Some((start, start + count))
        })
        .collect()
}

fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    ranges.iter().any(|&(s, e)| s < end && start < e)
}

impl UidBlock {
    /// Claims the first free block of `range` that no subordinate id range overlaps.
    pub fn claim(range: UidRange, lock_dir: &Path) -> Result<Arc<Self>, UidError> {
        let mut avoid = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                avoid.extend(subordinate_ranges(&text));
            }
        }
        Self::claim_avoiding(range, lock_dir, &avoid)
    }

    fn claim_avoiding(
        range: UidRange,
        lock_dir: &Path,
        avoid: &[(u64, u64)],
    ) -> Result<Arc<Self>, UidError> {
        let lock_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UidError::Lock { path, source }
        };
        std::fs::create_dir_all(lock_dir).map_err(lock_err(lock_dir))?;
        for index in 0..range.count / BLOCK_UIDS {
            let first = range.first + index * BLOCK_UIDS;
            if overlaps(
                avoid,
                u64::from(first),
                u64::from(first) + u64::from(BLOCK_UIDS),
            ) {
                continue;
            }
            let path = lock_dir.join(format!("block-{index}"));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(lock_err(&path))?;
            match rustix::fs::flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    return Ok(Arc::new(Self {
                        first,
                        index,
                        slots: Mutex::new(Slots {
                            used: vec![0; SLOTS_PER_BLOCK as usize / 64],
                            next: 0,
                        }),
                        _lock: file,
                    }))
                }
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(lock_err(&path)(e.into())),
            }
        }
        Err(UidError::Exhausted {
            first: range.first,
            end: u64::from(range.first) + u64::from(range.count),
        })
    }

    /// The block's number in its range.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The next free pair of uids, or `None` when every slot of the block is in use.
    pub fn lease(self: &Arc<Self>) -> Option<UidLease> {
        let mut slots = self.slots.lock().expect("uid slots lock");
        for step in 0..SLOTS_PER_BLOCK {
            let slot = (slots.next + step) % SLOTS_PER_BLOCK;
            let (word, bit) = (slot as usize / 64, slot % 64);
            if slots.used[word] & (1u64 << bit) == 0 {
                slots.used[word] |= 1u64 << bit;
                slots.next = (slot + 1) % SLOTS_PER_BLOCK;
                return Some(UidLease {
                    block: self.clone(),
                    slot,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_skipped_and_blocks_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 1 << 20,
            count: 3 * BLOCK_UIDS,
        };
        // The first block overlaps a subuid range: the claim takes the second.
        let avoid = subordinate_ranges("user:1048600:65536\n# comment\n");
        let a = UidBlock::claim_avoiding(range, dir.path(), &avoid).unwrap();
        assert_eq!(a.index(), 1);
        // Held: another claim (another open file, as another process would have) gets the third.
        let b = UidBlock::claim_avoiding(range, dir.path(), &avoid).unwrap();
        assert_eq!(b.index(), 2);
        assert!(UidBlock::claim_avoiding(range, dir.path(), &avoid).is_err());
        drop(b);
        let c = UidBlock::claim_avoiding(range, dir.path(), &avoid).unwrap();
        assert_eq!(c.index(), 2);
    }

    #[test]
    fn leases_are_distinct_until_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let block = UidBlock::claim_avoiding(UidRange::default(), dir.path(), &[]).unwrap();
        let one = block.lease().unwrap();
        let two = block.lease().unwrap();
        assert_eq!(one.root(), 0x7000_0000);
        assert_eq!(one.user(), 0x7000_0001);
        assert_eq!(two.root(), 0x7000_0002);
        let slot = one.slot;
        drop(one);
        // The cursor moves on; a freed slot comes back only after a full turn.
        let three = block.lease().unwrap();
        assert_eq!(three.slot, 2);
        let mut all: Vec<UidLease> = (3..SLOTS_PER_BLOCK)
            .map(|_| block.lease().unwrap())
            .collect();
        let again = block.lease().unwrap();
        assert_eq!(again.slot, slot);
        assert!(block.lease().is_none());
        all.clear();
        assert!(block.lease().is_some());
    }
}

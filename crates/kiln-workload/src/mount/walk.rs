//! The walk of one mount's host directory for [`super::load`]: the rules, the selection, the
//! limits and the symlink policy applied to each path, in name order, directories before
//! their contents.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Dir, FileType, Stat};

use super::config::{FollowSymlinks, MountPlan, MountSpec};
use super::host::{self, Followed};
use super::load::{Baseline, Entry, EntryKind, Loaded, LoadedMount, Select, SkipReason, Skipped};
use super::rules::Permission;
use super::{guest_path, join_rel, link_target_rel};

/// How many skipped paths are listed; the rest are only counted, so that a huge tree does not
/// turn into a huge report.
const MAX_SKIPPED_LISTED: usize = 1_000;
/// How deep a walk goes; past it a directory is skipped as `unreadable`.
const MAX_DEPTH: usize = 128;

/// Walks the mount `spec`, whose root is open as `root`, adding to `out`'s report; `files`
/// counts the files and links loaded by the whole call.
pub(super) fn walk_mount(
    plan: &MountPlan,
    spec: &MountSpec,
    root: OwnedFd,
    select: Select,
    out: &mut Loaded,
    files: &mut usize,
) -> LoadedMount {
    let mut w = Walk {
        plan,
        root,
        canon: &spec.host,
        guest: &spec.guest,
        select,
        mount: LoadedMount {
            guest: spec.guest.clone(),
            host: spec.host.clone(),
            entries: Vec::new(),
            baseline: BTreeMap::new(),
        },
        pending: Vec::new(),
        entered: HashMap::new(),
        ancestors: Vec::new(),
        out,
        files,
    };
    w.walk_root();
    w.mount
}

/// A directory entered but not yet emitted: in `lazy` and `explicit` modes a directory is
/// emitted only once something under it is loaded, or when it is wanted as a whole.
#[derive(Debug)]
struct Pending {
    rel: String,
    mode: u32,
    emitted: bool,
}

#[derive(Debug)]
struct Child {
    name: String,
    stat: Result<Stat, String>,
    /// A link's target, read while its directory was open.
    link: Option<Result<Vec<u8>, String>>,
}

struct Walk<'a> {
    plan: &'a MountPlan,
    root: OwnedFd,
    canon: &'a Path,
    guest: &'a str,
    select: Select,
    mount: LoadedMount,
    pending: Vec<Pending>,
    /// Directories entered so far, with the guest path they were first entered at.
    entered: HashMap<(u64, u64), String>,
    /// The directories on the current path, the root first.
    ancestors: Vec<(u64, u64)>,
    out: &'a mut Loaded,
    files: &'a mut usize,
}

impl Walk<'_> {
    fn walk_root(&mut self) {
        if self.select == Select::Nothing {
            return;
        }
        let key = match rustix::fs::fstat(&self.root) {
            Ok(st) => host::ident(&st),
            Err(e) => {
                self.skip("", 0, SkipReason::Unreadable, Some(e.to_string()));
                return;
            }
        };
        self.ancestors.push(key);
        self.entered.insert(key, self.guest.to_owned());
        let covered = self.select == Select::All;
        self.walk_dir("", "", covered, 0);
    }

    fn walk_dir(&mut self, guest_rel: &str, real_rel: &str, covered: bool, depth: usize) {
        let children = match self.list(real_rel) {
            Ok(c) => c,
            Err(e) => {
                self.skip(guest_rel, 0, SkipReason::Unreadable, Some(e.to_string()));
                return;
            }
        };
        for c in children {
            self.child(guest_rel, real_rel, covered, c, depth);
        }
    }

    /// A directory's entries, sorted, with their `lstat`: read while it is open, so that the
    /// walk holds one descriptor per level only while listing, however deep it goes.
    fn list(&self, real_rel: &str) -> std::io::Result<Vec<Child>> {
        let mut dir = Dir::new(host::open_dir(&self.root, real_rel)?)?;
        let mut names = Vec::new();
        while let Some(ent) = dir.read() {
            let ent = ent?;
            let name = ent.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        let fd = dir.fd()?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let name = match String::from_utf8(name) {
                Ok(n) => n,
                Err(e) => {
                    out.push(Child {
                        name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                        stat: Err("the name is not valid UTF-8".into()),
                        link: None,
                    });
                    continue;
                }
            };
            let stat = host::lstat_at(fd, &name).map_err(|e| e.to_string());
            let link = match &stat {
                Ok(st) if host::file_type(st) == FileType::Symlink => {
                    Some(host::read_link_at(fd, &name).map_err(|e| e.to_string()))
                }
                _ => None,
            };
            out.push(Child { name, stat, link });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn file_wanted(&self, rel: &str, covered: bool) -> bool {
        match &self.select {
            Select::All => true,
            Select::Nothing => false,
            Select::Some { refs } => {
                covered || self.plan.include.is_match(rel) || refs.iter().any(|r| r == rel)
            }
        }
    }

    /// (whether everything under the directory is wanted, whether to descend at all).
    fn dir_wanted(&self, rel: &str, covered: bool) -> (bool, bool) {
        match &self.select {
            Select::All => (true, true),
            Select::Nothing => (false, false),
            Select::Some { refs } => {
                let whole =
                    covered || self.plan.include.is_match(rel) || refs.iter().any(|r| r == rel);
                let below = refs
                    .iter()
                    .any(|r| r.strip_prefix(rel).is_some_and(|t| t.starts_with('/')));
                (whole, whole || below || self.plan.has_include)
            }
        }
    }

    /// Whether `p` is allowed on the path the code will see and, for what a link led to, on
    /// the path it really is: a link must not be a way around a rule.
    fn allowed(&self, guest_rel: &str, real_rel: &str, via_link: bool, p: Permission) -> bool {
        let perms = &self.plan.permissions;
        perms.allows(guest_rel, p) && (!via_link || perms.allows(real_rel, p))
    }

    fn child(&mut self, dir_guest: &str, dir_real: &str, covered: bool, c: Child, depth: usize) {
        let guest_rel = join_rel(dir_guest, &c.name);
        let want_file = self.file_wanted(&guest_rel, covered);
        let (dir_covered, want_dir) = self.dir_wanted(&guest_rel, covered);
        if !want_file && !want_dir {
            return;
        }
        let st = match c.stat {
            Ok(st) => st,
            Err(msg) => return self.skip(&guest_rel, 0, SkipReason::Unreadable, Some(msg)),
        };
        let real_rel = join_rel(dir_real, &c.name);
        if host::file_type(&st) != FileType::Symlink {
            let want = (want_file, want_dir, dir_covered);
            return self.entry(&guest_rel, &real_rel, false, &st, want, depth);
        }
        let perms = &self.plan.permissions;
        if !perms.allows(&guest_rel, Permission::Read)
            && !perms.allows(&guest_rel, Permission::List)
        {
            self.out.hidden += 1;
            return;
        }
        if self.plan.follow == FollowSymlinks::Never {
            if want_file {
                self.keep_link(dir_guest, &guest_rel, c.link);
            }
            return;
        }
        match host::follow(&self.root, self.canon, &real_rel, self.plan.follow) {
            Followed::Inside { real, stat } => {
                let want = (want_file, want_dir, dir_covered);
                self.entry(&guest_rel, &real, true, &stat, want, depth)
            }
            Followed::Escape => self.skip(&guest_rel, 0, SkipReason::SymlinkEscape, None),
            Followed::Loop => self.skip(
                &guest_rel,
                0,
                SkipReason::SymlinkLoop,
                Some("too many levels of symlinks".into()),
            ),
            Followed::Broken => self.skip(
                &guest_rel,
                0,
                SkipReason::Unreadable,
                Some("a broken symlink: its target does not exist".into()),
            ),
            Followed::Failed(e) => {
                self.skip(&guest_rel, 0, SkipReason::Unreadable, Some(e.to_string()))
            }
        }
    }

    /// A file or directory the walk reached (through a link when `via_link`); `want` is
    /// (file wanted, directory wanted, directory wanted as a whole).
    fn entry(
        &mut self,
        guest_rel: &str,
        real_rel: &str,
        via_link: bool,
        st: &Stat,
        want: (bool, bool, bool),
        depth: usize,
    ) {
        let (want_file, want_dir, dir_covered) = want;
        match host::file_type(st) {
            FileType::RegularFile if want_file => self.file(guest_rel, real_rel, via_link, st),
            FileType::Directory if want_dir => {
                self.dir(guest_rel, real_rel, via_link, st, dir_covered, depth)
            }
            FileType::RegularFile | FileType::Directory => {}
            _ if want_file => {
                if self.allowed(guest_rel, real_rel, via_link, Permission::Read) {
                    self.skip(guest_rel, host::size(st), SkipReason::SpecialFile, None);
                } else {
                    self.out.hidden += 1;
                }
            }
            _ => {}
        }
    }

    fn file(&mut self, guest_rel: &str, real_rel: &str, via_link: bool, st: &Stat) {
        if !self.allowed(guest_rel, real_rel, via_link, Permission::Read) {
            self.out.hidden += 1;
            return;
        }
        let size = host::size(st);
        let lim = self.plan.limits;
        let reason = if *self.files >= lim.max_files {
            Some(SkipReason::TooManyFiles)
        } else if size > lim.max_file_size {
            Some(SkipReason::TooLarge)
        } else if self.out.total_bytes.saturating_add(size) > lim.max_total_size {
            Some(SkipReason::TotalExceeded)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.skip(guest_rel, size, reason, None);
        }
        let room_total = lim.max_total_size - self.out.total_bytes;
        let room = lim.max_file_size.min(room_total);
        let read = host::open_file(&self.root, real_rel)
            .and_then(|(fd, st)| host::read_limited(fd, room).map(|c| (c, st)));
        let (content, st) = match read {
            Ok((Some(content), st)) => (content, st),
            Ok((None, _)) => {
                // It grew between the stat and the read.
                let reason = if room < lim.max_file_size {
                    SkipReason::TotalExceeded
                } else {
                    SkipReason::TooLarge
                };
                return self.skip(guest_rel, room.saturating_add(1), reason, None);
            }
            Err(e) => {
                return self.skip(guest_rel, size, SkipReason::Unreadable, Some(e.to_string()))
            }
        };
        self.flush();
        let len = content.len() as u64;
        let mode = host::perm_bits(&st);
        self.mount.baseline.insert(
            guest_rel.to_owned(),
            Baseline {
                kind: EntryKind::File,
                size: len,
                sha256: Some(host::sha256_hex(&content)),
                mode,
            },
        );
        self.mount.entries.push(Entry::File {
            rel: guest_rel.to_owned(),
            content,
            mode,
        });
        *self.files += 1;
        self.out.total_bytes += len;
    }

    fn dir(
        &mut self,
        guest_rel: &str,
        real_rel: &str,
        via_link: bool,
        st: &Stat,
        covered: bool,
        depth: usize,
    ) {
        if !self.allowed(guest_rel, real_rel, via_link, Permission::List) {
            self.out.hidden += 1;
            return;
        }
        let key = host::ident(st);
        if self.ancestors.contains(&key) {
            let first = self.entered.get(&key).cloned().unwrap_or_default();
            let msg = format!("leads back to {first}");
            return self.skip(guest_rel, 0, SkipReason::SymlinkLoop, Some(msg));
        }
        if via_link {
            if let Some(first) = self.entered.get(&key) {
                let msg = format!("the same directory as {first}");
                return self.skip(guest_rel, 0, SkipReason::SymlinkLoop, Some(msg));
            }
        }
        if depth >= MAX_DEPTH {
            let msg = format!("nested deeper than {MAX_DEPTH} directories");
            return self.skip(guest_rel, 0, SkipReason::Unreadable, Some(msg));
        }
        let at = guest_path(self.guest, guest_rel);
        self.entered.entry(key).or_insert(at);
        self.pending.push(Pending {
            rel: guest_rel.to_owned(),
            mode: host::perm_bits(st),
            emitted: false,
        });
        if covered {
            self.flush();
        }
        self.ancestors.push(key);
        self.walk_dir(guest_rel, real_rel, covered, depth + 1);
        self.ancestors.pop();
        self.pending.pop();
    }

    /// A link kept as a link (`followSymlinks: false`).
    fn keep_link(
        &mut self,
        dir_guest: &str,
        guest_rel: &str,
        link: Option<Result<Vec<u8>, String>>,
    ) {
        if !self.plan.permissions.allows(guest_rel, Permission::Read) {
            self.out.hidden += 1;
            return;
        }
        let target = match link {
            Some(Ok(t)) => t,
            Some(Err(msg)) => return self.skip(guest_rel, 0, SkipReason::Unreadable, Some(msg)),
            None => {
                let msg = Some("the link could not be read".to_owned());
                return self.skip(guest_rel, 0, SkipReason::Unreadable, msg);
            }
        };
        let size = target.len() as u64;
        let Ok(target) = String::from_utf8(target) else {
            let msg = Some("the link's target is not valid UTF-8".to_owned());
            return self.skip(guest_rel, size, SkipReason::Unreadable, msg);
        };
        if link_target_rel(dir_guest, &target).is_none() {
            return self.skip(guest_rel, size, SkipReason::SymlinkEscape, None);
        }
        if *self.files >= self.plan.limits.max_files {
            return self.skip(guest_rel, size, SkipReason::TooManyFiles, None);
        }
        self.flush();
        self.mount.baseline.insert(
            guest_rel.to_owned(),
            Baseline {
                kind: EntryKind::Symlink,
                size,
                sha256: Some(host::sha256_hex(target.as_bytes())),
                mode: 0o777,
            },
        );
        self.mount.entries.push(Entry::Symlink {
            rel: guest_rel.to_owned(),
            target,
        });
        *self.files += 1;
    }

    /// Emits the pending directories, outermost first.
    fn flush(&mut self) {
        for p in self.pending.iter_mut().filter(|p| !p.emitted) {
            p.emitted = true;
            self.mount.baseline.insert(
                p.rel.clone(),
                Baseline {
                    kind: EntryKind::Dir,
                    size: 0,
                    sha256: None,
                    mode: p.mode,
                },
            );
            self.mount.entries.push(Entry::Dir {
                rel: p.rel.clone(),
                mode: p.mode,
            });
        }
    }

    fn skip(&mut self, rel: &str, size: u64, reason: SkipReason, message: Option<String>) {
        if self.out.skipped.len() >= MAX_SKIPPED_LISTED {
            self.out.skipped_unlisted += 1;
            return;
        }
        self.out.skipped.push(Skipped {
            path: guest_path(self.guest, rel),
            size,
            reason,
            message,
        });
    }
}

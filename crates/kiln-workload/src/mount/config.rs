//! The mount request (seed 002's wire shape) and its validation into a [`MountPlan`].

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::GlobSet;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::rules::{covering_set, Permissions, PermissionsConfig};
use super::{
    rel_in_mount, unclean_abs, MountError, MountLimits, SyncRoot, RESERVED_EXACT, RESERVED_GUEST,
};

/// A call's `mount` field.
///
/// Defaults of the optional parts: `permissions` readable and listable, nothing writable (see
/// [`crate::mount::DefaultPermissions`]); `loading.mode` `eager`; `sync.mode` `batch` with
/// `onError: rollback`; `security.followSymlinks` `restricted`; `onPermissionDenied`
/// `virtual`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountConfig {
    /// `{ guestPath: hostPath }`. Guest paths are absolute and normalised, outside the
    /// sandbox's system trees, and no two nest.
    pub dirs: BTreeMap<String, String>,
    #[serde(default)]
    pub permissions: PermissionsConfig,
    #[serde(default)]
    pub loading: LoadingConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub on_permission_denied: OnPermissionDenied,
}

/// Which files are copied into the sandbox before the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadingMode {
    /// Every readable file of every mount (the default).
    #[default]
    Eager,
    /// The sandbox's programs are native processes, so Kiln cannot fault a file in when it is
    /// first opened. `lazy` therefore loads what the call references: each guest path named in
    /// the call's arguments that lies in a mount (a file, or a directory and everything
    /// readable under it), plus the files matching `loading.include`.
    Lazy,
    /// Only the files matching `loading.include`; an empty `include` loads nothing.
    Explicit,
}

/// `loading`. `include` globs work like `exclude` ones: one that matches a directory covers
/// what is under it. `maxFileSize` and `maxTotalSize` (and Kiln's `maxFiles`) can only lower the
/// operator's caps (by default 10 MiB, 64 MiB and 10 000 files).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadingConfig {
    #[serde(default)]
    pub mode: LoadingMode,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub max_file_size: Option<u64>,
    #[serde(default)]
    pub max_total_size: Option<u64>,
    #[serde(default)]
    pub max_files: Option<usize>,
}

/// When kept changes reach the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Right after the call (the default).
    #[default]
    Batch,
    /// Only reported; a later `POST /v1/functions/sync` applies the ones the client picks.
    Manual,
}

/// What a failing change does to the rest of a sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop and restore the host directories to their state before the sync (the default).
    #[default]
    Rollback,
    /// Go on with the other changes and report the failures.
    Continue,
    /// Stop at the first failure, keeping what was already written.
    Abort,
}

/// `sync`. Defaults: `batch`, `rollback`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default)]
    pub mode: SyncMode,
    #[serde(default)]
    pub on_error: OnError,
}

/// How host symlinks are loaded. Whatever the mode, none is ever followed out of its mount,
/// and writes back never go through one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FollowSymlinks {
    /// `false`: links are copied as links, never read through; one whose target, read
    /// lexically from its directory, leaves the mount (absolute targets always do) is skipped.
    Never,
    /// `"restricted"` (the default): followed while every step of the resolution stays inside
    /// the mount; a link that leaves it on the way, even to come back, is skipped.
    #[default]
    Restricted,
    /// `true`: followed to the final target, which must be inside the mount.
    Always,
}

impl Serialize for FollowSymlinks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FollowSymlinks::Never => s.serialize_bool(false),
            FollowSymlinks::Restricted => s.serialize_str("restricted"),
            FollowSymlinks::Always => s.serialize_bool(true),
        }
    }
}

impl<'de> Deserialize<'de> for FollowSymlinks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FollowSymlinks;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or \"restricted\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FollowSymlinks, E> {
                Ok(if v {
                    FollowSymlinks::Always
                } else {
                    FollowSymlinks::Never
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FollowSymlinks, E> {
                match v {
                    "restricted" => Ok(FollowSymlinks::Restricted),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `security`. Default: `followSymlinks: "restricted"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    #[serde(default)]
    pub follow_symlinks: FollowSymlinks,
}

/// What a change the rules refuse does to the call. This module always reports such changes
/// in [`crate::mount::MountChanges::denied`] and never syncs them; the policy tells the caller
/// what to do with that list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPermissionDenied {
    /// The call fails with the denied changes as its error.
    Throw,
    /// The denied changes are dropped from the response.
    Ignore,
    /// The default: the code saw its changes in the sandbox (a copy, so they were "virtual"
    /// all along); they are reported as denied and not synced.
    #[default]
    Virtual,
}

/// One validated mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The guest path, absolute and normalised.
    pub guest: String,
    /// The canonical host directory.
    pub host: PathBuf,
    /// How the request names it, for messages: `mount.dirs["/data"]`.
    pub field: String,
}

/// A validated mount request, ready for [`crate::mount::load`] and [`crate::mount::sync`].
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// The mounts, ordered by guest path.
    pub mounts: Vec<MountSpec>,
    pub permissions: Permissions,
    pub mode: LoadingMode,
    pub(crate) include: GlobSet,
    pub(crate) has_include: bool,
    /// The effective caps: the operator's, lowered by the request's.
    pub limits: MountLimits,
    pub follow: FollowSymlinks,
    pub sync: SyncConfig,
    pub on_permission_denied: OnPermissionDenied,
}

impl MountPlan {
    /// Validates `config`: guest paths, host directories (under `allowed_roots` when given),
    /// globs, and the request's limits against the operator's `limits`.
    pub fn prepare(
        config: &MountConfig,
        allowed_roots: Option<&[PathBuf]>,
        limits: MountLimits,
    ) -> Result<Self, MountError> {
        let mut mounts = Vec::with_capacity(config.dirs.len());
        for (guest, host) in &config.dirs {
            let field = format!("mount.dirs[{}]", serde_json::Value::from(guest.as_str()));
            check_guest(&field, guest)?;
            let host = resolve_host_dir(Path::new(host), allowed_roots)
                .map_err(|e| e.in_field(field.clone()))?;
            mounts.push(MountSpec {
                guest: guest.clone(),
                host,
                field,
            });
        }
        for (i, a) in mounts.iter().enumerate() {
            for b in &mounts[i + 1..] {
                if rel_in_mount(&a.guest, &b.guest).is_some()
                    || rel_in_mount(&b.guest, &a.guest).is_some()
                {
                    return Err(MountError::invalid(
                        b.field.clone(),
                        format!("overlaps the mount at {}", a.guest),
                    ));
                }
            }
        }
        let permissions = Permissions::compile(&config.permissions, "mount.permissions")?;
        let include = covering_set("mount.loading.include", &config.loading.include)?;
        let l = &config.loading;
        let limits = MountLimits {
            max_file_size: l
                .max_file_size
                .map_or(limits.max_file_size, |v| v.min(limits.max_file_size)),
            max_total_size: l
                .max_total_size
                .map_or(limits.max_total_size, |v| v.min(limits.max_total_size)),
            max_files: l
                .max_files
                .map_or(limits.max_files, |v| v.min(limits.max_files)),
        };
        Ok(MountPlan {
            mounts,
            permissions,
            mode: l.mode,
            include,
            has_include: !l.include.is_empty(),
            limits,
            follow: config.security.follow_symlinks,
            sync: config.sync,
            on_permission_denied: config.on_permission_denied,
        })
    }

    /// Each mount's guest and host ends.
    pub fn roots(&self) -> Vec<SyncRoot> {
        self.mounts
            .iter()
            .map(|m| SyncRoot {
                guest: m.guest.clone(),
                host: m.host.clone(),
            })
            .collect()
    }

    /// The mount holding guest path `path`, and `path` relative to it.
    pub fn mount_for<'a>(&self, path: &'a str) -> Option<(usize, &'a str)> {
        self.mounts
            .iter()
            .enumerate()
            .find_map(|(i, m)| rel_in_mount(&m.guest, path).map(|rel| (i, rel)))
    }
}

fn check_guest(field: &str, guest: &str) -> Result<(), MountError> {
    if let Some(reason) = unclean_abs(guest) {
        return Err(MountError::invalid(
            field,
            format!("the guest path {reason}"),
        ));
    }
    if guest == "/" {
        return Err(MountError::invalid(field, "cannot mount over `/`"));
    }
    if RESERVED_EXACT.contains(&guest) {
        return Err(MountError::invalid(
            field,
            format!("cannot mount at {guest} itself (a directory under it is fine)"),
        ));
    }
    if let Some(r) = RESERVED_GUEST
        .iter()
        .find(|r| rel_in_mount(r, guest).is_some())
    {
        return Err(MountError::invalid(
            field,
            format!("cannot mount at or under {r}"),
        ));
    }
    Ok(())
}

/// Canonicalises a host directory and checks it: it must exist and be a directory, and when
/// `allowed_roots` is given (the HTTP face; the CLI passes `None`) it must be absolute and
/// equal to or under one of the canonicalised roots, wherever its symlinks and `..` lead.
///
/// The errors name `host` as given, never where it resolved to, and a path outside the roots
/// is refused as [`MountError::NotAllowed`] whether or not it exists, so the HTTP face is no
/// oracle for the host's layout.
pub fn resolve_host_dir(
    host: &Path,
    allowed_roots: Option<&[PathBuf]>,
) -> Result<PathBuf, MountError> {
    let host_err = |reason: &str| MountError::HostDir {
        path: host.to_owned(),
        reason: reason.to_owned(),
    };
    if host.as_os_str().is_empty() {
        return Err(host_err("the host path is empty"));
    }
    let roots = match allowed_roots {
        None => None,
        Some(roots) => {
            if !host.is_absolute() {
                return Err(host_err("the host path must be absolute"));
            }
            // A root that does not exist allows nothing.
            Some(
                roots
                    .iter()
                    .filter_map(|r| std::fs::canonicalize(r).ok())
                    .collect::<Vec<_>>(),
            )
        }
    };
    let inside = |p: &Path| match &roots {
        None => true,
        Some(roots) => roots.iter().any(|r| p.starts_with(r)),
    };
    match std::fs::canonicalize(host) {
        Ok(canon) => {
            if !inside(&canon) {
                return Err(MountError::NotAllowed {
                    path: host.to_owned(),
                });
            }
            match std::fs::metadata(&canon) {
                Ok(m) if m.is_dir() => Ok(canon),
                Ok(_) => Err(host_err("is not a directory")),
                Err(e) => Err(MountError::Io {
                    step: "inspecting",
                    path: host.to_owned(),
                    source: e,
                }),
            }
        }
        Err(e) => {
            if roots.is_some() && !inside(&deepest_existing(host)) {
                return Err(MountError::NotAllowed {
                    path: host.to_owned(),
                });
            }
            if e.kind() == io::ErrorKind::NotFound {
                Err(host_err("does not exist"))
            } else {
                Err(MountError::Io {
                    step: "resolving",
                    path: host.to_owned(),
                    source: e,
                })
            }
        }
    }
}

/// The canonical form of the longest prefix of `path` that resolves, with the rest appended
/// lexically: where `path` would be if its missing part were created.
fn deepest_existing(path: &Path) -> PathBuf {
    let mut rest: Vec<Component> = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(canon) = std::fs::canonicalize(cur) {
            let mut out = canon;
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::Normal(n) => out.push(n),
                    _ => {}
                }
            }
            return out;
        }
        let mut comps = cur.components();
        match comps.next_back() {
            Some(c) => rest.push(c),
            None => return PathBuf::from("/"),
        }
        cur = comps.as_path();
        if cur.as_os_str().is_empty() {
            return PathBuf::from("/");
        }
    }
}

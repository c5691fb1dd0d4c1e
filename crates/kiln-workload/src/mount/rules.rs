//! Permission rules: which of `read`, `list`, `create`, `modify` and `delete` a mount allows on
//! a path, from the request's defaults, prioritised glob rules and `exclude` list.

use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MountError;

/// One thing a rule may allow or deny on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// A file (or, with `followSymlinks: false`, a link) is copied into the sandbox.
    Read,
    /// A directory is materialised in the sandbox; denied, nothing under it is loaded. The
    /// mount root itself is always listed.
    List,
    /// A path the call created may be synced back.
    Create,
    /// A loaded path whose content or kind the call changed may be synced back.
    Modify,
    /// A loaded path the call removed may be removed on the host.
    Delete,
}

impl Permission {
    /// All permissions, in wire order.
    pub const ALL: [Permission; 5] = [
        Permission::Read,
        Permission::List,
        Permission::Create,
        Permission::Modify,
        Permission::Delete,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::List => "list",
            Permission::Create => "create",
            Permission::Modify => "modify",
            Permission::Delete => "delete",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of permissions: on the wire a list (`["read", "list"]`) or `"*"` for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermSet(u8);

impl PermSet {
    /// No permission.
    pub const NONE: PermSet = PermSet(0);
    /// Every permission (`"*"`).
    pub const ALL: PermSet = PermSet(0b1_1111);

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The set with `p` added.
    pub fn with(self, p: Permission) -> PermSet {
        PermSet(self.0 | p.bit())
    }
}

impl FromIterator<Permission> for PermSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        iter.into_iter().fold(PermSet::NONE, PermSet::with)
    }
}

impl Serialize for PermSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == PermSet::ALL {
            return s.serialize_str("*");
        }
        let list: Vec<Permission> = Permission::ALL
            .into_iter()
            .filter(|p| self.contains(*p))
            .collect();
        list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PermSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PermSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"*\" or a list of \"read\", \"list\", \"create\", \"modify\", \"delete\"",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PermSet, E> {
                if v == "*" {
                    Ok(PermSet::ALL)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PermSet, A::Error> {
                let mut set = PermSet::NONE;
                while let Some(p) = seq.next_element::<Permission>()? {
                    set = set.with(p);
                }
                Ok(set)
            }
        }
        d.deserialize_any(V)
    }
}

/// `permissions.default`: what applies where no rule mentions a permission. Defaults: `read`
/// and `list` true (a mount is readable), `create`, `modify` and `delete` false (nothing is
/// written back unless the request says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultPermissions {
    pub read: bool,
    pub list: bool,
    pub create: bool,
    pub modify: bool,
    pub delete: bool,
}

impl Default for DefaultPermissions {
    fn default() -> Self {
        DefaultPermissions {
            read: true,
            list: true,
            create: false,
            modify: false,
            delete: false,
        }
    }
}

impl DefaultPermissions {
    fn get(&self, p: Permission) -> bool {
        match p {
            Permission::Read => self.read,
            Permission::List => self.list,
            Permission::Create => self.create,
            Permission::Modify => self.modify,
            Permission::Delete => self.delete,
        }
    }
}

/// One entry of `permissions.rules`. `pattern` is a glob over the rel path (`*` stays within a
/// component, `**` crosses them, `?`, `[a-z]`, `[!0-9]` and `{a,b}` as usual; `*` also matches
/// names starting with `.`); it matches the whole rel path, so `*.txt` matches `a.txt` and not
/// `dir/a.txt`. A leading `/` or `./` and a trailing `/` are ignored. `priority` defaults to 0;
/// higher wins; on equal priority a deny beats an allow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    pub pattern: String,
    #[serde(default)]
    pub allow: PermSet,
    #[serde(default)]
    pub deny: PermSet,
    #[serde(default)]
    pub priority: i64,
}

/// `permissions`: defaults, rules, and `exclude`, globs that are neither loaded nor synced
/// (deny-`*` rules above every priority). An exclude pattern also covers everything under the
/// paths it matches: `node_modules` excludes `node_modules/**`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionsConfig {
    pub default: DefaultPermissions,
    pub rules: Vec<RuleConfig>,
    pub exclude: Vec<String>,
}

impl PermissionsConfig {
    /// Everything allowed: what a CLI user who mounts a directory read-write means.
    pub fn all_allowed() -> Self {
        PermissionsConfig {
            default: DefaultPermissions {
                read: true,
                list: true,
                create: true,
                modify: true,
                delete: true,
            },
            ..PermissionsConfig::default()
        }
    }
}

/// What decided a [`Decision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// An `exclude` pattern.
    Exclude(String),
    /// A rule, by its pattern and priority.
    Rule { pattern: String, priority: i64 },
    /// `permissions.default`.
    Default,
}

/// The answer for one (path, permission).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub by: DecidedBy,
}

impl Decision {
    /// A sentence for a client on why `p` is refused (or granted).
    pub fn describe(&self, p: Permission) -> String {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match &self.by {
            DecidedBy::Exclude(pat) => format!("{} {verdict}: excluded by `{pat}`", p.as_str()),
            DecidedBy::Rule { pattern, priority } => format!(
                "{} {verdict} by the rule `{pattern}` (priority {priority})",
                p.as_str()
            ),
            DecidedBy::Default => format!("{} {verdict} by the default permissions", p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    allow: PermSet,
    deny: PermSet,
    priority: i64,
}

/// Compiled permissions of a mount request; the same rules apply to every mount of it, each
/// against paths relative to its own root.
#[derive(Debug, Clone)]
pub struct Permissions {
    default: DefaultPermissions,
    rules: Vec<Rule>,
    rule_set: GlobSet,
    exclude: Vec<String>,
    /// Two globs per exclude pattern (itself, and everything under it), index / 2 names it.
    exclude_set: GlobSet,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            default: DefaultPermissions::default(),
            rules: Vec::new(),
            rule_set: GlobSet::empty(),
            exclude: Vec::new(),
            exclude_set: GlobSet::empty(),
        }
    }
}

/// Compiles one glob of the request; `field` names it in the error.
pub(crate) fn compile_glob(field: &str, pattern: &str) -> Result<Glob, MountError> {
    let mut p = pattern;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() {
        return Err(MountError::invalid(field, "the pattern is empty"));
    }
    GlobBuilder::new(p)
        .literal_separator(true)
        .build()
        .map_err(|source| MountError::Pattern {
            field: field.to_owned(),
            pattern: pattern.to_owned(),
            source,
        })
}

/// A glob set over `patterns`, each covering also what is under what it matches.
pub(crate) fn covering_set(field: &str, patterns: &[String]) -> Result<GlobSet, MountError> {
    let mut b = GlobSetBuilder::new();
    for (i, pat) in patterns.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let glob = compile_glob(&f, pat)?;
        let under = compile_glob(&f, &format!("{}/**", glob.glob()))?;
        b.add(glob);
        b.add(under);
    }
    b.build().map_err(|source| MountError::Pattern {
        field: field.to_owned(),
        pattern: patterns.join(", "),
        source,
    })
}

impl Permissions {
    /// Compiles `permissions`; `field` is the request's name for it (`mount.permissions`).
    pub fn compile(cfg: &PermissionsConfig, field: &str) -> Result<Self, MountError> {
        let mut b = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, r) in cfg.rules.iter().enumerate() {
            b.add(compile_glob(
                &format!("{field}.rules[{i}].pattern"),
                &r.pattern,
            )?);
            rules.push(Rule {
                pattern: r.pattern.clone(),
                allow: r.allow,
                deny: r.deny,
                priority: r.priority,
            });
        }
        let rule_set = b.build().map_err(|source| MountError::Pattern {
            field: format!("{field}.rules"),
            pattern: String::new(),
            source,
        })?;
        let exclude_set = covering_set(&format!("{field}.exclude"), &cfg.exclude)?;
        Ok(Permissions {
            default: cfg.default,
            rules,
            rule_set,
            exclude: cfg.exclude.clone(),
            exclude_set,
        })
    }

    /// Decides `p` on `rel` (a rel path; the mount root is `""`).
    pub fn decide(&self, rel: &str, p: Permission) -> Decision {
        if let Some(i) = self.exclude_set.matches(rel).first() {
            return Decision {
                allowed: false,
                by: DecidedBy::Exclude(self.exclude[i / 2].clone()),
            };
        }
        // (priority, deny, rule index): the maximum decides, deny ordering above allow.
        let mut best: Option<(i64, bool, usize)> = None;
        for i in self.rule_set.matches(rel) {
            let r = &self.rules[i];
            let deny = r.deny.contains(p);
            if !deny && !r.allow.contains(p) {
                continue;
            }
            let better = match best {
                None => true,
                Some((prio, best_deny, _)) => {
                    r.priority > prio || (r.priority == prio && deny && !best_deny)
                }
            };
            if better {
                best = Some((r.priority, deny, i));
            }
        }
        match best {
            Some((priority, deny, i)) => Decision {
                allowed: !deny,
                by: DecidedBy::Rule {
                    pattern: self.rules[i].pattern.clone(),
                    priority,
                },
            },
            None => Decision {
                allowed: self.default.get(p),
                by: DecidedBy::Default,
            },
        }
    }

    /// Whether `p` is allowed on `rel`.
    pub fn allows(&self, rel: &str, p: Permission) -> bool {
        self.decide(rel, p).allowed
    }

    /// Whether `rel` is excluded (neither loaded nor synced, whatever the rules say).
    pub fn is_excluded(&self, rel: &str) -> bool {
        self.exclude_set.is_match(rel)
    }
}

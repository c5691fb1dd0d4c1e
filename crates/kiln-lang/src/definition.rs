//! The shape of a language file and its checks.

use std::path::PathBuf;

use serde::Deserialize;

/// Why a language file is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// It is not valid TOML of the expected shape.
    #[error("language file {file}: {source}")]
    Parse {
        /// The file's name.
        file: String,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A field holds a value that cannot work.
    #[error("language file {file}: {field}: {reason}")]
    Invalid {
        /// The file's name.
        file: String,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Limits of one stage. Absent fields fall back to the engine's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageLimits {
    /// Wall-clock time in ms.
    pub wall_ms: Option<u64>,
    /// CPU time in ms.
    pub cpu_ms: Option<u64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Output in KiB.
    pub output_kb: Option<u64>,
    /// Largest file written, in KiB.
    pub file_size_kb: Option<u64>,
}

/// How to learn the toolchain's version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// The command (looked up on the sandbox's PATH).
    pub command: Vec<String>,
    /// A regex over the command's stdout and stderr; its first group is the version.
    pub regex: String,
}

/// The compile stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileSpec {
    /// The command line, with placeholders (see [`crate::Recipe`]).
    pub argv: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// The stage's own limits.
    #[serde(default)]
    pub limits: StageLimits,
}

/// The run stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The command line, with placeholders (see [`crate::Recipe`]).
    pub argv: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// A line the runtime prints to stderr when the program ran out of the memory it was given
    /// (a managed heap sized from the limit): such a run is `memory_limit`, not an error exit.
    pub memory_error: Option<String>,
    /// The smallest file-size limit the runtime starts under, KiB: a lower one a client asks
    /// for is raised to it (the BEAM's JIT sizes an in-memory file for its code).
    pub min_file_size_kb: Option<u64>,
}

/// The names a language has in the APIs Kiln is compatible with: data, so that a language file
/// brings its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compat {
    /// Judge0 CE 1.13.1's ids of the language, each with Judge0's name for it (`{}` is where the
    /// toolchain's version goes). Several ids may name one language (Judge0 listed each compiler
    /// version it had).
    #[serde(default)]
    pub judge0: Vec<(u32, String)>,
    /// Piston's name (when it is not Kiln's) and the runtime Piston lists it under.
    #[serde(default)]
    pub piston: PistonName,
}

/// A language as Piston lists it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PistonName {
    /// Piston's name; Kiln's when absent.
    pub name: Option<String>,
    /// The package Piston runs it with, where one package serves several languages (`gcc`).
    pub runtime: Option<String>,
}

/// One language, as its file says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Language {
    /// The name clients use.
    pub name: String,
    /// Other names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// File extensions (without the dot) that mean this language.
    pub extensions: Vec<String>,
    /// The entry file's default name.
    pub entry: String,
    /// Whether programs read stdin as a live stream.
    pub interactive: bool,
    /// How to read the version.
    pub version: VersionSpec,
    /// The compile stage, for compiled languages.
    pub compile: Option<CompileSpec>,
    /// The run stage.
    pub run: RunSpec,
    /// Default limits of the run stage.
    #[serde(default)]
    pub limits: StageLimits,
    /// Extra read-only mounts: (host path, path inside).
    #[serde(default)]
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// Its names in the APIs Kiln is compatible with.
    #[serde(default)]
    pub compat: Compat,
}

impl Language {
    /// Parses and checks a language file.
    pub fn parse(file: &str, text: &str) -> Result<Self, DefinitionError> {
        let lang: Language = toml::from_str(text).map_err(|e| DefinitionError::Parse {
            file: file.to_string(),
            source: Box::new(e),
        })?;
        lang.check(file)?;
        Ok(lang)
    }

    fn check(&self, file: &str) -> Result<(), DefinitionError> {
        let invalid = |field, reason: &str| DefinitionError::Invalid {
            file: file.to_string(),
            field,
            reason: reason.to_string(),
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.#".contains(c))
        };
        if !plain(&self.name) || self.name != self.name.to_ascii_lowercase() {
            return Err(invalid("name", "must be a lowercase word"));
        }
        if let Some(a) = self.aliases.iter().find(|a| !plain(a)) {
            return Err(invalid("aliases", &format!("{a:?} is not a plain word")));
        }
        if self.extensions.is_empty() {
            return Err(invalid("extensions", "at least one is needed"));
        }
        if self.entry.contains('/')
            || !self
                .extensions
                .iter()
                .any(|e| self.entry.ends_with(&format!(".{e}")))
        {
            return Err(invalid(
                "entry",
                "must be a file name with one of the extensions",
            ));
        }
        if self.version.command.is_empty() {
            return Err(invalid("version.command", "is empty"));
        }
        let re = regex::Regex::new(&self.version.regex)
            .map_err(|e| invalid("version.regex", &e.to_string()))?;
        if re.captures_len() < 2 {
            return Err(invalid(
                "version.regex",
                "needs a capture group for the version",
            ));
        }
        if self.run.argv.is_empty() {
            return Err(invalid("run.argv", "is empty"));
        }
        if self.run.argv.iter().any(|a| a == "{options}") {
            return Err(invalid(
                "run.argv",
                "{options} belongs to the compile stage",
            ));
        }
        if self.compile.as_ref().is_some_and(|c| c.argv.is_empty()) {
            return Err(invalid("compile.argv", "is empty"));
        }
        for env in self
            .run
            .env
            .iter()
            .chain(self.compile.iter().flat_map(|c| &c.env))
        {
            if !env.contains('=') {
                return Err(invalid("env", &format!("{env:?} is not KEY=value")));
            }
        }
        if let Some((id, _)) = self.compat.judge0.iter().find(|(_, n)| n.trim().is_empty()) {
            return Err(invalid("compat.judge0", &format!("id {id} has no name")));
        }
        if let Some(name) = &self.compat.piston.name {
            if !self.answers_to(name) {
                return Err(invalid(
                    "compat.piston.name",
                    "must be the name or an alias, so that Piston's requests find the language",
                ));
            }
        }
        Ok(())
    }

    /// Piston's name of the language.
    pub fn piston_name(&self) -> &str {
        self.compat.piston.name.as_deref().unwrap_or(&self.name)
    }

    /// Whether `name` is this language's name or one of its aliases (case-insensitive).
    pub fn answers_to(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// Whether it has a compile stage.
    pub fn is_compiled(&self) -> bool {
        self.compile.is_some()
    }

    /// Whether its compile command takes a client's extra options (`{options}`).
    pub fn takes_compile_options(&self) -> bool {
        self.compile
            .as_ref()
            .is_some_and(|c| c.argv.iter().any(|a| a == "{options}"))
    }
}

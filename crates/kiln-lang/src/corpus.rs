//! The conformance corpus: for each language, `languages/corpus/<name>.toml` holds the programs every
//! language must get right (hello world, live stdin, arguments, exit codes, errors, two files, UTF-8
//! and both limits). The test suite runs every case of every available language in real sandboxes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::definition::{DefinitionError, StageLimits};

/// Cases every language has.
pub const REQUIRED: &[&str] = &[
    "hello",
    "args",
    "exit_code",
    "runtime_error",
    "two_files",
    "utf8",
    "cpu_limit",
    "memory_limit",
];
/// Required of interactive languages.
pub const REQUIRED_INTERACTIVE: &[&str] = &["echo"];
/// Required of compiled languages.
pub const REQUIRED_COMPILED: &[&str] = &["compile_error"];

/// One program and what must come of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Its files: name → content. The language's entry file goes first.
    pub files: BTreeMap<String, String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// All of stdin at once.
    pub stdin: Option<String>,
    /// Lines sent one at a time; each must come back on stdout before the next is sent.
    #[serde(default)]
    pub echo_lines: Vec<String>,
    /// Limits of the run stage.
    #[serde(default)]
    pub limits: StageLimits,
    /// The verdict.
    #[serde(default = "ok")]
    pub status: String,
    /// The exit code of the run stage, when it matters.
    pub exit_code: Option<i32>,
    /// The whole of stdout.
    pub stdout: Option<String>,
    /// Something stdout contains.
    pub stdout_contains: Option<String>,
    /// Something stderr contains.
    pub stderr_contains: Option<String>,
    /// Something the compiler's output contains.
    pub compile_output_contains: Option<String>,
}

fn ok() -> String {
    "ok".to_string()
}

/// A language's cases.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// By name.
    pub cases: BTreeMap<String, Case>,
}

impl Corpus {
    /// Parses `languages/corpus/<stem>.toml`.
    pub fn parse(stem: &str, text: &str) -> Result<Self, DefinitionError> {
        let cases = toml::from_str(text).map_err(|e| DefinitionError::Parse {
            file: format!("corpus/{stem}.toml"),
            source: Box::new(e),
        })?;
        Ok(Self { cases })
    }

    /// The embedded corpus of `language`, if there is one.
    pub fn embedded(language: &str) -> Option<Result<Self, DefinitionError>> {
        crate::EMBEDDED
            .iter()
            .find(|(stem, _, _)| *stem == language)
            .and_then(|(stem, _, corpus)| corpus.map(|c| Self::parse(stem, c)))
    }

    /// The required cases this corpus lacks.
    pub fn missing(&self, interactive: bool, compiled: bool) -> Vec<&'static str> {
        REQUIRED
            .iter()
            .chain(if interactive {
                REQUIRED_INTERACTIVE
            } else {
                &[]
            })
            .chain(if compiled { REQUIRED_COMPILED } else { &[] })
            .filter(|name| !self.cases.contains_key(**name))
            .copied()
            .collect()
    }
}

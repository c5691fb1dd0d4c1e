//! The catalog: every language file embedded in Kiln, which of them this host can run, and lookup by
//! name, alias or file extension.

use std::sync::OnceLock;

use crate::definition::{DefinitionError, Language};
use crate::detect::{self, DetectError};

/// A language and what detection found.
#[derive(Debug, Clone)]
pub struct Detected {
    /// The definition.
    pub language: Language,
    /// The toolchain's version, or why it is unusable.
    pub version: Result<String, DetectError>,
}

impl Detected {
    /// Whether the toolchain is present.
    pub fn available(&self) -> bool {
        self.version.is_ok()
    }
}

/// All languages Kiln knows, with detection done once.
#[derive(Debug)]
pub struct Catalog {
    languages: Vec<Language>,
    detected: OnceLock<Vec<Detected>>,
}

impl Catalog {
    /// The languages embedded from `languages/*.toml`.
    pub fn embedded() -> Result<Self, DefinitionError> {
        let languages = crate::EMBEDDED
            .iter()
            .map(|(stem, text, _)| Language::parse(&format!("{stem}.toml"), text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(languages))
    }

    /// A catalog of the given languages.
    pub fn new(languages: Vec<Language>) -> Self {
        Self {
            languages,
            detected: OnceLock::new(),
        }
    }

    /// Every language, available or not.
    pub fn all(&self) -> &[Language] {
        &self.languages
    }

    /// Detection results for every language (run once, in parallel).
    pub fn detected(&self) -> &[Detected] {
        self.detected.get_or_init(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .languages
                    .iter()
                    .map(|l| scope.spawn(move || detect::version(&l.version)))
                    .collect();
                self.languages
                    .iter()
                    .zip(handles)
                    .map(|(l, h)| Detected {
                        language: l.clone(),
                        version: h.join().unwrap_or_else(|_| {
                            Err(DetectError::Failed {
                                command: l.version.command.join(" "),
                                reason: "detection panicked".into(),
                            })
                        }),
                    })
                    .collect()
            })
        })
    }

    /// The languages this host can run.
    pub fn available(&self) -> impl Iterator<Item = &Detected> {
        self.detected().iter().filter(|d| d.available())
    }

    /// Finds a language by name or alias, available or not.
    pub fn find(&self, name: &str) -> Option<&Detected> {
        self.detected().iter().find(|d| d.language.answers_to(name))
    }

    /// Finds a language by a file's extension.
    pub fn by_extension(&self, file: &str) -> Option<&Detected> {
        let ext = file.rsplit_once('.')?.1;
        self.detected().iter().find(|d| {
            d.language
                .extensions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(ext))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_language_parses_and_names_are_unique() {
        let catalog = Catalog::embedded().expect("language files parse");
        assert!(
            catalog.all().len() >= 14,
            "{} languages",
            catalog.all().len()
        );
        let mut names = std::collections::HashSet::new();
        for lang in catalog.all() {
            for n in std::iter::once(&lang.name).chain(&lang.aliases) {
                assert!(names.insert(n.to_ascii_lowercase()), "{n} is claimed twice");
            }
        }
        let mut exts = std::collections::HashSet::new();
        for lang in catalog.all() {
            for e in &lang.extensions {
                assert!(exts.insert(e.clone()), "extension {e} is claimed twice");
            }
        }
    }

    #[test]
    fn every_language_has_judge0_ids_of_its_own() {
        let catalog = Catalog::embedded().expect("language files parse");
        let mut ids = std::collections::HashMap::new();
        for lang in catalog.all() {
            assert!(
                !lang.compat.judge0.is_empty(),
                "{} has no Judge0 id",
                lang.name
            );
            for (id, name) in &lang.compat.judge0 {
                assert!(name.contains("{}"), "{}: {name} has no version", lang.name);
                if let Some(other) = ids.insert(*id, &lang.name) {
                    panic!("Judge0 id {id} is claimed by {other} and {}", lang.name);
                }
            }
        }
        // The ids Judge0 CE 1.13.1 gave the languages that arrived with its clients.
        for (id, name) in [
            (45, "nasm"),
            (51, "csharp"),
            (57, "elixir"),
            (58, "erlang"),
            (59, "fortran"),
            (61, "haskell"),
            (65, "ocaml"),
            (67, "pascal"),
            (69, "prolog"),
            (78, "kotlin"),
            (81, "scala"),
            (86, "clojure"),
        ] {
            assert_eq!(ids.get(&id).map(|n| n.as_str()), Some(name), "id {id}");
        }
    }

    #[test]
    fn every_language_has_a_corpus() {
        for (stem, _, corpus) in crate::EMBEDDED {
            let corpus =
                corpus.unwrap_or_else(|| panic!("languages/corpus/{stem}.toml is missing"));
            crate::corpus::Corpus::parse(stem, corpus).expect("corpus parses");
        }
    }
}

//! Turning a language and a program (its files and arguments) into the command lines of its stages.
//!
//! Placeholders in `argv` and `env`:
//! - `{sources}` (a whole argument): every file with one of the language's extensions, entry first;
//! - `{args}` (a whole argument): the program's arguments;
//! - `{options}` (a whole argument, compile stage): extra compiler options a client gave, in a
//!   language that takes them;
//! - `{entry}`, `{entry_stem}`: the entry file's name, with and without its extension;
//! - `{memory_mb}`, `{memory_bytes}`: the run stage's memory limit, for runtimes that size a heap;
//! - `{heap_mb}`: three quarters of it, for a managed heap that must leave room for the runtime.

use crate::definition::{Language, StageLimits};

/// A file of the program, relative to `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The relative path.
    pub name: String,
    /// The content.
    pub content: Vec<u8>,
}

/// One stage, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The command line.
    pub argv: Vec<String>,
    /// Extra environment (`KEY=value`), on top of the sandbox's defaults.
    pub env: Vec<String>,
    /// The stage's limits from the language file.
    pub limits: StageLimits,
}

/// The stages of one program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The compile stage, if the language has one.
    pub compile: Option<Stage>,
    /// The run stage.
    pub run: Stage,
    /// See [`crate::RunSpec::memory_error`].
    pub memory_error: Option<String>,
}

/// Why a program cannot be turned into stages.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecipeError {
    /// No files were given.
    #[error("a program needs at least one file")]
    NoFiles,
}

/// The memory the run stage gets when neither the program nor the language says.
const DEFAULT_MEMORY_MB: u64 = 256;

impl Language {
    /// The stages for a program whose files are `files` (the first is the entry), whose
    /// arguments are `args` and whose extra compiler options are `options`, with a run-stage
    /// memory limit of `memory_mb` (if known).
    pub fn recipe(
        &self,
        files: &[String],
        args: &[String],
        options: &[String],
        memory_mb: Option<u64>,
    ) -> Result<Recipe, RecipeError> {
        let entry = files.first().ok_or(RecipeError::NoFiles)?;
        let stem = entry
            .rsplit('/')
            .next()
            .unwrap_or(entry)
            .split('.')
            .next()
            .unwrap_or(entry)
            .to_string();
        let sources: Vec<String> = std::iter::once(entry.clone())
            .chain(
                files[1..]
                    .iter()
                    .filter(|f| {
                        self.extensions
                            .iter()
                            .any(|e| f.ends_with(&format!(".{e}")))
                    })
                    .cloned(),
            )
            .collect();
        let memory_mb = memory_mb
            .or(self.limits.memory_mb)
            .unwrap_or(DEFAULT_MEMORY_MB);
        let fill = |s: &str| {
            s.replace("{entry_stem}", &stem)
                .replace("{entry}", entry)
                .replace("{memory_mb}", &memory_mb.to_string())
                .replace("{memory_bytes}", &(memory_mb << 20).to_string())
                .replace("{heap_mb}", &(memory_mb * 3 / 4).max(16).to_string())
        };
        let expand = |argv: &[String]| -> Vec<String> {
            argv.iter()
                .flat_map(|a| match a.as_str() {
                    "{sources}" => sources.clone(),
                    "{args}" => args.to_vec(),
                    "{options}" => options.to_vec(),
                    other => vec![fill(other)],
                })
                .collect()
        };
        let env = |env: &[String]| env.iter().map(|e| fill(e)).collect();
        Ok(Recipe {
            compile: self.compile.as_ref().map(|c| Stage {
                argv: expand(&c.argv),
                env: env(&c.env),
                limits: c.limits,
            }),
            run: Stage {
                argv: expand(&self.run.argv),
                env: env(&self.run.env),
                limits: self.limits,
            },
            memory_error: self.run.memory_error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAVA_LIKE: &str = r#"
name = "javaish"
extensions = ["java"]
entry = "Main.java"
interactive = true
version = { command = ["java", "-version"], regex = 'version "([^"]+)"' }
compile = { argv = ["javac", "{options}", "-d", ".", "{sources}"], limits = { memory_mb = 512 } }
run = { argv = ["java", "-XX:MaxRAM={memory_bytes}", "{entry_stem}", "{args}"], env = ["HEAP={memory_mb}"] }
limits = { memory_mb = 128 }
"#;

    #[test]
    fn placeholders_expand() {
        let lang = Language::parse("javaish.toml", JAVA_LIKE).unwrap();
        let files = vec![
            "Hello.java".to_string(),
            "Other.java".into(),
            "data.txt".into(),
        ];
        let r = lang
            .recipe(&files, &["a".into(), "b c".into()], &["-g".into()], None)
            .unwrap();
        let compile = r.compile.unwrap();
        assert_eq!(
            compile.argv,
            ["javac", "-g", "-d", ".", "Hello.java", "Other.java"]
        );
        assert_eq!(compile.limits.memory_mb, Some(512));
        assert_eq!(
            r.run.argv,
            ["java", "-XX:MaxRAM=134217728", "Hello", "a", "b c"]
        );
        assert_eq!(r.run.env, ["HEAP=128"]);
        let r = lang.recipe(&files, &[], &[], Some(64)).unwrap();
        assert_eq!(r.run.argv[1], "-XX:MaxRAM=67108864");
        assert_eq!(lang.recipe(&[], &[], &[], None), Err(RecipeError::NoFiles));
    }

    #[test]
    fn bad_definitions_are_refused_with_the_field() {
        let broken = JAVA_LIKE.replace(r#"regex = 'version "([^"]+)"'"#, r#"regex = 'version'"#);
        let err = Language::parse("x.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("version.regex"), "{err}");
        let broken = JAVA_LIKE.replace("entry = \"Main.java\"", "entry = \"Main.py\"");
        let err = Language::parse("x.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("entry"), "{err}");
        let err = Language::parse("x.toml", "name = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml"), "{err}");
        let broken = JAVA_LIKE.replace(r#""{entry_stem}", "{args}""#, r#""{options}""#);
        let err = Language::parse("x.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("run.argv"), "{err}");
        let broken = format!("{JAVA_LIKE}\n[compat]\npiston = {{ name = \"kotlin\" }}\n");
        let err = Language::parse("x.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("compat.piston.name"), "{err}");
        let broken = format!("{JAVA_LIKE}\n[compat]\njudge0 = [[62, \"\"]]\n");
        let err = Language::parse("x.toml", &broken).unwrap_err().to_string();
        assert!(err.contains("compat.judge0"), "{err}");
        let fine = format!("{JAVA_LIKE}\n[compat]\njudge0 = [[62, \"Java ({{}})\"]]\n");
        assert_eq!(
            Language::parse("x.toml", &fine).unwrap().piston_name(),
            "javaish"
        );
    }
}

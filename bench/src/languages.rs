//! Hello world in each language through `run_program` (a sandbox from the warm pool, the language's
//! real compile and run stages, then the destroy), side by side with the same command lines run bare
//! on the host.
//!
//! Both sides start from nothing each time: Kiln gets a fresh sandbox, the bare side a fresh
//! directory on tmpfs (as `/workspace` and `/tmp` are in a sandbox) with HOME, TMPDIR and every
//! `/tmp/...` or `/workspace/...` in the stage's environment pointed into it. So a compiler's cache
//! (GOCACHE) is cold on both sides, and nothing compiled is ever reused.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_engine::runner::default_env;
use kiln_engine::{Limits, SandboxShape, Status, StdinSource, Stream};
use kiln_lang::corpus::Corpus;
use kiln_lang::{Catalog, Detected, Language, Recipe, SourceFile, Stage};
use kiln_workload::{limit_overrides, run_limits, run_program, Program};
use serde_json::{json, Value};

use crate::kiln::Kiln;
use crate::stats::{finite, Samples};

/// Kiln's total within this ratio of bare, for a language without a compile stage.
pub const TARGET_INTERPRETED: f64 = 1.15;
/// Kiln's total within this ratio of bare compile + bare run, for a compiled language.
pub const TARGET_COMPILED: f64 = 1.10;

/// What one language measured.
#[derive(Debug)]
pub struct LangResult {
    pub name: String,
    pub version: String,
    pub compiled: bool,
    /// Whether Kiln's sandboxes came from the pool; a language with extra mounts cannot use it.
    pub pooled: bool,
    /// Create the directory, write the files, compile, run.
    pub bare: Samples,
    pub bare_compile: Samples,
    pub bare_run: Samples,
    /// The whole `run_program` call.
    pub kiln: Samples,
    /// The stages' `wall_ms` (spawn to exit, whole ms as the engine reports them).
    pub kiln_compile: Samples,
    pub kiln_run: Samples,
    /// The whole call less both stages: take, file writes, limits, waiting for output, destroy.
    pub kiln_rest: Samples,
    /// Why the language was dropped; it is not measured further once it fails.
    pub failed: Option<String>,
}

impl LangResult {
    fn new(name: &str, version: &str, compiled: bool, pooled: bool) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            compiled,
            pooled,
            bare: Samples::default(),
            bare_compile: Samples::default(),
            bare_run: Samples::default(),
            kiln: Samples::default(),
            kiln_compile: Samples::default(),
            kiln_run: Samples::default(),
            kiln_rest: Samples::default(),
            failed: None,
        }
    }

    pub fn label(&self) -> String {
        let stages = if self.compiled {
            " (compile + run)"
        } else {
            ""
        };
        format!("{} {}{stages}", self.name, self.version)
    }

    pub fn ratio(&self) -> f64 {
        self.kiln.median_ms() / self.bare.median_ms()
    }

    pub fn limit(&self) -> f64 {
        if self.compiled {
            TARGET_COMPILED
        } else {
            TARGET_INTERPRETED
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "compiled": self.compiled,
            "pooled": self.pooled,
            "failed": self.failed,
            "bare": {
                "total": self.bare.to_json(),
                "compile": self.compiled.then(|| self.bare_compile.to_json()),
                "run": self.bare_run.to_json(),
            },
            "kiln": {
                "total": self.kiln.to_json(),
                "compile": self.compiled.then(|| self.kiln_compile.to_json()),
                "run": self.kiln_run.to_json(),
                "rest": self.kiln_rest.to_json(),
            },
            "ratio": finite(self.ratio()),
            "limit": self.limit(),
        })
    }
}

/// The languages to measure: every available one, or those named (by name or alias). A named one
/// that is unknown is an error now, before hours of other phases; one whose toolchain is missing is
/// reported as failed.
pub fn select(catalog: &Catalog, names: &[String]) -> Result<Vec<Detected>> {
    if names.is_empty() {
        return Ok(catalog.available().cloned().collect());
    }
    names
        .iter()
        .map(|n| {
            catalog.find(n).cloned().with_context(|| {
                let known: Vec<&str> = catalog.all().iter().map(|l| l.name.as_str()).collect();
                format!("unknown language {n:?} (known: {})", known.join(", "))
            })
        })
        .collect()
}

/// A language's hello world, ready to run either way.
#[derive(Debug)]
struct Hello {
    language: Language,
    /// Entry first, as `run_program` wants.
    files: Vec<SourceFile>,
    args: Vec<String>,
    limits: Limits,
    /// The same stages `run_program` will build inside the sandbox.
    recipe: Recipe,
    stdout: String,
}

impl Hello {
    fn new(language: &Language) -> Result<Self> {
        let corpus = Corpus::embedded(&language.name)
            .context("no corpus")?
            .context("parse the corpus")?;
        let case = corpus
            .cases
            .get("hello")
            .context("the corpus has no hello case")?;
        let mut files: Vec<SourceFile> = case
            .files
            .iter()
            .map(|(name, content)| SourceFile {
                name: name.clone(),
                content: content.clone().into_bytes(),
            })
            .collect();
        if let Some(i) = files.iter().position(|f| f.name == language.entry) {
            files.swap(0, i);
        }
        let limits = run_limits(language, &limit_overrides(&case.limits));
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let memory_mb = limits.memory_bytes.map(|b| b >> 20);
        let recipe = language.recipe(&names, &case.args, &[], memory_mb)?;
        Ok(Self {
            language: language.clone(),
            files,
            args: case.args.clone(),
            limits,
            recipe,
            stdout: case
                .stdout
                .clone()
                .unwrap_or_else(|| "Hello, World!\n".into()),
        })
    }
}

/// One run's times.
#[derive(Debug)]
struct Timing {
    total: Duration,
    compile: Option<Duration>,
    run: Duration,
}

/// Runs every language once on each side untimed (it loads the toolchains into the page cache and
/// checks the output), then `iterations` timed rounds. Each round runs every language bare and in
/// Kiln, in alternating order, with the pool full and no destroy pending before each run.
pub async fn measure(
    kiln: &mut Kiln,
    picked: &[Detected],
    iterations: usize,
) -> Result<Vec<LangResult>> {
    let mut results = Vec::new();
    let mut hellos = Vec::new();
    for d in picked {
        let lang = &d.language;
        let version = d.version.as_deref().unwrap_or("?");
        let mut r = LangResult::new(
            &lang.name,
            version,
            lang.is_compiled(),
            lang.mounts.is_empty(),
        );
        let hello = match &d.version {
            Err(e) => Err(anyhow::anyhow!("toolchain unavailable: {e}")),
            Ok(_) => Hello::new(lang),
        };
        match hello {
            Ok(h) => hellos.push(Some(h)),
            Err(e) => {
                r.failed = Some(format!("{e:#}"));
                hellos.push(None);
            }
        }
        results.push(r);
    }

    let started = Instant::now();
    for round in 0..=iterations {
        let timed = round > 0;
        eprintln!(
            "languages: {} ({:.0} s)",
            if timed {
                format!("iteration {}/{iterations}", round - 1)
            } else {
                "warm-up".to_string()
            },
            started.elapsed().as_secs_f64()
        );
        for (r, slot) in results.iter_mut().zip(&mut hellos) {
            let Some(hello) = slot.as_ref() else { continue };
            let outcome = one_round(kiln, hello, round % 2 == 1).await;
            match outcome {
                Ok((bare, k)) if timed => record(r, &bare, &k),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{}: failed: {e:#}", r.label());
                    r.failed = Some(format!("{e:#}"));
                    *slot = None;
                }
            }
        }
    }
    kiln.settle().await?;
    Ok(results)
}

async fn one_round(kiln: &mut Kiln, hello: &Hello, kiln_first: bool) -> Result<(Timing, Timing)> {
    let mut bare = None;
    let mut k = None;
    for kiln_turn in [kiln_first, !kiln_first] {
        // The previous run's destroy and the pool's refill must not overlap this run.
        kiln.settle().await?;
        if kiln_turn {
            k = Some(in_kiln(kiln, hello).await.context("kiln")?);
        } else {
            bare = Some(tokio::task::block_in_place(|| bare_run(hello)).context("bare")?);
        }
    }
    Ok((
        bare.context("bare did not run")?,
        k.context("kiln did not run")?,
    ))
}

fn record(r: &mut LangResult, bare: &Timing, k: &Timing) {
    r.bare.push(bare.total);
    r.bare_run.push(bare.run);
    r.kiln.push(k.total);
    r.kiln_run.push(k.run);
    r.kiln_rest.push(
        k.total
            .saturating_sub(k.run + k.compile.unwrap_or_default()),
    );
    if let (Some(b), Some(c)) = (bare.compile, k.compile) {
        r.bare_compile.push(b);
        r.kiln_compile.push(c);
    }
}

async fn in_kiln(kiln: &Kiln, hello: &Hello) -> Result<Timing> {
    let program = Program {
        language: hello.language.clone(),
        files: hello.files.clone(),
        args: hello.args.clone(),
        compile_options: Vec::new(),
        stdin: StdinSource::Closed,
        limits: hello.limits.clone(),
        shape: SandboxShape::default(),
        capture: None,
    };
    let mut stdout = Vec::new();
    let mut other = Vec::new();
    let mut sink = |s: Stream, c: &[u8]| match s {
        Stream::Stdout => stdout.extend_from_slice(c),
        Stream::Stderr | Stream::Compile if other.len() < 4096 => other.extend_from_slice(c),
        _ => {}
    };
    let t = Instant::now();
    let result = run_program(&kiln.engine, program, &mut sink, None).await?;
    let total = t.elapsed();
    let why = || {
        let run = result.run.as_ref();
        format!(
            "{} (exit {:?}{}) {}",
            result.status.as_str(),
            run.and_then(|r| r.exit_code),
            run.and_then(|r| r.message.as_deref())
                .map_or(String::new(), |m| format!(", {m}")),
            String::from_utf8_lossy(&other).trim()
        )
    };
    let Some(run) = result.run.as_ref().filter(|_| result.status == Status::Ok) else {
        bail!("{}", why());
    };
    check_stdout(&stdout, &hello.stdout)?;
    Ok(Timing {
        total,
        compile: result
            .compile
            .as_ref()
            .map(|c| Duration::from_millis(c.result.wall_ms)),
        run: Duration::from_millis(run.wall_ms),
    })
}

fn check_stdout(got: &[u8], want: &str) -> Result<()> {
    if got != want.as_bytes() {
        bail!(
            "stdout {:?}, expected {want:?}",
            String::from_utf8_lossy(&got[..got.len().min(200)])
        );
    }
    Ok(())
}

/// Where bare runs get their directories: tmpfs like a sandbox's /workspace, so that neither side
/// writes its output to a disk.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory for each bare run; removed on drop, after the clock has stopped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = scratch_base().join(format!("kiln-bench-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::create_dir(dir.join("tmp")).context("create tmp")?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the files into a fresh directory and runs the recipe's stages there, timing the whole
/// (directory and files included, like Kiln's file writes) and each stage.
fn bare_run(hello: &Hello) -> Result<Timing> {
    let t = Instant::now();
    let dir = Scratch::new()?;
    for f in &hello.files {
        std::fs::write(dir.0.join(&f.name), &f.content)
            .with_context(|| format!("write {}", f.name))?;
    }
    let compile = match &hello.recipe.compile {
        Some(stage) => Some(bare_stage(stage, &dir.0).context("compile")?.0),
        None => None,
    };
    let (run, stdout) = bare_stage(&hello.recipe.run, &dir.0)?;
    let total = t.elapsed();
    check_stdout(&stdout, &hello.stdout)?;
    Ok(Timing {
        total,
        compile,
        run,
    })
}

/// Runs one stage with the sandbox's environment (relocated into `dir`) and pipes for its output,
/// as the warden gives it; returns its time and stdout.
fn bare_stage(stage: &Stage, dir: &Path) -> Result<(Duration, Vec<u8>)> {
    let env = bare_env(&stage.env, dir);
    let program = resolve(
        &stage.argv[0],
        dir,
        env.get("PATH").map_or("", String::as_str),
    );
    let t = Instant::now();
    let out = Command::new(&program)
        .args(&stage.argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawn {}", program.display()))?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "{:?} exited with {}: {}",
            stage.argv,
            out.status,
            tail.trim()
        );
    }
    Ok((elapsed, out.stdout))
}

/// The default environment with the stage's on top (a stage's `KEY=` replaces a default), as
/// `run_program` merges them, then moved into `dir`: HOME and `/workspace/...` to `dir`, TMPDIR and
/// `/tmp/...` to `dir/tmp`.
fn bare_env(stage_env: &[String], dir: &Path) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for kv in default_env().iter().chain(stage_env) {
        if let Some((k, v)) = kv.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    let tmp = dir.join("tmp");
    for v in env.values_mut() {
        for (inside, host) in [("/workspace", dir), ("/tmp", tmp.as_path())] {
            if let Some(rest) = v
                .strip_prefix(inside)
                .filter(|r| r.is_empty() || r.starts_with('/'))
            {
                *v = format!("{}{rest}", host.display());
            }
        }
    }
    env
}

/// The program's path: relative to `dir` if it has a slash, else the first match on `path`, so that
/// the bare side runs the binary a sandbox runs and not, say, a pyenv shim on the bench's own PATH.
fn resolve(program: &str, dir: &Path, path: &str) -> PathBuf {
    if program.contains('/') {
        return dir.join(program);
    }
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_moved_into_the_scratch_dir() {
        let dir = Path::new("/dev/shm/x");
        let env = bare_env(
            &[
                "GOCACHE=/tmp/go-cache".into(),
                "X=/tmpfoo".into(),
                "HOME=/tmp".into(),
            ],
            dir,
        );
        assert_eq!(env["GOCACHE"], "/dev/shm/x/tmp/go-cache");
        assert_eq!(env["X"], "/tmpfoo");
        assert_eq!(env["HOME"], "/dev/shm/x/tmp");
        assert_eq!(env["TMPDIR"], "/dev/shm/x/tmp");
        assert_eq!(env["PATH"], "/usr/local/bin:/usr/bin:/bin");
    }
}

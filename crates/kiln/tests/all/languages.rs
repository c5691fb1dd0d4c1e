//! The conformance corpus: every case of every language in `languages/corpus/`, run for real.
//! In CI (`KILN_REQUIRE_ISOLATION=1`) every catalog language must be installed; elsewhere a missing
//! toolchain is reported and skipped.

use std::time::Duration;

use kiln_engine::{
    Engine, EngineConfig, OutputSink, Phase, SandboxShape, Status, StdinSource, Stream,
};
use kiln_lang::corpus::{Case, Corpus};
use kiln_lang::{Catalog, Language, SourceFile};
use kiln_workload::{limit_overrides, run_limits, run_program, Program};

use crate::common::kiln_bin;
use crate::require_isolation;

/// How long an echoed line may take to come back.
const ECHO_TIMEOUT: Duration = Duration::from_secs(20);

fn required() -> bool {
    std::env::var("KILN_REQUIRE_ISOLATION").as_deref() == Ok("1")
}

fn files_of(language: &Language, case: &Case) -> Vec<SourceFile> {
    let mut names: Vec<&String> = case.files.keys().collect();
    // The entry file first, as `kiln run` takes it.
    names.sort_by_key(|n| (**n != language.entry, (*n).clone()));
    names
        .into_iter()
        .map(|n| SourceFile {
            name: n.clone(),
            content: case.files[n].as_bytes().to_vec(),
        })
        .collect()
}

/// What a case's run wrote, by stream; stdout also goes to the echo check, and the start of the
/// run stage is announced to it.
struct CaseSink<'a> {
    out: &'a mut Vec<u8>,
    err: &'a mut Vec<u8>,
    compile_out: &'a mut Vec<u8>,
    echo: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    running: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OutputSink for CaseSink<'_> {
    fn output(&mut self, stream: Stream, chunk: &[u8]) {
        match stream {
            Stream::Stdout => {
                self.out.extend_from_slice(chunk);
                let _ = self.echo.send(chunk.to_vec());
            }
            Stream::Stderr => self.err.extend_from_slice(chunk),
            Stream::Compile => self.compile_out.extend_from_slice(chunk),
        }
    }

    fn stage(&mut self, stage: Phase) {
        if stage == Phase::Running {
            if let Some(tx) = self.running.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// Runs one case; returns a description of every way it failed.
async fn check_case(engine: &Engine, language: &Language, name: &str, case: &Case) -> Vec<String> {
    let mut limits = run_limits(language, &limit_overrides(&case.limits));
    // Limits cases must end by their limit, not by the wall clock of a busy CI machine.
    limits.wall_time = Some(Duration::from_secs(30));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let stdin = match (&case.stdin, case.echo_lines.is_empty()) {
        (Some(s), _) => StdinSource::Bytes(s.as_bytes().to_vec()),
        (None, false) => StdinSource::Live(rx),
        (None, true) => StdinSource::Closed,
    };
    let (echo_tx, mut echo_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut compile_out = Vec::new();
    let (running_tx, running_rx) = tokio::sync::oneshot::channel();
    let mut sink = CaseSink {
        out: &mut out,
        err: &mut err,
        compile_out: &mut compile_out,
        echo: echo_tx,
        running: Some(running_tx),
    };
    let lines = case.echo_lines.clone();
    let echo = tokio::spawn(async move {
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        // The clock of the first line starts with the run stage, not with a slow compiler.
        if !lines.is_empty() && running_rx.await.is_err() {
            problems.push("the run stage never started".to_string());
            return problems;
        }
        for line in lines {
            if tx.send(format!("{line}\n").into_bytes()).await.is_err() {
                problems.push(format!("stdin closed before {line:?} was sent"));
                break;
            }
            let want = format!("{line}\n");
            // The line must come back before the next is sent: stdin is live, not buffered.
            let got = tokio::time::timeout(ECHO_TIMEOUT, async {
                while !String::from_utf8_lossy(&seen).contains(&want) {
                    match echo_rx.recv().await {
                        Some(c) => seen.extend_from_slice(&c),
                        None => break,
                    }
                }
            })
            .await;
            if got.is_err() || !String::from_utf8_lossy(&seen).contains(&want) {
                problems.push(format!(
                    "{line:?} was not echoed (got {:?})",
                    String::from_utf8_lossy(&seen)
                ));
                break;
            }
        }
        drop(tx);
        problems
    });
    let program = Program {
        language: language.clone(),
        files: files_of(language, case),
        args: case.args.clone(),
        compile_options: Vec::new(),
        stdin,
        limits,
        shape: SandboxShape::default(),
        capture: None,
    };
    let result = run_program(engine, program, &mut sink, None).await;
    // Its senders go with it: an echo check still waiting for the run stage ends.
    drop(sink);
    let mut problems = echo.await.unwrap_or_else(|e| vec![e.to_string()]);
    let result = match result {
        Ok(r) => r,
        Err(e) => return vec![format!("{}/{name}: engine error {e}", language.name)],
    };
    let out = String::from_utf8_lossy(&out);
    let err = String::from_utf8_lossy(&err);
    let compile_out = String::from_utf8_lossy(&compile_out);
    if result.status.as_str() != case.status {
        problems.push(format!(
            "status {} (want {})",
            result.status.as_str(),
            case.status
        ));
    }
    if let Some(code) = case.exit_code {
        let got = result.run.as_ref().and_then(|r| r.exit_code);
        if got != Some(code) {
            problems.push(format!("exit code {got:?} (want {code})"));
        }
    }
    if let Some(want) = &case.stdout {
        if out != want.as_str() {
            problems.push(format!("stdout {out:?} (want {want:?})"));
        }
    }
    for (what, text, want) in [
        ("stdout", &out, &case.stdout_contains),
        ("stderr", &err, &case.stderr_contains),
        (
            "compile output",
            &compile_out,
            &case.compile_output_contains,
        ),
    ] {
        if let Some(want) = want {
            if !text.contains(want.as_str()) {
                problems.push(format!("{what} lacks {want:?}: {text:?}"));
            }
        }
    }
    if case.status == "compile_error" && result.run.is_some() {
        problems.push("the run stage started after a failed compile".into());
    }
    if result.status == Status::Ok
        && result
            .run
            .as_ref()
            .is_some_and(|r| r.wall_ms == 0 && r.cpu_ms == 0 && r.memory_bytes == 0)
    {
        problems.push("no accounting".into());
    }
    problems
        .into_iter()
        .map(|p| {
            format!(
                "{}/{name}: {p} [stderr: {}]",
                language.name,
                err.chars().take(300).collect::<String>()
            )
        })
        .collect()
}

#[test]
fn conformance_corpus_of_every_language() {
    require_isolation!();
    let catalog = Catalog::embedded().expect("catalog");
    let missing: Vec<String> = catalog
        .detected()
        .iter()
        .filter_map(|d| {
            d.version
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", d.language.name))
        })
        .collect();
    if !missing.is_empty() {
        let msg = format!("toolchains missing: {missing:?} (scripts/setup installs them)");
        assert!(!required(), "{msg}");
        eprintln!("skipped languages: {msg}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let failures = runtime.block_on(async {
        let engine = Engine::new(EngineConfig::new(kiln_bin())).unwrap();
        // A few languages at a time: the suite shares 2 cores with the other isolation tests, and
        // a starved compiler would end by the clock instead of by its program.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
        let mut tasks = Vec::new();
        // KILN_CORPUS_LANGUAGES=a,b narrows a local run to some languages; CI runs every one.
        let only: Option<Vec<String>> = std::env::var("KILN_CORPUS_LANGUAGES")
            .ok()
            .map(|v| v.split(',').map(str::to_string).collect());
        if only.is_some() {
            assert!(
                !required(),
                "KILN_CORPUS_LANGUAGES narrows the corpus, which CI runs whole"
            );
        }
        for detected in catalog
            .available()
            .filter(|d| only.as_ref().is_none_or(|o| o.contains(&d.language.name)))
        {
            let language = detected.language.clone();
            let engine = engine.clone();
            let slots = slots.clone();
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire().await.expect("semaphore");
                let corpus = Corpus::embedded(&language.name)
                    .expect("every language has a corpus")
                    .expect("corpus parses");
                let mut failures: Vec<String> = corpus
                    .missing(language.interactive, language.is_compiled())
                    .into_iter()
                    .map(|c| format!("{}: corpus lacks the {c} case", language.name))
                    .collect();
                for (name, case) in &corpus.cases {
                    failures.extend(check_case(&engine, &language, name, case).await);
                }
                failures
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        engine.settle().await;
        all
    });
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

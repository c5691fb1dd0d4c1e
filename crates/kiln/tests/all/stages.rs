//! What a compile stage leaves for the run stage: nothing but its files (item S4 of the hardening
//! pass). Nothing it started runs on, and javac runs no user code at compile time.

use kiln_engine::{
    Engine, EngineConfig, LimitOverrides, SandboxShape, Status, StdinSource, Stream,
};
use kiln_lang::{Catalog, Language, SourceFile};
use kiln_workload::{run_limits, run_program, Program, ProgramResult};

use crate::common::kiln_bin;
use crate::require_isolation;

/// Runs `files` as `language`; returns the result, stdout and the compiler's output.
fn run(language: Language, files: Vec<SourceFile>) -> (ProgramResult, String, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = Engine::new(EngineConfig::new(kiln_bin())).unwrap();
        let limits = run_limits(&language, &LimitOverrides::default());
        let program = Program {
            language,
            files,
            args: Vec::new(),
            compile_options: Vec::new(),
            stdin: StdinSource::Closed,
            limits,
            shape: SandboxShape::default(),
            capture: None,
        };
        let (mut out, mut compile) = (Vec::new(), Vec::new());
        let mut sink = |s: Stream, c: &[u8]| match s {
            Stream::Stdout => out.extend_from_slice(c),
            Stream::Compile => compile.extend_from_slice(c),
            Stream::Stderr => {}
        };
        let result = run_program(&engine, program, &mut sink, None)
            .await
            .unwrap();
        engine.settle().await;
        (
            result,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&compile).into_owned(),
        )
    })
}

#[test]
fn s4_a_daemon_started_at_compile_time_is_gone_before_the_program_runs() {
    require_isolation!();
    let language = Language::parse(
        "daemon.toml",
        r#"
name = "daemon"
extensions = ["d"]
entry = "main.d"
interactive = false
version = { command = ["sh", "-c", "echo 1.0"], regex = '(\d+\.\d+)' }
limits = { cpu_ms = 5000, wall_ms = 10000, memory_mb = 256, pids = 64 }
[compile]
argv = ["sh", "-c", "setsid sh -c 'exec sleep 37' </dev/null >/dev/null 2>&1 & sleep 0.2; echo compiled"]
[run]
argv = ["sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | grep -c 'slee[p] 37'"]
"#,
    )
    .unwrap();
    let files = vec![SourceFile {
        name: "main.d".into(),
        content: b"".to_vec(),
    }];
    let (result, out, compile) = run(language, files);
    assert_eq!(result.status, Status::NonzeroExit, "{result:?}");
    assert!(compile.contains("compiled"), "{compile}");
    // grep -c printed 0 matches (and exited 1): no sleep of the compile stage was left.
    assert_eq!(out, "0\n", "{result:?}");
}

#[test]
fn s4_javac_runs_no_annotation_processor_of_the_program() {
    require_isolation!();
    let catalog = Catalog::embedded().unwrap();
    let Some(java) = catalog.find("java").filter(|d| d.available()) else {
        assert!(
            std::env::var("KILN_REQUIRE_ISOLATION").as_deref() != Ok("1"),
            "java is not installed"
        );
        return;
    };
    // A processor, compiled on the host, that would announce itself when javac runs it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Proc.java"),
        r#"import java.util.Set;
import javax.annotation.processing.*;
import javax.lang.model.SourceVersion;
import javax.lang.model.element.TypeElement;
@SupportedAnnotationTypes("*")
public class Proc extends AbstractProcessor {
  public boolean process(Set<? extends TypeElement> a, RoundEnvironment r) {
    System.err.println("PROCESSOR RAN");
    return false;
  }
  public SourceVersion getSupportedSourceVersion() { return SourceVersion.latest(); }
}
"#,
    )
    .unwrap();
    let javac = std::process::Command::new("javac")
        .arg("-d")
        .arg(dir.path())
        .arg(dir.path().join("Proc.java"))
        .output()
        .unwrap();
    assert!(
        javac.status.success(),
        "{}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let files = vec![
        SourceFile {
            name: "Main.java".into(),
            content: b"public class Main { public static void main(String[] a) { System.out.println(\"hello\"); } }".to_vec(),
        },
        SourceFile {
            name: "Proc.class".into(),
            content: std::fs::read(dir.path().join("Proc.class")).unwrap(),
        },
        SourceFile {
            name: "META-INF/services/javax.annotation.processing.Processor".into(),
            content: b"Proc\n".to_vec(),
        },
    ];
    let (result, out, compile) = run(java.language.clone(), files);
    assert_eq!(result.status, Status::Ok, "{result:?} {compile}");
    assert_eq!(out, "hello\n");
    assert!(!compile.contains("PROCESSOR RAN"), "{compile}");
}

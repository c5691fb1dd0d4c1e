//! Real toolchains exec'd under the sandbox filter: each must exit 0. This is what catches an
//! allowlist that is too narrow. A toolchain that is not installed is skipped (with a note on
//! stderr).

use std::ffi::CString;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tests::{exit_now, filter, raw, run_child_timeout, Outcome};

/// Exit code of the child when `execve` itself failed.
const EXEC_FAILED: i32 = 204;

fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL")
}

/// The program's path: as given when absolute, else looked up in `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Execs `argv` (its first element looked up in `PATH`) in a child under the default sandbox
/// filter, with the test's environment, stdin from /dev/null and stdout+stderr to a temporary
/// file that is shown if the program fails.
fn run_under_filter(argv: &[&str]) {
    let Some(path) = find(argv[0]) else {
        eprintln!("skipped: {} is not installed", argv[0]);
        return;
    };
    let filter = filter(false, false);
    let c_path = cstring(path.as_os_str().as_bytes());
    let c_argv: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect();
    let c_env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect();
    let argv_ptrs: Vec<*const libc::c_char> = c_argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = c_env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let devnull = std::fs::File::open("/dev/null").expect("/dev/null");
    let mut log = tempfile::tempfile().expect("temporary file");
    let (null_fd, log_fd) = (devnull.as_raw_fd() as u64, log.as_raw_fd() as u64);

    let outcome = run_child_timeout(Some(&filter), Duration::from_secs(300), || {
        for (from, to) in [(null_fd, 0), (log_fd, 1), (log_fd, 2)] {
            if raw(libc::SYS_dup3, [from, to, 0, 0, 0, 0]).is_err() {
                exit_now(EXEC_FAILED);
            }
        }
        let args = [
            c_path.as_ptr() as u64,
            argv_ptrs.as_ptr() as u64,
            env_ptrs.as_ptr() as u64,
            0,
            0,
            0,
        ];
        match raw(libc::SYS_execve, args) {
            Ok(_) => EXEC_FAILED,
            Err(errno) => errno,
        }
    });
    let mut output = String::new();
    let _ = log.rewind();
    let _ = log.read_to_string(&mut output);
    assert_eq!(
        outcome,
        Outcome::Exited(0),
        "{argv:?} failed under the seccomp filter; its output:\n{output}"
    );
}

/// A fresh temporary directory holding `files`.
fn workdir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a source file");
    }
    dir
}

fn in_dir(dir: &tempfile::TempDir, script: &str) -> String {
    let dir = dir.path().to_str().expect("UTF-8 temporary path");
    format!("cd '{dir}' && {script}")
}

#[test]
fn toolchain_sh_pipeline() {
    run_under_filter(&[
        "/bin/sh",
        "-c",
        "echo hi | cat && x=$(echo sub) && [ \"$x\" = sub ]",
    ]);
}

#[test]
fn toolchain_bash_and_coreutils() {
    let script = r#"set -euo pipefail
d=$(mktemp -d); cd "$d"
printf 'b\na\nb\n' > f; [ "$(sort f | uniq | wc -l)" = 2 ]
cp f g; mv g h; ln -s h l; cat l > /dev/null; chmod 600 h; stat h > /dev/null
mkdir -p x/y; touch x/y/z; find . -type f | xargs grep -l a > /dev/null
tar cf t.tar f h x; mkdir u; tar xf t.tar -C u; cmp f u/f
ls -la > /dev/null; id > /dev/null; date > /dev/null; sleep 0.01; uname -a > /dev/null
(sleep 0.01 & wait); echo "$(( $(seq 1 100 | paste -sd+) ))" | grep -q 5050
cd /; rm -rf "$d""#;
    run_under_filter(&["bash", "-c", script]);
}

#[test]
fn toolchain_python3() {
    let program = r#"
import asyncio, concurrent.futures, hashlib, multiprocessing, os, socket, sqlite3, subprocess, tempfile, threading
def square(n): return n * n
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    assert sum(ex.map(square, range(100))) == 328350
assert subprocess.run(['/bin/sh', '-c', 'echo x'], capture_output=True).stdout == b'x\n'
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
cli.sendall(b'ping'); assert conn.recv(4) == b'ping'
a, b = socket.socketpair(); a.send(b'x'); assert b.recv(1) == b'x'
socket.getaddrinfo('localhost', 80)
asyncio.run(asyncio.wait_for(asyncio.sleep(0.01), 5))
with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, 'f'); open(p, 'w').write('x'); os.rename(p, p + '2')
db = sqlite3.connect(':memory:'); db.execute('create table t(x)'); db.execute('insert into t values (1)')
hashlib.sha256(os.urandom(64)).hexdigest()
if os.path.isdir('/dev/shm'):
    with multiprocessing.get_context('fork').Pool(2) as pool:
        assert pool.map(square, range(10)) == [n * n for n in range(10)]
t = threading.Thread(target=lambda: None); t.start(); t.join()
"#;
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    run_under_filter(&[python, "-c", program]);
}

#[test]
fn toolchain_node() {
    let program = r#"
const cp = require('child_process'), fs = require('fs'), os = require('os'), path = require('path');
const http = require('http'), dns = require('dns'), zlib = require('zlib'), crypto = require('crypto');
const { Worker } = require('worker_threads');
if (cp.execFileSync('/bin/sh', ['-c', 'echo hi']).toString() !== 'hi\n') process.exit(2);
const d = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-')); fs.writeFileSync(path.join(d, 'f'), 'x');
fs.rmSync(d, { recursive: true });
zlib.gunzipSync(zlib.gzipSync(crypto.randomBytes(1000)));
const w = new Worker('require("worker_threads").parentPort.postMessage(42)', { eval: true });
w.on('message', (m) => {
  if (m !== 42) process.exit(3);
  dns.lookup('localhost', () => {
    const s = http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', () => {
      http.get({ host: '127.0.0.1', port: s.address().port }, (res) => {
        let b = ''; res.on('data', (c) => (b += c));
        res.on('end', () => fs.promises.readFile('/proc/self/stat')
          .then(() => { s.close(); process.exit(b === 'ok' ? 0 : 4); }));
      });
    });
  });
});
"#;
    run_under_filter(&["node", "-e", program]);
}

#[test]
fn toolchain_java() {
    let source = r#"
import java.net.*; import java.nio.file.*; import java.util.*; import java.util.concurrent.*;
public class Hello {
  public static void main(String[] args) throws Exception {
    ExecutorService ex = Executors.newFixedThreadPool(8);
    long sum = 0;
    for (Future<Integer> f : ex.invokeAll(Collections.nCopies(64, (Callable<Integer>) () -> 1))) sum += f.get();
    ex.shutdown(); if (sum != 64) System.exit(2);
    if (new ProcessBuilder("/bin/true").start().waitFor() != 0) System.exit(3);
    InetAddress lo = InetAddress.getLoopbackAddress();
    try (ServerSocket ss = new ServerSocket(0, 1, lo); Socket c = new Socket(lo, ss.getLocalPort()); Socket sc = ss.accept()) {
      c.getOutputStream().write(7); if (sc.getInputStream().read() != 7) System.exit(4);
    }
    Path t = Files.createTempFile("kiln", ".txt"); Files.writeString(t, "x"); Files.delete(t);
    System.gc();
  }
}
"#;
    let dir = workdir(&[("Hello.java", source)]);
    // The source launcher compiles in-process: javac and the JVM in one run.
    run_under_filter(&["sh", "-c", &in_dir(&dir, "java Hello.java")]);
}

#[test]
fn toolchain_gcc() {
    let c = r#"
#include <pthread.h>
#include <stdio.h>
static void *run(void *arg) { return arg; }
int main(void) {
  pthread_t t; void *out = 0;
  if (pthread_create(&t, 0, run, (void *)42) || pthread_join(t, &out)) return 1;
  printf("%ld\n", (long)out);
  return out == (void *)42 ? 0 : 2;
}
"#;
    let cpp = r#"
#include <thread>
#include <vector>
#include <atomic>
int main() {
  std::atomic<int> n{0}; std::vector<std::thread> ts;
  for (int i = 0; i < 4; i++) ts.emplace_back([&] { n++; });
  for (auto &t : ts) t.join();
  return n == 4 ? 0 : 1;
}
"#;
    let dir = workdir(&[("hello.c", c), ("hello.cpp", cpp)]);
    let mut script = "gcc -O2 -pthread hello.c -o hello && ./hello".to_owned();
    if find("g++").is_some() {
        script.push_str(" && g++ -O2 -pthread hello.cpp -o hellopp && ./hellopp");
    }
    if find("gcc").is_none() {
        eprintln!("skipped: gcc is not installed");
        return;
    }
    run_under_filter(&["sh", "-c", &in_dir(&dir, &script)]);
}

#[test]
fn toolchain_rustc() {
    let source = r#"
fn main() {
    let handles: Vec<_> = (0..4).map(|i| std::thread::spawn(move || i * 2)).collect();
    let sum: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, 12);
    assert!(std::process::Command::new("true").status().unwrap().success());
}
"#;
    if find("rustc").is_none() {
        eprintln!("skipped: rustc is not installed");
        return;
    }
    let dir = workdir(&[("hello.rs", source)]);
    let script = in_dir(&dir, "rustc -O hello.rs -o hello && ./hello");
    run_under_filter(&["sh", "-c", &script]);
}

#[test]
fn toolchain_perl_and_sqlite() {
    let perl = r#"pipe(R, W); my $p = fork(); if (!$p) { close R; print W "x"; exit 0 }
close W; my $x = <R>; waitpid($p, 0); exit($x eq "x" && $? == 0 ? 0 : 1)"#;
    run_under_filter(&["perl", "-e", perl]);
    let sql = "create table t(x); insert into t values (1), (2); select sum(x) from t;";
    run_under_filter(&["sqlite3", ":memory:", sql]);
}

#[test]
fn toolchain_other_interpreters() {
    run_under_filter(&[
        "ruby",
        "-e",
        "t = Thread.new { 1 + 1 }; exit(t.value == 2 && system('true') ? 0 : 1)",
    ]);
    run_under_filter(&[
        "php",
        "-r",
        "exit(strlen(file_get_contents('/proc/self/stat')) > 0 ? 0 : 1);",
    ]);
    run_under_filter(&[
        "lua",
        "-e",
        "os.exit(io.popen('echo x'):read('*l') == 'x' and 0 or 1)",
    ]);
    let go = find("go");
    if go.is_some() {
        let dir = workdir(&[(
            "main.go",
            "package main\nimport (\"os/exec\"; \"sync\")\nfunc main() {\n var wg sync.WaitGroup\n for i := 0; i < 8; i++ { wg.Add(1); go func() { defer wg.Done() }() }\n wg.Wait()\n if exec.Command(\"true\").Run() != nil { panic(1) }\n}\n",
        )]);
        let script = in_dir(&dir, "GOCACHE=$PWD/cache GOPATH=$PWD/gopath go run main.go");
        run_under_filter(&["sh", "-c", &script]);
    }
}

//! Runtime helpers: code in JavaScript (node) or Python run in a sandbox as a command (`exec`),
//! for the JSON value it hands back (`run`), or in the background (`spawn`). The code is written
//! to a file of the sandbox's `/tmp/.kiln` as its user and run by the runtime itself; for `run`,
//! a small harness beside it defines the hand-back function and writes the value to a file of
//! the sandbox's that Kiln reads after the end.
//!
//! The value is what the code passes to `__return(value)` (JS) or `kiln_return(value)`
//! (Python), the first call winning; otherwise, in JS, `module.exports` when the code set it (a
//! promise is awaited), and in Python, the value of a last line that is an expression.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_engine::tree::SandboxPath;

use super::{
    ExecOutcome, ExecRequest, ProcessInfo, ProcessRequest, SandboxError, SandboxId, SandboxService,
};

/// Where helper files go inside a sandbox.
const DIR: &str = "/tmp/.kiln";

/// A language of the runtime helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// node, CommonJS.
    JavaScript,
    /// python3.
    Python,
}

impl Runtime {
    /// By name (`javascript`, `js`, `node`; `python`, `py`, `python3`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "javascript" | "js" | "node" => Some(Self::JavaScript),
            "python" | "py" | "python3" => Some(Self::Python),
            _ => None,
        }
    }

    fn program(self) -> &'static str {
        match self {
            Self::JavaScript => "node",
            Self::Python => "python3",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::JavaScript => "cjs",
            Self::Python => "py",
        }
    }

    fn harness(self) -> &'static str {
        match self {
            Self::JavaScript => JS_HARNESS,
            Self::Python => PY_HARNESS,
        }
    }
}

const JS_HARNESS: &str = r#"'use strict';
const fs = require('fs');
const out = process.env.KILN_RETURN_FILE;
let done = false;
function __return(value) {
  if (done) return;
  done = true;
  let text;
  try {
    text = JSON.stringify({ value: value === undefined ? null : value },
      (_k, v) => typeof v === 'bigint' ? v.toString() : v instanceof Map ? Object.fromEntries(v) : v instanceof Set ? [...v] : v);
  } catch (e) {
    console.error('kiln: the returned value is not JSON: ' + e.message);
    process.exitCode = 1;
    return;
  }
  fs.writeFileSync(out, text);
}
globalThis.__return = __return;
(async () => {
  const exported = require(process.env.KILN_CODE_FILE);
  const empty = exported !== null && typeof exported === 'object' && exported.constructor === Object && Object.keys(exported).length === 0;
  if (!done && !empty) __return(await exported);
})().catch((e) => { console.error(e && e.stack ? e.stack : String(e)); process.exitCode = 1; });
"#;

const PY_HARNESS: &str = r#"import ast, builtins, base64, json, os, sys
_out = os.environ["KILN_RETURN_FILE"]
_done = False
def _plain(o):
    if isinstance(o, (set, frozenset, tuple)): return list(o)
    if isinstance(o, (bytes, bytearray)): return o.decode("utf-8", "replace")
    if hasattr(o, "__dict__"): return vars(o)
    return str(o)
def kiln_return(value):
    global _done
    if _done: return
    _done = True
    with open(_out, "w") as f: json.dump({"value": value}, f, default=_plain)
builtins.kiln_return = kiln_return
_file = os.environ["KILN_CODE_FILE"]
with open(_file) as f: _tree = ast.parse(f.read(), _file)
_last = None
if _tree.body and isinstance(_tree.body[-1], ast.Expr):
    _last = ast.Expression(_tree.body.pop().value)
_globals = {"__name__": "__main__", "__file__": _file}
sys.argv = [_file]
exec(compile(_tree, _file, "exec"), _globals)
if _last is not None and not _done:
    kiln_return(eval(compile(_last, _file, "eval"), _globals))
"#;

/// What `run` hands back: the command's outcome and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// How the command ended.
    pub outcome: ExecOutcome,
    /// The value, when the code handed one back.
    pub value: Option<serde_json::Value>,
}

/// Code to run.
#[derive(Debug, Clone)]
pub struct CodeRequest {
    /// Its language.
    pub runtime: Runtime,
    /// The source.
    pub code: String,
    /// The command's settings (its argv is made here).
    pub exec: ExecRequest,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn path(p: &str) -> Result<SandboxPath, SandboxError> {
    SandboxPath::parse(p).map_err(SandboxError::File)
}

impl SandboxService {
    /// Writes `data` to `at` in the sandbox as its user.
    async fn put(
        &self,
        owner: &str,
        id: &SandboxId,
        at: &str,
        data: Vec<u8>,
    ) -> Result<(), SandboxError> {
        let p = path(at)?;
        self.with_tree(owner, id, move |t| {
            use std::io::Write;
            let mut f = t.open_write(&p, 0o600)?;
            f.write_all(&data)
                .map_err(|e| kiln_engine::tree::TreeError::Io {
                    op: "write",
                    path: p.as_str().into(),
                    source: e,
                })
        })
        .await
    }

    /// Writes the code (and for `run` the harness) and the command that runs it.
    async fn prepare(
        &self,
        owner: &str,
        id: &SandboxId,
        req: CodeRequest,
        harness: bool,
    ) -> Result<(ExecRequest, String), SandboxError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ext = req.runtime.extension();
        let code_file = format!("{DIR}/code-{n}.{ext}");
        let ret_file = format!("{DIR}/return-{n}.json");
        self.put(owner, id, &code_file, req.code.into_bytes())
            .await?;
        let mut exec = req.exec;
        let program = req.runtime.program().to_string();
        if harness {
            let harness_file = format!("{DIR}/harness-{n}.{ext}");
            self.put(owner, id, &harness_file, req.runtime.harness().into())
                .await?;
            exec.env.insert("KILN_CODE_FILE".into(), code_file);
            exec.env.insert("KILN_RETURN_FILE".into(), ret_file.clone());
            exec.argv = vec![program, harness_file];
        } else {
            exec.argv = vec![program, code_file];
        }
        Ok((exec, ret_file))
    }

    /// Runs the code as a command to its end.
    pub async fn code_exec(
        &self,
        owner: &str,
        id: &SandboxId,
        req: CodeRequest,
    ) -> Result<ExecOutcome, SandboxError> {
        let (exec, _) = self.prepare(owner, id, req, false).await?;
        self.exec(owner, id, exec).await
    }

    /// Runs the code for the value it hands back.
    pub async fn code_run(
        &self,
        owner: &str,
        id: &SandboxId,
        req: CodeRequest,
    ) -> Result<RunOutcome, SandboxError> {
        let (exec, ret_file) = self.prepare(owner, id, req, true).await?;
        let outcome = self.exec(owner, id, exec).await?;
        let cap = self.cfg.exec_output_bytes;
        let ret = path(&ret_file)?;
        let read = self
            .with_tree(owner, id, move |t| {
                let found = match t.open_read(&ret) {
                    Ok((f, _)) => {
                        let mut text = Vec::new();
                        let _ = f.take(cap).read_to_end(&mut text);
                        Some(text)
                    }
                    Err(kiln_engine::tree::TreeError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                };
                let _ = t.remove(&ret, false);
                Ok(found)
            })
            .await?;
        let value = read
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .and_then(|mut v| v.get_mut("value").map(serde_json::Value::take));
        Ok(RunOutcome { outcome, value })
    }

    /// Starts the code in the background.
    pub async fn code_spawn(
        &self,
        owner: &str,
        id: &SandboxId,
        req: CodeRequest,
    ) -> Result<ProcessInfo, SandboxError> {
        let (exec, _) = self.prepare(owner, id, req, false).await?;
        self.spawn(owner, id, ProcessRequest { exec, tty: None })
            .await
    }
}

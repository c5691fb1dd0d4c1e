//! `kiln serve` as a child process for the http section: started on a free loopback port with a
//! fresh data directory and a one-off token, waited on until quiet between measurements, and
//! stopped with SIGTERM (then SIGKILL) at the end.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process, Pid, Signal};

use crate::client::Conn;

/// The catalog detects every toolchain before the server listens; that can take a while.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long SIGTERM gets (the server drains running jobs) before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the server may take to become quiet before the bench gives up.
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);
const QUIET_POLL: Duration = Duration::from_millis(2);

/// A running `kiln serve`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub token: String,
    pub pool_size: usize,
    /// Whether `/metrics` reports `kiln_pool_ready` (see `wait_quiet`); learnt on first use.
    pub pool_observable: Option<bool>,
    _data_dir: tempfile::TempDir,
}

impl Server {
    pub fn start(kiln_exe: &Path, capacity: usize, pool_size: usize) -> Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("kiln-bench-serve-")
            .tempdir()
            .context("create the server's data directory")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let token = format!("bench-{}-{nanos}", std::process::id());
        let mut cmd = Command::new(kiln_exe);
        // Settings only from the flags below: a KILN_* variable in the bench's environment (a
        // config file, more tokens, another queue depth) would change the server measured.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("KILN_") && key != "KILN_LOG" {
                cmd.env_remove(&*key);
            }
        }
        let mut child = cmd
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--token", &format!("bench={token}")])
            .args(["--capacity", &capacity.to_string()])
            .args(["--pool-size", &pool_size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {} serve", kiln_exe.display()))?;
        let stderr = child.stderr.take().context("the server's stderr")?;
        // A thread reads the server's stderr for as long as it runs: it hands over the address,
        // then passes on whatever else the server says (a full pipe would block the server).
        let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
        std::thread::spawn(move || {
            let mut said = Vec::new();
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                let addr = line
                    .split_once("listening on http://")
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok());
                match (addr, tx.take()) {
                    (Some(a), Some(t)) => {
                        let _ = t.send(Ok(a));
                    }
                    (_, Some(t)) => {
                        said.push(line);
                        tx = Some(t);
                    }
                    (_, None) => eprintln!("[kiln serve] {line}"),
                }
            }
            if let Some(t) = tx {
                let _ = t.send(Err(said.join("\n")));
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token,
            pool_size,
            pool_observable: None,
            _data_dir: data_dir,
        };
        // From here on, an error drops `server`, which kills the child.
        server.addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(said)) => bail!("kiln serve exited before listening: {}", said.trim()),
            Err(_) => bail!("kiln serve did not say where it listens within {START_TIMEOUT:?}"),
        };
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server is quiet: no run, no background destroy and no pool refill under
    /// way, and at least a full pool ready. That is: every sandbox it owns (each is a child
    /// process: its warden) is a ready pooled one, as `/metrics` counts them.
    ///
    /// Without `kiln_pool_ready` in `/metrics`, it settles for the number of sandboxes being at
    /// least the pool size and unchanged for 50 ms.
    pub async fn wait_quiet(&mut self, conn: &mut Conn) -> Result<()> {
        let t0 = Instant::now();
        let mut last = (usize::MAX, Instant::now());
        loop {
            let ready = if self.pool_observable == Some(false) {
                None
            } else {
                let ready = pool_ready(conn).await?;
                self.pool_observable = Some(ready.is_some());
                ready
            };
            let sandboxes = children(self.pid())?;
            let quiet = match ready {
                Some(r) => r >= self.pool_size && sandboxes == r,
                None => {
                    if sandboxes != last.0 {
                        last = (sandboxes, Instant::now());
                    }
                    sandboxes >= self.pool_size && last.1.elapsed() >= Duration::from_millis(50)
                }
            };
            if quiet {
                return Ok(());
            }
            if t0.elapsed() > QUIET_TIMEOUT {
                bail!(
                    "kiln serve not quiet within {QUIET_TIMEOUT:?}: {sandboxes} sandboxes, \
                     {ready:?} of {} ready",
                    self.pool_size
                );
            }
            tokio::time::sleep(QUIET_POLL).await;
        }
    }

    /// SIGTERM, which lets the server drain and exit; SIGKILL if it has not within
    /// [`STOP_TIMEOUT`]. Connections should be closed first: the server waits for open ones.
    pub async fn stop(mut self) -> Result<()> {
        let pid = Pid::from_raw(self.pid() as i32).context("the server's pid")?;
        kill_process(pid, Signal::TERM).context("SIGTERM kiln serve")?;
        let t0 = Instant::now();
        while t0.elapsed() < STOP_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("kiln serve exited with {status}");
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("kiln serve: still running {STOP_TIMEOUT:?} after SIGTERM; killing it");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    /// On an error path the server must not outlive the bench.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kiln_pool_ready` from `/metrics`, or `None` if the server does not report it.
async fn pool_ready(conn: &mut Conn) -> Result<Option<usize>> {
    let (status, text) = conn.text("/metrics").await?;
    if !status.is_success() {
        return Ok(None);
    }
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("kiln_pool_ready "))
        .and_then(|v| v.trim().parse().ok()))
}

/// The number of live (or unreaped) child processes of `pid`, from `/proc/*/stat`.
pub fn children(pid: u32) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").context("read /proc")? {
        let name = entry?.file_name();
        let Some(name) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(pid) {
            n += 1;
        }
    }
    Ok(n)
}

/// The parent pid in a `/proc/PID/stat` line: the second field after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn parent_of(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_from_stat() {
        assert_eq!(parent_of("42 (kiln-warden) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("42 (a) b) (c) R 9 1"), Some(9));
        assert_eq!(parent_of("garbage"), None);
    }
}

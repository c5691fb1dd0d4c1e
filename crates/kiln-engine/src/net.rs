//! A sandbox's loopback from the host: the TCP listeners its programs opened (from its network
//! namespace's `/proc/net/tcp*`), and connections to them made from inside that namespace, so a
//! port is reached on the sandbox's own loopback and never on the host's or another sandbox's.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use crate::engine::{io_err, EngineError, Sandbox};

/// How long a connection to a sandbox's port may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The socket state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// A TCP listener in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listener {
    /// The port.
    pub port: u16,
    /// The address it is bound to inside the sandbox.
    pub address: String,
}

/// The listeners of one `/proc/net/tcp` or `tcp6` table.
fn parse_table(text: &str, v6: bool) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let (addr, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = if v6 {
                let mut bytes = [0u8; 16];
                for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                    let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                    chunk.copy_from_slice(&word.to_ne_bytes());
                }
                Ipv6Addr::from(bytes).to_string()
            } else {
                let word = u32::from_str_radix(addr, 16).ok()?;
                Ipv4Addr::from(word.to_ne_bytes()).to_string()
            };
            Some(Listener { port, address })
        })
        .collect()
}

impl Sandbox {
    /// The TCP listeners of the sandbox's programs, by port.
    pub fn listeners(&self) -> Result<Vec<Listener>, EngineError> {
        let mut all = Vec::new();
        for (table, v6) in [("tcp", false), ("tcp6", true)] {
            let path = format!("/proc/{}/net/{table}", self.warden_pid());
            match std::fs::read_to_string(&path) {
                Ok(text) => all.extend(parse_table(&text, v6)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("read {path}"))(e)),
            }
        }
        all.sort_by(|a, b| (a.port, &a.address).cmp(&(b.port, &b.address)));
        all.dedup();
        Ok(all)
    }

    /// A connection to `port` on the sandbox's own loopback (IPv4, then IPv6), made from inside
    /// its network namespace by a thread of its own that enters it and ends.
    pub async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, EngineError> {
        let ns_path = format!("/proc/{}/ns/net", self.warden_pid());
        let ns = rustix::fs::open(
            ns_path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(format!("open {ns_path}"))(e.into()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("kiln-connect".into())
            .spawn(move || {
                let _ = tx.send(connect_in(ns, port));
            })
            .map_err(io_err("start a connecting thread"))?;
        let stream = rx
            .await
            .map_err(|_| EngineError::Warden("the connecting thread died".into()))?
            .map_err(|e| EngineError::Io {
                what: format!("connect to port {port} in the sandbox"),
                source: e,
            })?;
        stream
            .set_nonblocking(true)
            .map_err(io_err("nonblocking socket"))?;
        tokio::net::TcpStream::from_std(stream).map_err(io_err("register socket"))
    }
}

/// On a thread that is about to end: enters the namespace and connects.
fn connect_in(ns: OwnedFd, port: u16) -> std::io::Result<std::net::TcpStream> {
    // Only this thread moves; it ends right after, so nothing else ever runs in the sandbox's
    // namespace, and the socket keeps the namespace it was made in.
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(first) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| first)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_read_from_the_kernels_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1\n   1: 0100007F:1F40 0100007F:A000 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n";
        assert_eq!(
            parse_table(v4, false),
            vec![Listener {
                port: 8000,
                address: "127.0.0.1".into()
            }]
        );
        let v6 = "  sl  local_address remote_address st\n   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(
            parse_table(v6, true),
            vec![Listener {
                port: 3000,
                address: "::1".into()
            }]
        );
    }
}

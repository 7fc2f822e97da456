//! The control socket: how the command-line verbs talk to a running daemon.
//!
//! A Unix stream socket (default [`DEFAULT_PATH`], in a directory of mode 0700; the socket
//! itself mode 0600) accepting only peers whose `SO_PEERCRED` uid is 0. One request per
//! connection:
//!
//! - request: a big-endian `u32` length, then that many bytes of UTF-8: the verb and its
//!   arguments separated by NUL bytes (`VERB\0ARG\0ARG...`). At most [`MAX_REQUEST`] bytes; a
//!   longer request gets an error reply and the connection is closed unread.
//! - reply: one status byte ([`STATUS_OK`] or [`STATUS_ERROR`]) then the reply text (or, for
//!   `capture`, the pcap file), up to the end of the stream.
//!
//! This module owns the wire format, the socket's permissions and the peer check. What the
//! verbs do is the daemon's ([`crate::daemon`]); a malformed request gets an error reply, never
//! a crash.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_PATH: &str = "/run/xvs/xvs.ctl";
/// Largest request accepted (flow files travel inside requests).
pub const MAX_REQUEST: usize = 1 << 20;
pub const STATUS_OK: u8 = 0;
pub const STATUS_ERROR: u8 = 1;
/// How long a peer may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("request of {0} bytes is larger than the limit of {MAX_REQUEST}")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("peer uid {0} is not root")]
    NotRoot(u32),
    #[error("another daemon is listening on {0}")]
    InUse(String),
    #[error("empty reply from the daemon")]
    EmptyReply,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub verb: String,
    pub args: Vec<String>,
}

/// A reply: success or failure, and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            body: text.into().into_bytes(),
        }
    }
    pub fn err(text: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            body: text.into().into_bytes(),
        }
    }
}

/// The request's bytes on the wire (length prefix included).
pub fn encode_request(verb: &str, args: &[String]) -> Vec<u8> {
    let mut body = verb.as_bytes().to_vec();
    for a in args {
        body.push(0);
        body.extend_from_slice(a.as_bytes());
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Decodes a request body (without its length prefix).
pub fn decode_request(body: &[u8]) -> Result<Request, ControlError> {
    let text = std::str::from_utf8(body).map_err(|_| ControlError::Malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let verb = parts.next().unwrap_or("");
    if verb.is_empty() {
        return Err(ControlError::Malformed("no verb"));
    }
    Ok(Request {
        verb: verb.to_string(),
        args: parts.map(str::to_string).collect(),
    })
}

/// Reads one length-prefixed request from `r`.
pub fn read_request(r: &mut impl Read) -> Result<Request, ControlError> {
    let io = |source| ControlError::Io {
        path: "control connection".into(),
        source,
    };
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(ControlError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(io)?;
    decode_request(&body)
}

pub fn write_reply(w: &mut impl Write, reply: &Reply) -> io::Result<()> {
    w.write_all(&[if reply.ok { STATUS_OK } else { STATUS_ERROR }])?;
    w.write_all(&reply.body)?;
    w.flush()
}

/// Sends one request to the daemon at `path` and returns its reply.
pub fn call(path: &Path, verb: &str, args: &[String]) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(path).map_err(io)?;
    s.write_all(&encode_request(verb, args)).map_err(io)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(io)?;
    let (&status, body) = buf.split_first().ok_or(ControlError::EmptyReply)?;
    Ok(Reply {
        ok: status == STATUS_OK,
        body: body.to_vec(),
    })
}

/// The listening socket. Dropping it removes the socket file.
pub struct Server {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Creates the socket (and its directory, mode 0700, when missing), mode 0600. A stale
    /// socket file left by a daemon that died is replaced; a live one is an error.
    pub fn bind(path: &Path) -> Result<Server, ControlError> {
        let io = |source| ControlError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.display().to_string()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // Tighten before anyone can have connected in between: nobody but root can reach the
        // directory when we created it, and the peer check stands behind this anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks the peer and reads its request. On a refused peer or a bad request the error reply
/// has already been sent.
pub fn accept_request(stream: &mut UnixStream) -> Result<Request, ControlError> {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let uid = getsockopt(&*stream, PeerCredentials)
        .map(|c| c.uid())
        .unwrap_or(u32::MAX);
    if uid != 0 {
        let e = ControlError::NotRoot(uid);
        refuse(stream, &e);
        return Err(e);
    }
    match read_request(stream) {
        Ok(r) => Ok(r),
        Err(e) => {
            refuse(stream, &e);
            Err(e)
        }
    }
}

/// Bytes of an unread request drained after an error reply, at most.
const DRAIN_MAX: usize = 2 * MAX_REQUEST;
/// How long draining waits for more bytes.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends the error reply, then reads (and drops) what the peer is still sending before the
/// connection closes: closing with unread bytes makes the kernel reset the connection, and
/// the peer would lose the reply.
fn refuse(stream: &mut UnixStream, e: &ControlError) {
    let _ = write_reply(stream, &Reply::err(e.to_string()));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(DRAIN_TIMEOUT));
    let mut buf = [0u8; 16 * 1024];
    let mut drained = 0;
    while drained < DRAIN_MAX {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let args = vec!["br0".to_string(), "a\nb".to_string(), String::new()];
        let wire = encode_request("add-flows", &args);
        let r = read_request(&mut &wire[..]).unwrap();
        assert_eq!(r.verb, "add-flows");
        assert_eq!(r.args, args);
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(matches!(
            decode_request(b""),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(&[0xff, 0xfe]),
            Err(ControlError::Malformed(_))
        ));
        let mut big = ((MAX_REQUEST + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"show");
        assert!(matches!(
            read_request(&mut &big[..]),
            Err(ControlError::TooLarge(_))
        ));
        // A length that promises more than is sent.
        let short = [0, 0, 0, 9, b's'];
        assert!(read_request(&mut &short[..]).is_err());
    }
}

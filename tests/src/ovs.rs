//! A private Open vSwitch, used as the behaviour oracle.
//!
//! [`OvsSandbox::start`] creates a temporary directory, an OVSDB database in it, and runs
//! `ovsdb-server` and `ovs-vswitchd --enable-dummy=override` against it, with every `OVS_*DIR`
//! pointing into that directory so nothing touches a system Open vSwitch. Bridges are
//! `datapath_type=dummy`; their ports are dummy ports whose transmitted frames land in one pcap
//! file per port (read back with [`OvsSandbox::tx_frames`]). Frames go in with
//! [`OvsSandbox::inject`] (`netdev-dummy/receive`).
//!
//! Dropping the sandbox kills both daemons by the pids in their pidfiles (never by name) and
//! removes the directory, also when a test panics.
//!
//! Tests that need the oracle call [`OvsSandbox::start_or_skip`], which returns `None` (after
//! printing why) only when Open vSwitch is not installed; any other failure panics, so a broken
//! oracle never passes silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where Debian installs the database schema.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A running private Open vSwitch (database server and switch daemon).
pub struct OvsSandbox {
    dir: PathBuf,
    pids: Vec<i32>,
}

/// Is `prog` an executable on `PATH` (or in the sbin directories Debian uses)?
fn find_program(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(
        ["/usr/sbin", "/sbin", "/usr/local/sbin"]
            .iter()
            .map(PathBuf::from),
    );
    dirs.into_iter().map(|d| d.join(prog)).find(|p| p.is_file())
}

impl OvsSandbox {
    /// True when the Open vSwitch programs the sandbox needs are installed.
    pub fn available() -> bool {
        [
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-ofctl",
            "ovs-appctl",
        ]
        .iter()
        .all(|p| find_program(p).is_some())
            && Path::new(SCHEMA).exists()
    }

    /// Starts a sandbox, or prints why not and returns `None` when Open vSwitch is not
    /// installed. Panics on any other failure.
    pub fn start_or_skip() -> Option<OvsSandbox> {
        if !Self::available() {
            eprintln!(
                "skipping: Open vSwitch (ovs-vswitchd, ovsdb-server, {SCHEMA}) is not installed"
            );
            return None;
        }
        Some(Self::start().unwrap_or_else(|e| panic!("starting the Open vSwitch sandbox: {e}")))
    }

    /// Creates the directory and database and starts both daemons.
    pub fn start() -> Result<OvsSandbox, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Short path: unix socket paths are limited to 107 bytes.
        let dir = std::env::temp_dir().join(format!(
            "xvs-ovs-{}-{}-{:x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut sb = OvsSandbox {
            dir,
            pids: Vec::new(),
        };
        let d = sb.dir.clone();
        let db = d.join("conf.db");
        sb.run("ovsdb-tool", &["create", &db.to_string_lossy(), SCHEMA])?;
        sb.run(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{}", d.join("db.sock").display()),
                &format!("--pidfile={}", d.join("ovsdb-server.pid").display()),
                "--detach",
                "--no-chdir",
                &format!("--log-file={}", d.join("ovsdb-server.log").display()),
                &db.to_string_lossy(),
            ],
        )?;
        sb.pids.push(sb.read_pid("ovsdb-server.pid")?);
        sb.vsctl_raw(&["--no-wait", "init"])?;
        sb.run(
            "ovs-vswitchd",
            &[
                "--enable-dummy=override",
                &format!("unix:{}", d.join("db.sock").display()),
                &format!("--pidfile={}", d.join("ovs-vswitchd.pid").display()),
                "--detach",
                "--no-chdir",
                &format!("--log-file={}", d.join("ovs-vswitchd.log").display()),
            ],
        )?;
        sb.pids.push(sb.read_pid("ovs-vswitchd.pid")?);
        Ok(sb)
    }

    /// The sandbox directory (databases, logs, sockets, pcap files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_pid(&self, file: &str) -> Result<i32, String> {
        let p = self.dir.join(file);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read_to_string(&p) {
                if let Ok(pid) = s.trim().parse() {
                    return Ok(pid);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} never appeared", p.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn command(&self, prog: &str) -> Command {
        let path = find_program(prog).unwrap_or_else(|| PathBuf::from(prog));
        let mut c = Command::new(path);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(var, &self.dir);
        }
        c
    }

    fn output(&self, prog: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
        let mut c = self.command(prog);
        c.args(args);
        let out = match stdin {
            None => c.output(),
            Some(text) => {
                use std::io::Write;
                c.stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = c.spawn().map_err(|e| format!("{prog}: {e}"))?;
                if let Some(mut si) = child.stdin.take() {
                    si.write_all(text.as_bytes())
                        .map_err(|e| format!("{prog} stdin: {e}"))?;
                }
                child.wait_with_output()
            }
        }
        .map_err(|e| format!("{prog}: {e}"))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{prog} {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    fn run(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        self.output(prog, args, None)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn db(&self) -> String {
        format!("--db=unix:{}", self.dir.join("db.sock").display())
    }

    fn vsctl_raw(&self, args: &[&str]) -> Result<String, String> {
        let db = self.db();
        let mut a = vec![db.as_str(), "--timeout=20"];
        a.extend_from_slice(args);
        self.run("ovs-vsctl", &a)
    }

    /// Runs `ovs-vsctl ARGS` against the sandbox database (waits for the switch to apply it).
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        self.vsctl_raw(args)
    }

    /// Runs `ovs-ofctl ARGS`.
    pub fn ofctl(&self, args: &[&str]) -> Result<String, String> {
        self.run("ovs-ofctl", args)
    }

    /// Runs `ovs-appctl ARGS` against the sandbox's `ovs-vswitchd` (found through the pidfile
    /// in the sandbox's run directory).
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        self.run("ovs-appctl", args)
    }

    /// Adds a dummy bridge with dummy ports at the given OpenFlow port numbers. Each port
    /// writes what it transmits to `DIR/PORT.pcap`. `fail_mode` is `secure` or `standalone`
    /// (`None` leaves Open vSwitch's default).
    pub fn add_bridge(
        &self,
        name: &str,
        ports: &[(&str, u32)],
        fail_mode: Option<&str>,
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec![
            "add-br".into(),
            name.into(),
            "--".into(),
            "set".into(),
            "bridge".into(),
            name.into(),
        ];
        args.push("datapath_type=dummy".into());
        if let Some(f) = fail_mode {
            args.push(format!("fail_mode={f}"));
        }
        for (port, ofport) in ports {
            args.extend(["--".into(), "add-port".into(), name.into(), (*port).into()]);
            args.extend([
                "--".into(),
                "set".into(),
                "interface".into(),
                (*port).into(),
                "type=dummy".into(),
                format!("ofport_request={ofport}"),
                format!("options:tx_pcap={}", self.pcap_path(port).display()),
            ]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl_raw(&a).map(|_| ())
    }

    fn pcap_path(&self, port: &str) -> PathBuf {
        self.dir.join(format!("{port}.pcap"))
    }

    /// Loads flows (`ovs-ofctl add-flows BRIDGE -`, text on stdin).
    pub fn add_flows(&self, bridge: &str, text: &str) -> Result<(), String> {
        self.output("ovs-ofctl", &["add-flows", bridge, "-"], Some(text))
            .map(|_| ())
    }

    /// Removes every flow of a bridge.
    pub fn del_flows(&self, bridge: &str) -> Result<(), String> {
        self.ofctl(&["del-flows", bridge]).map(|_| ())
    }

    /// `ovs-ofctl dump-flows --no-stats --names BRIDGE`, one flow per entry, leading blanks
    /// trimmed, header dropped, sorted.
    pub fn dump_flows(&self, bridge: &str) -> Vec<String> {
        let out = self
            .ofctl(&["dump-flows", "--no-stats", "--names", bridge])
            .unwrap_or_else(|e| panic!("dump-flows: {e}"));
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| {
                !l.starts_with("NXST_FLOW") && !l.starts_with("OFPST_FLOW") && !l.trim().is_empty()
            })
            .map(|l| l.trim().to_string())
            .collect();
        v.sort();
        v
    }

    /// Feeds a frame (hex digits) into a port as if it had been received there.
    pub fn inject(&self, port: &str, hex: &str) -> Result<(), String> {
        self.appctl(&["netdev-dummy/receive", port, hex])
            .map(|_| ())
    }

    /// Frames the port has transmitted so far, read from its pcap file.
    pub fn tx_frames(&self, port: &str) -> Vec<Vec<u8>> {
        match std::fs::read(self.pcap_path(port)) {
            Ok(bytes) => read_pcap(&bytes).unwrap_or_else(|e| panic!("{port}.pcap: {e}")),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        // Switch first, then the database: each by the pid its own pidfile recorded.
        for &pid in self.pids.iter().rev() {
            if pid <= 1 {
                continue;
            }
            // SAFETY: kill(2) on a pid this sandbox started; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: signal 0 only probes whether the process still exists.
            while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: as above; the process ignored SIGTERM for 5 s.
            unsafe {
                if libc::kill(pid, 0) == 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses a pcap file (either byte order, microsecond or nanosecond timestamps) into frames.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let magic = bytes.get(..4).ok_or("truncated pcap header")?;
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
    };
    let u32_at = |off: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(off..off + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if bytes.len() < 24 {
        return Err("truncated pcap header".into());
    }
    let mut frames = Vec::new();
    let mut off = 24;
    // A record still being written (partial header or data) ends the list.
    while off + 16 <= bytes.len() {
        let incl = u32_at(off + 8).ok_or("bad record header")? as usize;
        let start = off + 16;
        let Some(data) = bytes.get(start..start + incl) else {
            break;
        };
        frames.push(data.to_vec());
        off = start + incl;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(le: bool, frames: &[&[u8]]) -> Vec<u8> {
        let w32 = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let w16 = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
        let mut b = Vec::new();
        b.extend(w32(0xa1b2_c3d4));
        b.extend(w16(2));
        b.extend(w16(4));
        b.extend([0u8; 8]);
        b.extend(w32(65535));
        b.extend(w32(1));
        for f in frames {
            b.extend(w32(1));
            b.extend(w32(2));
            b.extend(w32(f.len() as u32));
            b.extend(w32(f.len() as u32));
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn pcap_reader_both_byte_orders_and_partial_tail() {
        for le in [true, false] {
            let mut b = pcap(le, &[&[1, 2, 3], &[4; 60]]);
            assert_eq!(read_pcap(&b).unwrap(), vec![vec![1, 2, 3], vec![4; 60]]);
            b.extend([0u8; 10]); // a record header cut short
            assert_eq!(read_pcap(&b).unwrap().len(), 2);
        }
        assert!(read_pcap(&[1, 2, 3, 4, 5]).is_err());
        assert!(read_pcap(&[]).unwrap().is_empty());
    }
}

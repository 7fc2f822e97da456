//! Network namespaces, veth pairs and process guards for tests that need real interfaces.
//!
//! Everything a test creates lives in namespaces named after the caller's prefix, the process
//! id and a counter, and is deleted by [`Netns`]'s `Drop` (which also kills whatever still runs
//! inside), even when the test panics. Nothing here touches the default namespace's interfaces
//! or routes: veth pairs are created directly inside their namespaces. Tests use addresses in
//! 198.18.0.0/15 only.

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether the tests run as root (needed for namespaces and XDP). Tests that need it print why
/// they skip and return when it is false.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A network namespace deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a uniquely named namespace (`PREFIX-PID-N`) with its loopback up.
    pub fn new(prefix: &str) -> io::Result<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "dev", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `cmd` inside the namespace and waits; an error carries its output if it failed.
    pub fn exec(&self, cmd: &[&str]) -> io::Result<Output> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd))
    }

    /// Runs `cmd` inside the namespace and returns its stdout; an error if it failed.
    pub fn exec_stdout(&self, cmd: &[&str]) -> io::Result<String> {
        self.exec(cmd)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts `cmd` inside the namespace with stdout and stderr captured. `ip netns exec`
    /// replaces itself with `cmd`, so the guard's PID is the command's own.
    pub fn spawn(&self, cmd: &[&str], envs: &[(&str, &str)]) -> io::Result<Daemon> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Daemon { child: Some(child) })
    }

    /// Assigns `cidr` to `ifname` and brings it up.
    pub fn addr(&self, ifname: &str, cidr: &str) -> io::Result<()> {
        self.exec(&["ip", "addr", "add", cidr, "dev", ifname])?;
        self.exec(&["ip", "link", "set", "dev", ifname, "up"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside first, or the namespace would outlive its name.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        // Deleting the namespace deletes its veth ends, and with them their peers.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Creates a veth pair with `if_a` in `a` and `if_b` in `b`, both up (no addresses).
pub fn veth_pair(a: &Netns, if_a: &str, b: &Netns, if_b: &str) -> io::Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        if_a,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        if_b,
        "netns",
        b.name(),
    ]))?;
    a.exec(&["ip", "link", "set", "dev", if_a, "up"])?;
    b.exec(&["ip", "link", "set", "dev", if_b, "up"])?;
    Ok(())
}

/// A child process killed (SIGKILL) on drop unless it was already stopped and collected.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and collects the exit status and output, waiting
    /// at most `timeout` before killing it outright.
    pub fn stop(mut self, signal: &str, timeout: Duration) -> io::Result<Output> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("already stopped"));
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        let t0 = Instant::now();
        while child.try_wait()?.is_none() {
            if t0.elapsed() > timeout {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

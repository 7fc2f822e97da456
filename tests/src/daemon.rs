//! Starting `xvs run` inside a test namespace. The daemon is the test binary itself,
//! re-executed in the namespace to run one ignored "child" test that calls
//! `dataplane::daemon::run` with the arguments passed in an environment variable, so a test
//! needs no other binary to be built.

use crate::netns::{Daemon, Netns};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The child side: if `child_env` is set, runs the daemon it describes and exits with its
/// status; otherwise returns (the child test does nothing when run directly).
pub fn run_child(child_env: &str) {
    let Ok(args) = std::env::var(child_env) else {
        return;
    };
    let (config, ctl) = args.split_once(' ').expect("CONFIG CONTROL");
    std::process::exit(dataplane::daemon::run(&dataplane::daemon::RunOptions {
        config: config.into(),
        control: ctl.into(),
    }));
}

/// Writes `config` to a fresh directory and starts the daemon in `ns` through the ignored test
/// `child_test` (which must call [`run_child`] with `child_env`); waits for its control socket.
/// Keep the returned daemon after the namespaces it uses, so it is stopped first.
pub fn start(
    ns: &Netns,
    tag: &str,
    child_test: &str,
    child_env: &str,
    config: &str,
) -> (Daemon, PathBuf, TempDir) {
    let dir = std::env::temp_dir().join(format!("xvs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let guard = TempDir(dir.clone());
    std::fs::write(dir.join("xvs.toml"), config).unwrap();
    let ctl = dir.join("xvs.ctl");
    let exe = std::env::current_exe().unwrap();
    let args = format!("{} {}", dir.join("xvs.toml").display(), ctl.display());
    let mut d = ns
        .spawn(
            &[
                exe.to_str().unwrap(),
                "--ignored",
                "--exact",
                child_test,
                "--nocapture",
            ],
            &[(child_env, &args)],
        )
        .unwrap();
    let t0 = Instant::now();
    while !ctl.exists() {
        assert!(!d.exited(), "the daemon exited at start");
        assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, ctl, guard)
}

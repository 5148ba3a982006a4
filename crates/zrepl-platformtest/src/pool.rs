//! Per-test pools on sparse file vdevs, and a raw command helper for setup steps.
//!
//! Setup and teardown deliberately do NOT go through zrepl-zfs: they must work (and clean up)
//! even when the code under test is broken, and they must not show up in its command counters.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Size of each test pool's file vdev (sparse).
const POOL_SIZE: u64 = 256 << 20;

/// Runs `argv` without a shell and returns stdout; a non-zero exit is an error with stderr.
/// Waits until no process whose command line matches `pattern` (`pgrep -f`) runs. A killed
/// process (a cut transfer, a command past its timeout) may take a moment to exit after the
/// daemon reported it: under load longer than a fixed sleep. One still there after `limit` is a
/// leak, reported with its `ps` line.
pub fn wait_gone(pattern: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while let Ok(pids) = sh(&["pgrep", "-f", pattern]) {
        if Instant::now() >= deadline {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            let ps = sh(&["ps", "-o", "pid,stat,etime,args", "-p", &pids.join(",")])
                .unwrap_or_else(|e| e);
            return Err(format!(
                "processes matching {pattern:?} left after {limit:?}:\n{ps}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn sh(argv: &[&str]) -> Result<String, String> {
    let (bin, args) = argv.split_first().ok_or("empty argv")?;
    let out = Command::new(bin)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {argv:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{argv:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// A pool created for one test; destroyed (and its files removed) on drop, also when the test
/// panicked.
pub struct TestPool {
    pub name: String,
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    destroyed: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestPool {
    pub fn create() -> Result<TestPool, String> {
        let name = format!(
            "zreplplatformtest{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let image = PathBuf::from(format!("/tmp/{name}.img"));
        let mountpoint = PathBuf::from(format!("/tmp/{name}.mnt"));
        // Leftovers from an earlier crashed run with the same pid.
        if sh(&["zpool", "list", "-H", "-o", "name", &name]).is_ok() {
            sh(&["zpool", "destroy", "-f", &name])?;
        }
        let _ = std::fs::remove_dir_all(&mountpoint);
        std::fs::create_dir_all(&mountpoint).map_err(|e| format!("mkdir {mountpoint:?}: {e}"))?;
        let f = std::fs::File::create(&image).map_err(|e| format!("create {image:?}: {e}"))?;
        f.set_len(POOL_SIZE)
            .map_err(|e| format!("truncate {image:?}: {e}"))?;
        drop(f);
        let mp_opt = format!("mountpoint={}", mountpoint.display());
        let img = image.display().to_string();
        sh(&["zpool", "create", "-f", "-O", &mp_opt, &name, &img])?;
        Ok(TestPool {
            name,
            image,
            mountpoint,
            destroyed: false,
        })
    }

    /// Destroys the pool (retrying while it is busy) and removes its files.
    pub fn destroy(&mut self) -> Result<(), String> {
        if self.destroyed {
            return Ok(());
        }
        self.destroyed = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        let res = loop {
            match sh(&["zpool", "destroy", "-f", &self.name]) {
                Ok(_) => break Ok(()),
                Err(e) if e.contains("busy") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => break Err(e),
            }
        };
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir_all(&self.mountpoint);
        let _ = std::fs::remove_file(self.key_file());
        res
    }

    /// A passphrase key file for encrypted datasets of this pool.
    pub fn key_file(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/{}.key", self.name))
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            eprintln!("WARNING: cleaning up pool {}: {e}", self.name);
        }
    }
}

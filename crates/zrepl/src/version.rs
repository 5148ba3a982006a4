//! `zrepl version`.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::{Show, VersionArgs};
use crate::control_client::{block_on, post};

/// This build's version line, in the shape of zrepl's `zrepl version=... go=...`.
pub fn version_string() -> String {
    format!(
        "zrepl version={} rust-implementation os={} arch={}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// What the daemon reports on `/version`.
pub fn version_info() -> zrepl_daemon::VersionInfo {
    zrepl_daemon::VersionInfo {
        version: version_string(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
    }
}

fn daemon_version(config: Option<&Path>) -> anyhow::Result<String> {
    let sock = crate::daemon_cmd::sockpath(config, false)?;
    let body = block_on(post(&sock, "/version", &serde_json::json!({})))??;
    let v: zrepl_daemon::VersionInfo = serde_json::from_slice(&body)?;
    Ok(v.version)
}

pub fn run(config: Option<&Path>, args: VersionArgs) -> anyhow::Result<ExitCode> {
    let client = version_string();
    match args.show {
        Some(Show::Client) => println!("client: {client}"),
        Some(Show::Daemon) => println!("server: {}", daemon_version(config)?),
        None => {
            println!("client: {client}");
            // Without --show, an unreachable daemon is worth a note, not a failure.
            match daemon_version(config) {
                Ok(server) => {
                    println!("server: {server}");
                    if server != client {
                        eprintln!(
                            "WARNING: client version != daemon version, restart zrepl daemon"
                        );
                    }
                }
                Err(e) => eprintln!("server: unavailable: {e:#}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The `zrepl` binary: parses the command line and dispatches to the subcommands.
//!
//! Library crates return typed errors; this is the only place that uses `anyhow`, prints errors
//! (`{:#}` shows the whole chain) and turns them into exit codes.

mod abstraction_cmd;
mod cli;
mod configcheck;
mod control_client;
mod daemon_cmd;
mod limits;
mod monitor;
mod monitor_cmd;
mod status_text;
mod test_cmd;
mod version;

/// The zrepl-zfs settings of every subcommand, with the environment applied:
/// `ZREPL_LIBZFS_CORE=off` (or `0`, `false`) makes hold, release and bookmark destruction use
/// the `zfs` command line only.
pub(crate) fn zfs_config() -> zrepl_zfs::ZfsConfig {
    let off = std::env::var("ZREPL_LIBZFS_CORE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "off" | "false" | "no"
        )
    });
    zrepl_zfs::ZfsConfig {
        libzfs_core: !off,
        ..zrepl_zfs::ZfsConfig::default()
    }
}

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cli::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        // A monitoring plugin's usage error is UNKNOWN (3), not clap's 2 (CRITICAL).
        Err(e) if e.use_stderr() && monitor_cmd::is_monitor_invocation(&argv) => {
            let _ = e.print();
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    // A bad ZREPL_FAILPOINTS (tests only) fails here, before any work.
    if zrepl_failpoint::init() {
        eprintln!("zrepl: failpoints enabled by ZREPL_FAILPOINTS (testing only)");
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zrepl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Configcheck(args) => configcheck::run(cli.config.as_deref(), args),
        cli::Command::Version(args) => version::run(cli.config.as_deref(), args),
        cli::Command::Test(args) => test_cmd::run(cli.config.as_deref(), args),
        cli::Command::Daemon => daemon_cmd::daemon(cli.config.as_deref()),
        cli::Command::Stdinserver(args) => daemon_cmd::stdinserver(cli.config.as_deref(), args),
        cli::Command::Signal(args) => daemon_cmd::signal(cli.config.as_deref(), args),
        cli::Command::Run(args) => daemon_cmd::run_job(cli.config.as_deref(), args),
        cli::Command::Status(args) => daemon_cmd::status(cli.config.as_deref(), args),
        cli::Command::Monitor(args) => monitor_cmd::run(cli.config.as_deref(), args),
        cli::Command::Prune(args) => daemon_cmd::prune(cli.config.as_deref(), args),
        cli::Command::ZfsAbstraction(args) => abstraction_cmd::run(args),
        cli::Command::Migrate(args) => abstraction_cmd::migrate(cli.config.as_deref(), args),
        cli::Command::Gencompletion(args) => abstraction_cmd::gencompletion(args),
        cli::Command::Genman(args) => abstraction_cmd::genman(args),
    }
}

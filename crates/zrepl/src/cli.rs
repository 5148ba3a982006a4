//! The command-line interface, as zrepl 0.7 spells it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "zrepl",
    version,
    about = "ZFS replication and snapshot management (zrepl 0.7 compatible)"
)]
pub struct Cli {
    /// Config file (default: the first of /etc/zrepl/zrepl.yml, /usr/local/etc/zrepl/zrepl.yml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the config file and optionally print it with every default filled in.
    Configcheck(ConfigcheckArgs),
    /// Print the version of this client and of the running daemon.
    Version(VersionArgs),
    /// Test configuration parts against the live system.
    Test(TestArgs),
    /// Run the daemon: all configured jobs, and the control socket.
    Daemon,
    /// ssh forced command of `ssh+stdinserver`: relay stdin/stdout to the daemon's socket for
    /// CLIENT_IDENTITY (in authorized_keys: command="zrepl stdinserver CLIENT_IDENTITY",restrict).
    Stdinserver(StdinserverArgs),
    /// Send a signal to a job of the running daemon.
    Signal(SignalArgs),
    /// Run one cycle of a push, pull or snap job without a daemon (snapshot, replicate,
    /// prune) and exit: 0 success, 3 replication failed, 4 pruning failed, 6 snapshotting
    /// failed, 1 the job could not run.
    Run(RunArgs),
    /// Show the running daemon's status.
    Status(StatusArgs),
    /// Nagios/Icinga checks: snapshot age, replication lag, daemon liveness (exit 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    Monitor(crate::monitor_cmd::MonitorArgs),
    /// Show what pruning of a job would destroy now, and which rule keeps the rest.
    Prune(PruneArgs),
    /// List and release the holds and bookmarks zrepl manages.
    #[command(name = "zfs-abstraction")]
    ZfsAbstraction(AbstractionArgs),
    /// One-time migrations of on-disk state from older zrepl versions.
    Migrate(MigrateArgs),
    /// Write a shell completion script.
    Gencompletion(GencompletionArgs),
    /// Write the man page (zrepl.1).
    Genman(GenmanArgs),
}

#[derive(Debug, Args)]
pub struct StdinserverArgs {
    /// The client identity: one of the serving job's `client_identities`.
    pub client_identity: String,
}

#[derive(Debug, Args)]
pub struct AbstractionArgs {
    #[command(subcommand)]
    pub command: AbstractionCommand,
}

#[derive(Debug, Args, Clone)]
pub struct AbstractionFilter {
    /// A dataset name, or comma-separated `<pattern>:<ok|!>` pairs (filter syntax, `<` suffix allowed).
    #[arg(long = "fs")]
    pub fs: Option<String>,
    /// Only abstractions of this job.
    #[arg(long = "job")]
    pub job: Option<String>,
    /// Comma-separated types: last-received-hold, replication-cursor-bookmark-v1,
    /// replication-cursor-bookmark-v2, step-hold, tentative-replication-cursor-bookmark-v2.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// How many pools to list concurrently.
    #[arg(short = 'p', long = "concurrency", default_value_t = 1)]
    pub concurrency: usize,
    /// One JSON object per abstraction.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AbstractionCommand {
    /// List abstractions.
    List(AbstractionFilter),
    /// Release every matching abstraction (DANGEROUS: breaks incremental replication).
    ReleaseAll {
        #[command(flatten)]
        filter: AbstractionFilter,
        /// Only print what would be released.
        #[arg(long)]
        dry_run: bool,
    },
    /// Release only stale abstractions (left behind by earlier, abandoned steps).
    ReleaseStale {
        #[command(flatten)]
        filter: AbstractionFilter,
        /// Only print what would be released.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create an abstraction by hand (debugging).
    Create {
        #[command(subcommand)]
        what: CreateCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A step hold of job JOBID on snapshot TARGET.
    Step {
        #[arg(short = 't', long = "target")]
        target: String,
        #[arg(short = 'j', long = "jobid")]
        jobid: String,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Rewrite legacy hash-valued zrepl:placeholder properties (zrepl 0.0.x) to `on`.
    #[command(name = "0.0.X:0.1:placeholder")]
    Placeholder {
        #[arg(long)]
        dry_run: bool,
    },
    /// Destroy v1 replication cursors (#zrepl_replication_cursor) that have a newer v2 cursor.
    #[command(name = "replication-cursor:v1-v2")]
    ReplicationCursor {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct GencompletionArgs {
    #[arg(value_enum)]
    pub shell: CompletionShell,
    /// Where to write the script.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenmanArgs {
    /// Where to write the man page.
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The push job whose keep_sender/keep_receiver rules to evaluate.
    #[arg(long)]
    pub job: String,
    /// Only decide and print; required: real pruning runs in the daemon after each replication.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the decisions as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalOp {
    /// Start a replication (and pruning) run of an active job now.
    Wakeup,
    /// Cancel the job's current replication run.
    Reset,
    /// Check the TLS certificates, keys and CAs of every job (or of JOB) now. Renewed files are
    /// used from the next connection on without this; it reports whether they load.
    Reload,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job's name (a push, pull or snap job of the config).
    pub job: String,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    #[arg(value_enum)]
    pub op: SignalOp,
    /// The job's name (optional for reload: all jobs).
    #[arg(required_if_eq_any([("op", "wakeup"), ("op", "reset")]))]
    pub job: Option<String>,
    /// (wakeup) Wait until the run this wakeup starts has finished, replication and pruning,
    /// print a summary and exit 0 if it succeeded, 3 if replication failed or was cancelled, 4
    /// if pruning failed, 5 on --timeout, 1 if the run could not be started or followed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (e.g. 30m, 2h; the run goes on) and exit 5.
    #[arg(long, value_parser = parse_delay, requires = "wait")]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusMode {
    /// A live terminal view (needs a terminal on stdout).
    Interactive,
    /// The daemon's status as JSON.
    Raw,
    /// The status as text, every job one after another.
    Dump,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output mode. When stdout is not a terminal, only dump and raw are allowed (as in zrepl).
    #[arg(long, value_enum, default_value = "interactive")]
    pub mode: StatusMode,
    /// Only this job (dump mode); the job shown first (interactive mode).
    #[arg(long)]
    pub job: Option<String>,
    /// Refresh period of the interactive view (Go duration, e.g. 1s, 500ms).
    #[arg(short = 'd', long, default_value = "1s", value_parser = parse_delay)]
    pub delay: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Pretty,
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    All,
    Config,
    Jobs,
    Logging,
}

#[derive(Debug, Args)]
pub struct ConfigcheckArgs {
    /// Print the resolved config in this format (default: print nothing).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Which part to print.
    #[arg(long, value_enum, default_value = "all")]
    pub what: What,
    /// Do not load TLS certificates and keys referenced by the config.
    #[arg(long)]
    pub skip_cert_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Show {
    Client,
    Daemon,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Show only the client's or only the daemon's version.
    #[arg(long, value_enum)]
    pub show: Option<Show>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(subcommand)]
    pub command: TestCommand,
}

#[derive(Debug, Subcommand)]
pub enum TestCommand {
    /// Show which datasets a job's `filesystems` filter accepts.
    Filesystems(TestFilesystemsArgs),
    /// Decode a `receive_resume_token` and print its fields as JSON.
    Decoderesumetoken(DecodeTokenArgs),
    /// Show whether datasets are zrepl placeholders.
    Placeholder(PlaceholderArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["all", "dataset"])))]
pub struct PlaceholderArgs {
    /// Every filesystem and volume on this system.
    #[arg(long)]
    pub all: bool,
    /// One dataset.
    #[arg(long)]
    pub dataset: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["all", "input"])))]
pub struct TestFilesystemsArgs {
    /// The job whose filter to evaluate (push, source or snap).
    #[arg(long)]
    pub job: String,
    /// Evaluate every dataset on this system (`zfs list`).
    #[arg(long)]
    pub all: bool,
    /// Evaluate this one dataset name.
    #[arg(long)]
    pub input: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecodeTokenArgs {
    /// The token, as shown by `zfs get receive_resume_token`.
    #[arg(long)]
    pub token: String,
}

/// zrepl's default config locations, in lookup order.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] =
    ["/etc/zrepl/zrepl.yml", "/usr/local/etc/zrepl/zrepl.yml"];

/// The config path to use: the explicit one, else the first default location that is a regular
/// file. A default location that exists but is not a regular file is an error, as in zrepl.
pub fn resolve_config_path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    for p in DEFAULT_CONFIG_PATHS {
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() => return Ok(PathBuf::from(p)),
            Ok(_) => anyhow::bail!("default config location {p} exists but is not a regular file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot stat default config location {p}"))
            }
        }
    }
    anyhow::bail!(
        "no config file found at {} or {}; pass one with --config PATH",
        DEFAULT_CONFIG_PATHS[0],
        DEFAULT_CONFIG_PATHS[1]
    )
}

/// Loads and validates the config, printing warnings to stderr. Errors list every problem.
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<zrepl_config::Config> {
    let path = resolve_config_path(explicit)?;
    match zrepl_config::load(&path, &FsLoader) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            Ok(loaded.config)
        }
        Err(errs) => {
            let n = errs.0.len();
            anyhow::bail!(
                "could not parse config: {n} error{}:\n{errs}",
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    let d = zrepl_config::units::GoDuration::parse(s)
        .map_err(|e| e.to_string())?
        .to_std();
    if d.is_zero() {
        return Err("the delay must be positive".into());
    }
    Ok(d)
}

/// The file system as the config's [`zrepl_config::SourceLoader`] (the config crate itself
/// touches no file).
pub struct FsLoader;

impl zrepl_config::SourceLoader for FsLoader {
    fn read(&self, path: &std::path::Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn is_dir(&self, path: &std::path::Path) -> std::io::Result<bool> {
        std::fs::metadata(path).map(|m| m.is_dir())
    }
    fn list_dir(&self, path: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }
}

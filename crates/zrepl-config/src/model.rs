//! The typed, validated configuration.
//!
//! Every value here has passed validation: a grid is parsed into buckets, a cron expression into
//! a schedule, a filter into a matcher, sizes into bytes. `Serialize` produces the *config file
//! syntax* with every default filled in, so `zrepl configcheck --format json` output can be fed
//! back as a config and yields the same result.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use zrepl_filters::{DatasetFilter, SnapshotFilter, SnapshotPattern};
use zrepl_zfs_types::DatasetPath;

use crate::cron::CronSchedule;
use crate::grid::GridSpec;
use crate::timestamp::{Location, TimestampFormat};
use crate::units::{DataSize, GoDuration, ZreplDuration};

/// The whole configuration, includes merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub global: Global,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Global {
    pub logging: Vec<LoggingOutlet>,
    pub monitoring: Vec<Monitoring>,
    pub control: Control,
    pub serve: GlobalServe,
    /// Extension (not in zrepl 0.7): how the daemon runs `zfs` and `zpool`.
    pub zfs: ZfsGlobal,
    /// Extension: on SIGTERM/SIGINT, replication runs in progress may finish for this long
    /// before they are cancelled (a second signal cancels them at once). `0s`: at once.
    #[serde(serialize_with = "ser_display")]
    pub shutdown_timeout: GoDuration,
}

impl Global {
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        positive_duration(self.shutdown_timeout).unwrap_or_default()
    }
}

/// `global.zfs` (an extension of zrepl's schema; zrepl configs leave it out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZfsGlobal {
    /// A `zfs`/`zpool` command that is not a send or receive stream and runs longer than this
    /// is killed and reported (a hung command otherwise blocks its job forever). `0s`: never.
    #[serde(serialize_with = "ser_display")]
    pub command_timeout: GoDuration,
}

impl ZfsGlobal {
    pub fn command_timeout(&self) -> Option<std::time::Duration> {
        positive_duration(self.command_timeout)
    }
}

fn positive_duration(d: GoDuration) -> Option<std::time::Duration> {
    u64::try_from(d.as_nanos())
        .ok()
        .filter(|n| *n > 0)
        .map(std::time::Duration::from_nanos)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Control {
    pub sockpath: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalServe {
    pub stdinserver: StdinserverGlobal,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StdinserverGlobal {
    pub sockdir: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Logfmt,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LoggingOutlet {
    Stdout {
        level: LogLevel,
        format: LogFormat,
        time: bool,
        color: bool,
    },
    Syslog {
        level: LogLevel,
        format: LogFormat,
        facility: SyslogFacility,
        #[serde(serialize_with = "ser_display")]
        retry_interval: GoDuration,
    },
    Tcp {
        level: LogLevel,
        format: LogFormat,
        address: String,
        net: String,
        #[serde(serialize_with = "ser_display")]
        retry_interval: GoDuration,
        #[serde(skip_serializing_if = "Option::is_none")]
        tls: Option<TcpOutletTls>,
    },
}

impl LoggingOutlet {
    pub fn level(&self) -> LogLevel {
        match self {
            LoggingOutlet::Stdout { level, .. }
            | LoggingOutlet::Syslog { level, .. }
            | LoggingOutlet::Tcp { level, .. } => *level,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpOutletTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogFacility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl SyslogFacility {
    pub const NAMES: [&'static str; 20] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
        "local7",
    ];
    const ALL: [SyslogFacility; 20] = [
        Self::Kern,
        Self::User,
        Self::Mail,
        Self::Daemon,
        Self::Auth,
        Self::Syslog,
        Self::Lpr,
        Self::News,
        Self::Uucp,
        Self::Cron,
        Self::Authpriv,
        Self::Ftp,
        Self::Local0,
        Self::Local1,
        Self::Local2,
        Self::Local3,
        Self::Local4,
        Self::Local5,
        Self::Local6,
        Self::Local7,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }

    /// The syslog facility code (RFC 5424).
    pub fn code(self) -> u8 {
        match self {
            Self::Kern => 0,
            Self::User => 1,
            Self::Mail => 2,
            Self::Daemon => 3,
            Self::Auth => 4,
            Self::Syslog => 5,
            Self::Lpr => 6,
            Self::News => 7,
            Self::Uucp => 8,
            Self::Cron => 9,
            Self::Authpriv => 10,
            Self::Ftp => 11,
            Self::Local0 => 16,
            Self::Local1 => 17,
            Self::Local2 => 18,
            Self::Local3 => 19,
            Self::Local4 => 20,
            Self::Local5 => 21,
            Self::Local6 => 22,
            Self::Local7 => 23,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Monitoring {
    Prometheus {
        listen: String,
        listen_freebind: bool,
    },
}

/// A job: the closed set of zrepl's job kinds.
// A config holds a handful of jobs, built once: their size does not matter, boxing would only
// cost every `match` a deref.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Job {
    Push(PushJob),
    Sink(SinkJob),
    Pull(PullJob),
    Source(SourceJob),
    Snap(SnapJob),
}

impl Job {
    pub fn name(&self) -> &str {
        match self {
            Job::Push(j) => &j.name,
            Job::Sink(j) => &j.name,
            Job::Pull(j) => &j.name,
            Job::Source(j) => &j.name,
            Job::Snap(j) => &j.name,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Job::Push(_) => "push",
            Job::Sink(_) => "sink",
            Job::Pull(_) => "pull",
            Job::Source(_) => "source",
            Job::Snap(_) => "snap",
        }
    }

    /// The job's `filesystems` filter, for jobs that have one (push, source, snap).
    pub fn filesystems(&self) -> Option<&DatasetFilter> {
        match self {
            Job::Push(j) => Some(&j.filesystems),
            Job::Source(j) => Some(&j.filesystems),
            Job::Snap(j) => Some(&j.filesystems),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushJob {
    pub name: String,
    pub connect: Connect,
    #[serde(serialize_with = "ser_filter")]
    pub filesystems: DatasetFilter,
    pub snapshotting: Snapshotting,
    pub send: SendOptions,
    pub pruning: PruningSenderReceiver,
    pub replication: Replication,
    pub conflict_resolution: ConflictResolution,
    /// Extension (zrepl#397): replicate on this interval too, independent of snapshotting
    /// (`manual`, the default: only after snapshotting and on `zrepl signal wakeup`).
    pub interval: PullInterval,
    /// Extension: replicate on this cron schedule too.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub cron: Option<CronSchedule>,
    /// Extension (zrepl#394): commands around every replication run.
    pub hooks: ReplicationHooks,
}

/// `hooks:` of a push or pull job (the syntax of zrepl's fork dsh2dsh): `pre` runs before a
/// replication run, `post` after its pruning. On a sink or source job: `pre` when a client's
/// session (its control connection) starts, `post` when it ends.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ReplicationHooks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre: Option<JobHook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post: Option<JobHook>,
}

/// One command of [`ReplicationHooks`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobHook {
    pub path: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `0s`: no timeout.
    #[serde(serialize_with = "ser_display")]
    pub timeout: GoDuration,
    pub err_is_fatal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkJob {
    pub name: String,
    pub serve: Serve,
    pub root_fs: DatasetPath,
    /// Extension (zrepl#253): where below `root_fs` received filesystems go.
    pub mapping: Mapping,
    pub recv: RecvOptions,
    /// Extension (zrepl#394): commands around every client session (one control connection).
    pub hooks: ReplicationHooks,
}

/// `mapping` of a sink or pull job (an extension, zrepl#253). zrepl 0.7 puts a sender's
/// `a/b/c` at `root_fs/<client identity>/a/b/c` (sink) or `root_fs/a/b/c` (pull).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mapping {
    /// Sink only: `false` leaves the client identity out (`root_fs/a/b/c`); then the sink
    /// serves exactly one client identity, so that two clients can never share a dataset.
    pub identity_component: bool,
    /// Drop this leading part of every sender path (`tank/data`: `tank/data/x` lands at
    /// `root_fs/[identity/]x`). Sender filesystems outside it, and the prefix itself, are
    /// refused. A prefix is removed one-to-one, so two sender filesystems never map together.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub strip_prefix: Option<DatasetPath>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            identity_component: true,
            strip_prefix: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullJob {
    pub name: String,
    pub connect: Connect,
    pub root_fs: DatasetPath,
    /// Extension (zrepl#253): `strip_prefix` (pull jobs have no identity component).
    pub mapping: Mapping,
    pub interval: PullInterval,
    /// Extension: replicate on this cron schedule (then `interval` may be left out).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    pub cron: Option<CronSchedule>,
    /// Extension (zrepl#394): commands around every replication run.
    pub hooks: ReplicationHooks,
    pub recv: RecvOptions,
    pub pruning: PruningSenderReceiver,
    pub replication: Replication,
    pub conflict_resolution: ConflictResolution,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceJob {
    pub name: String,
    pub serve: Serve,
    #[serde(serialize_with = "ser_filter")]
    pub filesystems: DatasetFilter,
    pub snapshotting: Snapshotting,
    pub send: SendOptions,
    /// Extension (zrepl#394): commands around every client session (one control connection).
    pub hooks: ReplicationHooks,
    /// Extension: what a pull client may destroy here (its `keep_sender` pruning).
    pub client_pruning: ClientPruning,
    /// Extension: `step_holds: {max_age: <duration>}`: this job's step holds (a pull client's
    /// steps in progress) older than this are released, so a client that never completes its
    /// steps cannot keep snapshots here forever. `None` (the default): zrepl 0.7's behaviour,
    /// a step hold stays until the client completes a later step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_holds: Option<StepHolds>,
}

/// `step_holds:` of a source job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepHolds {
    #[serde(serialize_with = "ser_display")]
    pub max_age: ZreplDuration,
}

/// `client_pruning:` of a source job: the source operator's bound on what pull clients destroy.
/// The default (`allow: true`, no `keep`) is zrepl 0.7's: a client may destroy any snapshot of
/// the filesystems it may read that is not held (its step holds and the cursor's snapshot are).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientPruning {
    /// `false`: every destroy request of a client is refused.
    pub allow: bool,
    /// Snapshots these rules keep (evaluated here, with this job's cursor for
    /// `not_replicated`) are never destroyed for a client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<KeepRule>,
}

impl Default for ClientPruning {
    fn default() -> Self {
        ClientPruning {
            allow: true,
            keep: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapJob {
    pub name: String,
    #[serde(serialize_with = "ser_filter")]
    pub filesystems: DatasetFilter,
    pub snapshotting: Snapshotting,
    pub pruning: PruningLocal,
}

/// `interval` of a pull job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullInterval {
    Manual,
    Every(ZreplDuration),
}

impl Serialize for PullInterval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PullInterval::Manual => s.serialize_str("manual"),
            PullInterval::Every(d) => s.serialize_str(&d.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Connect {
    #[serde(rename = "tcp")]
    Tcp {
        address: String,
        #[serde(serialize_with = "ser_display")]
        dial_timeout: GoDuration,
    },
    #[serde(rename = "tls")]
    Tls {
        address: String,
        ca: String,
        cert: String,
        key: String,
        server_cn: String,
        #[serde(serialize_with = "ser_display")]
        dial_timeout: GoDuration,
    },
    #[serde(rename = "ssh+stdinserver")]
    Ssh {
        host: String,
        user: String,
        port: u16,
        identity_file: String,
        options: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ssh_command: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        transport_open_command: Option<Vec<String>>,
        #[serde(serialize_with = "ser_display")]
        dial_timeout: GoDuration,
    },
    #[serde(rename = "local")]
    Local {
        listener_name: String,
        client_identity: String,
        #[serde(serialize_with = "ser_display")]
        dial_timeout: GoDuration,
    },
    /// Extension (zrepl#409, #812): an agentless remote that has only sshd and `zfs`; this
    /// daemon runs the remote `zfs` commands itself over one multiplexed ssh connection. A
    /// push job receives below `root_fs` there (as a sink with
    /// `mapping.identity_component: false` would, with `recv` as a sink's); a pull job sends
    /// the remote `filesystems` (with `send` as a source's).
    #[serde(rename = "ssh+zfs")]
    Agentless(Box<Agentless>),
}

/// `connect: {type: ssh+zfs}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agentless {
    pub host: String,
    pub user: String,
    pub port: u16,
    pub identity_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<String>,
    pub options: Vec<String>,
    /// Push: the remote receiving root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_fs: Option<DatasetPath>,
    /// Push: receive options on the remote (a sink's `recv`).
    pub recv: RecvOptions,
    /// Pull: the remote filesystems to send.
    #[serde(
        serialize_with = "ser_opt_filter",
        skip_serializing_if = "Option::is_none"
    )]
    pub filesystems: Option<DatasetFilter>,
    /// Pull: send options on the remote (a source's `send`).
    pub send: SendOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Serve {
    #[serde(rename = "tcp")]
    Tcp {
        listen: String,
        listen_freebind: bool,
        #[serde(serialize_with = "ser_clients")]
        clients: Vec<TcpClient>,
    },
    #[serde(rename = "tls")]
    Tls {
        listen: String,
        listen_freebind: bool,
        ca: String,
        cert: String,
        key: String,
        client_cns: Vec<String>,
        #[serde(serialize_with = "ser_display")]
        handshake_timeout: GoDuration,
    },
    #[serde(rename = "stdinserver")]
    Stdinserver { client_identities: Vec<String> },
    #[serde(rename = "local")]
    Local { listener_name: String },
}

/// One entry of a tcp serve's `clients` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClient {
    /// The key as written (`192.168.1.1`, `10.0.0.0/24`, `fe80::1%eth0`).
    pub key: String,
    pub net: std::net::IpAddr,
    /// Prefix length; full length for a single address.
    pub prefix_len: u8,
    pub zone: Option<String>,
    /// Identity, with exactly one `*` for CIDR entries (replaced by the peer address).
    pub identity: String,
}

impl TcpClient {
    /// The identity of `peer` if this entry matches it.
    pub fn identity_for(&self, peer: std::net::IpAddr, zone: Option<&str>) -> Option<String> {
        if self.zone.as_deref() != zone {
            return None;
        }
        let (a, b) = (to_v6(self.net), to_v6(peer));
        let plen = if self.net.is_ipv4() {
            self.prefix_len as u32 + 96
        } else {
            self.prefix_len as u32
        };
        let mask = if plen == 0 {
            0
        } else {
            u128::MAX << (128 - plen)
        };
        if u128::from(a) & mask != u128::from(b) & mask {
            return None;
        }
        if self.identity.contains('*') {
            let mut ip = peer.to_canonical().to_string();
            if let Some(z) = zone {
                ip = format!("{ip}-{z}");
            }
            // ':' is valid in ZFS names, so IPv6 addresses can stand in identities as they are.
            Some(self.identity.replacen('*', &ip, 1))
        } else {
            Some(self.identity.clone())
        }
    }
}

fn to_v6(ip: std::net::IpAddr) -> std::net::Ipv6Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Snapshotting {
    Periodic {
        prefix: String,
        #[serde(serialize_with = "ser_display")]
        interval: ZreplDuration,
        #[serde(serialize_with = "ser_display")]
        timestamp_format: TimestampFormat,
        #[serde(serialize_with = "ser_display")]
        timestamp_location: Location,
        hooks: Vec<Hook>,
        /// Extension (zrepl#728): a filesystem whose `written` (bytes changed since its newest
        /// snapshot) is below this many bytes gets no snapshot in a round; 0 (the default, as in
        /// zrepl 0.7) never skips.
        written_threshold: u64,
        /// Extension (zrepl#808): what to do when replication lags behind; none (the default,
        /// as in zrepl 0.7): snapshot regardless.
        #[serde(skip_serializing_if = "Option::is_none")]
        backpressure: Option<Backpressure>,
    },
    Cron {
        prefix: String,
        #[serde(serialize_with = "ser_display")]
        cron: CronSchedule,
        #[serde(serialize_with = "ser_display")]
        timestamp_format: TimestampFormat,
        #[serde(serialize_with = "ser_display")]
        timestamp_location: Location,
        hooks: Vec<Hook>,
        /// Extension (zrepl#728): a filesystem whose `written` (bytes changed since its newest
        /// snapshot) is below this many bytes gets no snapshot in a round; 0 (the default, as in
        /// zrepl 0.7) never skips.
        written_threshold: u64,
        /// Extension (zrepl#808): what to do when replication lags behind; none (the default,
        /// as in zrepl 0.7): snapshot regardless.
        #[serde(skip_serializing_if = "Option::is_none")]
        backpressure: Option<Backpressure>,
    },
    Manual,
}

impl Snapshotting {
    /// The prefix of the snapshots this job makes (`None` for `manual`).
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Snapshotting::Periodic { prefix, .. } | Snapshotting::Cron { prefix, .. } => {
                Some(prefix)
            }
            Snapshotting::Manual => None,
        }
    }

    /// `backpressure` of a periodic or cron snapshotting.
    pub fn backpressure(&self) -> Option<Backpressure> {
        match self {
            Snapshotting::Periodic { backpressure, .. }
            | Snapshotting::Cron { backpressure, .. } => *backpressure,
            Snapshotting::Manual => None,
        }
    }
}

/// `snapshotting.backpressure` (extension, zrepl#808): a filesystem whose oldest snapshot not yet
/// replicated (newer than the job's replication cursor) is older than `max_lag` is not
/// snapshotted (`skip`) or only warned about (`warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backpressure {
    #[serde(serialize_with = "ser_display")]
    pub max_lag: ZreplDuration,
    pub action: BackpressureAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackpressureAction {
    /// Take no snapshot of the lagging filesystem in this round (and warn).
    Skip,
    /// Snapshot as usual, but warn.
    Warn,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum Hook {
    #[serde(rename = "command")]
    Command {
        path: String,
        #[serde(serialize_with = "ser_display")]
        timeout: GoDuration,
        err_is_fatal: bool,
        #[serde(serialize_with = "ser_filter")]
        filesystems: DatasetFilter,
    },
    #[serde(rename = "postgres-checkpoint")]
    PostgresCheckpoint {
        dsn: String,
        #[serde(serialize_with = "ser_display")]
        timeout: GoDuration,
        err_is_fatal: bool,
        #[serde(serialize_with = "ser_filter")]
        filesystems: DatasetFilter,
    },
    #[serde(rename = "mysql-lock-tables")]
    MysqlLockTables {
        dsn: String,
        #[serde(serialize_with = "ser_display")]
        timeout: GoDuration,
        err_is_fatal: bool,
        #[serde(serialize_with = "ser_filter")]
        filesystems: DatasetFilter,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruningSenderReceiver {
    pub keep_sender: Vec<KeepRule>,
    pub keep_receiver: Vec<KeepRule>,
    /// Extension: which snapshots the keep rules judge (zrepl 0.7: all).
    pub scope: PruningScope,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruningLocal {
    pub keep: Vec<KeepRule>,
    /// Extension: which snapshots the keep rules judge (zrepl 0.7: all).
    pub scope: PruningScope,
}

/// `pruning.scope` (an extension; zrepl#651): the snapshots pruning may destroy. Snapshots outside
/// the scope are never destroyed and do not count for the keep rules (`last_n`, `grid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PruningScope {
    /// Every snapshot (zrepl 0.7): what no keep rule keeps is destroyed, whoever made it.
    #[default]
    All,
    /// Only snapshots that `replication.snapshots` (or `replication.prefix`) selects.
    Selected,
    /// Only snapshots whose name starts with the job's `snapshotting.prefix`.
    Own,
}

/// A compiled regex that prints as its source.
#[derive(Debug, Clone)]
pub struct Regex(pub regex::Regex);

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum KeepRule {
    #[serde(rename = "not_replicated")]
    NotReplicated { keep_snapshot_at_cursor: bool },
    #[serde(rename = "last_n")]
    LastN {
        count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        regex: Option<Regex>,
    },
    #[serde(rename = "grid")]
    Grid {
        #[serde(serialize_with = "ser_display")]
        grid: GridSpec,
        regex: Regex,
    },
    #[serde(rename = "regex")]
    Regex { regex: Regex, negate: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SendOptions {
    pub encrypted: bool,
    pub raw: bool,
    pub send_properties: bool,
    pub backup_properties: bool,
    pub large_blocks: bool,
    pub compressed: bool,
    pub embedded_data: bool,
    pub saved: bool,
    pub bandwidth_limit: BandwidthLimit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecvOptions {
    pub properties: RecvProperties,
    pub bandwidth_limit: BandwidthLimit,
    pub placeholder: PlaceholderOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecvProperties {
    pub inherit: Vec<String>,
    #[serde(rename = "override")]
    pub override_: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlaceholderOptions {
    pub encryption: PlaceholderEncryption,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaceholderEncryption {
    Unspecified,
    Inherit,
    Off,
}

/// A token bucket: `max` bytes per second (negative = unlimited) with `bucket_capacity` bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandwidthLimit {
    #[serde(serialize_with = "ser_display")]
    pub max: DataSize,
    #[serde(serialize_with = "ser_display")]
    pub bucket_capacity: DataSize,
}

impl BandwidthLimit {
    /// Bytes per second, or `None` for no limit.
    pub fn max_bytes_per_sec(&self) -> Option<f64> {
        (self.max.bytes() > 0.0).then_some(self.max.bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replication {
    pub protection: Protection,
    pub concurrency: Concurrency,
    /// Extension (not in zrepl 0.7): compression of the replication stream on the wire.
    pub compression: StreamCompression,
    /// Extension: zstd level for `compression` (1..=19, default 3).
    pub compression_level: i32,
    /// Extension: a step whose stream moves no bytes for this long is aborted and retried
    /// (resumed where possible). `0s`: never.
    #[serde(serialize_with = "ser_display")]
    pub stall_timeout: GoDuration,
    /// Extension (zrepl#403): the snapshots this job replicates (`replication.snapshots`, or
    /// `replication.prefix` as in zrepl's fork dsh2dsh); default: all, as zrepl 0.7.
    #[serde(serialize_with = "ser_snapshot_filter")]
    pub snapshots: SnapshotFilter,
    /// Extension (zrepl#354, #480): send runs of consecutive snapshots as one `zfs send -I`
    /// stream; default false: one stream per snapshot, as zrepl 0.7.
    pub packages: bool,
}

impl Replication {
    pub fn stall_timeout(&self) -> Option<std::time::Duration> {
        positive_duration(self.stall_timeout)
    }
}

/// `replication.compression` (an extension of zrepl's schema; zrepl configs leave it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamCompression {
    /// zstd on network transports, except for raw (encrypted) and `compressed` sends, whose
    /// streams do not compress.
    Auto,
    Off,
    /// zstd on network transports, whatever the send flags.
    Zstd,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Protection {
    pub initial: ProtectionLevel,
    pub incremental: ProtectionLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectionLevel {
    GuaranteeResumability,
    GuaranteeIncremental,
    GuaranteeNothing,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concurrency {
    pub steps: u32,
    pub size_estimates: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictResolution {
    pub initial_replication: InitialReplication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialReplication {
    MostRecent,
    All,
    Fail,
}

fn ser_display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_opt_display<T: std::fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn ser_snapshot_filter<S: Serializer>(f: &SnapshotFilter, s: S) -> Result<S::Ok, S::Error> {
    let list = |ps: &[SnapshotPattern]| -> Vec<BTreeMap<&'static str, String>> {
        ps.iter()
            .map(|p| match p {
                SnapshotPattern::Prefix(x) => BTreeMap::from([("prefix", x.clone())]),
                SnapshotPattern::Regex(r) => BTreeMap::from([("regex", r.as_str().to_string())]),
            })
            .collect()
    };
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry("include", &list(&f.include))?;
    m.serialize_entry("exclude", &list(&f.exclude))?;
    m.end()
}

fn ser_opt_filter<S: Serializer>(f: &Option<DatasetFilter>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => ser_filter(f, s),
        None => s.serialize_none(),
    }
}

fn ser_filter<S: Serializer>(f: &DatasetFilter, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(f.patterns().len()))?;
    for (k, v) in f.patterns() {
        m.serialize_entry(k, v)?;
    }
    m.end()
}

fn ser_clients<S: Serializer>(c: &[TcpClient], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(c.len()))?;
    for e in c {
        m.serialize_entry(&e.key, &e.identity)?;
    }
    m.end()
}

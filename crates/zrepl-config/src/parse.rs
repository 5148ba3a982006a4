//! Decoding of YAML nodes into the typed [`crate::model`], field by field, with zrepl 0.7's
//! required/optional/default rules (spec §2) and every error collected.

use std::collections::BTreeMap;

use zrepl_filters::{DatasetFilter, SnapshotFilter, SnapshotPattern};
use zrepl_zfs_types::name::check_component;
use zrepl_zfs_types::DatasetPath;

use crate::cron::CronSchedule;
use crate::decode::{show, Cx, MapReader};
use crate::grid::GridSpec;
use crate::model::*;
use crate::timestamp::{Location, TimestampFormat};
use crate::units::{check_hostport, DataSize, GoDuration, ZreplDuration};
use crate::yaml::{Node, NodeKind};

/// What one file contributes: its global section (main file only), jobs and include list.
pub(crate) struct FileParts<'n> {
    pub global: Option<Global>,
    pub jobs: Vec<(Job, &'n Node)>,
    pub include: Vec<(String, &'n Node)>,
    pub has_include_key: Option<&'n Node>,
    pub ignored_keys: Vec<(String, &'n Node)>,
}

pub(crate) fn decode_file<'n>(cx: &mut Cx, root: Option<&'n Node>, is_main: bool) -> FileParts<'n> {
    let mut parts = FileParts {
        global: None,
        jobs: Vec::new(),
        include: Vec::new(),
        has_include_key: None,
        ignored_keys: Vec::new(),
    };
    let root = match root {
        None => {
            if is_main {
                parts.global = global_defaults(cx);
            }
            return parts;
        }
        Some(Node {
            kind: NodeKind::Null,
            ..
        }) => {
            if is_main {
                parts.global = global_defaults(cx);
            }
            return parts;
        }
        Some(n) => n,
    };
    let Some(mut m) = cx.map(root, "") else {
        return parts;
    };
    if is_main {
        parts.global = match m.get("global") {
            Some((n, p)) => decode_global(cx, n, &p),
            None => global_defaults(cx),
        };
    } else if let Some((n, _)) = m.get("global") {
        parts.ignored_keys.push(("global".into(), n));
    }
    if let Some((n, p)) = m.get("jobs") {
        if let NodeKind::Seq(items) = &n.kind {
            for (i, item) in items.iter().enumerate() {
                if let Some(j) = decode_job(cx, item, &format!("{p}[{i}]")) {
                    parts.jobs.push((j, item));
                }
            }
        } else {
            cx.err(
                n.mark,
                &p,
                format!("expected a list of jobs, found {}", n.describe()),
            );
        }
    }
    if let Some((n, p)) = m.get("include") {
        parts.has_include_key = Some(n);
        if let NodeKind::Seq(items) = &n.kind {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = cx.nonempty_string(item, &format!("{p}[{i}]")) {
                    parts.include.push((s, item));
                }
            }
        } else {
            cx.err(
                n.mark,
                &p,
                format!("expected a list of paths, found {}", n.describe()),
            );
        }
    }
    m.finish(cx);
    parts
}

fn global_defaults(cx: &mut Cx) -> Option<Global> {
    let empty = Node {
        kind: NodeKind::Map(Vec::new()),
        mark: Default::default(),
    };
    decode_global(cx, &empty, "global")
}

/// Decodes a sub-struct that is "optional, built from defaults" (zrepl's `fromdefaults`).
fn from_defaults<T>(
    cx: &mut Cx,
    m: &mut MapReader,
    key: &str,
    f: impl FnOnce(&mut Cx, &Node, &str) -> Option<T>,
) -> Option<T> {
    match m.get(key) {
        Some((n, p)) => f(cx, n, &p),
        None => {
            let empty = Node {
                kind: NodeKind::Map(Vec::new()),
                mark: m.mark,
            };
            let p = if m.path.is_empty() {
                key.to_string()
            } else {
                format!("{}.{key}", m.path)
            };
            f(cx, &empty, &p)
        }
    }
}

/// `global.zfs.command_timeout` when the config leaves it out: long enough for a `zfs list` of
/// half a million snapshots or a large batched destroy, short enough that a hung command does
/// not block a job for days.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: i64 = 3600;
/// `global.shutdown_timeout` when the config leaves it out: below systemd's default stop
/// timeout (90 s), after which the service is killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: i64 = 60;
/// `replication.stall_timeout` when the config leaves it out.
pub const DEFAULT_STALL_TIMEOUT_SECS: i64 = 600;

fn decode_global(cx: &mut Cx, node: &Node, path: &str) -> Option<Global> {
    let mut m = cx.map(node, path)?;
    let logging = match m.get("logging") {
        None => Some(vec![LoggingOutlet::Stdout {
            level: LogLevel::Warn,
            format: LogFormat::Human,
            time: true,
            color: true,
        }]),
        Some((n, p)) => decode_logging(cx, n, &p),
    };
    let monitoring = m.or(cx, "monitoring", Vec::new(), |cx, n, p| {
        let list = cx.list(n, p, decode_monitoring)?;
        if list.len() > 1 {
            cx.err(
                n.mark,
                p,
                "at most one prometheus monitoring endpoint may be configured",
            );
            return None;
        }
        Some(list)
    });
    let control = from_defaults(cx, &mut m, "control", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let sockpath = m.or(
            cx,
            "sockpath",
            "/var/run/zrepl/control".to_string(),
            |cx, n, p| cx.nonempty_string(n, p),
        );
        m.finish(cx);
        Some(Control {
            sockpath: sockpath?,
        })
    });
    let serve = from_defaults(cx, &mut m, "serve", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let stdinserver = from_defaults(cx, &mut m, "stdinserver", |cx, n, p| {
            let mut m = cx.map(n, p)?;
            let sockdir = m.or(
                cx,
                "sockdir",
                "/var/run/zrepl/stdinserver".to_string(),
                |cx, n, p| cx.nonempty_string(n, p),
            );
            m.finish(cx);
            Some(StdinserverGlobal { sockdir: sockdir? })
        });
        m.finish(cx);
        Some(GlobalServe {
            stdinserver: stdinserver?,
        })
    });
    let zfs = from_defaults(cx, &mut m, "zfs", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let command_timeout = m.or(
            cx,
            "command_timeout",
            GoDuration::from_secs(DEFAULT_COMMAND_TIMEOUT_SECS),
            go_duration_nonneg,
        );
        m.finish(cx);
        Some(ZfsGlobal {
            command_timeout: command_timeout?,
        })
    });
    let shutdown_timeout = m.or(
        cx,
        "shutdown_timeout",
        GoDuration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS),
        go_duration_nonneg,
    );
    m.finish(cx);
    Some(Global {
        logging: logging?,
        monitoring: monitoring?,
        control: control?,
        serve: serve?,
        zfs: zfs?,
        shutdown_timeout: shutdown_timeout?,
    })
}

fn decode_logging(cx: &mut Cx, node: &Node, path: &str) -> Option<Vec<LoggingOutlet>> {
    let outlets = cx.list(node, path, decode_outlet)?;
    let (mut stdout, mut syslog) = (0, 0);
    for o in &outlets {
        match o {
            LoggingOutlet::Stdout { .. } => stdout += 1,
            LoggingOutlet::Syslog { .. } => syslog += 1,
            LoggingOutlet::Tcp { .. } => {}
        }
    }
    if stdout > 1 {
        cx.err(
            node.mark,
            path,
            "at most one stdout logging outlet may be configured",
        );
    }
    if syslog > 1 {
        cx.err(
            node.mark,
            path,
            "at most one syslog logging outlet may be configured",
        );
    }
    (stdout <= 1 && syslog <= 1).then_some(outlets)
}

fn enum_value<T: Copy>(
    cx: &mut Cx,
    node: &Node,
    path: &str,
    what: &str,
    table: &[(&str, T)],
) -> Option<T> {
    let s = cx.string(node, path)?;
    match table.iter().find(|(k, _)| *k == s) {
        Some((_, v)) => Some(*v),
        None => {
            let names: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
            cx.err(
                node.mark,
                path,
                format!(
                    "invalid {what} {s:?} (expected one of: {})",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

fn decode_outlet(cx: &mut Cx, node: &Node, path: &str) -> Option<LoggingOutlet> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["stdout", "syslog", "tcp"]);
    let level = m.req(cx, "level", |cx, n, p| {
        enum_value(
            cx,
            n,
            p,
            "log level",
            &[
                ("debug", LogLevel::Debug),
                ("info", LogLevel::Info),
                ("warn", LogLevel::Warn),
                ("error", LogLevel::Error),
            ],
        )
    });
    let format = m.req(cx, "format", |cx, n, p| {
        enum_value(
            cx,
            n,
            p,
            "log format",
            &[
                ("human", LogFormat::Human),
                ("logfmt", LogFormat::Logfmt),
                ("json", LogFormat::Json),
            ],
        )
    });
    let out = (|| -> Option<LoggingOutlet> {
        Some(match t.clone()?.as_str() {
            "stdout" => {
                let time = m.or(cx, "time", true, |cx, n, p| cx.bool(n, p));
                let color = m.or(cx, "color", true, |cx, n, p| cx.bool(n, p));
                LoggingOutlet::Stdout {
                    level: level?,
                    format: format?,
                    time: time?,
                    color: color?,
                }
            }
            "syslog" => {
                let facility = m.or(cx, "facility", SyslogFacility::Local0, |cx, n, p| {
                    let s = cx.string(n, p)?;
                    let f = SyslogFacility::parse(&s);
                    if f.is_none() {
                        cx.err(
                            n.mark,
                            p,
                            format!(
                                "invalid syslog facility {s:?} (expected one of: {})",
                                SyslogFacility::NAMES.join(", ")
                            ),
                        );
                    }
                    f
                });
                let retry = m.or(
                    cx,
                    "retry_interval",
                    GoDuration::from_secs(10),
                    go_duration_positive,
                );
                LoggingOutlet::Syslog {
                    level: level?,
                    format: format?,
                    facility: facility?,
                    retry_interval: retry?,
                }
            }
            _ => {
                let address = m.req(cx, "address", hostport);
                let net = m.or(cx, "net", "tcp".to_string(), |cx, n, p| {
                    let s = cx.string(n, p)?;
                    if !matches!(s.as_str(), "tcp" | "tcp4" | "tcp6") {
                        cx.err(
                            n.mark,
                            p,
                            format!("invalid network {s:?} (expected tcp, tcp4 or tcp6)"),
                        );
                        return None;
                    }
                    Some(s)
                });
                let retry = m.or(
                    cx,
                    "retry_interval",
                    GoDuration::from_secs(10),
                    go_duration_positive,
                );
                let tls = m.opt(cx, "tls", |cx, n, p| {
                    let mut m = cx.map(n, p)?;
                    let ca = m.opt(cx, "ca", |cx, n, p| cx.nonempty_string(n, p));
                    let cert = m.req(cx, "cert", |cx, n, p| cx.nonempty_string(n, p));
                    let key = m.req(cx, "key", |cx, n, p| cx.nonempty_string(n, p));
                    m.finish(cx);
                    Some(TcpOutletTls {
                        ca: ca?,
                        cert: cert?,
                        key: key?,
                    })
                });
                LoggingOutlet::Tcp {
                    level: level?,
                    format: format?,
                    address: address?,
                    net: net?,
                    retry_interval: retry?,
                    tls: tls?,
                }
            }
        })
    })();
    if t.is_some() {
        m.finish(cx);
    }
    out
}

fn decode_monitoring(cx: &mut Cx, node: &Node, path: &str) -> Option<Monitoring> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["prometheus"]);
    let listen = m.req(cx, "listen", hostport);
    let freebind = m.or(cx, "listen_freebind", false, |cx, n, p| cx.bool(n, p));
    m.finish(cx);
    t?;
    Some(Monitoring::Prometheus {
        listen: listen?,
        listen_freebind: freebind?,
    })
}

fn hostport(cx: &mut Cx, n: &Node, p: &str) -> Option<String> {
    let s = cx.nonempty_string(n, p)?;
    if let Err(e) = check_hostport(&s) {
        cx.err(n.mark, p, e);
        return None;
    }
    Some(s)
}

fn go_duration(cx: &mut Cx, n: &Node, p: &str) -> Option<GoDuration> {
    let s = cx.string(n, p)?;
    match GoDuration::parse(&s) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.err(n.mark, p, e);
            None
        }
    }
}

fn go_duration_nonneg(cx: &mut Cx, n: &Node, p: &str) -> Option<GoDuration> {
    let d = go_duration(cx, n, p)?;
    if d.is_negative() {
        cx.err(n.mark, p, "duration must not be negative");
        return None;
    }
    Some(d)
}

fn go_duration_positive(cx: &mut Cx, n: &Node, p: &str) -> Option<GoDuration> {
    let d = go_duration(cx, n, p)?;
    if d.is_negative() || d.is_zero() {
        cx.err(n.mark, p, "duration must be positive");
        return None;
    }
    Some(d)
}

fn zrepl_duration_positive(cx: &mut Cx, n: &Node, p: &str) -> Option<ZreplDuration> {
    let s = cx.string(n, p)?;
    match ZreplDuration::parse(&s) {
        Ok(d) if d.as_secs() > 0 => Some(d),
        Ok(_) => {
            cx.err(n.mark, p, "duration must be positive");
            None
        }
        Err(e) => {
            cx.err(n.mark, p, e);
            None
        }
    }
}

/// Job names end up in hold tags and bookmark names; check they fit (spec §2.0).
pub fn check_job_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("job name must not be empty".into());
    }
    if name.starts_with('_') {
        return Err(format!(
            "job name {name:?} is reserved for internal use (starts with _)"
        ));
    }
    check_component(name).map_err(|e| format!("invalid job name {name:?}: {e}"))?;
    for tag in [
        format!("zrepl_STEP_J_{name}"),
        format!("zrepl_last_received_J_{name}"),
    ] {
        zrepl_zfs_types::name::check_hold_tag(&tag).map_err(|e| {
            format!("job name {name:?} is too long to be used in hold tag {tag:?}: {e}")
        })?;
    }
    let bm = format!("pool/ds#zrepl_CURSORTENTATIVE__G_{:016x}_J_{name}", 0u64);
    zrepl_zfs_types::name::check_bookmark_name(&bm).map_err(|e| {
        format!(
            "job name {name:?} is too long to be used in replication cursor bookmark names: {e}"
        )
    })?;
    Ok(())
}

fn job_name(cx: &mut Cx, n: &Node, p: &str) -> Option<String> {
    let s = cx.string(n, p)?;
    if let Err(e) = check_job_name(&s) {
        cx.err(n.mark, p, e);
        return None;
    }
    Some(s)
}

fn identity(cx: &mut Cx, n: &Node, p: &str) -> Option<String> {
    let s = cx.string(n, p)?;
    if let Err(e) = check_component(&s) {
        cx.err(
            n.mark,
            p,
            format!(
                "invalid client identity {s:?}: must be a single ZFS dataset name component: {e}"
            ),
        );
        return None;
    }
    Some(s)
}

fn dataset_path(cx: &mut Cx, n: &Node, p: &str) -> Option<DatasetPath> {
    let s = cx.nonempty_string(n, p)?;
    match DatasetPath::parse(&s) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.err(n.mark, p, format!("invalid dataset path {s:?}: {e}"));
            None
        }
    }
}

pub(crate) fn filter(cx: &mut Cx, n: &Node, p: &str) -> Option<DatasetFilter> {
    let entries = cx.string_map(n, p)?;
    if entries.is_empty() {
        cx.err(
            n.mark,
            p,
            "filter must not be empty (use {\"<\": true} to match every dataset)",
        );
        return None;
    }
    let mut pairs = Vec::new();
    let mut ok = true;
    for (k, kmark, v) in &entries {
        let vp = format!("{p}.{k}");
        match cx.bool(v, &vp) {
            Some(b) => {
                if let Err(errs) = DatasetFilter::new([(k.as_str(), true)]) {
                    for e in errs {
                        cx.err(*kmark, &vp, format!("invalid filter pattern: {e}"));
                    }
                    ok = false;
                } else {
                    pairs.push((k.as_str(), b));
                }
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    match DatasetFilter::new(pairs) {
        Ok(f) => Some(f),
        Err(errs) => {
            for e in errs {
                cx.err(n.mark, p, e.to_string());
            }
            None
        }
    }
}

fn decode_job(cx: &mut Cx, node: &Node, path: &str) -> Option<Job> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["push", "sink", "pull", "source", "snap"]);
    let name = m.req(cx, "name", job_name);
    let job = (|| match t.as_deref() {
        Some("push") => {
            let connect = m.req(cx, "connect", decode_connect);
            if !check_agentless(cx, m.mark, path, connect.as_ref(), true) {
                return None;
            }
            let filesystems = m.req(cx, "filesystems", filter);
            let snapshotting = m.req(cx, "snapshotting", decode_snapshotting);
            let send = from_defaults(cx, &mut m, "send", decode_send);
            let pruning = m.req(cx, "pruning", decode_pruning_sr);
            let replication = from_defaults(cx, &mut m, "replication", decode_replication);
            let cr = from_defaults(
                cx,
                &mut m,
                "conflict_resolution",
                decode_conflict_resolution,
            );
            let interval = m.or(cx, "interval", PullInterval::Manual, decode_interval);
            let cron = m.or(cx, "cron", None, |cx, n, p| decode_cron(cx, n, p).map(Some));
            let hooks = m.or(cx, "hooks", ReplicationHooks::default(), decode_job_hooks);
            if let (Some(s), Some(r), Some(pr)) = (&snapshotting, &replication, &pruning) {
                if !check_scope(
                    cx,
                    m.mark,
                    path,
                    pr.scope,
                    Some(&r.snapshots),
                    Some(s.prefix()),
                ) {
                    return None;
                }
            }
            if let (Some(s), Some(r)) = (&snapshotting, &replication) {
                if s.backpressure().is_some()
                    && r.protection.incremental == ProtectionLevel::GuaranteeNothing
                {
                    cx.err(
                        m.mark,
                        &format!("{path}.snapshotting.backpressure"),
                        "backpressure measures replication lag by the job's replication cursor, which replication.protection.incremental: guarantee_nothing does not keep",
                    );
                    return None;
                }
            }
            Some(Job::Push(PushJob {
                name: name.clone()?,
                connect: connect?,
                filesystems: filesystems?,
                snapshotting: snapshotting?,
                send: send?,
                pruning: pruning?,
                replication: replication?,
                conflict_resolution: cr?,
                interval: interval?,
                cron: cron?,
                hooks: hooks?,
            }))
        }
        Some("sink") => {
            let serve = m.req(cx, "serve", decode_serve);
            let root_fs = m.req(cx, "root_fs", dataset_path);
            let mapping = m.or(cx, "mapping", Mapping::default(), |cx, n, p| {
                decode_mapping(cx, n, p, true)
            });
            let recv = from_defaults(cx, &mut m, "recv", decode_recv);
            let hooks = m.or(cx, "hooks", ReplicationHooks::default(), decode_job_hooks);
            if let (Some(mp), Some(sv)) = (&mapping, &serve) {
                if !mp.identity_component {
                    if let Some(why) = several_identities(sv) {
                        cx.err(
                            m.mark,
                            &format!("{path}.mapping.identity_component"),
                            format!("identity_component: false needs a sink that serves exactly one client identity, so that two clients can never receive into the same dataset; {why}"),
                        );
                        return None;
                    }
                }
            }
            Some(Job::Sink(SinkJob {
                name: name.clone()?,
                serve: serve?,
                root_fs: root_fs?,
                mapping: mapping?,
                recv: recv?,
                hooks: hooks?,
            }))
        }
        Some("pull") => {
            let connect = m.req(cx, "connect", decode_connect);
            if !check_agentless(cx, m.mark, path, connect.as_ref(), false) {
                return None;
            }
            let root_fs = m.req(cx, "root_fs", dataset_path);
            let mapping = m.or(cx, "mapping", Mapping::default(), |cx, n, p| {
                decode_mapping(cx, n, p, false)
            });
            let hooks = m.or(cx, "hooks", ReplicationHooks::default(), decode_job_hooks);
            // With a `cron` schedule (an extension), `interval` may be left out.
            let cron = m.or(cx, "cron", None, |cx, n, p| decode_cron(cx, n, p).map(Some));
            let interval = if !m.has("interval") && matches!(cron, Some(Some(_))) {
                Some(PullInterval::Manual)
            } else {
                m.req(cx, "interval", decode_interval)
            };
            let recv = from_defaults(cx, &mut m, "recv", decode_recv);
            let pruning = m.req(cx, "pruning", decode_pruning_sr);
            let replication = from_defaults(cx, &mut m, "replication", decode_replication);
            let cr = from_defaults(
                cx,
                &mut m,
                "conflict_resolution",
                decode_conflict_resolution,
            );
            if let (Some(r), Some(pr)) = (&replication, &pruning) {
                if !check_scope(cx, m.mark, path, pr.scope, Some(&r.snapshots), None) {
                    return None;
                }
            }
            Some(Job::Pull(PullJob {
                name: name.clone()?,
                connect: connect?,
                root_fs: root_fs?,
                mapping: mapping?,
                interval: interval?,
                cron: cron?,
                hooks: hooks?,
                recv: recv?,
                pruning: pruning?,
                replication: replication?,
                conflict_resolution: cr?,
            }))
        }
        Some("source") => {
            let serve = m.req(cx, "serve", decode_serve);
            let filesystems = m.req(cx, "filesystems", filter);
            let snapshotting = m.req(cx, "snapshotting", decode_snapshotting);
            let send = from_defaults(cx, &mut m, "send", decode_send);
            let hooks = m.or(cx, "hooks", ReplicationHooks::default(), decode_job_hooks);
            let client_pruning = m.or(
                cx,
                "client_pruning",
                ClientPruning::default(),
                decode_client_pruning,
            );
            let step_holds = m.opt(cx, "step_holds", |cx, n, p| {
                let mut m = cx.map(n, p)?;
                let max_age = m.req(cx, "max_age", zrepl_duration_positive);
                m.finish(cx);
                Some(StepHolds { max_age: max_age? })
            });
            Some(Job::Source(SourceJob {
                name: name.clone()?,
                serve: serve?,
                filesystems: filesystems?,
                snapshotting: snapshotting?,
                send: send?,
                hooks: hooks?,
                client_pruning: client_pruning?,
                step_holds: step_holds?,
            }))
        }
        Some("snap") => {
            let filesystems = m.req(cx, "filesystems", filter);
            let snapshotting = m.req(cx, "snapshotting", |cx, n, p| snapshotting(cx, n, p, false));
            let pruning = m.req(cx, "pruning", |cx, n, p| {
                let mut m = cx.map(n, p)?;
                let keep = m.req(cx, "keep", |cx, n, p| {
                    let rules = keep_rules(cx, n, p)?;
                    if rules.iter().any(|r| matches!(r, KeepRule::NotReplicated { .. })) {
                        cx.err(n.mark, p, "single-site pruner cannot support not_replicated keep rule (snap jobs do not replicate)");
                        return None;
                    }
                    Some(rules)
                });
                let scope = m.or(cx, "scope", PruningScope::All, pruning_scope);
                m.finish(cx);
                Some(PruningLocal { keep: keep?, scope: scope? })
            });
            if let (Some(s), Some(pr)) = (&snapshotting, &pruning) {
                if !check_scope(cx, m.mark, path, pr.scope, None, Some(s.prefix())) {
                    return None;
                }
            }
            Some(Job::Snap(SnapJob {
                name: name.clone()?,
                filesystems: filesystems?,
                snapshotting: snapshotting?,
                pruning: pruning?,
            }))
        }
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    job
}

fn decode_connect(cx: &mut Cx, node: &Node, path: &str) -> Option<Connect> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["tcp", "tls", "ssh+stdinserver", "local", "ssh+zfs"]);
    let c = (|| match t.as_deref() {
        Some("tcp") => {
            let address = m.req(cx, "address", hostport);
            let dial = m.or(
                cx,
                "dial_timeout",
                GoDuration::from_secs(10),
                go_duration_nonneg,
            );
            Some(Connect::Tcp {
                address: address?,
                dial_timeout: dial?,
            })
        }
        Some("tls") => {
            let address = m.req(cx, "address", hostport);
            let ca = m.req(cx, "ca", |cx, n, p| cx.nonempty_string(n, p));
            let cert = m.req(cx, "cert", |cx, n, p| cx.nonempty_string(n, p));
            let key = m.req(cx, "key", |cx, n, p| cx.nonempty_string(n, p));
            let server_cn = m.req(cx, "server_cn", |cx, n, p| cx.nonempty_string(n, p));
            let dial = m.or(
                cx,
                "dial_timeout",
                GoDuration::from_secs(10),
                go_duration_nonneg,
            );
            Some(Connect::Tls {
                address: address?,
                ca: ca?,
                cert: cert?,
                key: key?,
                server_cn: server_cn?,
                dial_timeout: dial?,
            })
        }
        Some("ssh+stdinserver") => {
            let host = m.req(cx, "host", |cx, n, p| cx.nonempty_string(n, p));
            let user = m.req(cx, "user", |cx, n, p| cx.nonempty_string(n, p));
            let port = m.req(cx, "port", |cx, n, p| {
                let v = cx.int(n, p)?;
                if !(1..=65535).contains(&v) {
                    cx.err(n.mark, p, format!("port {v} is out of range 1-65535"));
                    return None;
                }
                Some(v as u16)
            });
            let identity_file = m.req(cx, "identity_file", |cx, n, p| cx.nonempty_string(n, p));
            let options = m.or(cx, "options", Vec::new(), |cx, n, p| {
                cx.list(n, p, |cx, n, p| cx.nonempty_string(n, p))
            });
            let ssh_command = m.opt(cx, "ssh_command", |cx, n, p| cx.nonempty_string(n, p));
            let toc = m.opt(cx, "transport_open_command", |cx, n, p| {
                cx.list(n, p, |cx, n, p| cx.string(n, p))
            });
            let dial = m.or(
                cx,
                "dial_timeout",
                GoDuration::from_secs(10),
                go_duration_nonneg,
            );
            Some(Connect::Ssh {
                host: host?,
                user: user?,
                port: port?,
                identity_file: identity_file?,
                options: options?,
                ssh_command: ssh_command?,
                transport_open_command: toc?,
                dial_timeout: dial?,
            })
        }
        Some("ssh+zfs") => {
            let host = m.req(cx, "host", |cx, n, p| cx.nonempty_string(n, p));
            let user = m.req(cx, "user", |cx, n, p| cx.nonempty_string(n, p));
            let port = m.or(cx, "port", 22, |cx, n, p| {
                let v = cx.int(n, p)?;
                if !(1..=65535).contains(&v) {
                    cx.err(n.mark, p, format!("port {v} is out of range 1-65535"));
                    return None;
                }
                Some(v as u16)
            });
            let identity_file = m.req(cx, "identity_file", |cx, n, p| cx.nonempty_string(n, p));
            let known_hosts = m.opt(cx, "known_hosts", |cx, n, p| cx.nonempty_string(n, p));
            let options = m.or(cx, "options", Vec::new(), |cx, n, p| {
                cx.list(n, p, |cx, n, p| cx.nonempty_string(n, p))
            });
            let root_fs = m.opt(cx, "root_fs", dataset_path);
            let recv = from_defaults(cx, &mut m, "recv", decode_recv);
            let filesystems = m.opt(cx, "filesystems", filter);
            let send = from_defaults(cx, &mut m, "send", decode_send);
            Some(Connect::Agentless(Box::new(Agentless {
                host: host?,
                user: user?,
                port: port?,
                identity_file: identity_file?,
                known_hosts: known_hosts?,
                options: options?,
                root_fs: root_fs?,
                recv: recv?,
                filesystems: filesystems?,
                send: send?,
            })))
        }
        Some("local") => {
            let listener_name = m.req(cx, "listener_name", |cx, n, p| cx.nonempty_string(n, p));
            let client_identity = m.req(cx, "client_identity", identity);
            let dial = m.or(
                cx,
                "dial_timeout",
                GoDuration::from_secs(2),
                go_duration_nonneg,
            );
            Some(Connect::Local {
                listener_name: listener_name?,
                client_identity: client_identity?,
                dial_timeout: dial?,
            })
        }
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    c
}

fn decode_serve(cx: &mut Cx, node: &Node, path: &str) -> Option<Serve> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["tcp", "tls", "stdinserver", "local"]);
    let s = (|| match t.as_deref() {
        Some("tcp") => {
            let listen = m.req(cx, "listen", hostport);
            let freebind = m.or(cx, "listen_freebind", false, |cx, n, p| cx.bool(n, p));
            let clients = m.req(cx, "clients", decode_tcp_clients);
            Some(Serve::Tcp {
                listen: listen?,
                listen_freebind: freebind?,
                clients: clients?,
            })
        }
        Some("tls") => {
            let listen = m.req(cx, "listen", hostport);
            let freebind = m.or(cx, "listen_freebind", false, |cx, n, p| cx.bool(n, p));
            let ca = m.req(cx, "ca", |cx, n, p| cx.nonempty_string(n, p));
            let cert = m.req(cx, "cert", |cx, n, p| cx.nonempty_string(n, p));
            let key = m.req(cx, "key", |cx, n, p| cx.nonempty_string(n, p));
            let cns = m.req(cx, "client_cns", |cx, n, p| {
                let l = cx.list(n, p, identity)?;
                if l.is_empty() {
                    cx.err(
                        n.mark,
                        p,
                        "client_cns must list at least one client certificate common name",
                    );
                    return None;
                }
                Some(l)
            });
            let hs = m.or(
                cx,
                "handshake_timeout",
                GoDuration::from_secs(10),
                go_duration_nonneg,
            );
            Some(Serve::Tls {
                listen: listen?,
                listen_freebind: freebind?,
                ca: ca?,
                cert: cert?,
                key: key?,
                client_cns: cns?,
                handshake_timeout: hs?,
            })
        }
        Some("stdinserver") => {
            let ids = m.req(cx, "client_identities", |cx, n, p| {
                let l = cx.list(n, p, identity)?;
                if l.is_empty() {
                    cx.err(n.mark, p, "client_identities must not be empty");
                    return None;
                }
                Some(l)
            });
            Some(Serve::Stdinserver {
                client_identities: ids?,
            })
        }
        Some("local") => {
            let name = m.req(cx, "listener_name", |cx, n, p| cx.nonempty_string(n, p));
            Some(Serve::Local {
                listener_name: name?,
            })
        }
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    s
}

fn decode_tcp_clients(cx: &mut Cx, node: &Node, path: &str) -> Option<Vec<TcpClient>> {
    let entries = cx.string_map(node, path)?;
    if entries.is_empty() {
        cx.err(
            node.mark,
            path,
            "clients must map at least one IP address or CIDR to a client identity",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (key, kmark, v) in entries {
        let p = format!("{path}.{key}");
        let Some(ident) = cx.string(v, &p) else {
            ok = false;
            continue;
        };
        match parse_tcp_client(&key, &ident) {
            Ok(c) => out.push(c),
            Err(e) => {
                cx.err(kmark, &p, e);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    // Longest prefix first, so lookups take the most specific entry (zrepl's order).
    out.sort_by(|a, b| {
        let la = a.prefix_len as u32 + if a.net.is_ipv4() { 96 } else { 0 };
        let lb = b.prefix_len as u32 + if b.net.is_ipv4() { 96 } else { 0 };
        lb.cmp(&la).then_with(|| a.key.cmp(&b.key))
    });
    Some(out)
}

fn parse_tcp_client(key: &str, ident: &str) -> Result<TcpClient, String> {
    let (addr, prefix) = match key.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (key, None),
    };
    let (ip, zone) = match addr.split_once('%') {
        Some((a, z)) => (a, Some(z.to_string())),
        None => (addr, None),
    };
    let net: std::net::IpAddr = ip
        .parse()
        .map_err(|_| format!("invalid client address {key:?}: expected an IP address or CIDR"))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(v) if v <= max => v,
            _ => return Err(format!("invalid prefix length in {key:?} (0-{max})")),
        },
    };
    let stars = ident.matches('*').count();
    if prefix.is_some() {
        if stars != 1 {
            return Err(format!(
                "identity {ident:?} for CIDR {key:?} must contain exactly one '*' (replaced by the client's address)"
            ));
        }
        let longest = if net.is_ipv4() {
            "255.255.255.255".to_string()
        } else {
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".to_string()
        };
        let longest = match &zone {
            Some(z) => format!("{longest}-{z}"),
            None => longest,
        };
        let expanded = ident.replacen('*', &longest, 1);
        check_component(&expanded)
            .map_err(|e| format!("identity {ident:?} expanded for the longest address ({expanded:?}) is not a valid client identity: {e}"))?;
    } else {
        if stars != 0 {
            return Err(format!(
                "identity {ident:?} for single address {key:?} must not contain '*'"
            ));
        }
        check_component(ident).map_err(|e| format!("invalid client identity {ident:?}: {e}"))?;
    }
    Ok(TcpClient {
        key: key.to_string(),
        net,
        prefix_len,
        zone,
        identity: ident.to_string(),
    })
}

/// A job's replication `interval`: `manual` or a positive duration.
fn decode_interval(cx: &mut Cx, n: &Node, p: &str) -> Option<PullInterval> {
    if n.as_scalar() == Some("manual") {
        return Some(PullInterval::Manual);
    }
    zrepl_duration_positive(cx, n, p).map(PullInterval::Every)
}

fn decode_cron(cx: &mut Cx, n: &Node, p: &str) -> Option<CronSchedule> {
    let s = cx.nonempty_string(n, p)?;
    match CronSchedule::parse(&s) {
        Ok(c) => Some(c),
        Err(e) => {
            cx.err(n.mark, p, format!("invalid cron expression {s:?}: {e}"));
            None
        }
    }
}

/// `written_threshold` (extension): bytes, as an integer (`1024`, the dsh2dsh fork's form) or a
/// data size (`1 MiB`, `512 KiB`).
fn decode_written_threshold(cx: &mut Cx, node: &Node, path: &str) -> Option<u64> {
    let s = cx.string(node, path)?;
    let t = s.trim();
    let bytes = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<u64>().ok()
    } else {
        DataSize::parse(t)
            .ok()
            .filter(|d| d.bytes() >= 0.0 && d.bytes() < u64::MAX as f64)
            .map(|d| d.bytes().ceil() as u64)
    };
    if bytes.is_none() {
        cx.err(
            node.mark,
            path,
            format!("invalid written_threshold {s:?}: expected a number of bytes (1024) or a data size (1 MiB); 0 never skips"),
        );
    }
    bytes
}

fn decode_snapshotting(cx: &mut Cx, node: &Node, path: &str) -> Option<Snapshotting> {
    snapshotting(cx, node, path, true)
}

/// `replicates`: the job replicates what it snapshots (push, source), so `backpressure` applies.
fn snapshotting(cx: &mut Cx, node: &Node, path: &str, replicates: bool) -> Option<Snapshotting> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["periodic", "cron", "manual"]);
    let s = (|| match t.as_deref() {
        Some(kind @ ("periodic" | "cron")) => {
            let prefix = m.req(cx, "prefix", |cx, n, p| {
                let s = cx.nonempty_string(n, p)?;
                if let Err(e) = check_component(&s) {
                    cx.err(n.mark, p, format!("invalid snapshot prefix {s:?}: {e}"));
                    return None;
                }
                Some(s)
            });
            let interval = if kind == "periodic" {
                m.req(cx, "interval", zrepl_duration_positive).map(Some)
            } else {
                Some(None)
            };
            let cron = if kind == "cron" {
                m.req(cx, "cron", |cx, n, p| {
                    let s = cx.nonempty_string(n, p)?;
                    match CronSchedule::parse(&s) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            cx.err(n.mark, p, format!("invalid cron expression {s:?}: {e}"));
                            None
                        }
                    }
                })
                .map(Some)
            } else {
                Some(None)
            };
            let location = m.or(cx, "timestamp_location", Location::Utc, |cx, n, p| {
                let s = cx.string(n, p)?;
                match Location::parse(&s) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        cx.err(n.mark, p, e);
                        None
                    }
                }
            });
            let format = match (m.get("timestamp_format"), location) {
                (None, Some(loc)) => TimestampFormat::parse("dense", loc)
                    .map_err(|e| cx.err(m.mark, &m.path, format!("timestamp_location: {e}")))
                    .ok(),
                (Some((n, p)), Some(loc)) => {
                    let s = cx.nonempty_string(n, &p);
                    s.and_then(|s| match TimestampFormat::parse(&s, loc) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            cx.err(n.mark, &p, e);
                            None
                        }
                    })
                }
                (_, None) => None,
            };
            if let (Some(f), Some(pfx), Some(loc)) = (&format, &prefix, location) {
                if let Err(e) = f.validate_with_prefix(pfx, loc) {
                    cx.err(m.mark, &m.path, e);
                }
            }
            let hooks = m.or(cx, "hooks", Vec::new(), |cx, n, p| {
                cx.list(n, p, decode_hook)
            });
            let written_threshold = m.or(cx, "written_threshold", 0, decode_written_threshold);
            if !replicates {
                if let Some((n, p)) = m.get("backpressure") {
                    cx.err(
                        n.mark,
                        &p,
                        "backpressure is not available on snap jobs: they do not replicate",
                    );
                }
            }
            let backpressure = m.or(cx, "backpressure", None, |cx, n, p| {
                decode_backpressure(cx, n, p).map(Some)
            });
            let (prefix, format, location, hooks) = (prefix?, format?, location?, hooks?);
            let (written_threshold, backpressure) = (written_threshold?, backpressure?);
            if kind == "periodic" {
                Some(Snapshotting::Periodic {
                    prefix,
                    interval: interval??,
                    timestamp_format: format,
                    timestamp_location: location,
                    hooks,
                    written_threshold,
                    backpressure,
                })
            } else {
                Some(Snapshotting::Cron {
                    prefix,
                    cron: cron??,
                    timestamp_format: format,
                    timestamp_location: location,
                    hooks,
                    written_threshold,
                    backpressure,
                })
            }
        }
        Some("manual") => Some(Snapshotting::Manual),
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    s
}

/// `snapshotting.backpressure` (extension, zrepl#808).
fn decode_backpressure(cx: &mut Cx, node: &Node, path: &str) -> Option<Backpressure> {
    let mut m = cx.map(node, path)?;
    let max_lag = m.req(cx, "max_lag", zrepl_duration_positive);
    let action = m.or(cx, "action", BackpressureAction::Skip, |cx, n, p| {
        enum_value(
            cx,
            n,
            p,
            "backpressure action",
            &[
                ("skip", BackpressureAction::Skip),
                ("warn", BackpressureAction::Warn),
            ],
        )
    });
    m.finish(cx);
    Some(Backpressure {
        max_lag: max_lag?,
        action: action?,
    })
}

fn decode_client_pruning(cx: &mut Cx, node: &Node, path: &str) -> Option<ClientPruning> {
    let mut m = cx.map(node, path)?;
    let allow = m.or(cx, "allow", true, |cx, n, p| cx.bool(n, p));
    let keep = m.or(cx, "keep", Vec::new(), keep_rules);
    m.finish(cx);
    let (allow, keep) = (allow?, keep?);
    if !allow && !keep.is_empty() {
        cx.err(
            node.mark,
            path,
            "client_pruning: keep has no effect with allow: false (no client may destroy anything)",
        );
        return None;
    }
    Some(ClientPruning { allow, keep })
}

fn decode_job_hooks(cx: &mut Cx, node: &Node, path: &str) -> Option<ReplicationHooks> {
    let mut m = cx.map(node, path)?;
    let pre = m.opt(cx, "pre", decode_job_hook);
    let post = m.opt(cx, "post", decode_job_hook);
    m.finish(cx);
    Some(ReplicationHooks {
        pre: pre?,
        post: post?,
    })
}

fn decode_job_hook(cx: &mut Cx, node: &Node, path: &str) -> Option<JobHook> {
    let mut m = cx.map(node, path)?;
    let path_ = m.req(cx, "path", |cx, n, p| {
        let s = cx.nonempty_string(n, p)?;
        if !s.starts_with('/') {
            cx.err(n.mark, p, format!("hook path {s:?} must be absolute"));
            return None;
        }
        Some(s)
    });
    let args = m.or(cx, "args", Vec::new(), |cx, n, p| {
        cx.list(n, p, |cx, n, p| cx.string(n, p))
    });
    let env = m.or(cx, "env", BTreeMap::new(), |cx, n, p| {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, kmark, v) in cx.string_map(n, p)? {
            let vp = format!("{p}.{key}");
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                cx.err(
                    kmark,
                    &vp,
                    format!("invalid environment variable name {key:?}"),
                );
                ok = false;
                continue;
            }
            match cx.string(v, &vp) {
                Some(val) => {
                    out.insert(key, val);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    let timeout = m.or(cx, "timeout", GoDuration::from_secs(60), go_duration_nonneg);
    let err_is_fatal = m.or(cx, "err_is_fatal", false, |cx, n, p| cx.bool(n, p));
    m.finish(cx);
    Some(JobHook {
        path: path_?,
        args: args?,
        env: env?,
        timeout: timeout?,
        err_is_fatal: err_is_fatal?,
    })
}

fn decode_hook(cx: &mut Cx, node: &Node, path: &str) -> Option<Hook> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["command", "postgres-checkpoint", "mysql-lock-tables"]);
    let err_is_fatal = m.or(cx, "err_is_fatal", false, |cx, n, p| cx.bool(n, p));
    let timeout = m.or(
        cx,
        "timeout",
        GoDuration::from_secs(30),
        go_duration_positive,
    );
    let h = (|| match t.as_deref() {
        Some("command") => {
            let path_ = m.req(cx, "path", |cx, n, p| cx.nonempty_string(n, p));
            let filesystems = match m.get("filesystems") {
                Some((n, p)) => filter(cx, n, &p),
                None => DatasetFilter::new([("<", true)]).ok(),
            };
            Some(Hook::Command {
                path: path_?,
                timeout: timeout?,
                err_is_fatal: err_is_fatal?,
                filesystems: filesystems?,
            })
        }
        Some(kind @ ("postgres-checkpoint" | "mysql-lock-tables")) => {
            let dsn = m.req(cx, "dsn", |cx, n, p| cx.nonempty_string(n, p));
            let filesystems = m.req(cx, "filesystems", filter);
            let (dsn, timeout, err_is_fatal, filesystems) =
                (dsn?, timeout?, err_is_fatal?, filesystems?);
            Some(if kind == "postgres-checkpoint" {
                Hook::PostgresCheckpoint {
                    dsn,
                    timeout,
                    err_is_fatal,
                    filesystems,
                }
            } else {
                Hook::MysqlLockTables {
                    dsn,
                    timeout,
                    err_is_fatal,
                    filesystems,
                }
            })
        }
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    h
}

fn decode_pruning_sr(cx: &mut Cx, node: &Node, path: &str) -> Option<PruningSenderReceiver> {
    let mut m = cx.map(node, path)?;
    let ks = m.req(cx, "keep_sender", keep_rules);
    let scope = m.or(cx, "scope", PruningScope::All, pruning_scope);
    let kr = m.req(cx, "keep_receiver", |cx, n, p| {
        let rules = keep_rules(cx, n, p)?;
        for (i, r) in rules.iter().enumerate() {
            if let KeepRule::NotReplicated {
                keep_snapshot_at_cursor: false,
            } = r
            {
                cx.warn(
                    n.mark,
                    &format!("{p}[{i}]"),
                    "keep_snapshot_at_cursor is only honoured in keep_sender",
                );
            }
        }
        Some(rules)
    });
    m.finish(cx);
    Some(PruningSenderReceiver {
        keep_sender: ks?,
        keep_receiver: kr?,
        scope: scope?,
    })
}

fn keep_rules(cx: &mut Cx, node: &Node, path: &str) -> Option<Vec<KeepRule>> {
    let rules = cx.list(node, path, decode_keep_rule)?;
    if rules.is_empty() {
        cx.err(
            node.mark,
            path,
            "keep rule list must not be empty (to keep every snapshot, write [{type: regex, regex: \".*\"}])",
        );
        return None;
    }
    Some(rules)
}

fn regex(cx: &mut Cx, n: &Node, p: &str) -> Option<Regex> {
    let s = cx.string(n, p)?;
    match regex::Regex::new(&s) {
        Ok(r) => Some(Regex(r)),
        Err(e) => {
            cx.err(n.mark, p, format!("invalid regular expression {s:?}: {e}"));
            None
        }
    }
}

fn decode_keep_rule(cx: &mut Cx, node: &Node, path: &str) -> Option<KeepRule> {
    let mut m = cx.map(node, path)?;
    let t = m.tag(cx, &["not_replicated", "last_n", "grid", "regex"]);
    let r = (|| match t.as_deref() {
        Some("not_replicated") => {
            let k = m.or(cx, "keep_snapshot_at_cursor", true, |cx, n, p| {
                cx.bool(n, p)
            });
            Some(KeepRule::NotReplicated {
                keep_snapshot_at_cursor: k?,
            })
        }
        Some("last_n") => {
            let count = m.req(cx, "count", |cx, n, p| {
                let v = cx.int(n, p)?;
                if v <= 0 {
                    cx.err(n.mark, p, format!("count must be positive, got {v}"));
                    return None;
                }
                Some(v as u64)
            });
            let re = m.opt(cx, "regex", |cx, n, p| {
                let s = cx.string(n, p)?;
                if s.is_empty() {
                    return Some(None);
                }
                regex(cx, n, p).map(Some)
            });
            Some(KeepRule::LastN {
                count: count?,
                regex: re?.flatten(),
            })
        }
        Some("grid") => {
            let grid = m.req(cx, "grid", |cx, n, p| {
                let s = cx.nonempty_string(n, p)?;
                match GridSpec::parse(&s) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        cx.err(n.mark, p, format!("invalid grid specification {s:?}: {e}"));
                        None
                    }
                }
            });
            let re = m.req(cx, "regex", |cx, n, p| {
                if n.as_scalar() == Some("") {
                    cx.err(n.mark, p, "field \"regex\" is required but has zero value");
                    return None;
                }
                regex(cx, n, p)
            });
            Some(KeepRule::Grid {
                grid: grid?,
                regex: re?,
            })
        }
        Some("regex") => {
            let re = m.req(cx, "regex", regex);
            let negate = m.or(cx, "negate", false, |cx, n, p| cx.bool(n, p));
            Some(KeepRule::Regex {
                regex: re?,
                negate: negate?,
            })
        }
        _ => None,
    })();
    if t.is_some() {
        m.finish(cx);
    }
    r
}

fn bandwidth_limit(cx: &mut Cx, node: &Node, path: &str) -> Option<BandwidthLimit> {
    let mut m = cx.map(node, path)?;
    let size = |cx: &mut Cx, n: &Node, p: &str| -> Option<DataSize> {
        let s = cx.string(n, p)?;
        match DataSize::parse(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(n.mark, p, e);
                None
            }
        }
    };
    let max = m.or(cx, "max", DataSize::from_bytes(-1.0), |cx, n, p| {
        let d = size(cx, n, p)?;
        if d.bytes() > 0.0 && d.bytes() < 1.0 {
            cx.err(
                n.mark,
                p,
                "bandwidth limit must be at least 1 byte per second (or negative for no limit)",
            );
            return None;
        }
        Some(d)
    });
    let cap = m.or(
        cx,
        "bucket_capacity",
        DataSize::from_bytes(128.0 * 1024.0),
        |cx, n, p| {
            let d = size(cx, n, p)?;
            if d.bytes() < 1.0 {
                cx.err(n.mark, p, "bucket_capacity must be at least 1 byte");
                return None;
            }
            Some(d)
        },
    );
    m.finish(cx);
    Some(BandwidthLimit {
        max: max?,
        bucket_capacity: cap?,
    })
}

fn property_name(cx: &mut Cx, n: &Node, p: &str) -> Option<String> {
    let s = cx.string(n, p)?;
    let valid = !s.is_empty()
        && s.len() <= 256
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !valid {
        cx.err(n.mark, p, format!("invalid ZFS property name {s:?} (allowed: 1-256 of a-z A-Z 0-9 - _ . :, not starting with -)"));
        return None;
    }
    Some(s)
}

fn decode_send(cx: &mut Cx, node: &Node, path: &str) -> Option<SendOptions> {
    let mut m = cx.map(node, path)?;
    let b =
        |m: &mut MapReader, cx: &mut Cx, key: &str| m.or(cx, key, false, |cx, n, p| cx.bool(n, p));
    let encrypted = b(&mut m, cx, "encrypted");
    let raw = b(&mut m, cx, "raw");
    let send_properties = b(&mut m, cx, "send_properties");
    let backup_properties = b(&mut m, cx, "backup_properties");
    let large_blocks = b(&mut m, cx, "large_blocks");
    let compressed = b(&mut m, cx, "compressed");
    let embedded_data = b(&mut m, cx, "embedded_data");
    let saved = b(&mut m, cx, "saved");
    let bw = from_defaults(cx, &mut m, "bandwidth_limit", bandwidth_limit);
    m.finish(cx);
    Some(SendOptions {
        encrypted: encrypted?,
        raw: raw?,
        send_properties: send_properties?,
        backup_properties: backup_properties?,
        large_blocks: large_blocks?,
        compressed: compressed?,
        embedded_data: embedded_data?,
        saved: saved?,
        bandwidth_limit: bw?,
    })
}

fn decode_recv(cx: &mut Cx, node: &Node, path: &str) -> Option<RecvOptions> {
    let mut m = cx.map(node, path)?;
    let props = from_defaults(cx, &mut m, "properties", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let inherit = m.or(cx, "inherit", Vec::new(), |cx, n, p| {
            cx.list(n, p, property_name)
        });
        let over = m.or(cx, "override", BTreeMap::new(), |cx, n, p| {
            let entries = cx.string_map(n, p)?;
            let mut out = BTreeMap::new();
            let mut ok = true;
            for (k, kmark, v) in entries {
                let kp = format!("{p}.{k}");
                let key_node = Node {
                    kind: NodeKind::Scalar {
                        value: k.clone(),
                        quoted: true,
                    },
                    mark: kmark,
                };
                let name = property_name(cx, &key_node, &kp);
                let val = match &v.kind {
                    NodeKind::Scalar { value, .. } => Some(value.clone()),
                    _ => {
                        cx.err(
                            v.mark,
                            &kp,
                            format!("property value must be a scalar, found {}", show(v)),
                        );
                        None
                    }
                };
                match (name, val) {
                    (Some(n), Some(v)) => {
                        out.insert(n, v);
                    }
                    _ => ok = false,
                }
            }
            ok.then_some(out)
        });
        m.finish(cx);
        let (inherit, over) = (inherit?, over?);
        for name in &inherit {
            if over.contains_key(name) {
                cx.err(
                    n.mark,
                    p,
                    format!("property {name:?} is both inherited and overridden"),
                );
                return None;
            }
        }
        Some(RecvProperties {
            inherit,
            override_: over,
        })
    });
    let bw = from_defaults(cx, &mut m, "bandwidth_limit", bandwidth_limit);
    let placeholder = from_defaults(cx, &mut m, "placeholder", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let enc = m.or(
            cx,
            "encryption",
            PlaceholderEncryption::Unspecified,
            |cx, n, p| {
                enum_value(
                    cx,
                    n,
                    p,
                    "placeholder encryption",
                    &[
                        ("unspecified", PlaceholderEncryption::Unspecified),
                        ("inherit", PlaceholderEncryption::Inherit),
                        ("off", PlaceholderEncryption::Off),
                    ],
                )
            },
        );
        m.finish(cx);
        Some(PlaceholderOptions { encryption: enc? })
    });
    m.finish(cx);
    Some(RecvOptions {
        properties: props?,
        bandwidth_limit: bw?,
        placeholder: placeholder?,
    })
}

fn decode_replication(cx: &mut Cx, node: &Node, path: &str) -> Option<Replication> {
    let mut m = cx.map(node, path)?;
    let level = |cx: &mut Cx, n: &Node, p: &str| {
        enum_value(
            cx,
            n,
            p,
            "protection level",
            &[
                (
                    "guarantee_resumability",
                    ProtectionLevel::GuaranteeResumability,
                ),
                (
                    "guarantee_incremental",
                    ProtectionLevel::GuaranteeIncremental,
                ),
                ("guarantee_nothing", ProtectionLevel::GuaranteeNothing),
            ],
        )
    };
    let protection = from_defaults(cx, &mut m, "protection", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let initial = m.or(cx, "initial", ProtectionLevel::GuaranteeResumability, level);
        let incremental = m.or(
            cx,
            "incremental",
            ProtectionLevel::GuaranteeResumability,
            level,
        );
        m.finish(cx);
        Some(Protection {
            initial: initial?,
            incremental: incremental?,
        })
    });
    let concurrency = from_defaults(cx, &mut m, "concurrency", |cx, n, p| {
        let mut m = cx.map(n, p)?;
        let pos = |cx: &mut Cx, n: &Node, p: &str| {
            let v = cx.int(n, p)?;
            if !(1..=10_000).contains(&v) {
                cx.err(n.mark, p, format!("must be between 1 and 10000, got {v}"));
                return None;
            }
            Some(v as u32)
        };
        let steps = m.or(cx, "steps", 1, pos);
        let size_estimates = m.or(cx, "size_estimates", 4, pos);
        m.finish(cx);
        Some(Concurrency {
            steps: steps?,
            size_estimates: size_estimates?,
        })
    });
    let compression = m.or(cx, "compression", StreamCompression::Auto, |cx, n, p| {
        enum_value(
            cx,
            n,
            p,
            "stream compression",
            &[
                ("auto", StreamCompression::Auto),
                ("off", StreamCompression::Off),
                ("zstd", StreamCompression::Zstd),
            ],
        )
    });
    let compression_level = m.or(cx, "compression_level", 3, |cx, n, p| {
        let v = cx.int(n, p)?;
        if !(1..=19).contains(&v) {
            cx.err(
                n.mark,
                p,
                format!("zstd level must be between 1 and 19, got {v}"),
            );
            return None;
        }
        Some(v as i32)
    });
    let stall_timeout = m.or(
        cx,
        "stall_timeout",
        GoDuration::from_secs(DEFAULT_STALL_TIMEOUT_SECS),
        go_duration_nonneg,
    );
    let packages = m.or(cx, "packages", false, |cx, n, p| cx.bool(n, p));
    let snapshots = m.opt(cx, "snapshots", snapshot_filter);
    let prefix = m.opt(cx, "prefix", |cx, n, p| {
        snapshot_prefix(cx, n, p).map(|x| SnapshotFilter::prefix(&x))
    });
    let snapshots = match (snapshots, prefix) {
        (Some(Some(_)), Some(Some(_))) => {
            cx.err(
                node.mark,
                path,
                "replication.prefix is a shorthand for replication.snapshots: give one of them",
            );
            None
        }
        (Some(a), Some(b)) => Some(a.or(b).unwrap_or_default()),
        _ => None,
    };
    m.finish(cx);
    Some(Replication {
        snapshots: snapshots?,
        packages: packages?,
        protection: protection?,
        concurrency: concurrency?,
        compression: compression?,
        compression_level: compression_level?,
        stall_timeout: stall_timeout?,
    })
}

/// `replication.snapshots: {include: [...], exclude: [...]}`, each entry `{prefix: P}` or
/// `{regex: R}`.
fn snapshot_filter(cx: &mut Cx, node: &Node, path: &str) -> Option<SnapshotFilter> {
    let mut m = cx.map(node, path)?;
    let include = m.or(cx, "include", Vec::new(), |cx, n, p| {
        cx.list(n, p, snapshot_pattern)
    });
    let exclude = m.or(cx, "exclude", Vec::new(), |cx, n, p| {
        cx.list(n, p, snapshot_pattern)
    });
    m.finish(cx);
    Some(SnapshotFilter {
        include: include?,
        exclude: exclude?,
    })
}

fn snapshot_pattern(cx: &mut Cx, node: &Node, path: &str) -> Option<SnapshotPattern> {
    let mut m = cx.map(node, path)?;
    let prefix = m.opt(cx, "prefix", snapshot_prefix);
    let re = m.opt(cx, "regex", regex);
    m.finish(cx);
    match (prefix?, re?) {
        (Some(p), None) => Some(SnapshotPattern::Prefix(p)),
        (None, Some(r)) => Some(SnapshotPattern::Regex(r.0)),
        _ => {
            cx.err(
                node.mark,
                path,
                "a snapshot pattern is {prefix: <start of the name>} or {regex: <regular expression>}",
            );
            None
        }
    }
}

/// The start of a snapshot name (the part after `@`).
fn snapshot_prefix(cx: &mut Cx, n: &Node, p: &str) -> Option<String> {
    let s = cx.string(n, p)?;
    if s.is_empty() || s.contains(['@', '#', '/']) || s.chars().any(char::is_whitespace) {
        cx.err(
            n.mark,
            p,
            format!("invalid snapshot name prefix {s:?}: the start of a snapshot name after '@', not empty, without '@', '#', '/' or spaces"),
        );
        return None;
    }
    Some(s)
}

/// Can the job honour its `pruning.scope`? `filter`: the job's snapshot selection (`None`: the
/// job has none, a snap job); `prefix`: its snapshotting prefix (`None`: the job makes no
/// snapshots, a pull job; `Some(None)`: manual snapshotting).
/// `connect: {type: ssh+zfs}` names the remote's side of the job: a receiving `root_fs` for a
/// push job, the `filesystems` to send for a pull job, and not the other.
fn check_agentless(
    cx: &mut Cx,
    mark: crate::yaml::Mark,
    path: &str,
    connect: Option<&Connect>,
    push: bool,
) -> bool {
    let Some(Connect::Agentless(a)) = connect else {
        return true;
    };
    let at = format!("{path}.connect");
    let problem = match (push, a.root_fs.is_some(), a.filesystems.is_some()) {
        (true, false, _) => Some("a push job to an ssh+zfs remote needs connect.root_fs: where on the remote the filesystems are received"),
        (true, true, true) => Some("connect.filesystems is for pull jobs (what the remote sends); a push job sends its own filesystems"),
        (false, _, false) => Some("a pull job from an ssh+zfs remote needs connect.filesystems: which of the remote's filesystems it may send"),
        (false, true, true) => Some("connect.root_fs is for push jobs (where the remote receives); a pull job receives below its own root_fs"),
        _ => None,
    };
    match problem {
        Some(p) => {
            cx.err(mark, &at, p);
            false
        }
        None => true,
    }
}

fn check_scope(
    cx: &mut Cx,
    mark: crate::yaml::Mark,
    path: &str,
    scope: PruningScope,
    filter: Option<&SnapshotFilter>,
    prefix: Option<Option<&str>>,
) -> bool {
    let why = match scope {
        PruningScope::All => return true,
        PruningScope::Selected => match filter {
            None => "scope: selected needs a replicating job's replication.snapshots; a snap job prunes by its own prefix: scope: own",
            Some(f) if f.is_all() => "scope: selected needs replication.snapshots (or replication.prefix) to select the snapshots pruning may destroy; without them it would judge every snapshot (scope: all)",
            Some(_) => return true,
        },
        PruningScope::Own => match prefix {
            None => "scope: own needs the job's snapshotting.prefix, and a pull job makes no snapshots: use scope: selected with replication.snapshots",
            Some(None) => "scope: own needs the job's snapshotting.prefix, and manual snapshotting has none: use scope: selected with replication.snapshots",
            Some(Some(_)) => return true,
        },
    };
    cx.err(mark, &format!("{path}.pruning.scope"), why);
    false
}

/// `mapping` (extension) of a sink (`sink`: the identity component may be left out) or pull job.
fn decode_mapping(cx: &mut Cx, node: &Node, path: &str, sink: bool) -> Option<Mapping> {
    let mut m = cx.map(node, path)?;
    let identity = m.or(cx, "identity_component", true, |cx, n, p| {
        let v = cx.bool(n, p)?;
        if !v && !sink {
            cx.err(
                n.mark,
                p,
                "a pull job receives into root_fs/<source path>, without an identity component; identity_component applies to sinks",
            );
            return None;
        }
        Some(v)
    });
    let strip = m.opt(cx, "strip_prefix", dataset_path);
    m.finish(cx);
    Some(Mapping {
        identity_component: identity?,
        strip_prefix: strip?,
    })
}

/// Why a sink's serve may see more than one client identity (`None`: exactly one).
fn several_identities(serve: &Serve) -> Option<String> {
    match serve {
        Serve::Tcp { clients, .. } => {
            let ids: std::collections::BTreeSet<&str> =
                clients.iter().map(|c| c.identity.as_str()).collect();
            if let Some(w) = clients.iter().find(|c| c.identity.contains('*')) {
                Some(format!(
                    "the tcp client {:?} maps a network to many identities ({:?})",
                    w.key, w.identity
                ))
            } else if ids.len() != 1 {
                Some(format!("serve.clients names {} identities", ids.len()))
            } else {
                None
            }
        }
        Serve::Tls { client_cns, .. } if client_cns.len() != 1 => {
            Some(format!("serve.client_cns names {}", client_cns.len()))
        }
        Serve::Stdinserver { client_identities } if client_identities.len() != 1 => Some(format!(
            "serve.client_identities names {}",
            client_identities.len()
        )),
        // Local connections are counted over all jobs (they are in this config).
        _ => None,
    }
}

/// `pruning.scope` (extension).
fn pruning_scope(cx: &mut Cx, n: &Node, p: &str) -> Option<PruningScope> {
    enum_value(
        cx,
        n,
        p,
        "pruning scope",
        &[
            ("all", PruningScope::All),
            ("selected", PruningScope::Selected),
            ("own", PruningScope::Own),
        ],
    )
}

fn decode_conflict_resolution(cx: &mut Cx, node: &Node, path: &str) -> Option<ConflictResolution> {
    let mut m = cx.map(node, path)?;
    let ir = m.or(
        cx,
        "initial_replication",
        InitialReplication::MostRecent,
        |cx, n, p| {
            enum_value(
                cx,
                n,
                p,
                "initial_replication policy",
                &[
                    ("most_recent", InitialReplication::MostRecent),
                    ("all", InitialReplication::All),
                    ("fail", InitialReplication::Fail),
                ],
            )
        },
    );
    m.finish(cx);
    Some(ConflictResolution {
        initial_replication: ir?,
    })
}

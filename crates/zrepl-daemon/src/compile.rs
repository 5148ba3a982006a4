//! Checks of a whole config that no single job can make: what the daemon would trip over when
//! it binds its listeners or connects its local jobs. Pure (the config in, problems out); part of
//! the one compile step that `zrepl daemon` and `zrepl configcheck` share.

use std::collections::BTreeMap;

use zrepl_config as config;

/// One problem that keeps the daemon from running a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    /// The problem is the TLS material (a certificate or key file): `configcheck
    /// --skip-cert-check` leaves these out.
    pub tls_material: bool,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            tls_material: false,
        }
    }
}

/// Listener and connection conflicts between the jobs (and the metrics endpoint) of `cfg`.
pub fn conflicts(cfg: &config::Config) -> Vec<Problem> {
    let mut out = Vec::new();
    // Who serves what: local listener names, network listen addresses, stdinserver identities.
    let mut local: BTreeMap<&str, Vec<(&str, &'static str)>> = BTreeMap::new();
    let mut listen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stdin: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for job in &cfg.jobs {
        let serve = match job {
            config::Job::Sink(s) => &s.serve,
            config::Job::Source(s) => &s.serve,
            _ => continue,
        };
        let name = job.name();
        match serve {
            config::Serve::Local { listener_name } => local
                .entry(listener_name)
                .or_default()
                .push((name, job.type_name())),
            config::Serve::Tcp { listen: l, .. } | config::Serve::Tls { listen: l, .. } => listen
                .entry(normalize_listen(l))
                .or_default()
                .push(format!("job {name:?}")),
            config::Serve::Stdinserver { client_identities } => {
                for id in client_identities {
                    stdin.entry(id).or_default().push(name);
                }
            }
        }
    }
    for m in &cfg.global.monitoring {
        let config::Monitoring::Prometheus { listen: l, .. } = m;
        listen
            .entry(normalize_listen(l))
            .or_default()
            .push("the prometheus endpoint".to_string());
    }
    for (l, users) in &local {
        if users.len() > 1 {
            let names: Vec<String> = users.iter().map(|(n, _)| format!("{n:?}")).collect();
            out.push(Problem::new(format!(
                "local listener {l:?} is served by more than one job: {}",
                names.join(", ")
            )));
        }
    }
    for (addr, users) in &listen {
        // Port 0: each listener gets a port of its own.
        if users.len() > 1 && !addr.ends_with(":0") {
            out.push(Problem::new(format!(
                "listen address {addr:?} is used by more than one listener: {}",
                users.join(", ")
            )));
        }
    }
    for (id, users) in &stdin {
        if users.len() > 1 {
            out.push(Problem::new(format!(
                "stdinserver client identity {id:?} is served by more than one job ({}): they would share one socket",
                users.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // Local connections must find a job of the right kind.
    for job in &cfg.jobs {
        let (connect, wants) = match job {
            config::Job::Push(p) => (&p.connect, "sink"),
            config::Job::Pull(p) => (&p.connect, "source"),
            _ => continue,
        };
        let config::Connect::Local { listener_name, .. } = connect else {
            continue;
        };
        match local.get(listener_name.as_str()).and_then(|u| u.first()) {
            None => out.push(Problem::new(format!(
                "job {:?}: connect: no {wants} job of this config serves local listener {listener_name:?}",
                job.name()
            ))),
            Some((other, kind)) if *kind != wants => out.push(Problem::new(format!(
                "job {:?}: connect: local listener {listener_name:?} is served by {kind} job {other:?}, not a {wants} job",
                job.name()
            ))),
            Some(_) => {}
        }
    }
    out
}

/// `:8888` and `0.0.0.0:8888` bind the same port; other addresses are compared as written.
fn normalize_listen(l: &str) -> String {
    match l.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => l.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    struct Loader;
    impl zrepl_config::SourceLoader for Loader {
        fn read(&self, p: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.display().to_string(),
            ))
        }
        fn is_dir(&self, _: &Path) -> std::io::Result<bool> {
            Ok(false)
        }
        fn list_dir(&self, _: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
            Ok(vec![])
        }
    }

    fn problems(yaml: &str) -> Vec<String> {
        let cfg = zrepl_config::load_str(yaml, Path::new("/t/zrepl.yml"), &Loader)
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        conflicts(&cfg).into_iter().map(|p| p.message).collect()
    }

    const PRUNE: &str = "  pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}\n";

    fn sink(name: &str, serve: &str) -> String {
        format!("- type: sink\n  name: {name}\n  root_fs: pool/{name}\n  serve: {serve}\n")
    }
    fn source(name: &str, serve: &str) -> String {
        format!("- type: source\n  name: {name}\n  filesystems: {{\"pool<\": true}}\n  snapshotting: {{type: manual}}\n  serve: {serve}\n")
    }
    fn push(name: &str, connect: &str) -> String {
        format!("- type: push\n  name: {name}\n  connect: {connect}\n  filesystems: {{\"pool<\": true}}\n  snapshotting: {{type: manual}}\n{PRUNE}")
    }
    fn pull(name: &str, connect: &str) -> String {
        format!("- type: pull\n  name: {name}\n  connect: {connect}\n  root_fs: pool/p\n  interval: manual\n{PRUNE}")
    }

    #[test]
    fn conflicts_table() {
        let local = |l: &str| format!("{{type: local, listener_name: {l}}}");
        let to = |l: &str| format!("{{type: local, listener_name: {l}, client_identity: c}}");
        let tcp = |a: &str| format!("{{type: tcp, listen: \"{a}\", clients: {{\"10.0.0.1\": c}}}}");
        // (what, jobs, global, expected problem fragments; empty: no problem)
        let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
            ("push to its sink", format!("{}{}", sink("s", &local("l")), push("p", &to("l"))), "", vec![]),
            ("pull from its source", format!("{}{}", source("src", &local("l")), pull("p", &to("l"))), "", vec![]),
            ("two sinks on one local listener", format!("{}{}", sink("a", &local("l")), sink("b", &local("l"))), "", vec!["local listener \"l\" is served by more than one job: \"a\", \"b\""]),
            ("push to nobody", push("p", &to("x")), "", vec!["job \"p\": connect: no sink job of this config serves local listener \"x\""]),
            ("push to a source", format!("{}{}", source("src", &local("l")), push("p", &to("l"))), "", vec!["is served by source job \"src\", not a sink job"]),
            ("pull from a sink", format!("{}{}", sink("s", &local("l")), pull("p", &to("l"))), "", vec!["is served by sink job \"s\", not a source job"]),
            ("two tcp sinks on one port", format!("{}{}", sink("a", &tcp(":8888")), sink("b", &tcp("0.0.0.0:8888"))), "", vec!["listen address \"0.0.0.0:8888\" is used by more than one listener: job \"a\", job \"b\""]),
            ("different ports", format!("{}{}", sink("a", &tcp(":8888")), sink("b", &tcp(":8889"))), "", vec![]),
            ("port 0 twice", format!("{}{}", sink("a", &tcp("127.0.0.1:0")), sink("b", &tcp("127.0.0.1:0"))), "", vec![]),
            ("a sink on the metrics port", sink("a", &tcp(":9811")), "global:\n  monitoring: [{type: prometheus, listen: \":9811\"}]\n", vec!["job \"a\", the prometheus endpoint"]),
            ("one stdinserver identity twice", format!("{}{}", sink("a", "{type: stdinserver, client_identities: [c1]}"), sink("b", "{type: stdinserver, client_identities: [c1, c2]}")), "", vec!["client identity \"c1\" is served by more than one job (\"a\", \"b\")"]),
        ];
        for (what, jobs, global, want) in cases {
            let got = problems(&format!("{global}jobs:\n{jobs}"));
            assert_eq!(got.len(), want.len(), "{what}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{what}: {g:?} does not contain {w:?}");
            }
        }
    }
}

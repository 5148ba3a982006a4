//! Network replication on real OpenZFS: two daemons on loopback, push->sink and pull->source
//! over tcp, tls (certificates generated per test) and ssh+stdinserver (a real OpenSSH sshd with
//! authorized_keys forced commands). Full, incremental, and a transfer cut mid-stream by killing
//! the receiving daemon, which the next attempt resumes.
//!
//! Daemon A has the push job (`push`, filesystem `src/a`) and the source job (`source`,
//! `src/b`); daemon B has the sink (`sink`, root `sink`) and the pull job (`pull`, root
//! `pulled`). Client identities: A is `a`, B is `b`.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::pool::sh;
use crate::replication::{all_holds, create, guid, snapshot, spawn_daemon, write, zfs};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Tls,
    Ssh,
}

struct Daemon {
    cfg: String,
    log: String,
    child: Option<Child>,
}

impl Daemon {
    fn start(&mut self) -> Result<(), String> {
        self.child = Some(spawn_daemon(&self.cfg, &self.log)?);
        Ok(())
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn zrepl(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["zrepl", "--config", self.cfg.as_str()];
        v.extend_from_slice(args);
        sh(&v)
    }
    fn status(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.zrepl(&["status", "--mode", "raw"])?).map_err(|e| e.to_string())
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits until `job`'s current run ended; returns its state (done, failed, cancelled).
    fn wait_run(&self, job: &str) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let st = self.status()?;
            let j = &st["jobs"][job];
            let run = j["replication"]["state"].as_str().unwrap_or("").to_string();
            if j["state"] == "idle" && matches!(run.as_str(), "done" | "failed" | "cancelled") {
                return Ok(run);
            }
            if Instant::now() > deadline {
                return Err(format!("replication of {job} did not finish: {j:#}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    /// Wakes `job` and requires its run to succeed.
    fn replicate(&self, job: &str) -> TestResult {
        self.zrepl(&["signal", "wakeup", job])?;
        let r = self.wait_run(job)?;
        ensure!(
            r == "done",
            "{job} ended {r}: {:#}",
            self.status()?["jobs"][job]
        );
        Ok(())
    }
    /// The most bytes any step of the job's current or last run moved.
    fn bytes(
        &self,
        job: &str,
    ) -> Result<(u64, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
        let st = self.status()?;
        let moved = st["jobs"][job]["replication"]["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["filesystems"].as_array().into_iter().flatten())
            .flat_map(|f| f["steps"].as_array().into_iter().flatten())
            .filter_map(|s| s["bytes_replicated"].as_u64())
            .max()
            .unwrap_or(0);
        Ok((moved, st))
    }

    /// Waits until `job` has moved more than `bytes` in one step.
    fn wait_bytes(&self, job: &str, bytes: u64) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (moved, st) = self.bytes(job)?;
            if moved > bytes {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{job}: no step moved more than {bytes} bytes within 120 s (the most: {moved}): {st:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Certificates for daemons `a` and `b` (CN = SAN = name) signed by one CA.
fn certs(dir: &str) -> Result<(), String> {
    let e = |x: rcgen::Error| x.to_string();
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "zrepl platformtest CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().map_err(e)?).map_err(e)?;
    std::fs::write(format!("{dir}/ca.crt"), ca.pem()).map_err(|x| x.to_string())?;
    for name in ["a", "b"] {
        let mut p = CertificateParams::new(vec![name.to_string()]).map_err(e)?;
        p.distinguished_name.push(DnType::CommonName, name);
        let k = KeyPair::generate().map_err(e)?;
        let c = p.signed_by(&k, &ca).map_err(e)?;
        std::fs::write(format!("{dir}/{name}.crt"), c.pem()).map_err(|x| x.to_string())?;
        std::fs::write(format!("{dir}/{name}.key"), k.serialize_pem())
            .map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Starts sshd on 127.0.0.1:2222 whose authorized_keys forces `zrepl stdinserver` for the
/// key of each daemon. Returns the sshd child.
fn sshd(dir: &str, cfg_a: &str, cfg_b: &str) -> Result<Child, String> {
    sh(&["ssh-keygen", "-A"])?;
    let zrepl = sh(&["sh", "-c", "command -v zrepl"])?.trim().to_string();
    let mut keys = String::new();
    // Daemon A pushes to B's sink (identity a); daemon B pulls from A's source (identity b).
    for (who, target_cfg, identity) in [("a", cfg_b, "a"), ("b", cfg_a, "b")] {
        let key = format!("{dir}/id_{who}");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(format!("{key}.pub"));
        sh(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &key])?;
        let public = std::fs::read_to_string(format!("{key}.pub")).map_err(|e| e.to_string())?;
        keys.push_str(&format!(
            "command=\"{zrepl} --config {target_cfg} stdinserver {identity}\",restrict {public}"
        ));
    }
    start_sshd(dir, 2222, &keys)
}

/// Starts sshd on 127.0.0.1:`port` with `authorized_keys` (host keys generated if missing).
fn start_sshd(dir: &str, port: u16, authorized_keys: &str) -> Result<Child, String> {
    sh(&["ssh-keygen", "-A"])?;
    let ak = format!("{dir}/authorized_keys");
    std::fs::write(&ak, authorized_keys).map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/run/sshd").map_err(|e| e.to_string())?;
    let log = std::fs::File::create(format!("{dir}/sshd.log")).map_err(|e| e.to_string())?;
    let port_s = port.to_string();
    let child = std::process::Command::new("/usr/sbin/sshd")
        .args([
            "-D",
            "-e",
            "-p",
            &port_s,
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            &format!("AuthorizedKeysFile={ak}"),
            "-o",
            "StrictModes=no",
            "-o",
            "PermitRootLogin=prohibit-password",
            "-o",
            "PasswordAuthentication=no",
        ])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start sshd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("sshd did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// A hand-driven RPC client of the daemon serving tcp on 127.0.0.1:`port` (what a malicious
/// client can send over the real wire).
fn tcp_client(port: u16, name: &str) -> zrepl_rpc::Client {
    tcp_client_with(port, name, Default::default())
}

/// [`tcp_client`] with `opts`.
fn tcp_client_with(port: u16, name: &str, opts: zrepl_rpc::ClientOptions) -> zrepl_rpc::Client {
    let dial: zrepl_rpc::Dialer = std::sync::Arc::new(move || {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(s) as Box<dyn zrepl_rpc::ClientConn>)
        })
    });
    zrepl_rpc::Client::new(format!("tcp://{name}"), dial, opts)
}

/// An agentless remote for a test: a fresh directory, a client key, sshd on
/// 127.0.0.1:`port` accepting it, and a known_hosts file listing the host key.
struct AgentlessRemote {
    dir: String,
    key: String,
    known_hosts: String,
    port: u16,
    sshd: Child,
}

impl AgentlessRemote {
    fn start(dir: String, port: u16) -> Result<Self, String> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let key = format!("{dir}/id");
        sh(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", &key])?;
        let public = std::fs::read_to_string(format!("{key}.pub")).map_err(|e| e.to_string())?;
        let sshd = start_sshd(&dir, port, &public)?;
        let host_key = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub")
            .map_err(|e| e.to_string())?;
        let known_hosts = format!("{dir}/known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key}"))
            .map_err(|e| e.to_string())?;
        Ok(AgentlessRemote {
            dir,
            key,
            known_hosts,
            port,
            sshd,
        })
    }

    /// `connect:` keys for `user`, without the closing brace (the caller adds root_fs or
    /// filesystems).
    fn connect(&self, user: &str, known_hosts: &str) -> String {
        format!(
            "{{type: ssh+zfs, host: 127.0.0.1, port: {}, user: {user}, identity_file: {}, known_hosts: {known_hosts}",
            self.port, self.key
        )
    }

    /// Stops the daemon and sshd; on failure, adds both logs to the error.
    fn finish(mut self, d: &mut Daemon, res: TestResult) -> TestResult {
        d.kill();
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        res.map_err(|e| {
            format!(
                "{e}\n--- daemon log:\n{}\n--- sshd log:\n{}",
                tail(&d.log()),
                tail(
                    &std::fs::read_to_string(format!("{}/sshd.log", self.dir)).unwrap_or_default()
                )
            )
            .into()
        })
    }
}

fn connect(tr: Transport, dir: &str, me: &str, peer: &str, port: u16) -> String {
    match tr {
        Transport::Tcp => format!("{{type: tcp, address: \"127.0.0.1:{port}\"}}"),
        Transport::Tls => format!(
            "{{type: tls, address: \"127.0.0.1:{port}\", ca: {dir}/ca.crt, cert: {dir}/{me}.crt, key: {dir}/{me}.key, server_cn: {peer}}}"
        ),
        Transport::Ssh => format!(
            "{{type: ssh+stdinserver, host: 127.0.0.1, user: root, port: 2222, identity_file: {dir}/id_{me}, options: [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile=/dev/null\", \"LogLevel=ERROR\"]}}"
        ),
    }
}

fn serve(tr: Transport, dir: &str, me: &str, client: &str, port: u16) -> String {
    match tr {
        Transport::Tcp => format!(
            "{{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": {client}}}}}"
        ),
        Transport::Tls => format!(
            "{{type: tls, listen: \"127.0.0.1:{port}\", ca: {dir}/ca.crt, cert: {dir}/{me}.crt, key: {dir}/{me}.key, client_cns: [{client}]}}"
        ),
        Transport::Ssh => format!("{{type: stdinserver, client_identities: [{client}]}}"),
    }
}

fn wait_token(fs: &str) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tok = zfs(&["get", "-H", "-o", "value", "receive_resume_token", fs])?;
        if tok.trim() != "-" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no resume token on {fs} after the cut"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether any step of the job's last run resumed a transfer.
fn resumed(st: &serde_json::Value, job: &str) -> bool {
    st["jobs"][job]["replication"]["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["filesystems"].as_array().into_iter().flatten())
        .flat_map(|f| f["steps"].as_array().into_iter().flatten())
        .any(|s| s["resumed"] == true)
}

/// After a cut: wait for the active job's run to end, wake it again if it gave up, and require
/// success with a resumed step.
fn finish_resumed(d: &Daemon, job: &str) -> TestResult {
    let r = d.wait_run(job)?;
    if r != "done" {
        d.replicate(job)?;
    }
    let st = d.status()?;
    ensure!(
        resumed(&st, job),
        "{job}: the transfer was not resumed: {:#}",
        st["jobs"][job]
    );
    Ok(())
}

async fn network(t: Ctx, tr: Transport, base_port: u16) -> TestResult {
    let p = &t.pool;
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    create(&t, "sink")?;
    create(&t, "pulled")?;
    write(&a, "f", 1)?;
    write(&b, "f", 1)?;
    snapshot(&format!("{a}@1"))?;
    snapshot(&format!("{b}@1"))?;
    let dir = format!("/tmp/{p}-net");
    std::fs::create_dir_all(&dir)?;
    if tr == Transport::Tls {
        certs(&dir)?;
    }
    let (sink_port, source_port) = (base_port, base_port + 1);
    // The sending side is slowed down so that a transfer can be cut in the middle.
    let limit = "bandwidth_limit: {max: 6 MiB, bucket_capacity: 256 KiB}";
    let cfg_a = format!("{dir}/a.yml");
    let cfg_b = format!("{dir}/b.yml");
    std::fs::write(
        &cfg_a,
        format!(
            "global:\n  control: {{sockpath: {dir}/a-run/control}}\n  serve: {{stdinserver: {{sockdir: {dir}/a-stdin}}}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: push\n  name: push\n  connect: {conn}\n  filesystems: {{\"{a}\": true}}\n  send: {{{limit}}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n\
             - type: source\n  name: source\n  serve: {serve}\n  filesystems: {{\"{b}\": true}}\n  send: {{{limit}}}\n  snapshotting: {{type: manual}}\n",
            conn = connect(tr, &dir, "a", "b", sink_port),
            serve = serve(tr, &dir, "a", "b", source_port),
        ),
    )?;
    std::fs::write(
        &cfg_b,
        format!(
            "global:\n  control: {{sockpath: {dir}/b-run/control}}\n  serve: {{stdinserver: {{sockdir: {dir}/b-stdin}}}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {serve}\n\
             - type: pull\n  name: pull\n  root_fs: {p}/pulled\n  recv: {{placeholder: {{encryption: inherit}}}}\n  interval: manual\n  connect: {conn}\n  pruning: {{keep_sender: [{{type: not_replicated}}, {{type: last_n, count: 2}}], keep_receiver: [{{type: last_n, count: 2}}]}}\n",
            conn = connect(tr, &dir, "b", "a", source_port),
            serve = serve(tr, &dir, "b", "a", sink_port),
        ),
    )?;
    let mut sshd_child = if tr == Transport::Ssh {
        Some(sshd(&dir, &cfg_a, &cfg_b)?)
    } else {
        None
    };
    let mut da = Daemon {
        cfg: cfg_a.clone(),
        log: format!("{dir}/a.log"),
        child: None,
    };
    let mut db = Daemon {
        cfg: cfg_b.clone(),
        log: format!("{dir}/b.log"),
        child: None,
    };
    let pushed = format!("{p}/sink/a/{a}");
    let pulled = format!("{p}/pulled/{b}");
    let res: TestResult = (|| {
        da.start()?;
        db.start()?;
        // Full, then incremental, both directions.
        da.replicate("push")?;
        db.replicate("pull")?;
        ensure!(
            guid(&format!("{pushed}@1"))? == guid(&format!("{a}@1"))?,
            "push full"
        );
        ensure!(
            guid(&format!("{pulled}@1"))? == guid(&format!("{b}@1"))?,
            "pull full"
        );
        write(&a, "g", 1)?;
        write(&b, "g", 1)?;
        snapshot(&format!("{a}@2"))?;
        snapshot(&format!("{b}@2"))?;
        da.replicate("push")?;
        db.replicate("pull")?;
        ensure!(
            guid(&format!("{pushed}@2"))? == guid(&format!("{a}@2"))?,
            "push incremental"
        );
        ensure!(
            guid(&format!("{pulled}@2"))? == guid(&format!("{b}@2"))?,
            "pull incremental"
        );

        // Push cut mid-stream: the receiving daemon dies.
        write(&a, "big", 24)?;
        snapshot(&format!("{a}@3"))?;
        da.zrepl(&["signal", "wakeup", "push"])?;
        da.wait_bytes("push", 2 << 20)?;
        db.kill();
        wait_token(&pushed)?;
        db.start()?;
        finish_resumed(&da, "push")?;
        ensure!(
            guid(&format!("{pushed}@3"))? == guid(&format!("{a}@3"))?,
            "push resumed"
        );

        // Pull cut mid-stream: the sending daemon dies.
        write(&b, "big", 24)?;
        snapshot(&format!("{b}@3"))?;
        db.zrepl(&["signal", "wakeup", "pull"])?;
        db.wait_bytes("pull", 2 << 20)?;
        da.kill();
        wait_token(&pulled)?;
        da.start()?;
        finish_resumed(&db, "pull")?;
        ensure!(
            guid(&format!("{pulled}@3"))? == guid(&format!("{b}@3"))?,
            "pull resumed"
        );

        // The pull job pruned both sides: the source's snapshots over the network.
        let snaps = |fs: &str| -> Result<Vec<String>, String> {
            Ok(crate::replication::versions(fs)?
                .into_iter()
                .filter(|v| v.starts_with('@'))
                .collect())
        };
        ensure!(
            snaps(&b)? == ["@2", "@3"],
            "source after pull pruning: {:?}",
            snaps(&b)?
        );
        ensure!(
            snaps(&pulled)? == ["@2", "@3"],
            "pulled after pruning: {:?}",
            snaps(&pulled)?
        );

        // The pull job's pruning dry run asks the source over the network (read-only).
        let dry: serde_json::Value =
            serde_json::from_str(&db.zrepl(&["prune", "--dry-run", "--job", "pull", "--json"])?)?;
        ensure!(
            dry["sender"]["error"].is_null()
                && dry["sender"]["filesystems"]
                    .as_array()
                    .map_or(0, |a| a.len())
                    == 1
                && dry["receiver"]["error"].is_null(),
            "pull dry run: {dry:#}"
        );

        // No step holds leak on the senders.
        ensure!(
            all_holds(&a)?.iter().all(|h| !h.contains("zrepl_STEP")),
            "holds on a: {:?}",
            all_holds(&a)?
        );
        ensure!(
            all_holds(&b)?.iter().all(|h| !h.contains("zrepl_STEP")),
            "holds on b: {:?}",
            all_holds(&b)?
        );
        Ok(())
    })();
    da.kill();
    db.kill();
    if let Some(mut s) = sshd_child.take() {
        let _ = s.kill();
        let _ = s.wait();
    }
    res.map_err(|e| {
        format!(
            "{e}\n--- daemon A log:\n{}\n--- daemon B log:\n{}\n--- sshd log:\n{}",
            tail(&da.log()),
            tail(&db.log()),
            tail(&std::fs::read_to_string(Path::new(&dir).join("sshd.log")).unwrap_or_default())
        )
        .into()
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

pub async fn net_push_pull_tcp(t: Ctx) -> TestResult {
    network(t, Transport::Tcp, 28801).await
}

pub async fn net_push_pull_tls(t: Ctx) -> TestResult {
    network(t, Transport::Tls, 28811).await
}

pub async fn net_push_pull_ssh_stdinserver(t: Ctx) -> TestResult {
    network(t, Transport::Ssh, 28821).await
}

/// `zrepl signal reset` aborts a running network transfer promptly; the next run resumes it.
pub async fn net_signal_reset_aborts_and_next_run_resumes(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let a = create(&t, "src/a")?;
    create(&t, "sink")?;
    write(&a, "big", 24)?;
    snapshot(&format!("{a}@1"))?;
    let dir = format!("/tmp/{p}-reset");
    std::fs::create_dir_all(&dir)?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:28831\", clients: {{\"127.0.0.1\": c}}}}\n\
             - type: push\n  name: push\n  connect: {{type: tcp, address: \"127.0.0.1:28831\"}}\n  filesystems: {{\"{a}\": true}}\n  send: {{bandwidth_limit: {{max: 2 MiB}}}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let res: TestResult = (|| {
        d.start()?;
        d.zrepl(&["signal", "wakeup", "push"])?;
        // Past the flow-control window and pipe buffers, and `zfs recv` running and fed for
        // another 2 MiB, so that it has data to keep (the sender's count alone can run ahead of
        // a receiver still creating placeholders: socket buffers hold several MiB).
        d.wait_bytes("push", 7 << 20)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while sh(&["pgrep", "-f", "^zfs (recv|receive)"]).is_err() {
            ensure!(Instant::now() < deadline, "no zfs recv started");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (fed, _) = d.bytes("push")?;
        d.wait_bytes("push", fed + (2 << 20))?;
        let t0 = Instant::now();
        d.zrepl(&["signal", "reset", "push"])?;
        let r = d.wait_run("push")?;
        let took = t0.elapsed();
        ensure!(r == "cancelled", "run after reset: {r}");
        ensure!(took < Duration::from_secs(10), "reset took {took:?}");
        let recv = format!("{p}/sink/c/{a}");
        wait_token(&recv)?;
        crate::pool::wait_gone("^zfs (send|recv|receive)", Duration::from_secs(15))?;
        d.replicate("push")?;
        let st = d.status()?;
        ensure!(
            resumed(&st, "push"),
            "not resumed: {:#}",
            st["jobs"]["push"]
        );
        ensure!(
            guid(&format!("{recv}@1"))? == guid(&format!("{a}@1"))?,
            "replicated"
        );
        Ok(())
    })();
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// A client's stream over the wire cannot mount, share or hook its data into the receiving
/// host (issue: untrusted peers): a push with `send_properties` of a filesystem whose
/// `mountpoint` points elsewhere on the host (and a systemd generator dependency) arrives with
/// those properties inherited below the sink's root, their sent values kept as received
/// values; a volume sent with its properties arrives too (`-x mountpoint` and friends must not
/// fail on a volume); an operator's `recv.properties.override` still wins.
pub async fn net_received_properties_cannot_mount_or_hook_into_the_host(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let a = create(&t, "src/a")?;
    let vol = format!("{p}/src/vol");
    zfs(&["create", "-V", "8M", &vol])?;
    zfs(&[
        "set",
        "org.openzfs.systemd:wanted-by=multi-user.target",
        &vol,
    ])?;
    create(&t, "sink")?;
    let dir = format!("/tmp/{p}-props");
    std::fs::create_dir_all(&dir)?;
    let evil = format!("{dir}/evil-mountpoint");
    zfs(&["set", &format!("mountpoint={evil}"), &a])?;
    zfs(&["set", "canmount=on", &a])?;
    zfs(&["set", "org.openzfs.systemd:wanted-by=multi-user.target", &a])?;
    zfs(&["set", "org.openzfs.systemd:required-by=sshd.service", &a])?;
    write(&a, "f", 1)?;
    snapshot(&format!("{a}@1"))?;
    snapshot(&format!("{vol}@1"))?;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}, properties: {{override: {{\"org.openzfs.systemd:required-by\": \"zrepl-test.target\"}}}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:28841\", clients: {{\"127.0.0.1\": c}}}}\n\
             - type: push\n  name: push\n  connect: {{type: tcp, address: \"127.0.0.1:28841\"}}\n  filesystems: {{\"{a}\": true, \"{vol}\": true}}\n  send: {{send_properties: true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let res: TestResult = (|| {
        d.start()?;
        d.replicate("push")?;
        let recv = format!("{p}/sink/c/{a}");
        let rvol = format!("{p}/sink/c/{vol}");
        ensure!(
            guid(&format!("{recv}@1"))? == guid(&format!("{a}@1"))?,
            "filesystem replicated"
        );
        ensure!(
            guid(&format!("{rvol}@1"))? == guid(&format!("{vol}@1"))?,
            "volume replicated with its properties"
        );
        let get = |prop: &str, field: &str, ds: &str| -> Result<String, String> {
            Ok(zfs(&["get", "-H", "-o", field, prop, ds])?
                .trim()
                .to_string())
        };
        let mp = get("mountpoint", "value", &recv)?;
        let sink_mp = get("mountpoint", "value", &format!("{p}/sink"))?;
        // Inherited from its parent below the sink's root: a placeholder's `none`, or a path
        // below the root's mountpoint; never the client's.
        ensure!(
            mp != evil && (mp == "none" || mp.starts_with(&sink_mp)),
            "received mountpoint {mp:?} is not the sink's ({sink_mp:?} or none)"
        );
        ensure!(
            get("mountpoint", "source", &recv)?.starts_with("inherited"),
            "mountpoint source"
        );
        ensure!(
            get("mountpoint", "received", &recv)? == evil,
            "the sent mountpoint is kept as the received value"
        );
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        ensure!(
            !mounts
                .lines()
                .any(|l| l.starts_with(&format!("{recv} ")) && l.contains(&evil)),
            "the received filesystem is mounted at the client's path"
        );
        for ds in [&recv, &rvol] {
            ensure!(
                get("org.openzfs.systemd:wanted-by", "value", ds)? == "-",
                "{ds}: wanted-by applied"
            );
        }
        ensure!(
            get("org.openzfs.systemd:required-by", "value", &recv)? == "zrepl-test.target",
            "the operator's override wins"
        );
        // Incrementals still arrive.
        write(&a, "g", 1)?;
        snapshot(&format!("{a}@2"))?;
        d.replicate("push")?;
        ensure!(
            guid(&format!("{recv}@2"))? == guid(&format!("{a}@2"))?,
            "incremental"
        );
        ensure!(
            get("mountpoint", "value", &recv)? == mp,
            "the incremental keeps the mountpoint inherited"
        );
        Ok(())
    })();
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// A pull client's authority on a source (issue: untrusted peers): the source's
/// `client_pruning.keep` rules bound what the client's `keep_sender` pruning destroys, and a
/// client that completes a step to an older snapshot than the cursor (as a malicious client
/// can, over the real wire with a hand-driven RPC client) cannot destroy the newer cursor.
pub async fn net_source_bounds_what_a_pull_client_destroys(t: Ctx) -> TestResult {
    use zrepl_protocol::{Protection, ReplicationConfig, SendRequest, Sender};
    let p = t.pool.clone();
    let b = create(&t, "src/b")?;
    create(&t, "pulled")?;
    for i in 1..=4 {
        write(&b, &format!("f{i}"), 1)?;
        snapshot(&format!("{b}@{i}"))?;
    }
    let dir = format!("/tmp/{p}-srcauth");
    std::fs::create_dir_all(&dir)?;
    let port = 28851;
    let cfg_a = format!("{dir}/a.yml");
    let cfg_b = format!("{dir}/b.yml");
    std::fs::write(
        &cfg_a,
        format!(
            "global:\n  control: {{sockpath: {dir}/a-run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: source\n  name: source\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": b}}}}\n  filesystems: {{\"{b}\": true}}\n  snapshotting: {{type: manual}}\n  client_pruning: {{keep: [{{type: not_replicated}}, {{type: last_n, count: 2}}]}}\n"
        ),
    )?;
    std::fs::write(
        &cfg_b,
        format!(
            "global:\n  control: {{sockpath: {dir}/b-run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: pull\n  name: pull\n  root_fs: {p}/pulled\n  recv: {{placeholder: {{encryption: inherit}}}}\n  interval: manual\n  connect: {{type: tcp, address: \"127.0.0.1:{port}\"}}\n  pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )?;
    let mut da = Daemon {
        cfg: cfg_a,
        log: format!("{dir}/a.log"),
        child: None,
    };
    let mut db = Daemon {
        cfg: cfg_b,
        log: format!("{dir}/b.log"),
        child: None,
    };
    let snaps = |fs: &str| -> Result<Vec<String>, String> {
        Ok(zfs(&[
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "snapshot",
            "-s",
            "createtxg",
            fs,
        ])?
        .lines()
        .map(|l| l.rsplit('@').next().unwrap_or("").to_string())
        .collect())
    };
    let res: TestResult = async {
        da.start()?;
        db.start()?;
        db.zrepl(&["signal", "wakeup", "pull"])?;
        db.wait_run("pull")?;
        let pulled = format!("{p}/pulled/{b}");
        ensure!(
            guid(&format!("{pulled}@4"))? == guid(&format!("{b}@4"))?,
            "pulled"
        );
        // keep_sender wanted only @4; the source's rules keep the newest two.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = snaps(&b)?;
            if left == ["3", "4"] {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "source snapshots after the pull's pruning: {left:?}\n{}",
                tail(&db.log())
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let log = db.log() + &da.log();
        ensure!(
            log.contains("client_pruning: kept by rule #2 last_n(count=2)"),
            "the refusal is reported: {}",
            tail(&log)
        );
        // A hand-driven client completes a "step" to @3, older than the cursor at @4.
        let client = tcp_client(port, "source");
        let fs = zrepl_zfs_types::DatasetPath::parse(&b)?;
        let versions = t
            .zfs
            .list_versions(&fs, zrepl_zfs::VersionTypes::All)
            .await?;
        let v3 = versions
            .iter()
            .find(|v| v.name == "3")
            .ok_or("no @3")?
            .clone();
        let v4 = versions.iter().find(|v| v.name == "4").ok_or("no @4")?;
        let cursor_before: Vec<String> = versions
            .iter()
            .filter(|v| v.name.starts_with("zrepl_CURSOR_G_"))
            .map(|v| v.name.clone())
            .collect();
        ensure!(
            cursor_before.len() == 1 && cursor_before[0].contains(&format!("{:016x}", v4.guid)),
            "cursor at @4 before: {cursor_before:?}"
        );
        let level = ReplicationConfig {
            initial: Protection::GuaranteeResumability,
            incremental: Protection::GuaranteeResumability,
        };
        let req = SendRequest {
            intermediates: Vec::new(),
            filesystem: fs.clone(),
            from: None,
            to: v3,
            resume_token: None,
            replication: level,
        };
        let r = client.sends_completed(&[req]).await?;
        ensure!(r.len() == 1, "one result: {r:?}");
        let after: Vec<String> = t
            .zfs
            .list_versions(&fs, zrepl_zfs::VersionTypes::Bookmarks)
            .await?
            .into_iter()
            .filter(|v| v.name.starts_with("zrepl_CURSOR_G_"))
            .map(|v| v.name)
            .collect();
        // The cursor at @4 survives: a completion to an older snapshot adds that one's cursor
        // (a receiver that really went back keeps its incremental source) but never destroys
        // a newer one.
        ensure!(
            after.contains(&cursor_before[0]),
            "the newer cursor was destroyed: {cursor_before:?} -> {after:?}"
        );
        ensure!(
            da.log().contains("is older than the replication cursor"),
            "the source logs the kept cursor: {}",
            tail(&da.log())
        );
        Ok(())
    }
    .await;
    da.kill();
    db.kill();
    res.map_err(|e| {
        format!(
            "{e}\n--- a:\n{}\n--- b:\n{}",
            tail(&da.log()),
            tail(&db.log())
        )
        .into()
    })
}

/// A client that sends a sink a replication stream (`zfs send -R`, as a compromised client can
/// over the real wire) does not make the sink create the stream's descendants below the
/// target (or rename or destroy anything): the stream is refused before `zfs recv` runs.
pub async fn net_sink_refuses_a_replication_stream(t: Ctx) -> TestResult {
    use zrepl_protocol::{Protection, ReceiveRequest, Receiver, ReplicationConfig};
    let p = t.pool.clone();
    let r = create(&t, "src/r")?;
    let kid = create(&t, "src/r/kid")?;
    create(&t, "sink")?;
    write(&r, "f", 1)?;
    write(&kid, "f", 1)?;
    zfs(&["snapshot", "-r", &format!("{r}@1")])?;
    let dir = format!("/tmp/{p}-recursive");
    std::fs::create_dir_all(&dir)?;
    let stream_file = format!("{dir}/r.zstream");
    sh(&["sh", "-c", &format!("zfs send -R {r}@1 > {stream_file}")])?;
    let port = 28861;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": c}}}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let res: TestResult = async {
        d.start()?;
        let client = tcp_client(port, "sink");
        let fs = zrepl_zfs_types::DatasetPath::parse(&r)?;
        let to = t
            .zfs
            .list_versions(&fs, zrepl_zfs::VersionTypes::Snapshots)
            .await?
            .into_iter()
            .find(|v| v.name == "1")
            .ok_or("no @1")?;
        let req = ReceiveRequest {
            filesystem: fs,
            to,
            clear_resume_token: false,
            replication: ReplicationConfig {
                initial: Protection::GuaranteeResumability,
                incremental: Protection::GuaranteeResumability,
            },
            from: None,
            deferred: false,
            intermediates: Vec::new(),
        };
        let file = tokio::fs::File::open(&stream_file).await?;
        let got = client.receive(req, Box::pin(file)).await;
        let err = match got {
            Ok(()) => return Err("the sink received a replication stream".into()),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains("replication stream (zfs send -R)"),
            "the refusal names the reason: {err}"
        );
        let below = zfs(&["list", "-H", "-o", "name", "-r", &format!("{p}/sink")])?;
        ensure!(
            !below.contains("/src/r"),
            "datasets were created below the sink: {below}"
        );
        // The same client's ordinary stream of the same snapshot still arrives.
        sh(&["sh", "-c", &format!("zfs send {r}@1 > {stream_file}")])?;
        let to = t
            .zfs
            .list_versions(
                &zrepl_zfs_types::DatasetPath::parse(&r)?,
                zrepl_zfs::VersionTypes::Snapshots,
            )
            .await?
            .into_iter()
            .find(|v| v.name == "1")
            .ok_or("no @1")?;
        let req = ReceiveRequest {
            filesystem: zrepl_zfs_types::DatasetPath::parse(&r)?,
            to,
            clear_resume_token: false,
            replication: ReplicationConfig {
                initial: Protection::GuaranteeResumability,
                incremental: Protection::GuaranteeResumability,
            },
            from: None,
            deferred: false,
            intermediates: Vec::new(),
        };
        let file = tokio::fs::File::open(&stream_file).await?;
        client.receive(req, Box::pin(file)).await?;
        let recv = format!("{p}/sink/c/{r}");
        ensure!(
            guid(&format!("{recv}@1"))? == guid(&format!("{r}@1"))?,
            "the plain stream arrived"
        );
        ensure!(
            zfs(&["list", "-H", "-o", "name", "-r", &recv])?
                .lines()
                .count()
                == 1,
            "no descendant below {recv}"
        );
        Ok(())
    }
    .await;
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// A client that hides a compound stream with properties (`zfs send -p`) after a substream of
/// a package (as a compromised client can over the real wire) cannot make the sink set them:
/// the package is refused at that record, before `zfs recv` reads it, and the properties stay
/// unset, although the sink receives packages without the protected `-x` list. The same bytes
/// given to `zfs recv` directly do set the client's mountpoint and systemd dependency (the
/// attack is real on this OpenZFS). An honest package still arrives afterwards.
pub async fn net_sink_refuses_properties_hidden_in_a_package(t: Ctx) -> TestResult {
    use zrepl_protocol::{Protection, ReceiveRequest, Receiver, ReplicationConfig};
    let p = t.pool.clone();
    let a = create(&t, "src/a")?;
    create(&t, "sink")?;
    let scratch = format!("{p}/scratch");
    zfs(&["create", "-o", "mountpoint=none", &scratch])?;
    for i in 0..=3 {
        write(&a, &format!("f{i}"), 1)?;
        snapshot(&format!("{a}@{i}"))?;
    }
    let dir = format!("/tmp/{p}-hidden");
    std::fs::create_dir_all(&dir)?;
    let evil_mp = format!("{dir}/evil-mountpoint");
    zfs(&["set", &format!("mountpoint={evil_mp}"), &a])?;
    zfs(&["set", "org.openzfs.systemd:wanted-by=multi-user.target", &a])?;
    // The package @0 -> @1 without its closing END record, then a `-p` stream @1 -> @2.
    let evil = format!("{dir}/evil.zstream");
    sh(&[
        "sh",
        "-c",
        &format!(
            "zfs send -I {a}@0 {a}@1 > {dir}/p && zfs send -p -i {a}@1 {a}@2 > {dir}/q && \
             head -c $(( $(stat -c %s {dir}/p) - 312 )) {dir}/p > {evil} && cat {dir}/q >> {evil}"
        ),
    ])?;
    // The attack, straight into `zfs recv`.
    let direct = format!("{scratch}/direct");
    sh(&[
        "sh",
        "-c",
        &format!("zfs send {a}@0 | zfs recv -u {direct}"),
    ])?;
    let _ = sh(&["sh", "-c", &format!("zfs recv -u {direct} < {evil}")]);
    let get = |prop: &str, field: &str, ds: &str| -> Result<String, String> {
        Ok(zfs(&["get", "-H", "-o", field, prop, ds])?
            .trim()
            .to_string())
    };
    ensure!(
        get("mountpoint", "received", &direct)? == evil_mp,
        "zfs recv alone did not take the hidden mountpoint: the test does not test the attack"
    );
    let port = 28871;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": c}}}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let res: TestResult = async {
        d.start()?;
        let client = tcp_client(port, "sink");
        let fs = zrepl_zfs_types::DatasetPath::parse(&a)?;
        let snaps = t
            .zfs
            .list_versions(&fs, zrepl_zfs::VersionTypes::Snapshots)
            .await?;
        let snap = |n: &str| {
            snaps
                .iter()
                .find(|v| v.name == n)
                .cloned()
                .ok_or(format!("no @{n}"))
        };
        let req = |from: Option<&str>, mid: &[&str], to: &str| -> Result<ReceiveRequest, String> {
            Ok(ReceiveRequest {
                filesystem: fs.clone(),
                to: snap(to)?,
                clear_resume_token: false,
                replication: ReplicationConfig {
                    initial: Protection::GuaranteeResumability,
                    incremental: Protection::GuaranteeResumability,
                },
                from: from.map(snap).transpose()?,
                deferred: false,
                intermediates: mid.iter().map(|n| snap(n)).collect::<Result<_, _>>()?,
            })
        };
        sh(&["sh", "-c", &format!("zfs send {a}@0 > {dir}/full")])?;
        let file = tokio::fs::File::open(format!("{dir}/full")).await?;
        client.receive(req(None, &[], "0")?, Box::pin(file)).await?;
        let recv = format!("{p}/sink/c/{a}");
        let file = tokio::fs::File::open(&evil).await?;
        let err = match client
            .receive(req(Some("0"), &["1"], "2")?, Box::pin(file))
            .await
        {
            Ok(()) => return Err("the sink received the package with a hidden header".into()),
            Err(e) => e.to_string(),
        };
        ensure!(
            err.contains("compound stream nested in a package"),
            "the refusal names the reason: {err}"
        );
        for (prop, bad) in [
            ("mountpoint", evil_mp.as_str()),
            ("org.openzfs.systemd:wanted-by", "multi-user.target"),
        ] {
            for field in ["value", "received"] {
                let v = get(prop, field, &recv)?;
                ensure!(v != bad, "{prop} {field} is the client's: {v}");
            }
        }
        ensure!(
            zfs(&["list", "-H", "-o", "name", &format!("{recv}@2")]).is_err(),
            "the hidden stream's snapshot was received"
        );
        // An honest package from where the refused one stopped still arrives.
        let have1 = zfs(&["list", "-H", "-o", "name", &format!("{recv}@1")]).is_ok();
        let from = if have1 { "1" } else { "0" };
        let mid: &[&str] = if have1 { &["2"] } else { &["1", "2"] };
        if zfs(&["get", "-H", "-o", "value", "receive_resume_token", &recv])?.trim() != "-" {
            zfs(&["recv", "-A", &recv])?;
        }
        sh(&[
            "sh",
            "-c",
            &format!("zfs send -I {a}@{from} {a}@3 > {dir}/honest"),
        ])?;
        let file = tokio::fs::File::open(format!("{dir}/honest")).await?;
        client
            .receive(req(Some(from), mid, "3")?, Box::pin(file))
            .await?;
        ensure!(
            guid(&format!("{recv}@3"))? == guid(&format!("{a}@3"))?,
            "the honest package arrived"
        );
        ensure!(
            get("mountpoint", "received", &recv)? == "-",
            "the honest package set no mountpoint"
        );
        Ok(())
    }
    .await;
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// A pull client that prepares steps (step holds on the source) and never completes them
/// cannot keep the snapshots held for longer than the source's `step_holds.max_age`: the
/// source releases its expired step holds itself (a user's hold on the same snapshot stays).
pub async fn net_source_expires_step_holds_of_a_client_that_never_completes(t: Ctx) -> TestResult {
    use zrepl_protocol::{Protection, ReplicationConfig, SendRequest, Sender};
    let p = t.pool.clone();
    let b = create(&t, "src/b")?;
    write(&b, "f", 1)?;
    snapshot(&format!("{b}@1"))?;
    zfs(&["hold", "users-own", &format!("{b}@1")])?;
    let dir = format!("/tmp/{p}-stepholds");
    std::fs::create_dir_all(&dir)?;
    let port = 28871;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: source\n  name: source\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": b}}}}\n  filesystems: {{\"{b}\": true}}\n  snapshotting: {{type: manual}}\n  step_holds: {{max_age: 90s}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let holds_of = |snap: &str| -> Result<Vec<String>, String> {
        Ok(zfs(&["holds", "-H", snap])?
            .lines()
            .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
            .collect())
    };
    let res: TestResult = async {
        d.start()?;
        let client = tcp_client(port, "source");
        let fs = zrepl_zfs_types::DatasetPath::parse(&b)?;
        let v1 = t
            .zfs
            .list_versions(&fs, zrepl_zfs::VersionTypes::Snapshots)
            .await?
            .into_iter()
            .find(|v| v.name == "1")
            .ok_or("no @1")?;
        let req = SendRequest {
            intermediates: Vec::new(),
            filesystem: fs,
            from: None,
            to: v1,
            resume_token: None,
            replication: ReplicationConfig {
                initial: Protection::GuaranteeResumability,
                incremental: Protection::GuaranteeResumability,
            },
        };
        client.prepare_sends(&[req]).await?;
        let snap = format!("{b}@1");
        let step_tag = "zrepl_STEP_J_source";
        ensure!(
            holds_of(&snap)?.iter().any(|t| t == step_tag),
            "the client's prepared step holds @1: {:?}",
            holds_of(&snap)?
        );
        // Never completed: the source releases the step hold once it is older than 90 s. Hold
        // times have minute resolution (a hold may look up to 59 s older than it is, so a
        // shorter max_age could release it before the check above) and the expiry runs every
        // max_age/4 (22.5 s): released within about two minutes.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let tags = holds_of(&snap)?;
            if !tags.iter().any(|t| t == step_tag) {
                ensure!(tags == ["users-own"], "the user's own hold stays: {tags:?}");
                break;
            }
            ensure!(Instant::now() < deadline, "the step hold stayed: {tags:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
        // The log line follows the release (the hold may be seen gone a moment before it).
        let logged = Instant::now() + Duration::from_secs(20);
        while !d
            .log()
            .contains("released step holds older than step_holds.max_age")
        {
            ensure!(
                Instant::now() < logged,
                "the source logs the release: {}",
                tail(&d.log())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
    .await;
    let _ = zfs(&["release", "users-own", &format!("{b}@1")]);
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// Push to an agentless remote (`connect: {type: ssh+zfs}`): a host with only sshd and `zfs`.
/// The daemon runs the remote `zfs` commands over one multiplexed ssh connection: initial and
/// incremental replication below the remote `root_fs` with placeholders for the missing
/// parents, the last-received hold there, pruning of the remote side by `keep_receiver`, and
/// a host key that is not in `known_hosts` refused.
pub async fn net_push_to_agentless_ssh_remote(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let a = create(&t, "src/a")?;
    create(&t, "remote")?;
    let remote = AgentlessRemote::start(format!("/tmp/{p}-agentless"), 2223)?;
    let (dir, known_hosts, port) = (remote.dir.clone(), remote.known_hosts.clone(), remote.port);
    let sockdir = format!("{dir}/sock");
    let cfg_for = |known: &str| {
        let conn = remote.connect("root", known);
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  serve: {{stdinserver: {{sockdir: {sockdir}}}}}\n  logging: [{{type: stdout, level: debug, format: human}}]\n\
             jobs:\n\
             - type: push\n  name: offsite\n  connect: {conn}, root_fs: {p}/remote, recv: {{placeholder: {{encryption: inherit}}, bandwidth_limit: {{max: 6 MiB}}}}}}\n  filesystems: {{\"{a}\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: last_n, count: 2}}]}}\n"
        )
    };
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(&cfg, cfg_for(&known_hosts))?;
    let mut d = Daemon {
        cfg: cfg.clone(),
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let recv = format!("{p}/remote/{a}");
    let res: TestResult = async {
        d.start()?;
        write(&a, "f1", 1)?;
        snapshot(&format!("{a}@1"))?;
        d.replicate("offsite")?;
        ensure!(
            guid(&format!("{recv}@1"))? == guid(&format!("{a}@1"))?,
            "initial replication to the remote"
        );
        for ph in [format!("{p}/remote/{p}"), format!("{p}/remote/{p}/src")] {
            ensure!(
                zfs(&["get", "-H", "-o", "value,source", "zrepl:placeholder", &ph])?.trim()
                    == "on\tlocal",
                "{ph} is a placeholder"
            );
        }
        for i in 2..=3 {
            write(&a, &format!("f{i}"), 1)?;
            snapshot(&format!("{a}@{i}"))?;
        }
        d.replicate("offsite")?;
        ensure!(
            guid(&format!("{recv}@3"))? == guid(&format!("{a}@3"))?,
            "incremental replication to the remote"
        );
        // keep_receiver last_n 2 pruned the remote side.
        let remote_snaps = zfs(&["list", "-H", "-o", "name", "-t", "snapshot", "-s", "createtxg", &recv])?;
        let names: Vec<&str> = remote_snaps.lines().filter_map(|l| l.rsplit('@').next()).collect();
        ensure!(names == ["2", "3"], "remote snapshots after pruning: {names:?}");
        let holds = all_holds(&format!("{recv}@3"))?;
        ensure!(
            holds
                .iter()
                .any(|h| h.ends_with(" zrepl_last_received_J_offsite")),
            "last-received hold on the remote's newest: {holds:?}"
        );
        // `zrepl prune --dry-run` lists the remote side (read-only) and status counts the
        // remote commands with the daemon's own.
        let before = zfs(&["list", "-H", "-o", "name", "-t", "snapshot", &recv])?;
        let dry: serde_json::Value = serde_json::from_str(&d.zrepl(&[
            "prune",
            "--dry-run",
            "--job",
            "offsite",
            "--json",
        ])?)?;
        ensure!(
            dry["receiver"]["error"].is_null()
                && dry["receiver"]["filesystems"]
                    .as_array()
                    .is_some_and(|fs| fs
                        .iter()
                        .any(|f| f["filesystem"] == a.as_str() && f["skipped"].is_null())),
            "dry run of the remote side: {dry:#}"
        );
        ensure!(
            zfs(&["list", "-H", "-o", "name", "-t", "snapshot", &recv])? == before,
            "a dry run destroys nothing"
        );
        let st = d.status()?;
        let started = st["global"]["zfs_commands"]["started"].to_string();
        ensure!(
            started.contains("zfs recv") && started.contains("zfs hold"),
            "status counts the remote commands: {started}"
        );
        // A transfer cut by killing the daemon (its ssh sessions die with it) leaves a
        // partial receive on the remote, which the next run resumes.
        write(&a, "big", 40)?;
        snapshot(&format!("{a}@big"))?;
        d.zrepl(&["signal", "wakeup", "offsite"])?;
        d.wait_bytes("offsite", 8 << 20)?;
        d.kill();
        wait_token(&recv)?;
        d.start()?;
        d.replicate("offsite")?;
        ensure!(
            guid(&format!("{recv}@big"))? == guid(&format!("{a}@big"))?,
            "the cut transfer completed"
        );
        ensure!(
            resumed(&d.status()?, "offsite"),
            "the transfer was resumed, not restarted"
        );
        // The round's invariants after the kill: no step hold left on the sender, the cursor
        // on the newest replicated snapshot, one last-received hold, on the remote's newest.
        let sender_holds = all_holds(&a)?;
        ensure!(
            !sender_holds.iter().any(|h| h.contains(" zrepl_STEP_")),
            "step holds left on the sender: {sender_holds:?}"
        );
        let gbig = guid(&format!("{a}@big"))?;
        let cursors = zfs(&["list", "-H", "-o", "name", "-t", "bookmark", &a])?;
        let cursor_lines: Vec<&str> = cursors
            .lines()
            .filter(|l| l.contains("zrepl_CURSOR_G_"))
            .collect();
        ensure!(
            !cursor_lines.is_empty()
                && cursor_lines
                    .iter()
                    .all(|l| l.contains(&format!("{gbig:016x}"))),
            "the cursor is on @big only: {cursors}"
        );
        let remote_holds: Vec<String> = all_holds(&recv)?
            .into_iter()
            .filter(|h| h.contains("zrepl_last_received_J_offsite"))
            .collect();
        ensure!(
            remote_holds.len() == 1 && remote_holds[0].contains("@big "),
            "one last-received hold, on @big: {remote_holds:?}"
        );
        // One shared ssh connection: its control socket is in the daemon's socket directory.
        let socks: Vec<String> = std::fs::read_dir(&sockdir)?
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("ssh-"))
            .collect();
        ensure!(socks.len() == 1, "one control socket: {socks:?}");
        let log = d.log();
        ensure!(
            log.contains("root@127.0.0.1:zfs"),
            "remote commands are logged as such: {}",
            tail(&log)
        );
        d.kill();
        // A host key that known_hosts does not list is refused, nothing is received.
        let other = format!("{dir}/other_known_hosts");
        std::fs::write(&other, format!("[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"))?;
        std::fs::write(&cfg, cfg_for(&other))?;
        let _ = std::fs::remove_dir_all(&sockdir);
        d.start()?;
        write(&a, "f4", 1)?;
        snapshot(&format!("{a}@4"))?;
        d.zrepl(&["signal", "wakeup", "offsite"])?;
        let r = d.wait_run("offsite")?;
        ensure!(r == "failed", "the run with an unknown host key ended {r}");
        let st = d.status()?;
        let text = st["jobs"]["offsite"].to_string();
        ensure!(
            text.contains("Host key verification failed") || text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
            "the failure names the host key: {text}"
        );
        ensure!(
            zfs(&["list", "-H", "-o", "name", &format!("{recv}@4")]).is_err(),
            "nothing received with an unverified host key"
        );
        Ok(())
    }
    .await;
    remote.finish(&mut d, res)
}

/// Pull from an agentless remote (`connect: {type: ssh+zfs, filesystems: ...}`): the daemon
/// runs the remote `zfs send` and the sender's abstractions over ssh: initial and incremental,
/// the replication cursor and step holds on the remote, and pruning of the remote side by
/// `keep_sender`.
pub async fn net_pull_from_agentless_ssh_remote(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let b = create(&t, "rsrc/b")?;
    create(&t, "pulled")?;
    let remote = AgentlessRemote::start(format!("/tmp/{p}-agentless-pull"), 2224)?;
    let (dir, known_hosts) = (remote.dir.clone(), remote.known_hosts.clone());
    let cfg = format!("{dir}/zrepl.yml");
    let conn = remote.connect("root", &known_hosts);
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  serve: {{stdinserver: {{sockdir: {dir}/sock}}}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: pull\n  name: fetch\n  interval: manual\n  root_fs: {p}/pulled\n  recv: {{placeholder: {{encryption: inherit}}}}\n  connect: {conn}, filesystems: {{\"{b}\": true}}}}\n  pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let pulled = format!("{p}/pulled/{b}");
    let snaps = |fs: &str| -> Result<Vec<String>, String> {
        Ok(zfs(&[
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "snapshot",
            "-s",
            "createtxg",
            fs,
        ])?
        .lines()
        .filter_map(|l| l.rsplit('@').next().map(str::to_string))
        .collect())
    };
    let res: TestResult = async {
        d.start()?;
        write(&b, "f1", 1)?;
        snapshot(&format!("{b}@1"))?;
        d.replicate("fetch")?;
        ensure!(
            guid(&format!("{pulled}@1"))? == guid(&format!("{b}@1"))?,
            "initial pull from the remote"
        );
        for i in 2..=3 {
            write(&b, &format!("f{i}"), 1)?;
            snapshot(&format!("{b}@{i}"))?;
        }
        d.replicate("fetch")?;
        ensure!(
            guid(&format!("{pulled}@3"))? == guid(&format!("{b}@3"))?,
            "incremental pull from the remote"
        );
        ensure!(
            snaps(&pulled)? == ["1", "2", "3"],
            "all received: {:?}",
            snaps(&pulled)?
        );
        // keep_sender last_n 1 pruned the remote side; the cursor is on the remote's newest.
        ensure!(
            snaps(&b)? == ["3"],
            "remote snapshots after pruning: {:?}",
            snaps(&b)?
        );
        let bookmarks = zfs(&["list", "-H", "-o", "name", "-t", "bookmark", &b])?;
        let g3 = guid(&format!("{b}@3"))?;
        ensure!(
            bookmarks
                .lines()
                .any(|l| l.contains("zrepl_CURSOR_G_") && l.contains(&format!("{g3:016x}"))),
            "the replication cursor is on the remote's @3: {bookmarks}"
        );
        let holds = all_holds(&b)?;
        ensure!(
            !holds.iter().any(|h| h.contains(" zrepl_STEP_")),
            "no step hold left on the remote: {holds:?}"
        );
        Ok(())
    }
    .await;
    remote.finish(&mut d, res)
}

/// Push to an agentless remote as a non-root user with `zfs allow` delegation only: the
/// permissions README lists suffice, and a missing one fails the run with an error that names
/// it; once granted, the next run converges.
pub async fn net_push_to_agentless_remote_as_delegated_user(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let a = create(&t, "src/a")?;
    create(&t, "remote")?;
    let user = "zrepl-remote";
    sh(&[
        "sh",
        "-c",
        &format!("id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}"),
    ])?;
    let remote_root = format!("{p}/remote");
    // Everything a push target needs but `hold`.
    zfs(&[
        "allow",
        "-u",
        user,
        "create,mount,receive,userprop,mountpoint,release,destroy",
        &remote_root,
    ])?;
    let remote = AgentlessRemote::start(format!("/tmp/{p}-agentless-user"), 2225)?;
    let (dir, known_hosts) = (remote.dir.clone(), remote.known_hosts.clone());
    let cfg = format!("{dir}/zrepl.yml");
    let conn = remote.connect(user, &known_hosts);
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  serve: {{stdinserver: {{sockdir: {dir}/sock}}}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: push\n  name: offsite\n  connect: {conn}, root_fs: {remote_root}, recv: {{placeholder: {{encryption: inherit}}, bandwidth_limit: {{max: 6 MiB}}}}}}\n  filesystems: {{\"{a}\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: regex, regex: \".*\"}}], keep_receiver: [{{type: last_n, count: 1}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let recv = format!("{remote_root}/{a}");
    let res: TestResult = async {
        d.start()?;
        write(&a, "f1", 1)?;
        snapshot(&format!("{a}@1"))?;
        d.zrepl(&["signal", "wakeup", "offsite"])?;
        let r = d.wait_run("offsite")?;
        let st = d.status()?;
        let text = st["jobs"]["offsite"].to_string();
        ensure!(r == "failed", "without hold the run ended {r}: {text}");
        ensure!(
            text.contains("zfs allow <user> hold"),
            "the error names the missing permission: {text}"
        );
        // The data arrived as the non-root user (placeholders included); the hold did not.
        ensure!(
            guid(&format!("{recv}@1"))? == guid(&format!("{a}@1"))?,
            "received as the delegated user"
        );
        zfs(&["allow", "-u", user, "hold", &remote_root])?;
        write(&a, "f2", 1)?;
        snapshot(&format!("{a}@2"))?;
        d.replicate("offsite")?;
        ensure!(
            guid(&format!("{recv}@2"))? == guid(&format!("{a}@2"))?,
            "incremental as the delegated user"
        );
        let holds = all_holds(&recv)?;
        ensure!(
            holds
                .iter()
                .any(|h| h.ends_with("@2 zrepl_last_received_J_offsite")),
            "last-received hold on @2: {holds:?}"
        );
        let remote_snaps = zfs(&["list", "-H", "-o", "name", "-t", "snapshot", &recv])?;
        ensure!(
            remote_snaps.lines().count() == 1,
            "keep_receiver last_n 1 pruned the remote as the delegated user: {remote_snaps}"
        );
        // A transfer cut by killing the daemon is resumed as the delegated user, and the
        // round's invariants hold afterwards.
        write(&a, "big", 40)?;
        snapshot(&format!("{a}@big"))?;
        d.zrepl(&["signal", "wakeup", "offsite"])?;
        d.wait_bytes("offsite", 8 << 20)?;
        d.kill();
        wait_token(&recv)?;
        d.start()?;
        d.replicate("offsite")?;
        ensure!(
            guid(&format!("{recv}@big"))? == guid(&format!("{a}@big"))?,
            "the cut transfer completed as the delegated user"
        );
        ensure!(
            resumed(&d.status()?, "offsite"),
            "the transfer was resumed, not restarted"
        );
        ensure!(
            !all_holds(&a)?.iter().any(|h| h.contains(" zrepl_STEP_")),
            "step holds left on the sender: {:?}",
            all_holds(&a)?
        );
        let lr: Vec<String> = all_holds(&recv)?
            .into_iter()
            .filter(|h| h.contains("zrepl_last_received_J_offsite"))
            .collect();
        ensure!(
            lr.len() == 1 && lr[0].contains("@big "),
            "one last-received hold, on @big: {lr:?}"
        );
        Ok(())
    }
    .await;
    let _ = zfs(&["unallow", "-u", user, &remote_root]);
    remote.finish(&mut d, res)
}

/// Pull from an agentless remote as a non-root user with the delegation README lists for a pull
/// source: channel programs need root, so cursors are moved one `zfs bookmark` at a time;
/// pruning of the remote works.
pub async fn net_pull_from_agentless_remote_as_delegated_user(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let b = create(&t, "rsrc/b")?;
    create(&t, "pulled")?;
    let user = "zrepl-remote";
    sh(&[
        "sh",
        "-c",
        &format!("id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}"),
    ])?;
    zfs(&[
        "allow",
        "-u",
        user,
        "send,hold,release,bookmark,destroy,mount",
        &b,
    ])?;
    let remote = AgentlessRemote::start(format!("/tmp/{p}-agentless-pulluser"), 2226)?;
    let (dir, known_hosts) = (remote.dir.clone(), remote.known_hosts.clone());
    let cfg = format!("{dir}/zrepl.yml");
    let conn = remote.connect(user, &known_hosts);
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  serve: {{stdinserver: {{sockdir: {dir}/sock}}}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: pull\n  name: fetch\n  interval: manual\n  root_fs: {p}/pulled\n  recv: {{placeholder: {{encryption: inherit}}}}\n  connect: {conn}, filesystems: {{\"{b}\": true}}}}\n  pruning: {{keep_sender: [{{type: last_n, count: 1}}], keep_receiver: [{{type: regex, regex: \".*\"}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let pulled = format!("{p}/pulled/{b}");
    let res: TestResult = async {
        d.start()?;
        for i in 1..=2 {
            write(&b, &format!("f{i}"), 1)?;
            snapshot(&format!("{b}@{i}"))?;
        }
        d.replicate("fetch")?;
        write(&b, "f3", 1)?;
        snapshot(&format!("{b}@3"))?;
        d.replicate("fetch")?;
        ensure!(
            guid(&format!("{pulled}@3"))? == guid(&format!("{b}@3"))?,
            "pulled as the delegated user"
        );
        let g3 = guid(&format!("{b}@3"))?;
        let bookmarks = zfs(&["list", "-H", "-o", "name", "-t", "bookmark", &b])?;
        ensure!(
            bookmarks
                .lines()
                .any(|l| l.contains("zrepl_CURSOR_G_") && l.contains(&format!("{g3:016x}"))),
            "the cursor on the remote's @3: {bookmarks}"
        );
        let left = zfs(&["list", "-H", "-o", "name", "-t", "snapshot", &b])?;
        ensure!(
            left.lines().count() == 1 && left.contains("@3"),
            "keep_sender pruned the remote as the delegated user: {left}"
        );
        let holds = all_holds(&b)?;
        ensure!(
            !holds.iter().any(|h| h.contains(" zrepl_STEP_")),
            "no step hold left: {holds:?}"
        );
        Ok(())
    }
    .await;
    let _ = zfs(&["unallow", "-u", user, &b]);
    remote.finish(&mut d, res)
}

/// Connections an authenticated client may hold at once, over the real wire: a sink serves 64
/// connections of one client identity; the 65th is refused with a reason the client reads,
/// and once one closes, the client connects again.
pub async fn net_sink_bounds_connections_per_client(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    create(&t, "sink")?;
    let dir = format!("/tmp/{p}-connlimit");
    std::fs::create_dir_all(&dir)?;
    let port = 28881;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": c}}}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let res: TestResult = async {
        d.start()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(Instant::now() < deadline, "the sink does not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let hs = Duration::from_secs(10);
        let mut held = Vec::new();
        for i in 0..64 {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            zrepl_rpc::handshake::exchange(&mut s, hs)
                .await
                .map_err(|e| format!("connection {}: {e}", i + 1))?;
            held.push(s);
        }
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let refused = zrepl_rpc::handshake::exchange(&mut s, hs).await;
        let e = match refused {
            Ok(_) => return Err("the 65th connection of one client was served".into()),
            Err(e) => e.to_string(),
        };
        ensure!(
            e.contains("too many connections") && e.contains("64"),
            "the refusal says why: {e}"
        );
        drop(held.pop());
        // The server notices the closed connection.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            match zrepl_rpc::handshake::exchange(&mut s, hs).await {
                Ok(_) => break,
                Err(e) => ensure!(
                    Instant::now() < deadline,
                    "after one closed, still refused: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
    .await;
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// Issue 22's size cliff, crossed on real ZFS over tcp (PROTOCOL.md §4b): the daemon's message
/// limits are lowered (`ZREPL_RPC_MESSAGE_LIMITS`: 4 KiB requests, 2 KiB replies) so that a few
/// dozen snapshots exceed them as hundreds of thousands would exceed the real ones. 9
/// filesystems with `-I` packages: `prepare_sends` and the completions of 18 steps (~11 KB),
/// the receiver's listings (one filesystem alone ~3 KB, all ~8 KB) and a pruning that destroys
/// 43 snapshots of one filesystem in one request (~5 KB) all go as parts and the job
/// converges; a client with the default limits, whose one part is over the lowered limit, is
/// refused by the same daemon, so the limits were in force.
pub async fn net_push_beyond_message_limits(t: Ctx) -> TestResult {
    use zrepl_protocol::{Protection, ReceiveRequest, Receiver, ReplicationConfig};
    let p = t.pool.clone();
    let root = create(&t, "src/many")?;
    let mut children = vec![root.clone()];
    for i in 0..7 {
        children.push(create(&t, &format!("src/many/c{i:02}"))?);
    }
    let big = create(&t, "src/many/big")?;
    children.push(big.clone());
    create(&t, "sink")?;
    write(&big, "f", 1)?;
    for i in 0..5 {
        zfs(&["snapshot", "-r", &format!("{root}@r{i:02}")])?;
    }
    for i in 0..20 {
        snapshot(&format!("{big}@b{i:03}"))?;
    }
    let dir = format!("/tmp/{p}-limits");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = 28881;
    let cfg = format!("{dir}/zrepl.yml");
    let write_cfg = |keep: &str| {
        std::fs::write(
            &cfg,
            format!(
                "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
                 jobs:\n\
                 - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": a}}}}\n\
                 - type: push\n  name: push\n  connect: {{type: tcp, address: \"127.0.0.1:{port}\"}}\n  filesystems: {{\"{root}<\": true}}\n  snapshotting: {{type: manual}}\n  replication: {{packages: true}}\n  conflict_resolution: {{initial_replication: all}}\n  pruning: {{keep_sender: [{{type: not_replicated}}, {keep}], keep_receiver: [{keep}]}}\n"
            ),
        )
    };
    let env = [(
        zrepl_rpc::wire::LIMITS_ENV.to_string(),
        "4096,2048".to_string(),
    )];
    let log = format!("{dir}/daemon.log");
    let start = |log_name: &str| -> Result<Child, String> {
        let f = std::fs::File::create(log_name).map_err(|e| e.to_string())?;
        let mut c = crate::replication::start_daemon(&cfg, f, None, &env)?;
        crate::replication::wait_daemon(&cfg, &mut c, log_name)?;
        Ok(c)
    };
    let mut d = Daemon {
        cfg: cfg.clone(),
        log: log.clone(),
        child: None,
    };
    let received = |fs: &str| format!("{p}/sink/a/{fs}");
    let snaps_of = |fs: &str| -> Result<Vec<String>, String> {
        Ok(crate::replication::versions(fs)?
            .into_iter()
            .filter(|v| v.starts_with('@'))
            .collect())
    };
    let res: TestResult = async {
        // Round 1: everything kept; 41 full sends and 41 packages.
        write_cfg("{type: regex, regex: \".*\"}")?;
        d.child = Some(start(&log)?);
        d.replicate("push")?;
        for c in &children {
            let want = if *c == big { 25 } else { 5 };
            let got = snaps_of(&received(c))?;
            ensure!(got.len() == want, "{c}: {} of {want} received", got.len());
        }
        ensure!(
            guid(&format!("{big}@b019"))? == guid(&format!("{}@b019", received(&big)))?,
            "newest of big"
        );
        // The daemon enforces the lowered limits: one message of 41 requests is refused.
        let client = tcp_client(port, "sink");
        let banner = client.peer_banner().await?;
        ensure!(banner.has(zrepl_rpc::handshake::EXT_PARTS), "{banner:?}");
        let one = ReceiveRequest {
            filesystem: zrepl_zfs_types::DatasetPath::parse(&big)?,
            from: None,
            to: zrepl_zfs_types::FilesystemVersion {
                typ: zrepl_zfs_types::VersionType::Snapshot,
                name: "b019".into(),
                guid: guid(&format!("{big}@b019"))?,
                createtxg: 1,
                creation: 0,
                userrefs: None,
            },
            clear_resume_token: false,
            deferred: true,
            replication: ReplicationConfig {
                initial: Protection::GuaranteeResumability,
                incremental: Protection::GuaranteeResumability,
            },
            intermediates: Vec::new(),
        };
        // 60 requests (~14 KB): a client with the default limits sends them as one part,
        // which the daemon refuses; one with the daemon's limits splits them and is served
        // (completing the newest again changes nothing).
        let many: Vec<ReceiveRequest> = (0..60).map(|_| one.clone()).collect();
        ensure!(
            serde_json::to_vec(&many)?.len() > 4096,
            "the probe must exceed the lowered limit"
        );
        let e = client.receives_completed(&many).await.unwrap_err();
        ensure!(
            e.to_string().contains("exceeds the limit of 4096 bytes"),
            "{e}"
        );
        let lowered = tcp_client_with(
            port,
            "lowered",
            zrepl_rpc::ClientOptions {
                limits: zrepl_rpc::wire::Limits::lowered(Some("4096,2048")),
                ..Default::default()
            },
        );
        let r = lowered.receives_completed(&many).await?;
        ensure!(r.len() == 60, "{} results", r.len());
        ensure!(
            r.iter().all(Result::is_ok),
            "{:?}",
            r.iter().find(|r| r.is_err())
        );
        drop((client, lowered));

        // Round 2: 20 more snapshots on big, one more everywhere; keep the newest 3.
        for i in 20..40 {
            snapshot(&format!("{big}@b{i:03}"))?;
        }
        zfs(&["snapshot", "-r", &format!("{root}@r05")])?;
        d.kill();
        write_cfg("{type: last_n, count: 3}")?;
        d.child = Some(start(&log)?);
        d.replicate("push")?;
        let st = d.status()?;
        let pruning = &st["jobs"]["push"]["pruning"];
        ensure!(
            pruning["sender"]["error"].is_null() && pruning["receiver"]["error"].is_null(),
            "pruning: {pruning:#}"
        );
        for c in &children {
            let got = snaps_of(&received(c))?;
            ensure!(got.len() == 3, "{c}: receiver kept {got:?}");
            let sent = snaps_of(c)?;
            ensure!(sent.len() == 3, "{c}: sender kept {sent:?}");
            ensure!(
                guid(&format!("{c}@r05"))? == guid(&format!("{}@r05", received(c)))?,
                "{c}: newest"
            );
        }
        ensure!(
            !d.log().contains("exceeds the limit"),
            "no message over the limit: {}",
            tail(&d.log())
        );
        Ok(())
    }
    .await;
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

/// Issue 22, rounds that cost what changed: with `snapshots_changed` (OpenZFS >= 2.2), once a
/// tree is replicated and settled, a run that finds nothing new (replication and pruning of
/// both sides) lists filesystems only: not one `zfs list` of snapshots. A snapshot made on one
/// filesystem is still found and replicated, the run after it lists that filesystem again,
/// and the one after that is back to no snapshot listing. Without the property (OpenZFS 2.1)
/// every run lists, as before.
pub async fn net_noop_round_lists_filesystems_not_snapshots(t: Ctx) -> TestResult {
    let p = t.pool.clone();
    let root = create(&t, "src/tree")?;
    let mut children = Vec::new();
    for i in 0..30 {
        let c = create(&t, &format!("src/tree/c{i:02}"))?;
        children.push(c);
    }
    create(&t, "sink")?;
    for i in 0..20 {
        zfs(&["snapshot", "-r", &format!("{root}@s{i:02}")])?;
    }
    let supported = sh(&["sh", "-c", "zfs get 2>&1 || true"])?.contains("snapshots_changed");
    let dir = format!("/tmp/{p}-noop");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = 28891;
    let cfg = format!("{dir}/zrepl.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  control: {{sockpath: {dir}/run/control}}\n  logging: [{{type: stdout, level: info, format: human}}]\n\
             jobs:\n\
             - type: sink\n  name: sink\n  root_fs: {p}/sink\n  recv: {{placeholder: {{encryption: inherit}}}}\n  serve: {{type: tcp, listen: \"127.0.0.1:{port}\", clients: {{\"127.0.0.1\": a}}}}\n\
             - type: push\n  name: push\n  connect: {{type: tcp, address: \"127.0.0.1:{port}\"}}\n  filesystems: {{\"{root}<\": true}}\n  snapshotting: {{type: manual}}\n  pruning: {{keep_sender: [{{type: not_replicated}}, {{type: last_n, count: 25}}], keep_receiver: [{{type: last_n, count: 25}}]}}\n"
        ),
    )?;
    let mut d = Daemon {
        cfg,
        log: format!("{dir}/daemon.log"),
        child: None,
    };
    let started = |d: &Daemon, verb: &str| -> Result<u64, String> {
        let st = d.status()?;
        Ok(st["global"]["zfs_commands"]["started"][verb]
            .as_u64()
            .unwrap_or(0))
    };
    let gets = std::cell::Cell::new(0);
    // A run, after the last snapshot change has settled (`snapshots_changed` has one-second
    // resolution): the number of `zfs list` processes it started (and of `zfs get` in `gets`).
    let run = |d: &Daemon| -> Result<u64, String> {
        std::thread::sleep(Duration::from_secs(3));
        let (before, gets_before) = (started(d, "zfs list")?, started(d, "zfs get")?);
        d.replicate("push").map_err(|e| e.to_string())?;
        gets.set(started(d, "zfs get")? - gets_before);
        Ok(started(d, "zfs list")? - before)
    };
    let res: TestResult = async {
        d.start()?;
        // The first run lists (the receiver's new filesystems need no `zfs list` of their
        // own any more: the sender's versions come with its filesystems, one `zfs get`).
        let first = run(&d)? + gets.get();
        ensure!(first > 0, "the first run lists");
        let second = run(&d)?;
        let third = run(&d)?;
        if supported {
            ensure!(
                third == 0,
                "a run with nothing new lists no snapshots: {third} zfs list (second run: {second})"
            );
            // Filesystems once per side: the sender's tree, the receiver's root and its
            // subtree; pruning after a replication that changed nothing uses those listings.
            ensure!(
                gets.get() <= 3,
                "a run with nothing new lists filesystems once per side: {} zfs get",
                gets.get()
            );
        } else {
            ensure!(third > 0, "without snapshots_changed every run lists");
        }
        // A new snapshot on one filesystem is found.
        let c = &children[7];
        zfs(&["snapshot", &format!("{c}@new")])?;
        let changed = run(&d)?;
        ensure!(changed > 0, "the changed filesystem is listed");
        let received = format!("{p}/sink/a/{c}@new");
        ensure!(
            guid(&received)? == guid(&format!("{c}@new"))?,
            "the new snapshot arrives"
        );
        let after = run(&d)?;
        let settled = run(&d)?;
        if supported {
            ensure!(
                settled == 0,
                "back to no snapshot listing: {settled} zfs list (the run before: {after})"
            );
        }
        // Every filesystem still up to date, the others untouched.
        for c in &children {
            ensure!(
                guid(&format!("{p}/sink/a/{c}@s19"))? == guid(&format!("{c}@s19"))?,
                "{c}"
            );
        }
        Ok(())
    }
    .await;
    d.kill();
    res.map_err(|e| format!("{e}\n--- daemon log:\n{}", tail(&d.log())).into())
}

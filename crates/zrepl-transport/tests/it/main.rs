//! Transport authentication on loopback: who gets in, with which identity, and who does not.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zrepl_config::{Connect, Serve};
use zrepl_transport::{Connector, Listener};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }
    /// Writes `<dir>/<cn>.crt` and `.key` signed by this CA; returns (cert, key).
    fn leaf(&self, dir: &Path, cn: &str) -> (String, String) {
        self.leaf_with(dir, cn, cn, |_| {})
    }
    /// A leaf as [`Ca::leaf`], written as `<dir>/<file>.crt`, with its params changed by `f`.
    fn leaf_with(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        f: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let mut p = CertificateParams::new(vec![cn.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        f(&mut p);
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &self.issuer).unwrap();
        let (cp, kp) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        std::fs::write(&cp, c.pem()).unwrap();
        std::fs::write(&kp, k.serialize_pem()).unwrap();
        (s(&cp), s(&kp))
    }
    fn write(&self, dir: &Path, name: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, self.issuer.pem()).unwrap();
        s(&p)
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn dur(s: &str) -> zrepl_config::units::GoDuration {
    zrepl_config::units::GoDuration::parse(s).unwrap()
}

/// Accepts one connection and reports the authentication result; echoes one line if accepted.
async fn accept_one(mut l: Listener) -> Result<String, String> {
    let inc = l.accept().await.map_err(|e| e.to_string())?;
    let (mut io, id) = inc.authenticate().await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 5];
    io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    io.write_all(&b).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    Ok(id)
}

struct TlsSetup {
    _dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
    good: (String, String),
    stranger: (String, String),
    foreign: (String, String),
    foreign_ca: String,
}

fn tls_setup() -> TlsSetup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("zrepl test CA");
    let other = Ca::new("someone else's CA");
    TlsSetup {
        ca: ca.write(dir.path(), "ca.crt"),
        server: ca.leaf(dir.path(), "server1"),
        good: ca.leaf(dir.path(), "laptop1"),
        stranger: ca.leaf(dir.path(), "stranger"),
        foreign: other.leaf(dir.path(), "laptop1-foreign"),
        foreign_ca: other.write(dir.path(), "other-ca.crt"),
        _dir: dir,
    }
}

async fn tls_listener(t: &TlsSetup) -> (Listener, String) {
    let l = Listener::bind(
        &Serve::Tls {
            listen: "127.0.0.1:0".into(),
            listen_freebind: false,
            ca: t.ca.clone(),
            cert: t.server.0.clone(),
            key: t.server.1.clone(),
            client_cns: vec!["laptop1".into()],
            handshake_timeout: dur("5s"),
        },
        "/nonexistent",
    )
    .await
    .unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn tls_connect(addr: &str, ca: &str, cert: &(String, String), server_cn: &str) -> Connector {
    Connector::from_config(&Connect::Tls {
        address: addr.into(),
        ca: ca.into(),
        cert: cert.0.clone(),
        key: cert.1.clone(),
        server_cn: server_cn.into(),
        dial_timeout: dur("5s"),
    })
    .unwrap()
}

async fn roundtrip(c: &Connector) -> Result<(), String> {
    let mut io = c.connect().await.map_err(|e| e.to_string())?;
    io.write_all(b"hello").await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 5];
    io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn tls_client_identity_is_the_certificate_cn() {
    let t = tls_setup();
    let (l, addr) = tls_listener(&t).await;
    let server = tokio::spawn(accept_one(l));
    roundtrip(&tls_connect(&addr, &t.ca, &t.good, "server1"))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().unwrap(), "laptop1");
}

#[tokio::test]
async fn tls_refuses_a_cn_not_in_client_cns() {
    let t = tls_setup();
    let (l, addr) = tls_listener(&t).await;
    let server = tokio::spawn(accept_one(l));
    let _ = roundtrip(&tls_connect(&addr, &t.ca, &t.stranger, "server1")).await;
    let e = server.await.unwrap().unwrap_err();
    assert!(
        e.contains("unauthorized client common name \"stranger\""),
        "{e}"
    );
}

#[tokio::test]
async fn tls_refuses_a_certificate_from_another_ca() {
    let t = tls_setup();
    let (l, addr) = tls_listener(&t).await;
    let server = tokio::spawn(accept_one(l));
    let client = roundtrip(&tls_connect(&addr, &t.ca, &t.foreign, "server1")).await;
    let e = server.await.unwrap().unwrap_err();
    assert!(e.contains("tls handshake"), "{e}");
    assert!(client.is_err());
}

#[tokio::test]
async fn tls_refuses_a_client_without_certificate() {
    let t = tls_setup();
    let (l, addr) = tls_listener(&t).await;
    let server = tokio::spawn(accept_one(l));
    // A plain TLS client that trusts the server but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&t.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("server1".try_into().unwrap(), tcp)
        .await;
    if let Ok(mut s) = r {
        // TLS 1.3: the refusal arrives with the first read.
        let _ = s.write_all(b"hello").await;
        let mut b = [0u8; 5];
        assert!(s.read_exact(&mut b).await.is_err());
    }
    let e = server.await.unwrap().unwrap_err();
    assert!(e.contains("tls handshake"), "{e}");
}

#[tokio::test]
async fn tls_client_refuses_a_server_with_the_wrong_name_or_ca() {
    let t = tls_setup();
    let (l, addr) = tls_listener(&t).await;
    tokio::spawn(accept_one(l));
    let e = roundtrip(&tls_connect(&addr, &t.ca, &t.good, "not-server1"))
        .await
        .unwrap_err();
    assert!(e.contains("tls handshake"), "{e}");
    let (l, addr) = tls_listener(&t).await;
    tokio::spawn(accept_one(l));
    let e = roundtrip(&tls_connect(&addr, &t.foreign_ca, &t.good, "server1"))
        .await
        .unwrap_err();
    assert!(e.contains("tls handshake"), "{e}");
}

/// rcgen keeps one value per attribute type; the CN's OID as a custom type adds a second CN.
fn second_cn(p: &mut CertificateParams) {
    p.distinguished_name
        .push(DnType::CustomDnType(vec![2, 5, 4, 3]), "laptop2");
}

fn expired(p: &mut CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
}

fn not_yet_valid(p: &mut CertificateParams) {
    p.not_before = rcgen::date_time_ymd(2090, 1, 1);
    p.not_after = rcgen::date_time_ymd(2091, 1, 1);
}

#[tokio::test]
async fn tls_refuses_a_client_certificate_with_several_cns() {
    let t = tls_setup();
    let ca = Ca::new("zrepl test CA");
    // A CA of its own: the listener must trust it.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let server = ca.leaf(dir.path(), "server1");
    let two = ca.leaf_with(dir.path(), "two-cns", "laptop1", second_cn);
    let t = TlsSetup {
        ca: ca_file.clone(),
        server,
        ..t
    };
    let (l, addr) = tls_listener(&t).await;
    let accept = tokio::spawn(accept_one(l));
    let _ = roundtrip(&tls_connect(&addr, &ca_file, &two, "server1")).await;
    let e = accept.await.unwrap().unwrap_err();
    assert!(e.contains("2 common names; exactly one is required"), "{e}");
}

#[tokio::test]
async fn tls_refuses_expired_and_not_yet_valid_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("zrepl test CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let good_server = ca.leaf(dir.path(), "server1");
    let good_client = ca.leaf(dir.path(), "laptop1");
    for (name, f) in [
        ("expired", expired as fn(&mut CertificateParams)),
        ("not-yet-valid", not_yet_valid),
    ] {
        // The client's certificate: the server refuses it.
        let bad = ca.leaf_with(dir.path(), &format!("client-{name}"), "laptop1", f);
        let t = TlsSetup {
            _dir: tempfile::tempdir().unwrap(),
            ca: ca_file.clone(),
            server: good_server.clone(),
            good: good_client.clone(),
            stranger: good_client.clone(),
            foreign: good_client.clone(),
            foreign_ca: ca_file.clone(),
        };
        let (l, addr) = tls_listener(&t).await;
        let accept = tokio::spawn(accept_one(l));
        let _ = roundtrip(&tls_connect(&addr, &ca_file, &bad, "server1")).await;
        let e = accept.await.unwrap().unwrap_err();
        assert!(
            e.contains("tls handshake") && (e.contains("expired") || e.contains("not valid yet")),
            "{name}: {e}"
        );
        // The server's certificate: the client refuses it.
        let bad_server = ca.leaf_with(dir.path(), &format!("server-{name}"), "server1", f);
        let t = TlsSetup {
            server: bad_server,
            ..t
        };
        let (l, addr) = tls_listener(&t).await;
        tokio::spawn(accept_one(l));
        let e = roundtrip(&tls_connect(&addr, &ca_file, &good_client, "server1"))
            .await
            .unwrap_err();
        assert!(
            e.contains("tls handshake") && (e.contains("expired") || e.contains("not valid yet")),
            "{name}: {e}"
        );
    }
}

#[tokio::test]
async fn tls_renewed_files_are_used_without_a_restart() {
    let t = tls_setup();
    let dir = tempfile::tempdir().unwrap();
    // The listener starts trusting only another CA: the good client is refused.
    let ca_live = dir.path().join("ca-live.crt");
    std::fs::copy(&t.foreign_ca, &ca_live).unwrap();
    let t2 = TlsSetup {
        ca: s(&ca_live),
        server: t.server.clone(),
        good: t.good.clone(),
        stranger: t.stranger.clone(),
        foreign: t.foreign.clone(),
        foreign_ca: t.foreign_ca.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (mut l, addr) = tls_listener(&t2).await;
    let client = tls_connect(&addr, &t.ca, &t.good, "server1");
    let c = tokio::spawn(async move {
        let r = roundtrip(&client).await;
        (client, r)
    });
    let e = l
        .accept()
        .await
        .unwrap()
        .authenticate()
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("tls handshake"), "{e}");
    let (client, _) = c.await.unwrap();
    // The operator installs the right CA: the same listener accepts the next connection.
    std::fs::copy(&t.ca, &ca_live).unwrap();
    let c = tokio::spawn(async move { roundtrip(&client).await.map(|_| client) });
    assert_eq!(accept_one_of(&mut l).await.unwrap(), "laptop1");
    let client = c.await.unwrap().unwrap();
    // A broken renewal: the previous (working) files stay in use.
    std::fs::write(&ca_live, "not a certificate").unwrap();
    let c = tokio::spawn(async move { roundtrip(&client).await });
    assert_eq!(accept_one_of(&mut l).await.unwrap(), "laptop1");
    c.await.unwrap().unwrap();

    // The client side: an expired client certificate replaced in place.
    let ca = Ca::new("zrepl test CA 2");
    let ca_file = ca.write(dir.path(), "ca2.crt");
    let server = ca.leaf(dir.path(), "server1");
    let (cert, key) = ca.leaf_with(dir.path(), "laptop1-live", "laptop1", expired);
    let t3 = TlsSetup {
        ca: ca_file.clone(),
        server,
        ..t2
    };
    let (mut l, addr) = tls_listener(&t3).await;
    let client = tls_connect(&addr, &ca_file, &(cert.clone(), key.clone()), "server1");
    let c = tokio::spawn(async move {
        let r = roundtrip(&client).await;
        (client, r)
    });
    assert!(l.accept().await.unwrap().authenticate().await.is_err());
    let (client, r) = c.await.unwrap();
    assert!(r.is_err());
    let renewed = ca.leaf(dir.path(), "laptop1");
    std::fs::copy(&renewed.0, &cert).unwrap();
    std::fs::copy(&renewed.1, &key).unwrap();
    let c = tokio::spawn(async move { roundtrip(&client).await });
    assert_eq!(accept_one_of(&mut l).await.unwrap(), "laptop1");
    c.await.unwrap().unwrap();
}

/// [`accept_one`] on a listener that stays usable.
async fn accept_one_of(l: &mut Listener) -> Result<String, String> {
    let inc = l.accept().await.map_err(|e| e.to_string())?;
    let (mut io, id) = inc.authenticate().await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 5];
    io.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    io.write_all(&b).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    Ok(id)
}

#[tokio::test]
async fn tls_zero_handshake_timeout_still_times_out() {
    assert_eq!(
        zrepl_transport::effective_handshake_timeout(Duration::ZERO),
        Duration::from_secs(10)
    );
    assert_eq!(
        zrepl_transport::effective_handshake_timeout(Duration::from_secs(3)),
        Duration::from_secs(3)
    );
}

#[tokio::test]
async fn tls_pending_handshakes_are_bounded() {
    let t = tls_setup();
    let (mut l, addr) = tls_listener(&t).await;
    // Peers that connect and never start a handshake: each holds a pending slot.
    let n = zrepl_transport::MAX_PENDING_HANDSHAKES;
    let mut idle = Vec::new();
    let mut held = Vec::new();
    for _ in 0..n {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        held.push(l.accept().await.unwrap());
    }
    // One more is closed at once, and accept does not return it.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let next = tokio::time::timeout(Duration::from_millis(500), l.accept()).await;
    assert!(next.is_err(), "a connection beyond the bound was accepted");
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b))
        .await
        .expect("the extra connection is closed");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // A finished (here: abandoned) handshake frees its slot: a real client gets in.
    drop(held.pop());
    let server = tokio::spawn(accept_one(l));
    roundtrip(&tls_connect(&addr, &t.ca, &t.good, "server1"))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().unwrap(), "laptop1");
    drop(idle);
}

#[test]
fn socket_directories_must_be_real_and_ours() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    let me = meta(&real).uid();
    assert_eq!(zrepl_transport::socket_dir_problem(&meta(&real), me), None);
    let p = zrepl_transport::socket_dir_problem(&meta(&link), me).unwrap();
    assert!(p.contains("symlink"), "{p}");
    let p = zrepl_transport::socket_dir_problem(&meta(&file), me).unwrap();
    assert!(p.contains("not a directory"), "{p}");
    let p = zrepl_transport::socket_dir_problem(&meta(&real), me + 1).unwrap();
    assert!(p.contains("must be owned by the daemon's user"), "{p}");
}

#[tokio::test]
async fn a_symlinked_stdinserver_sockdir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = Listener::bind(
        &Serve::Stdinserver {
            client_identities: vec!["a".into()],
        },
        link.to_str().unwrap(),
    )
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("must not be a symlink"), "{e}");
}

#[test]
fn tls_config_errors_name_the_file() {
    let t = tls_setup();
    let e = Connector::from_config(&Connect::Tls {
        address: "127.0.0.1:1".into(),
        ca: "/nonexistent/ca.crt".into(),
        cert: t.good.0.clone(),
        key: t.good.1.clone(),
        server_cn: "server1".into(),
        dial_timeout: dur("5s"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    let e = Connector::from_config(&Connect::Tls {
        address: "127.0.0.1:1".into(),
        ca: t.ca.clone(),
        cert: t.ca.clone(),
        key: t.ca.clone(),
        server_cn: "server1".into(),
        dial_timeout: dur("5s"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("private key"), "{e}");
}

fn tcp_serve(clients: &[(&str, &str)]) -> Serve {
    let yaml = format!(
        "jobs:\n- type: sink\n  name: s\n  root_fs: pool/sink\n  serve:\n    type: tcp\n    listen: \"127.0.0.1:0\"\n    clients: {{{}}}\n",
        clients
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let loader = zrepl_config::MemLoader {
        files: Default::default(),
    };
    let cfg = zrepl_config::load_str(&yaml, Path::new("/t.yml"), &loader)
        .unwrap()
        .config;
    match &cfg.jobs[0] {
        zrepl_config::Job::Sink(s) => s.serve.clone(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn tcp_identity_from_the_clients_map() {
    for (clients, want) in [
        (vec![("127.0.0.1", "backup1")], Ok("backup1".to_string())),
        (
            vec![("127.0.0.0/8", "lo-*"), ("10.0.0.1", "other")],
            Ok("lo-127.0.0.1".to_string()),
        ),
        // Most specific entry wins.
        (
            vec![("127.0.0.0/8", "lo-*"), ("127.0.0.1", "exact")],
            Ok("exact".to_string()),
        ),
        (
            vec![("10.0.0.1", "other")],
            Err("client 127.0.0.1 is not in the clients map"),
        ),
    ] {
        let l = Listener::bind(&tcp_serve(&clients), "/nonexistent")
            .await
            .unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(accept_one(l));
        let c = Connector::from_config(&Connect::Tcp {
            address: addr,
            dial_timeout: dur("5s"),
        })
        .unwrap();
        let _ = roundtrip(&c).await;
        match (server.await.unwrap(), want) {
            (Ok(id), Ok(w)) => assert_eq!(id, w),
            (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
            (got, w) => panic!("{clients:?}: got {got:?}, want {w:?}"),
        }
    }
}

#[tokio::test]
async fn dial_errors_are_clear() {
    let c = Connector::from_config(&Connect::Tcp {
        address: "127.0.0.1:1".into(),
        dial_timeout: dur("2s"),
    })
    .unwrap();
    let e = c.connect().await.err().unwrap().to_string();
    assert!(e.contains("cannot connect to 127.0.0.1:1"), "{e}");
}

#[tokio::test]
async fn stdinserver_sockets_are_named_by_identity_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let sockdir = dir.path().join("stdinserver");
    let mut l = Listener::bind(
        &Serve::Stdinserver {
            client_identities: vec!["client1".into(), "client2".into()],
        },
        &s(&sockdir),
    )
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sockdir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "sockdir mode {mode:o}");
    let _c = tokio::net::UnixStream::connect(sockdir.join("client2"))
        .await
        .unwrap();
    let inc = tokio::time::timeout(Duration::from_secs(5), l.accept())
        .await
        .unwrap()
        .unwrap();
    let (_, id) = inc.authenticate().await.unwrap();
    assert_eq!(id, "client2");
    drop(l);
    assert!(!sockdir.join("client1").exists(), "sockets removed on drop");
}

#[test]
fn ssh_command_line_is_zrepls() {
    let c = zrepl_transport::SshConnector {
        ssh_command: "ssh".into(),
        host: "prod.example.com".into(),
        user: "root".into(),
        port: 2222,
        identity_file: "/etc/zrepl/ssh/identity".into(),
        options: vec!["Compression=yes".into()],
        dial_timeout: Duration::from_secs(10),
    };
    assert_eq!(
        c.argv().join(" "),
        "ssh -p 2222 -T -i /etc/zrepl/ssh/identity -o BatchMode=yes -o Compression=yes root@prod.example.com"
    );
}

/// A fake `ssh` (a shell script) as the connector's ssh command.
fn fake_ssh(dir: &std::path::Path, name: &str, script: &str) -> zrepl_transport::Connector {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    zrepl_transport::Connector::Ssh(zrepl_transport::SshConnector {
        ssh_command: p.to_string_lossy().into_owned(),
        host: "backup.example.com".into(),
        user: "root".into(),
        port: 22,
        identity_file: "/nonexistent".into(),
        options: vec![],
        dial_timeout: Duration::from_secs(5),
    })
}

#[tokio::test]
async fn ssh_warnings_do_not_turn_a_clean_close_into_an_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ok = fake_ssh(
        dir.path(),
        "ssh-ok",
        "echo \"Warning: Permanently added 'backup.example.com' (ED25519) to the list of known hosts.\" >&2\nhead -c 5\nexit 0",
    );
    let mut io = ok.connect().await.unwrap();
    io.write_all(b"hello").await.unwrap();
    io.flush().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut got))
        .await
        .expect("ssh's exit ends the stream")
        .unwrap();
    assert_eq!(got, b"hello");

    // A failing ssh: its stderr is the error, with the exit status.
    let bad = fake_ssh(
        dir.path(),
        "ssh-bad",
        "echo 'root@backup.example.com: Permission denied (publickey).' >&2\nexit 255",
    );
    let mut io = bad.connect().await.unwrap();
    let mut got = Vec::new();
    let e = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut got))
        .await
        .expect("ssh's exit ends the stream")
        .unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
}

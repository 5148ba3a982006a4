//! The replication transports (spec §2.4): `tcp` with a client map, `tls` with mandatory client
//! certificates, `ssh+stdinserver`. This is the only crate that opens replication sockets.
//!
//! The active side builds a [`Connector`] from its `connect` config and gets a byte stream per
//! [`Connector::connect`]. The passive side binds a [`Listener`] from its `serve` config; every
//! accepted [`Incoming`] connection is authenticated (TLS handshake and CN check, client map
//! lookup, stdinserver socket name) into a stream and the client's identity, which the receiver
//! uses to confine the client to `root_fs/<identity>`.
//!
//! Streams are plain bytes: the protocol (version handshake, RPCs, data streams) lives in
//! `zrepl-rpc` and runs over any of them.

mod ssh;
mod stdinserver;
mod tcp;
mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use zrepl_config::{Connect, Serve};

pub use ssh::SshConnector;
pub use stdinserver::{socket_dir_problem, stdinserver_proxy};
pub use tls::{cert_common_name, Reloading, TlsClientFiles, TlsServerFiles};

/// A connected, authenticated byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub type BoxIo = Box<dyn Io>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The transport config cannot be used (files missing, bad certificates, bad address).
    #[error("{0}")]
    Config(String),
    /// The peer cannot be reached.
    #[error("{0}")]
    Connect(String),
    /// The peer was reached but is not allowed in (or did not authenticate us).
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The active side of a transport.
pub enum Connector {
    Tcp {
        address: String,
        dial_timeout: Duration,
    },
    Tls {
        address: String,
        connector: std::sync::Arc<
            tls::Reloading<(
                tokio_rustls::TlsConnector,
                rustls_pki_types::ServerName<'static>,
            )>,
        >,
        dial_timeout: Duration,
    },
    Ssh(SshConnector),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Connector {
    /// Builds a connector; certificates and keys are loaded (and checked) now.
    /// `local` is not a network transport and is handled by the daemon.
    pub fn from_config(c: &Connect) -> Result<Self, TransportError> {
        Ok(match c {
            Connect::Tcp {
                address,
                dial_timeout,
            } => Connector::Tcp {
                address: address.clone(),
                dial_timeout: dial_timeout.to_std(),
            },
            Connect::Tls {
                address,
                ca,
                cert,
                key,
                server_cn,
                dial_timeout,
            } => {
                let files = TlsClientFiles {
                    ca: ca.into(),
                    cert: cert.into(),
                    key: key.into(),
                    server_cn: server_cn.clone(),
                };
                let paths = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
                let connector =
                    tls::Reloading::new(format!("connect {address}"), paths, move || {
                        tls::client(&files)
                    })?;
                Connector::Tls {
                    address: address.clone(),
                    connector: std::sync::Arc::new(connector),
                    dial_timeout: dial_timeout.to_std(),
                }
            }
            Connect::Ssh {
                host,
                user,
                port,
                identity_file,
                options,
                ssh_command,
                dial_timeout,
                ..
            } => Connector::Ssh(SshConnector {
                ssh_command: ssh_command.clone().unwrap_or_else(|| "ssh".into()),
                host: host.clone(),
                user: user.clone(),
                port: *port,
                identity_file: identity_file.clone(),
                options: options.clone(),
                dial_timeout: dial_timeout.to_std(),
            }),
            Connect::Local { .. } => {
                return Err(TransportError::Config(
                    "the local transport has no network connector".into(),
                ))
            }
            Connect::Agentless(_) => {
                return Err(TransportError::Config(
                    "an ssh+zfs remote runs zfs commands over ssh, not a replication connection"
                        .into(),
                ))
            }
        })
    }

    /// How long connecting (including the protocol's version handshake) may take; zero = no limit.
    pub fn dial_timeout(&self) -> Duration {
        match self {
            Connector::Tcp { dial_timeout, .. } | Connector::Tls { dial_timeout, .. } => {
                *dial_timeout
            }
            Connector::Ssh(s) => s.dial_timeout,
        }
    }

    /// A short description for errors and logs.
    pub fn describe(&self) -> String {
        match self {
            Connector::Tcp { address, .. } => format!("tcp://{address}"),
            Connector::Tls { address, .. } => format!("tls://{address}"),
            Connector::Ssh(s) => format!("ssh://{}@{}:{}", s.user, s.host, s.port),
        }
    }

    /// Opens a new connection. Connection-level failures are [`TransportError::Connect`].
    pub async fn connect(&self) -> Result<BoxIo, TransportError> {
        let fut = async {
            match self {
                Connector::Tcp { address, .. } => {
                    Ok(Box::new(tcp::connect(address).await?) as BoxIo)
                }
                Connector::Tls {
                    address, connector, ..
                } => {
                    let (connector, server_name) = connector.current();
                    let s = tcp::connect(address).await?;
                    let t = connector.connect(server_name, s).await.map_err(|e| {
                        TransportError::Auth(format!("tls handshake with {address}: {e}"))
                    })?;
                    Ok(Box::new(t) as BoxIo)
                }
                Connector::Ssh(s) => Ok(Box::new(s.spawn()?) as BoxIo),
            }
        };
        let t = self.dial_timeout();
        if t.is_zero() {
            fut.await
        } else {
            tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                Err(TransportError::Connect(format!(
                    "{}: dial timeout after {t:?}",
                    self.describe()
                )))
            })
        }
    }
}

/// TLS handshakes in progress at once on one listener; a connection beyond is closed at once
/// (peers that connect and never finish a handshake cannot take every descriptor).
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// The TLS handshake timeout used for a configured one: zrepl's `0` (no limit) would let a peer
/// hold a connection open forever without ever authenticating, so it means the default (10 s).
pub fn effective_handshake_timeout(configured: Duration) -> Duration {
    if configured.is_zero() {
        Duration::from_secs(10)
    } else {
        configured
    }
}

/// The passive side of a transport.
pub struct Listener {
    kind: ListenerKind,
}

enum ListenerKind {
    Tcp {
        l: tokio::net::TcpListener,
        clients: std::sync::Arc<Vec<zrepl_config::TcpClient>>,
    },
    Tls {
        l: tokio::net::TcpListener,
        acceptor: std::sync::Arc<tls::Reloading<tokio_rustls::TlsAcceptor>>,
        client_cns: std::sync::Arc<Vec<String>>,
        handshake_timeout: Duration,
        pending: std::sync::Arc<tokio::sync::Semaphore>,
    },
    Stdin(stdinserver::StdinListener),
}

/// An accepted connection, not yet authenticated. [`Incoming::authenticate`] may take a while
/// (TLS handshake): run it in its own task so one slow client does not block the others.
pub struct Incoming {
    kind: IncomingKind,
}

enum IncomingKind {
    Tcp {
        s: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        clients: std::sync::Arc<Vec<zrepl_config::TcpClient>>,
    },
    Tls {
        s: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        acceptor: tokio_rustls::TlsAcceptor,
        client_cns: std::sync::Arc<Vec<String>>,
        handshake_timeout: Duration,
        /// This connection's place among the listener's pending handshakes.
        _pending: tokio::sync::OwnedSemaphorePermit,
    },
    Unix {
        s: tokio::net::UnixStream,
        identity: String,
    },
}

/// Checks what binding `serve` would read, without binding: the TLS material of a `tls`
/// listener (CA, certificate, key: readable, parseable, the key matching the certificate).
/// `zrepl configcheck` and the daemon's start run it, so that a broken file refuses the start
/// instead of leaving a job that cannot serve.
pub fn check_serve(serve: &Serve) -> Result<(), TransportError> {
    match serve {
        Serve::Tls { ca, cert, key, .. } => tls::server(&TlsServerFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        })
        .map(|_| ()),
        _ => Ok(()),
    }
}

impl Listener {
    /// Binds the listener of a `serve` config. `stdinserver_sockdir` is
    /// `global.serve.stdinserver.sockdir`.
    pub async fn bind(serve: &Serve, stdinserver_sockdir: &str) -> Result<Self, TransportError> {
        let kind = match serve {
            Serve::Tcp {
                listen,
                listen_freebind,
                clients,
            } => {
                let mut clients = clients.clone();
                // Most specific first, as zrepl: longest prefix, then address, then zone.
                clients.sort_by(|a, b| {
                    b.prefix_len
                        .cmp(&a.prefix_len)
                        .then(a.net.cmp(&b.net))
                        .then(a.zone.cmp(&b.zone))
                });
                ListenerKind::Tcp {
                    l: tcp::listen(listen, *listen_freebind).await?,
                    clients: std::sync::Arc::new(clients),
                }
            }
            Serve::Tls {
                listen,
                listen_freebind,
                ca,
                cert,
                key,
                client_cns,
                handshake_timeout,
            } => ListenerKind::Tls {
                acceptor: {
                    let files = TlsServerFiles {
                        ca: ca.into(),
                        cert: cert.into(),
                        key: key.into(),
                    };
                    let paths = vec![files.ca.clone(), files.cert.clone(), files.key.clone()];
                    std::sync::Arc::new(tls::Reloading::new(
                        format!("serve {listen}"),
                        paths,
                        move || tls::server(&files),
                    )?)
                },
                l: tcp::listen(listen, *listen_freebind).await?,
                client_cns: std::sync::Arc::new(client_cns.clone()),
                handshake_timeout: effective_handshake_timeout(handshake_timeout.to_std()),
                pending: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES)),
            },
            Serve::Stdinserver { client_identities } => ListenerKind::Stdin(
                stdinserver::StdinListener::bind(stdinserver_sockdir, client_identities)?,
            ),
            Serve::Local { .. } => {
                return Err(TransportError::Config(
                    "the local transport has no network listener".into(),
                ))
            }
        };
        Ok(Listener { kind })
    }

    /// The local address of a tcp/tls listener (tests bind port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            ListenerKind::Tcp { l, .. } | ListenerKind::Tls { l, .. } => l.local_addr().ok(),
            ListenerKind::Stdin(_) => None,
        }
    }

    /// Waits for the next connection.
    pub async fn accept(&mut self) -> Result<Incoming, TransportError> {
        let kind = match &mut self.kind {
            ListenerKind::Tcp { l, clients } => {
                let (s, peer) = l.accept().await?;
                tcp::tune(&s);
                IncomingKind::Tcp {
                    s,
                    peer,
                    clients: clients.clone(),
                }
            }
            ListenerKind::Tls {
                l,
                acceptor,
                client_cns,
                handshake_timeout,
                pending,
            } => loop {
                let (s, peer) = l.accept().await?;
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    tracing::warn!(peer = %peer, limit = MAX_PENDING_HANDSHAKES, "too many TLS handshakes in progress: connection closed");
                    continue;
                };
                tcp::tune(&s);
                break IncomingKind::Tls {
                    s,
                    peer,
                    acceptor: acceptor.current(),
                    client_cns: client_cns.clone(),
                    handshake_timeout: *handshake_timeout,
                    _pending: permit,
                };
            },
            ListenerKind::Stdin(l) => {
                let (s, identity) = l.accept().await?;
                IncomingKind::Unix { s, identity }
            }
        };
        Ok(Incoming { kind })
    }
}

impl Incoming {
    /// Who connected, for logs.
    pub fn peer(&self) -> String {
        match &self.kind {
            IncomingKind::Tcp { peer, .. } | IncomingKind::Tls { peer, .. } => peer.to_string(),
            IncomingKind::Unix { identity, .. } => format!("stdinserver:{identity}"),
        }
    }

    /// Authenticates the peer: its stream and client identity, or why it is refused.
    pub async fn authenticate(self) -> Result<(BoxIo, String), TransportError> {
        match self.kind {
            IncomingKind::Tcp { s, peer, clients } => {
                let ip = peer.ip().to_canonical();
                match clients.iter().find_map(|c| c.identity_for(ip, None)) {
                    Some(id) => Ok((Box::new(s), id)),
                    None => Err(TransportError::Auth(format!(
                        "client {ip} is not in the clients map"
                    ))),
                }
            }
            IncomingKind::Tls {
                s,
                peer,
                acceptor,
                client_cns,
                handshake_timeout,
                _pending: pending,
            } => {
                let hs = acceptor.accept(s);
                let t = tokio::time::timeout(handshake_timeout, hs)
                    .await
                    .map_err(|_| {
                        TransportError::Auth(format!(
                            "tls handshake with {peer} timed out after {handshake_timeout:?}"
                        ))
                    })?
                    .map_err(|e| TransportError::Auth(format!("tls handshake with {peer}: {e}")))?;
                // The handshake is over: the next one may start.
                drop(pending);
                let cn = match t.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    Some(c) => cert_common_name(c.as_ref()),
                    None => Err("no client certificate".into()),
                };
                match cn {
                    Ok(cn) if client_cns.contains(&cn) => Ok((Box::new(t), cn)),
                    Ok(cn) => Err(TransportError::Auth(format!(
                        "unauthorized client common name {cn:?} from {peer}"
                    ))),
                    Err(e) => Err(TransportError::Auth(format!(
                        "client certificate of {peer} refused: {e}"
                    ))),
                }
            }
            IncomingKind::Unix { s, identity } => Ok((Box::new(s), identity)),
        }
    }
}

//! Plain TCP sockets: dialing, listening (with `listen_freebind`), socket options.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::TransportError;

/// Dials `address` (host:port; every resolved address is tried in order).
pub(crate) async fn connect(address: &str) -> Result<TcpStream, TransportError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| TransportError::Connect(format!("cannot resolve {address}: {e}")))?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                tune(&s);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(TransportError::Connect(match last {
        Some(e) => format!("cannot connect to {address}: {e}"),
        None => format!("cannot resolve {address}: no addresses"),
    }))
}

/// No Nagle delay for control messages; TCP keepalive below the protocol's heartbeats so that a
/// vanished peer is noticed even by a socket with nothing to send.
pub(crate) fn tune(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

/// The address to bind for a `listen` value: `:port` means every address (IPv4 and IPv6).
pub(crate) async fn listen_addr(listen: &str) -> Result<SocketAddr, TransportError> {
    if let Some(port) = listen.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| TransportError::Config(format!("invalid listen address {listen:?}")))?;
        return Ok(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(a) = listen.parse::<SocketAddr>() {
        return Ok(a);
    }
    tokio::net::lookup_host(listen)
        .await
        .map_err(|e| {
            TransportError::Config(format!("cannot resolve listen address {listen:?}: {e}"))
        })?
        .next()
        .ok_or_else(|| {
            TransportError::Config(format!("listen address {listen:?} resolves to nothing"))
        })
}

pub(crate) async fn listen(listen: &str, freebind: bool) -> Result<TcpListener, TransportError> {
    let addr = listen_addr(listen).await?;
    let bind = |addr: SocketAddr| -> std::io::Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // `:port` serves IPv4 clients too (as IPv4-mapped addresses).
            sock.set_only_v6(false)?;
        }
        sock.set_reuse_address(true)?;
        if freebind {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                if addr.is_ipv6() {
                    sock.set_freebind_v6(true)?;
                } else {
                    sock.set_freebind_v4(true)?;
                }
            }
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(1024)?;
        TcpListener::from_std(sock.into())
    };
    match bind(addr) {
        Ok(l) => Ok(l),
        // No IPv6 on this host: `:port` falls back to IPv4.
        Err(_) if listen.starts_with(':') => bind(SocketAddr::from((
            std::net::Ipv4Addr::UNSPECIFIED,
            addr.port(),
        )))
        .map_err(|e| TransportError::Config(format!("cannot listen on {listen}: {e}"))),
        Err(e) => Err(TransportError::Config(format!(
            "cannot listen on {listen}: {e}"
        ))),
    }
}

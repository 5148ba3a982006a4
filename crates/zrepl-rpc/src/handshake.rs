//! The version handshake that opens every connection, before HTTP/2 starts (PROTOCOL.md §2).
//!
//! Both peers write their banner at once and read the other's:
//! `%010d SP "ZREPL_ZFS_REPLICATION PROTOVERSION=%04d EXTENSIONS=%04d\n" extension-lines`,
//! the format of zrepl 0.7, so a zrepl (Go) peer and this one tell each other clearly that their
//! protocol versions differ instead of failing somewhere later.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// This implementation's protocol version. zrepl (Go) uses 1..=7; ours starts at 100 so the two
/// can never be mistaken for each other.
pub const PROTOCOL_VERSION: u32 = 100;
/// The banner's body may be at most this long.
pub const MAX_BANNER: usize = 64 << 10;
/// Extension: the peer decodes zstd-compressed zfs streams.
pub const EXT_ZSTD: &str = "zstd";
/// Extension: the peer serves `send` and `receive` on stream connections (PROTOCOL.md §5).
pub const EXT_STREAM_CONN: &str = "stream-conn";
/// Extension: the peer reads and writes the lists of batched RPCs as parts (PROTOCOL.md §4b).
pub const EXT_PARTS: &str = "parts";
/// An extension line starting with this refuses the connection, giving the reason (a server
/// beyond a bound: too many connections of this client). Older peers ignore it and see the
/// connection closed.
pub const EXT_REFUSED: &str = "refused: ";
/// The longest refusal reason sent.
const MAX_REASON: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub version: u32,
    pub extensions: Vec<String>,
}

impl Banner {
    pub fn ours() -> Self {
        Banner {
            version: PROTOCOL_VERSION,
            extensions: vec![
                EXT_ZSTD.to_string(),
                EXT_STREAM_CONN.to_string(),
                EXT_PARTS.to_string(),
            ],
        }
    }

    pub fn has(&self, ext: &str) -> bool {
        self.extensions.iter().any(|e| e == ext)
    }

    /// Our banner refusing the connection for `reason` (one line, at most 512 bytes; control
    /// characters become spaces so the peer can print it safely).
    pub fn refusing(reason: &str) -> Self {
        let mut r: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if r.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r.truncate(cut);
        }
        let mut b = Banner::ours();
        b.extensions.push(format!("{EXT_REFUSED}{r}"));
        b
    }

    /// Why the peer refuses this connection, if it does.
    pub fn refusal(&self) -> Option<&str> {
        self.extensions
            .iter()
            .find_map(|e| e.strip_prefix(EXT_REFUSED))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = format!(
            "ZREPL_ZFS_REPLICATION PROTOVERSION={:04} EXTENSIONS={:04}\n",
            self.version,
            self.extensions.len()
        );
        for e in &self.extensions {
            body.push_str(e);
            body.push('\n');
        }
        format!("{:010} {body}", body.len()).into_bytes()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("protocol versions do not match: ours is {ours}, theirs is {theirs}{hint}")]
    VersionMismatch {
        ours: u32,
        theirs: u32,
        hint: &'static str,
    },
    #[error("malformed protocol banner from peer: {0}")]
    Malformed(String),
    #[error("version handshake: {0}")]
    Io(String),
    #[error("version handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("the peer refused the connection: {0}")]
    Refused(String),
}

/// Parses the length header (`%010d ` = 11 bytes): the body length.
pub fn decode_header(h: &[u8; 11]) -> Result<usize, HandshakeError> {
    if h[10] != b' ' || !h[..10].iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::Malformed(format!(
            "expected a 10-digit length and a space, got {:?}",
            String::from_utf8_lossy(h)
        )));
    }
    let n: usize = std::str::from_utf8(&h[..10])
        .expect("digits")
        .parse()
        .expect("10 digits fit");
    if n > MAX_BANNER {
        return Err(HandshakeError::Malformed(format!(
            "banner of {n} bytes exceeds the limit of {MAX_BANNER}"
        )));
    }
    Ok(n)
}

/// Parses a banner body (what follows the header). Pure; fuzzed.
pub fn decode_body(body: &[u8]) -> Result<Banner, HandshakeError> {
    let bad = |m: &str| HandshakeError::Malformed(m.to_string());
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().ok_or_else(|| bad("empty banner"))?;
    let first = first
        .strip_suffix('\n')
        .ok_or_else(|| bad("banner line not terminated"))?;
    let rest = first
        .strip_prefix("ZREPL_ZFS_REPLICATION PROTOVERSION=")
        .ok_or_else(|| bad("not a zrepl banner"))?;
    let (v, n) = rest
        .split_once(" EXTENSIONS=")
        .ok_or_else(|| bad("no EXTENSIONS field"))?;
    let four = |s: &str, what: &str| -> Result<u32, HandshakeError> {
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HandshakeError::Malformed(format!(
                "{what} {s:?} is not 4 digits"
            )));
        }
        Ok(s.parse().expect("4 digits"))
    };
    let version = four(v, "PROTOVERSION")?;
    if version == 0 {
        return Err(bad("PROTOVERSION 0"));
    }
    let n = four(n, "EXTENSIONS")? as usize;
    let mut extensions = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let l = lines
            .next()
            .ok_or_else(|| bad("fewer extension lines than announced"))?;
        let l = l
            .strip_suffix('\n')
            .ok_or_else(|| bad("extension line not terminated"))?;
        extensions.push(l.to_string());
    }
    if lines.next().is_some() {
        return Err(bad("trailing data after the extensions"));
    }
    Ok(Banner {
        version,
        extensions,
    })
}

/// Writes our banner and reads the peer's, within `timeout` (zero: none). Fails unless the
/// versions are equal, or if the peer refuses the connection.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<Banner, HandshakeError> {
    let theirs = exchange_banner(io, timeout, Banner::ours()).await?;
    if let Some(r) = theirs.refusal() {
        // Shown to an operator: escaped, whatever the peer sent.
        return Err(HandshakeError::Refused(zrepl_protocol::printable(r)));
    }
    Ok(theirs)
}

/// The server's side of a refused connection: sends a banner that refuses it for `reason`
/// (see [`Banner::refusing`]) and reads the peer's, within `timeout`; the caller then closes.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
    reason: &str,
) -> Result<(), HandshakeError> {
    exchange_banner(io, timeout, Banner::refusing(reason))
        .await
        .map(|_| ())
}

async fn exchange_banner<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    timeout: Duration,
    ours: Banner,
) -> Result<Banner, HandshakeError> {
    let fut = async {
        let ours = ours.encode();
        let io_err = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                HandshakeError::Io("peer closed the connection during the version handshake".into())
            } else {
                HandshakeError::Io(e.to_string())
            }
        };
        // Write and read concurrently: neither side waits for the other to speak first.
        let (mut rd, mut wr) = tokio::io::split(io);
        let write = async {
            wr.write_all(&ours).await?;
            wr.flush().await
        };
        let read = async {
            let mut h = [0u8; 11];
            rd.read_exact(&mut h).await.map_err(io_err)?;
            let n = decode_header(&h)?;
            let mut body = vec![0u8; n];
            rd.read_exact(&mut body).await.map_err(io_err)?;
            decode_body(&body)
        };
        let (w, r) = tokio::join!(write, read);
        let theirs = r?;
        w.map_err(io_err)?;
        Ok(theirs)
    };
    let theirs = if timeout.is_zero() {
        fut.await?
    } else {
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HandshakeError::Timeout(timeout))??
    };
    if theirs.version != PROTOCOL_VERSION {
        return Err(HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: theirs.version,
            hint: if theirs.version < 100 {
                " (the peer runs zrepl (Go); both sides must run zrepl-rs)"
            } else {
                " (both sides must run the same zrepl-rs protocol version)"
            },
        });
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zrepl_banner_is_understood() {
        let z = b"0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n";
        let h: [u8; 11] = z[..11].try_into().unwrap();
        assert_eq!(decode_header(&h).unwrap(), 56);
        assert_eq!(
            decode_body(&z[11..]).unwrap(),
            Banner {
                version: 7,
                extensions: vec![]
            }
        );
    }

    #[test]
    fn ours_round_trips() {
        let b = Banner::ours().encode();
        let h: [u8; 11] = b[..11].try_into().unwrap();
        assert_eq!(decode_header(&h).unwrap(), b.len() - 11);
        assert_eq!(decode_body(&b[11..]).unwrap(), Banner::ours());
    }

    #[test]
    fn malformed_banners() {
        for (body, why) in [
            (&b""[..], "empty banner"),
            (
                b"ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000",
                "not terminated",
            ),
            (b"HTTP/1.1 200 OK\n", "not a zrepl banner"),
            (
                b"ZREPL_ZFS_REPLICATION PROTOVERSION=7 EXTENSIONS=0000\n",
                "not 4 digits",
            ),
            (
                b"ZREPL_ZFS_REPLICATION PROTOVERSION=0000 EXTENSIONS=0000\n",
                "PROTOVERSION 0",
            ),
            (
                b"ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0002\nzstd\n",
                "fewer extension",
            ),
            (
                b"ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\nx\n",
                "trailing data",
            ),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let e = decode_body(body).unwrap_err().to_string();
            assert!(e.contains(why), "{body:?}: {e}");
        }
        for h in [b"00000000x6 ", b"0000000056x", b"9999999999 "] {
            assert!(decode_header(h).is_err());
        }
    }

    #[tokio::test]
    async fn version_mismatch_is_reported_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let zrepl_go = async move {
            b.write_all(b"0000000056 ZREPL_ZFS_REPLICATION PROTOVERSION=0007 EXTENSIONS=0000\n")
                .await
                .unwrap();
            let mut h = [0u8; 11];
            b.read_exact(&mut h).await.unwrap();
            let mut body = vec![0; decode_header(&h).unwrap()];
            b.read_exact(&mut body).await.unwrap();
            decode_body(&body).unwrap().version
        };
        let (ours, theirs) = tokio::join!(exchange(&mut a, Duration::from_secs(5)), zrepl_go);
        assert_eq!(theirs, PROTOCOL_VERSION);
        let e = ours.unwrap_err().to_string();
        assert!(e.contains("ours is 100, theirs is 7"), "{e}");
        assert!(e.contains("zrepl (Go)"), "{e}");
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let (mut a, _b) = tokio::io::duplex(1 << 16);
        let e = exchange(&mut a, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e, HandshakeError::Timeout(Duration::from_millis(50)));
    }

    #[tokio::test]
    async fn a_refusal_reaches_the_peer_as_a_clear_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            refuse(
                &mut b,
                Duration::from_secs(5),
                "too many connections of client \"x\"\n\x1b[31m(limit 2)",
            )
            .await
        });
        let e = exchange(&mut a, Duration::from_secs(5)).await.unwrap_err();
        server.await.unwrap().unwrap();
        let text = e.to_string();
        assert!(
            text.contains(
                "refused the connection: too many connections of client \"x\"  [31m(limit 2)"
            ),
            "{text}"
        );
        assert!(matches!(e, HandshakeError::Refused(_)));
        // Long reasons are cut, the banner stays one line per extension.
        let b = Banner::refusing(&"é".repeat(1000));
        assert!(b.refusal().unwrap().len() <= 512);
        let enc = b.encode();
        let body = decode_body(&enc[11..]).unwrap();
        assert_eq!(body.refusal(), b.refusal());
    }
}

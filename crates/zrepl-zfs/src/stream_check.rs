//! Walks the records of a compound `zfs send` stream (a package, `zfs send -I`) on its way to
//! `zfs recv`, and stops it before any record that `zfs recv` would take for something we did
//! not ask for.
//!
//! Why: `zfs recv` receives a compound stream substream by substream (libzfs
//! `zfs_receive_package`), and after each substream it follows whatever BEGIN record comes
//! next, a nested compound one included, whose header may carry properties (`fss`) that
//! `zfs recv` then sets. A package whose own header is empty cannot set properties only if no
//! such record ever reaches `zfs recv`; that is what this walker proves, record by record,
//! so that such a package needs no protective `-x` list (see the receiver).
//!
//! What it checks, holding each record header back until it is checked (so a refused record
//! never reaches `zfs recv`, which then fails on a truncated stream):
//! - inside a substream, every record has a type the kernel knows, other than BEGIN, and a
//!   payload of at most [`MAX_RECORD_PAYLOAD`] bytes; payload lengths are computed as the
//!   kernel computes them (`receive_read_record`, `DRR_*_PAYLOAD_SIZE`), in the substream's
//!   byte order, so the walker and the kernel agree on where each record starts;
//! - between substreams, the next record is either the END record that closes the package
//!   (only after every expected substream) or a substream BEGIN (never a compound one) for
//!   the next expected snapshot: `toguid` as the request lists it, `fromguid` the previous
//!   substream's snapshot;
//! - no substream recreates a snapshot that the target filesystem already has (`forbidden`)
//!   or that an earlier substream recreated. libzfs reads a substream itself, with its own
//!   walk that need not start where the kernel stopped, only when `zfs recv`'s ioctl fails
//!   with ENOENT or EEXIST *and* the target already has a snapshot of that GUID
//!   (`recv_skip` in `zfs_receive_one`); refusing those GUIDs leaves the kernel's walk, which
//!   this one mirrors, as the only one.
//!
//! After the closing END record, `zfs recv` reads nothing more; the rest passes unchecked.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::parse::{parse_send_begin, SEND_BEGIN_LEN};

/// `sizeof (dmu_replay_record_t)`: every record header.
pub const RECORD_LEN: usize = SEND_BEGIN_LEN;

/// The largest payload accepted: `SPA_MAXBLOCKSIZE` (16 MiB), the largest block a stream
/// carries (the kernel asserts the same bound); a BEGIN record's payload (an nvlist of
/// resume or key data, a few hundred bytes) is held to it too.
pub const MAX_RECORD_PAYLOAD: u64 = 1 << 24;

const DRR_BEGIN: u32 = 0;
const DRR_OBJECT: u32 = 1;
const DRR_FREEOBJECTS: u32 = 2;
const DRR_WRITE: u32 = 3;
const DRR_FREE: u32 = 4;
const DRR_END: u32 = 5;
const DRR_WRITE_BYREF: u32 = 6;
const DRR_SPILL: u32 = 7;
const DRR_WRITE_EMBEDDED: u32 = 8;
const DRR_OBJECT_RANGE: u32 = 9;
const DRR_REDACT: u32 = 10;

/// What the walker needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A whole record header, to be checked before any of it is passed on.
    Header,
    /// Up to this many payload bytes, passed on as they come.
    Payload(u64),
    /// Nothing more is checked: the rest passes as it is.
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Payload bytes, then the records of a substream in this byte order.
    Payload {
        left: u64,
        little: bool,
    },
    /// A record header inside a substream.
    InSubstream {
        little: bool,
    },
    /// After a substream's END: the next BEGIN or the package's closing END.
    Between,
    Done,
    Refused,
}

/// The walker: a pure state machine fed headers and payload lengths. See the module docs.
#[derive(Debug, Clone)]
pub struct PackageCheck {
    state: State,
    /// GUIDs of the substreams still expected, in order.
    expected: std::collections::VecDeque<u64>,
    /// GUID of the last substream's snapshot: the next one's `fromguid`.
    prev: u64,
    forbidden: HashSet<u64>,
}

impl PackageCheck {
    /// A walker for the rest of a compound stream after its header and its first substream's
    /// BEGIN record (`first_begin`, the last record [`crate::read_send_begin`] read), whose
    /// substreams must recreate `first`'s GUID and then each of `rest` in order, none of them
    /// in `forbidden` (the GUIDs of the target's snapshots).
    pub fn new(
        first_begin: &[u8],
        rest: &[u64],
        forbidden: HashSet<u64>,
    ) -> Result<PackageCheck, String> {
        let mut c = PackageCheck {
            state: State::Between,
            expected: std::collections::VecDeque::new(),
            prev: 0,
            forbidden,
        };
        let b = parse_send_begin(first_begin)?;
        c.expected.push_back(b.toguid);
        c.expected.extend(rest.iter().copied());
        c.prev = b.fromguid;
        c.begin(first_begin)?;
        Ok(c)
    }

    /// What to feed next.
    pub fn need(&self) -> Need {
        match self.state {
            State::Payload { left, .. } => Need::Payload(left),
            State::InSubstream { .. } | State::Between => Need::Header,
            State::Done => Need::Rest,
            // Nothing passes after a refusal (callers stop at the error).
            State::Refused => Need::Header,
        }
    }

    /// `n` payload bytes (at most what [`Need::Payload`] said) were passed on.
    pub fn payload(&mut self, n: u64) {
        if let State::Payload { left, little } = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                State::InSubstream { little }
            } else {
                State::Payload { left, little }
            };
        }
    }

    /// Checks the next record header; on success it may be passed on.
    pub fn header(&mut self, rec: &[u8]) -> Result<(), String> {
        let r = self.header_inner(rec);
        if r.is_err() {
            self.state = State::Refused;
        }
        r
    }

    fn header_inner(&mut self, rec: &[u8]) -> Result<(), String> {
        if rec.len() < RECORD_LEN {
            return Err("short record header".into());
        }
        match self.state {
            State::InSubstream { little } => {
                let u32_at = |at: usize| {
                    let a: [u8; 4] = rec[at..at + 4].try_into().unwrap_or_default();
                    if little {
                        u32::from_le_bytes(a)
                    } else {
                        u32::from_be_bytes(a)
                    }
                };
                let u64_at = |at: usize| {
                    let a: [u8; 8] = rec[at..at + 8].try_into().unwrap_or_default();
                    if little {
                        u64::from_le_bytes(a)
                    } else {
                        u64::from_be_bytes(a)
                    }
                };
                let round8 = |n: u32| (u64::from(n) + 7) & !7;
                let typ = u32_at(0);
                let payload = match typ {
                    DRR_BEGIN => {
                        return Err("a BEGIN record inside a substream".into());
                    }
                    DRR_END => {
                        self.state = State::Between;
                        return Ok(());
                    }
                    // drr_object: drr_bonuslen at 28, drr_raw_bonuslen at 36.
                    DRR_OBJECT => match u32_at(36) {
                        0 => round8(u32_at(28)),
                        raw => u64::from(raw),
                    },
                    // drr_write: drr_logical_size at 32, drr_compressiontype at 50,
                    // drr_compressed_size at 96.
                    DRR_WRITE => {
                        if rec[50] != 0 {
                            u64_at(96)
                        } else {
                            u64_at(32)
                        }
                    }
                    // drr_spill: drr_length at 16, drr_compressed_size at 40.
                    DRR_SPILL => match u64_at(40) {
                        0 => u64_at(16),
                        c => c,
                    },
                    // drr_write_embedded: drr_psize at 52.
                    DRR_WRITE_EMBEDDED => round8(u32_at(52)),
                    DRR_FREEOBJECTS | DRR_FREE | DRR_WRITE_BYREF | DRR_OBJECT_RANGE
                    | DRR_REDACT => 0,
                    other => return Err(format!("record of unknown type {other}")),
                };
                if payload > MAX_RECORD_PAYLOAD {
                    return Err(format!(
                        "a record of type {typ} with {payload} bytes of payload (at most {MAX_RECORD_PAYLOAD})"
                    ));
                }
                if payload > 0 {
                    self.state = State::Payload {
                        left: payload,
                        little,
                    };
                }
                Ok(())
            }
            State::Between => {
                // libzfs takes either byte order of END here (`zfs_receive_impl`).
                let t = &rec[..4];
                if t == DRR_END.to_le_bytes() || t == DRR_END.to_be_bytes() {
                    if let Some(g) = self.expected.front() {
                        return Err(format!(
                            "the stream ends before the substream of guid {g:#x}"
                        ));
                    }
                    self.state = State::Done;
                    return Ok(());
                }
                self.begin(rec)
            }
            State::Payload { .. } | State::Done | State::Refused => {
                Err("no record header expected here".into())
            }
        }
    }

    /// A substream's BEGIN record, between substreams.
    fn begin(&mut self, rec: &[u8]) -> Result<(), String> {
        let b = parse_send_begin(rec)?;
        if b.compound {
            return Err("a compound stream nested in a package".into());
        }
        let Some(want) = self.expected.pop_front() else {
            return Err(format!(
                "a substream of guid {:#x} after every requested one",
                b.toguid
            ));
        };
        if b.toguid != want || b.fromguid != self.prev {
            return Err(format!(
                "a substream recreating guid {:#x} from guid {:#x}, where the request says guid {want:#x} from guid {:#x}",
                b.toguid, b.fromguid, self.prev
            ));
        }
        if !self.forbidden.insert(b.toguid) {
            return Err(format!(
                "a substream recreating guid {:#x}, which the target already has",
                b.toguid
            ));
        }
        self.prev = b.toguid;
        let little = u64::from_le_bytes(rec[8..16].try_into().unwrap_or_default())
            == crate::parse::BACKUP_MAGIC;
        let payload = u64::from(b.payload_len);
        if payload > MAX_RECORD_PAYLOAD {
            return Err(format!("a BEGIN record with {payload} bytes of payload"));
        }
        self.state = if payload > 0 {
            State::Payload {
                left: payload,
                little,
            }
        } else {
            State::InSubstream { little }
        };
        Ok(())
    }
}

/// An [`AsyncRead`] that passes on `inner` as [`PackageCheck`] allows and fails
/// ([`io::ErrorKind::InvalidData`]) at the first record it refuses, which it never passes on.
/// A stream that ends early simply ends (a truncated stream, as a cut connection gives).
pub struct CheckedPackage<R> {
    inner: R,
    check: PackageCheck,
    header: [u8; RECORD_LEN],
    /// Bytes of `header` read so far (while reading), or passed on so far (while passing).
    at: usize,
    passing: bool,
    /// A refusal, reported once what came before it has been passed on.
    refused: Option<String>,
}

impl<R: AsyncRead + Unpin> CheckedPackage<R> {
    /// `inner` is the stream after what [`crate::read_send_begin`] read.
    pub fn new(inner: R, check: PackageCheck) -> Self {
        CheckedPackage {
            inner,
            check,
            header: [0; RECORD_LEN],
            at: 0,
            passing: false,
            refused: None,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CheckedPackage<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        // Fills `buf` as far as the input allows without waiting once something is in it.
        loop {
            if let Some(e) = &this.refused {
                // What came before the refused record goes first.
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream refused: {e}"),
                )));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.passing {
                let n = (RECORD_LEN - this.at).min(buf.remaining());
                buf.put_slice(&this.header[this.at..this.at + n]);
                this.at += n;
                if this.at == RECORD_LEN {
                    this.passing = false;
                    this.at = 0;
                }
                continue;
            }
            let pending_or_some = |buf: &ReadBuf<'_>| {
                if buf.filled().len() > start {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            };
            match this.check.need() {
                Need::Rest => {
                    if buf.filled().len() > start {
                        return Poll::Ready(Ok(()));
                    }
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                Need::Payload(left) => {
                    let max = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(buf.remaining());
                    let dst = buf.initialize_unfilled_to(max);
                    let mut sub = ReadBuf::new(dst);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
                        Poll::Pending => return pending_or_some(buf),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = sub.filled().len();
                    if n == 0 {
                        // Truncated: end here.
                        return Poll::Ready(Ok(()));
                    }
                    buf.advance(n);
                    this.check.payload(n as u64);
                }
                Need::Header => {
                    let mut sub = ReadBuf::new(&mut this.header[this.at..]);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
                        Poll::Pending => return pending_or_some(buf),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = sub.filled().len();
                    if n == 0 {
                        // Truncated inside a header: what was read of it is not passed on.
                        return Poll::Ready(Ok(()));
                    }
                    this.at += n;
                    if this.at < RECORD_LEN {
                        continue;
                    }
                    if let Err(e) = this.check.header(&this.header) {
                        this.refused = Some(e);
                        continue;
                    }
                    this.at = 0;
                    this.passing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::BACKUP_MAGIC;

    /// Writes `v` at `at` in the byte order.
    fn put(rec: &mut [u8], at: usize, v: u64, width: usize, little: bool) {
        let b = if little {
            v.to_le_bytes()[..width].to_vec()
        } else {
            v.to_be_bytes()[8 - width..].to_vec()
        };
        rec[at..at + width].copy_from_slice(&b);
    }

    fn begin(little: bool, compound: bool, to: u64, from: u64, payload: u32) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_LEN];
        put(&mut r, 4, payload.into(), 4, little);
        put(&mut r, 8, BACKUP_MAGIC, 8, little);
        put(&mut r, 16, if compound { 2 } else { 1 }, 8, little);
        put(&mut r, 40, to, 8, little);
        put(&mut r, 48, from, 8, little);
        r[56..62].copy_from_slice(b"p/f@s\0");
        r
    }

    /// A record of `typ` with fields (offset, value, width) and its payload length's worth
    /// of `payload` bytes.
    fn rec(little: bool, typ: u32, fields: &[(usize, u64, usize)], payload: usize) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_LEN];
        put(&mut r, 0, typ.into(), 4, little);
        for &(at, v, w) in fields {
            put(&mut r, at, v, w, little);
        }
        r.extend(std::iter::repeat_n(0xa5, payload));
        r
    }

    /// One substream's records after its BEGIN: one of each kind with a payload, then END.
    fn body(little: bool) -> Vec<u8> {
        [
            rec(little, DRR_OBJECT, &[(28, 5, 4)], 8),
            rec(little, DRR_OBJECT, &[(28, 5, 4), (36, 48, 4)], 48),
            rec(little, DRR_FREEOBJECTS, &[], 0),
            rec(little, DRR_WRITE, &[(32, 4096, 8)], 4096),
            // Compressed: the compressed size counts, not the logical one.
            {
                let mut r = rec(little, DRR_WRITE, &[(32, 4096, 8), (96, 100, 8)], 100);
                r[50] = 15;
                r
            },
            rec(little, DRR_SPILL, &[(16, 512, 8)], 512),
            rec(little, DRR_SPILL, &[(16, 512, 8), (40, 24, 8)], 24),
            rec(little, DRR_WRITE_EMBEDDED, &[(52, 13, 4)], 16),
            rec(little, DRR_FREE, &[], 0),
            rec(little, DRR_OBJECT_RANGE, &[], 0),
            rec(little, DRR_END, &[], 0),
        ]
        .concat()
    }

    /// Feeds `rest` (what follows the first BEGIN) through the adapter in chunks of `chunk`
    /// bytes; returns what was passed on and the error, if any.
    async fn run(
        first: &[u8],
        expected: &[u64],
        forbidden: &[u64],
        rest: &[u8],
        chunk: usize,
    ) -> (Vec<u8>, Option<String>) {
        let check = PackageCheck::new(first, expected, forbidden.iter().copied().collect())
            .expect("first BEGIN");
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let data = rest.to_vec();
        let feeder = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in data.chunks(chunk.max(1)) {
                if w.write_all(c).await.is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let mut reader = CheckedPackage::new(r, check);
        let mut buf = vec![0u8; 7000];
        let err = loop {
            use tokio::io::AsyncReadExt;
            match reader.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.to_string()),
            }
        };
        drop(reader);
        let _ = feeder.await;
        (out, err)
    }

    /// (what, expected after the first, forbidden, rest, refused at, error part)
    type Case = (
        &'static str,
        Vec<u64>,
        Vec<u64>,
        Vec<u8>,
        Option<usize>,
        &'static str,
    );

    #[tokio::test]
    async fn packages_pass_whole_and_refused_records_never_pass() {
        for little in [true, false] {
            let first = begin(little, false, 1, 100, 0);
            let sub2 = begin(little, false, 2, 1, 0);
            let end = rec(little, DRR_END, &[], 0);
            let good = [body(little), sub2.clone(), body(little), end.clone()].concat();
            let nested = begin(little, true, 0, 0, 0);
            let cases: Vec<Case> = vec![
                ("whole package", vec![2], vec![], good.clone(), None, ""),
                (
                    "trailing bytes after the closing END pass",
                    vec![2],
                    vec![],
                    [good.clone(), vec![1, 2, 3]].concat(),
                    None,
                    "",
                ),
                (
                    "a compound stream after a substream",
                    vec![2],
                    vec![],
                    [body(little), nested.clone(), body(little), end.clone()].concat(),
                    Some(body(little).len()),
                    "compound",
                ),
                (
                    "an unexpected snapshot",
                    vec![3],
                    vec![],
                    good.clone(),
                    Some(body(little).len()),
                    "request says guid 0x3",
                ),
                (
                    "a snapshot from the wrong source",
                    vec![2],
                    vec![],
                    [
                        body(little),
                        begin(little, false, 2, 100, 0),
                        body(little),
                        end.clone(),
                    ]
                    .concat(),
                    Some(body(little).len()),
                    "from guid 0x64",
                ),
                (
                    "a snapshot the target has",
                    vec![2],
                    vec![2],
                    good.clone(),
                    Some(body(little).len()),
                    "already has",
                ),
                (
                    "a substream more than requested",
                    vec![],
                    vec![],
                    good.clone(),
                    Some(body(little).len()),
                    "after every requested",
                ),
                (
                    "the closing END before every requested substream",
                    vec![2, 3],
                    vec![],
                    good.clone(),
                    Some(good.len() - RECORD_LEN),
                    "ends before",
                ),
                (
                    "a BEGIN inside a substream",
                    vec![2],
                    vec![],
                    [rec(little, DRR_FREE, &[], 0), sub2.clone()].concat(),
                    Some(RECORD_LEN),
                    "inside a substream",
                ),
                (
                    "an unknown record type",
                    vec![2],
                    vec![],
                    rec(little, 11, &[], 0),
                    Some(0),
                    "unknown type 11",
                ),
                (
                    "a payload beyond the largest block",
                    vec![2],
                    vec![],
                    rec(little, DRR_WRITE, &[(32, MAX_RECORD_PAYLOAD + 8, 8)], 0),
                    Some(0),
                    "bytes of payload",
                ),
                (
                    "a bonus length that wraps in 32 bits",
                    vec![2],
                    vec![],
                    rec(little, DRR_OBJECT, &[(28, 0xffff_fff9, 4)], 0),
                    Some(0),
                    "bytes of payload",
                ),
            ];
            for (what, expected, forbidden, rest, refused_at, msg) in cases {
                for chunk in [1, 311, 4096, 1 << 20] {
                    let (out, err) = run(&first, &expected, &forbidden, &rest, chunk).await;
                    match refused_at {
                        None => {
                            assert_eq!(err, None, "{what} (little {little}, chunk {chunk})");
                            assert!(out == rest, "{what}: {} of {} bytes", out.len(), rest.len());
                        }
                        Some(at) => {
                            let err = err.unwrap_or_else(|| panic!("{what}: not refused"));
                            assert!(err.contains(msg), "{what}: {err}");
                            assert!(
                                out == rest[..at],
                                "{what} (chunk {chunk}): {} bytes passed, {at} expected",
                                out.len()
                            );
                        }
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_truncated_package_ends_without_a_partial_header() {
        let first = begin(true, false, 1, 100, 0);
        let rest = [body(true), begin(true, false, 2, 1, 0)].concat();
        for cut in [0, 100, RECORD_LEN + 3, rest.len() - 1] {
            let (out, err) = run(&first, &[2], &[], &rest[..cut], 50).await;
            assert_eq!(err, None);
            assert!(rest[..cut].starts_with(&out));
            // A header is passed on whole or not at all; payload bytes as they come.
            assert!(cut - out.len() < RECORD_LEN, "cut {cut}: {}", out.len());
        }
    }

    #[test]
    fn the_first_substreams_payload_comes_first() {
        // A raw send's BEGIN carries key data: the walker starts inside that payload.
        let first = begin(true, false, 1, 100, 40);
        let mut c = PackageCheck::new(&first, &[], HashSet::new()).unwrap();
        assert_eq!(c.need(), Need::Payload(40));
        c.payload(40);
        assert_eq!(c.need(), Need::Header);
        c.header(&rec(true, DRR_END, &[], 0)).unwrap();
        c.header(&rec(true, DRR_END, &[], 0)).unwrap();
        assert_eq!(c.need(), Need::Rest);
        // The first substream's GUID is forbidden too.
        assert!(PackageCheck::new(&first, &[], [1].into_iter().collect()).is_err());
        assert!(PackageCheck::new(&begin(true, true, 1, 0, 0), &[], HashSet::new()).is_err());
    }
}

//! Decoding (and encoding) of OpenZFS `receive_resume_token` values, in pure Rust.
//!
//! zrepl 0.x decoded resume tokens by running `zfs send -nvt TOKEN` and scraping its output. This
//! module reads the token itself, so decoding needs no `zfs` binary, no pool and no process, and
//! can be unit-tested and fuzzed.
//!
//! # The format
//!
//! A token is built by the kernel in `get_receive_resume_token_impl()` (`module/zfs/dsl_dataset.c`)
//! and read back by libzfs in `zfs_send_resume_token_to_nvlist()` (`lib/libzfs/libzfs_sendrecv.c`):
//!
//! ```text
//! <version>-<checksum>-<packed length>-<payload>
//!     1     -  %llx    -     %llx      - %02x per byte
//! ```
//!
//! * `version` is decimal; the only version that exists is `ZFS_SEND_RESUME_TOKEN_VERSION` = 1.
//! * `payload` is the hex dump of a zlib stream (`compress2`/`z_compress_level`, level 6) whose
//!   content is a packed nvlist of `packed length` bytes.
//! * `checksum` is word 0 of `fletcher_4_native_varsize()` over the *compressed* bytes, i.e. the
//!   64-bit sum of the payload read as host-endian 32-bit words (a trailing partial word is not
//!   summed). Only that one word is printed, and only that word is compared by libzfs.
//! * The nvlist is packed with `fnvlist_pack()`, which is `NV_ENCODE_NATIVE`: the in-memory
//!   `nvpair_t` layout of the producing host, byte order as that host's (byte 1 of the 4-byte
//!   `nvs_header_t` says which: 1 = little endian, 0 = big endian). Real tokens from Linux/FreeBSD
//!   on x86-64 or arm64 are therefore native little-endian. This decoder also reads native
//!   big-endian and `NV_ENCODE_XDR` nvlists, and accepts a checksum computed over big-endian words,
//!   so a token produced on a big-endian host decodes too (libzfs itself would refuse it).
//!
//! The nvlist holds (all optional as far as the kernel is concerned):
//!
//! | name | nvpair type | meaning |
//! | --- | --- | --- |
//! | `fromguid` | uint64 | GUID of the incremental source (absent for a full send) |
//! | `object`, `offset`, `bytes` | uint64 | resume position and bytes already received |
//! | `toguid` | uint64 | GUID of the snapshot being sent |
//! | `toname` | string | full name of the snapshot being sent (`pool/fs@snap`) |
//! | `largeblockok`, `embedok`, `compressok`, `rawok` | boolean (presence) | send flags |
//! | `redact_snaps`, `book_redact_snaps` | uint64 array | redaction GUIDs |
//! | `savedok` | boolean (presence) | only in tokens assembled by libzfs for `zfs send --saved` |
//!
//! libzfs refuses to resume without `toname`, `toguid`, `object`, `offset` and `bytes`; this
//! decoder requires `toguid` (as zrepl always did) and `toname`, and keeps the rest optional.
//!
//! # Robustness
//!
//! [`decode`] never panics, bounds every allocation by the input size or by [`MAX_PACKED_LEN`]
//! (checked before allocating), limits nvlist nesting to [`MAX_NVLIST_DEPTH`], and rejects
//! trailing data after the zlib stream and after the nvlist.

use serde::Serialize;

/// The only token format version OpenZFS produces (`ZFS_SEND_RESUME_TOKEN_VERSION`).
pub const TOKEN_VERSION: u64 = 1;

/// Upper bound on the uncompressed (packed nvlist) size accepted by [`decode`]: 1 MiB. Real
/// tokens are a few hundred bytes.
pub const MAX_PACKED_LEN: usize = 1 << 20;

/// Upper bound on the length of a token string (after trimming whitespace) accepted by [`decode`].
pub const MAX_TOKEN_LEN: usize = 4 << 20;

/// Deepest nvlist nesting accepted (the kernel's `nvpair_max_recursion` is 20).
pub const MAX_NVLIST_DEPTH: usize = 20;

/// A decoded resume token.
///
/// `toguid` and `toname` are always present in a successfully decoded token; the other numeric
/// fields are `None` when absent from the token. Boolean flags are `true` when the token carries
/// the corresponding (presence-only) nvpair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResumeToken {
    /// GUID of the snapshot being sent (`toguid`).
    pub toguid: u64,
    /// Full name of the snapshot being sent on the sending side, `pool/fs@snap` (`toname`).
    pub toname: String,
    /// GUID of the incremental source snapshot or bookmark (`fromguid`); `None` for a full send.
    pub fromguid: Option<u64>,
    /// Object number to resume at (`object`).
    pub object: Option<u64>,
    /// Offset within `object` to resume at (`offset`).
    pub offset: Option<u64>,
    /// Bytes of the stream already received (`bytes`).
    pub bytes: Option<u64>,
    /// The stream may contain blocks larger than 128 KiB (`largeblockok`).
    pub largeblockok: bool,
    /// The stream may contain embedded-data blocks (`embedok`).
    pub embedok: bool,
    /// The stream may contain compressed blocks (`compressok`).
    pub compressok: bool,
    /// The stream is a raw (encrypted, as stored) send (`rawok`).
    pub rawok: bool,
    /// The token resumes a `zfs send --saved` stream (`savedok`).
    pub savedok: bool,
    /// GUIDs of the redaction snapshots of a redacted dataset (`redact_snaps`).
    pub redact_snaps: Option<Vec<u64>>,
    /// GUIDs of the redaction snapshots of the redaction bookmark used as source
    /// (`book_redact_snaps`).
    pub book_redact_snaps: Option<Vec<u64>>,
}

impl ResumeToken {
    /// A token for `toguid`/`toname` with every optional field absent and every flag off.
    pub fn new(toguid: u64, toname: impl Into<String>) -> Self {
        ResumeToken {
            toguid,
            toname: toname.into(),
            fromguid: None,
            object: None,
            offset: None,
            bytes: None,
            largeblockok: false,
            embedok: false,
            compressok: false,
            rawok: false,
            savedok: false,
            redact_snaps: None,
            book_redact_snaps: None,
        }
    }

    /// The filesystem part of `toname` (before the first `@`), or `None` if `toname` has no `@`.
    pub fn to_filesystem(&self) -> Option<&str> {
        self.toname.split_once('@').map(|(fs, _)| fs)
    }

    /// The snapshot part of `toname` (after the first `@`), or `None` if `toname` has no `@`.
    pub fn to_snapshot_name(&self) -> Option<&str> {
        self.toname.split_once('@').map(|(_, snap)| snap)
    }

    /// Whether the interrupted send was incremental. As in libzfs, a `fromguid` of 0 counts as
    /// absent.
    pub fn is_incremental(&self) -> bool {
        self.fromguid.is_some_and(|g| g != 0)
    }
}

/// The JSON shape zrepl 0.x prints for `zrepl test decoderesumetoken` (its Go `zfs.ResumeToken`
/// struct, encoded by `encoding/json` with the Go field names as keys, in this order).
///
/// OpenZFS stores the four send flags as presence-only booleans, so each `Has*` equals its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZreplDecodedToken {
    #[serde(rename = "HasFromGUID")]
    pub has_from_guid: bool,
    #[serde(rename = "HasToGUID")]
    pub has_to_guid: bool,
    #[serde(rename = "FromGUID")]
    pub from_guid: u64,
    #[serde(rename = "ToGUID")]
    pub to_guid: u64,
    #[serde(rename = "ToName")]
    pub to_name: String,
    #[serde(rename = "HasCompressOK")]
    pub has_compress_ok: bool,
    #[serde(rename = "CompressOK")]
    pub compress_ok: bool,
    #[serde(rename = "HasRawOk")]
    pub has_raw_ok: bool,
    #[serde(rename = "RawOK")]
    pub raw_ok: bool,
    #[serde(rename = "HasLargeBlockOK")]
    pub has_large_block_ok: bool,
    #[serde(rename = "LargeBlockOK")]
    pub large_block_ok: bool,
    #[serde(rename = "HasEmbedOk")]
    pub has_embed_ok: bool,
    #[serde(rename = "EmbedOK")]
    pub embed_ok: bool,
    #[serde(rename = "HasSavedOk")]
    pub has_saved_ok: bool,
    #[serde(rename = "SavedOk")]
    pub saved_ok: bool,
}

impl From<&ResumeToken> for ZreplDecodedToken {
    fn from(t: &ResumeToken) -> Self {
        ZreplDecodedToken {
            has_from_guid: t.fromguid.is_some(),
            has_to_guid: true,
            from_guid: t.fromguid.unwrap_or(0),
            to_guid: t.toguid,
            to_name: t.toname.clone(),
            has_compress_ok: t.compressok,
            compress_ok: t.compressok,
            has_raw_ok: t.rawok,
            raw_ok: t.rawok,
            has_large_block_ok: t.largeblockok,
            large_block_ok: t.largeblockok,
            has_embed_ok: t.embedok,
            embed_ok: t.embedok,
            has_saved_ok: t.savedok,
            saved_ok: t.savedok,
        }
    }
}

/// Why a resume token could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeTokenError {
    #[error("resume token is empty (a `receive_resume_token` of `-` means there is no partial receive state)")]
    Empty,
    #[error("resume token is too long ({len} bytes, at most {max} accepted)")]
    TooLong { len: usize, max: usize },
    #[error("resume token has {found} '-'-separated fields, expected 4 (<version>-<checksum>-<length>-<payload>); was it truncated or copied incompletely?")]
    FieldCount { found: usize },
    #[error("resume token {field} field {value:?} is not a valid {radix} number")]
    BadNumber {
        field: &'static str,
        radix: &'static str,
        value: String,
    },
    #[error("resume token version {0} is not supported (only version 1 exists)")]
    UnsupportedVersion(u64),
    #[error(
        "resume token payload has an odd number of hex digits ({len}); it was probably truncated"
    )]
    OddHexLength { len: usize },
    #[error("resume token payload is not hex: {ch:?} at payload offset {offset}")]
    BadHex { offset: usize, ch: char },
    #[error("resume token checksum mismatch: token says {expected:#x}, payload sums to {got:#x} (as big-endian words: {got_big_endian:#x}); the token was truncated or altered")]
    ChecksumMismatch {
        expected: u64,
        got: u64,
        got_big_endian: u64,
    },
    #[error("resume token declares an uncompressed length of {declared} bytes, more than the {max}-byte limit")]
    PackedLengthTooLarge { declared: u64, max: usize },
    #[error("resume token payload decompresses to more than the {max}-byte limit")]
    DecompressedTooLarge { max: usize },
    #[error(
        "resume token payload decompresses to {actual} bytes but the token declares {declared}"
    )]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("resume token payload is not a valid zlib stream: {0}")]
    Decompression(String),
    #[error("resume token has {bytes} bytes of trailing data after the {after}")]
    TrailingData { after: &'static str, bytes: usize },
    #[error("resume token nvlist is truncated: {needed} more bytes needed at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("resume token nvlist has unknown encoding {0} (0 = native, 1 = XDR)")]
    UnsupportedEncoding(u8),
    #[error(
        "resume token nvlist has unknown byte order marker {0} (0 = big endian, 1 = little endian)"
    )]
    UnsupportedEndianness(u8),
    #[error("resume token nvlist has unsupported nvlist version {0} (only 0 exists)")]
    UnsupportedNvlistVersion(i32),
    #[error("resume token nvlist is malformed at offset {offset}: {reason}")]
    MalformedNvlist { offset: usize, reason: String },
    #[error("resume token nvlist nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("resume token field `{field}` has nvpair type {found}, expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("resume token field `{field}` occurs more than once")]
    DuplicateField { field: &'static str },
    #[error("resume token field `{field}` is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("resume token lacks the required field `{0}`")]
    MissingField(&'static str),
}

type Result<T> = std::result::Result<T, ResumeTokenError>;

/// Decodes a `receive_resume_token` value (surrounding whitespace is ignored).
pub fn decode(token: &str) -> Result<ResumeToken> {
    let token = token.trim();
    if token.is_empty() || token == "-" {
        return Err(ResumeTokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(ResumeTokenError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let found = token.bytes().filter(|&b| b == b'-').count() + 1;
    let mut fields = token.split('-');
    let (Some(version), Some(checksum), Some(length), Some(payload), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ResumeTokenError::FieldCount { found });
    };

    let version = parse_number(version, "version", 10)?;
    if version != TOKEN_VERSION {
        return Err(ResumeTokenError::UnsupportedVersion(version));
    }
    let expected = parse_number(checksum, "checksum", 16)?;
    let declared = parse_number(length, "length", 16)?;
    let declared_len = match usize::try_from(declared) {
        Ok(n) if n <= MAX_PACKED_LEN => n,
        _ => {
            return Err(ResumeTokenError::PackedLengthTooLarge {
                declared,
                max: MAX_PACKED_LEN,
            })
        }
    };

    let compressed = decode_hex(payload)?;
    let got = fletcher4_word0(&compressed, false);
    let got_big_endian = fletcher4_word0(&compressed, true);
    if expected != got && expected != got_big_endian {
        return Err(ResumeTokenError::ChecksumMismatch {
            expected,
            got,
            got_big_endian,
        });
    }

    let packed = inflate(&compressed, declared_len)?;
    if packed.len() != declared_len {
        return Err(ResumeTokenError::LengthMismatch {
            declared,
            actual: packed.len() as u64,
        });
    }
    decode_packed_nvlist(&packed)
}

/// Decodes an already decompressed packed nvlist (the content of a token's payload), in native
/// (either byte order) or XDR encoding. [`decode`] ends with this; it is public for tools and
/// fuzzing.
pub fn decode_packed_nvlist(packed: &[u8]) -> Result<ResumeToken> {
    let pairs = parse_packed(packed)?;
    token_from_pairs(pairs)
}

/// The names of the top-level pairs of a packed nvlist (native or XDR encoding), in order; the
/// whole list is checked as [`decode_packed_nvlist`] checks it. A compound `zfs send` stream's
/// header is such a list (XDR): its `not_recursive` flag says whether `zfs recv` would create,
/// rename or destroy datasets below its target (`zfs send -R`).
pub fn packed_nvlist_names(packed: &[u8]) -> Result<Vec<String>> {
    Ok(parse_packed(packed)?
        .into_iter()
        .map(|p| String::from_utf8_lossy(p.name).into_owned())
        .collect())
}

/// Encodes `token` as OpenZFS would on a little-endian host (native little-endian nvlist,
/// zlib level 6). `toname` must not contain NUL bytes (C strings end at the first one).
pub fn encode(token: &ResumeToken) -> String {
    encode_with(token, NvlistEncoding::NativeLittleEndian)
}

/// How [`encode_with`] packs the nvlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvlistEncoding {
    /// `NV_ENCODE_NATIVE` on a little-endian host: what real tokens from x86-64/arm64 contain.
    NativeLittleEndian,
    /// `NV_ENCODE_NATIVE` on a big-endian host; the checksum is then summed as big-endian words.
    NativeBigEndian,
    /// `NV_ENCODE_XDR` (never produced by OpenZFS for tokens; accepted by the decoder anyway).
    Xdr,
}

/// Like [`encode`], with a choice of nvlist encoding.
pub fn encode_with(token: &ResumeToken, encoding: NvlistEncoding) -> String {
    let packed = pack_nvlist(token, encoding);
    let compressed = deflate(&packed);
    let big_endian = encoding == NvlistEncoding::NativeBigEndian;
    assemble(&compressed, packed.len() as u64, big_endian)
}

/// Wraps an already zlib-compressed payload into a version-1 token with a correct (little-endian)
/// checksum, declaring `packed_len` uncompressed bytes. Meant for tests and fuzzing that need to
/// get past the checksum.
pub fn wrap_compressed_payload(compressed: &[u8], packed_len: u64) -> String {
    assemble(compressed, packed_len, false)
}

/// Word 0 of OpenZFS's `fletcher_4_native_varsize()`: the 64-bit sum of `data` read as 32-bit
/// words in the given byte order, ignoring a trailing partial word.
pub fn fletcher4_word0(data: &[u8], big_endian: bool) -> u64 {
    data.chunks_exact(4).fold(0u64, |acc, w| {
        let w = [w[0], w[1], w[2], w[3]];
        let v = if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        };
        acc.wrapping_add(u64::from(v))
    })
}

fn assemble(compressed: &[u8], packed_len: u64, big_endian: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let checksum = fletcher4_word0(compressed, big_endian);
    let mut s = format!("{TOKEN_VERSION}-{checksum:x}-{packed_len:x}-");
    s.reserve(compressed.len() * 2);
    for b in compressed {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn parse_number(s: &str, field: &'static str, radix: u32) -> Result<u64> {
    let bad = || ResumeTokenError::BadNumber {
        field,
        radix: if radix == 10 {
            "decimal"
        } else {
            "hexadecimal"
        },
        value: s.chars().take(40).collect(),
    };
    if s.is_empty() || !s.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    u64::from_str_radix(s, radix).map_err(|_| bad())
}

fn decode_hex(s: &str) -> Result<Vec<u8>> {
    if let Some((offset, ch)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(ResumeTokenError::BadHex { offset, ch });
    }
    // Only ASCII hex digits remain, so bytes and chars coincide.
    if s.len() & 1 == 1 {
        return Err(ResumeTokenError::OddHexLength { len: s.len() });
    }
    fn nibble(b: u8) -> u8 {
        match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        }
    }
    Ok(s.as_bytes()
        .chunks_exact(2)
        .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
        .collect())
}

/// Inflates a zlib stream, refusing more than [`MAX_PACKED_LEN`] bytes of output and any input
/// after the end of the stream.
fn inflate(compressed: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    use flate2::{Decompress, FlushDecompress, Status};

    let mut d = Decompress::new(true);
    // `expected_len` was checked against MAX_PACKED_LEN by the caller.
    let mut out = Vec::with_capacity(expected_len.min(MAX_PACKED_LEN));
    let mut buf = [0u8; 8192];
    loop {
        let consumed = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
        let input = compressed.get(consumed..).unwrap_or(&[]);
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress(input, &mut buf, FlushDecompress::None)
            .map_err(|e| ResumeTokenError::Decompression(e.to_string()))?;
        let produced = usize::try_from(d.total_out() - out_before)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if out.len().saturating_add(produced) > MAX_PACKED_LEN {
            return Err(ResumeTokenError::DecompressedTooLarge {
                max: MAX_PACKED_LEN,
            });
        }
        out.extend_from_slice(&buf[..produced]);
        match status {
            Status::StreamEnd => break,
            _ if d.total_in() == in_before && produced == 0 => {
                return Err(ResumeTokenError::Decompression(
                    "the payload ends before the zlib stream does".into(),
                ))
            }
            _ => {}
        }
    }
    let consumed = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
    if consumed < compressed.len() {
        return Err(ResumeTokenError::TrailingData {
            after: "zlib stream",
            bytes: compressed.len() - consumed,
        });
    }
    Ok(out)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing into a Vec cannot fail.
    enc.write_all(data)
        .and_then(|()| enc.finish())
        .expect("zlib compression into memory cannot fail")
}

// ---------------------------------------------------------------------------------------------
// nvlist unpacking (module/nvpair/nvpair.c)
// ---------------------------------------------------------------------------------------------

// data_type_t (include/sys/nvpair.h)
const DATA_TYPE_BOOLEAN: u32 = 1;
const DATA_TYPE_BYTE_ARRAY: u32 = 10;
const DATA_TYPE_UINT64: u32 = 8;
const DATA_TYPE_STRING: u32 = 9;
const DATA_TYPE_UINT64_ARRAY: u32 = 16;
const DATA_TYPE_BOOLEAN_VALUE: u32 = 21;

const NV_ENCODE_NATIVE: u8 = 0;
const NV_ENCODE_XDR: u8 = 1;
/// `sizeof (nvpair_t)`: size, name_sz, reserve, value_elem, type.
const NVP_HEADER: usize = 16;
/// `sizeof (nvlist_t)` as stored inside a packed native nvpair.
const NVLIST_T_SIZE: usize = 24;
/// `NV_UNIQUE_NAME`.
const NV_UNIQUE_NAME: u32 = 1;

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "unknown",
        1 => "boolean",
        2 => "byte",
        3 => "int16",
        4 => "uint16",
        5 => "int32",
        6 => "uint32",
        7 => "int64",
        8 => "uint64",
        9 => "string",
        10 => "byte array",
        11 => "int16 array",
        12 => "uint16 array",
        13 => "int32 array",
        14 => "uint32 array",
        15 => "int64 array",
        16 => "uint64 array",
        17 => "string array",
        18 => "hrtime",
        19 => "nvlist",
        20 => "nvlist array",
        21 => "boolean value",
        22 => "int8",
        23 => "uint8",
        24 => "boolean array",
        25 => "int8 array",
        26 => "uint8 array",
        27 => "double",
        _ => "invalid",
    }
}

/// How a data type's value is laid out.
#[derive(Clone, Copy)]
enum Shape {
    /// DATA_TYPE_BOOLEAN: no value, nelem 0.
    Flag,
    /// One fixed-size value of this native size, nelem 1.
    Scalar(usize),
    /// One NUL-terminated string, nelem 1.
    Str,
    /// nelem fixed-size values of this native size.
    Array(usize),
    /// nelem strings.
    StrArray,
    /// One embedded nvlist, nelem 1.
    List,
    /// nelem embedded nvlists.
    ListArray,
}

fn shape(t: u32) -> Option<Shape> {
    Some(match t {
        1 => Shape::Flag,
        2 | 22 | 23 => Shape::Scalar(1),
        3 | 4 => Shape::Scalar(2),
        5 | 6 | 21 => Shape::Scalar(4),
        7 | 8 | 18 | 27 => Shape::Scalar(8),
        9 => Shape::Str,
        10 | 25 | 26 => Shape::Array(1),
        11 | 12 => Shape::Array(2),
        13 | 14 | 24 => Shape::Array(4),
        15 | 16 => Shape::Array(8),
        17 => Shape::StrArray,
        19 => Shape::List,
        20 => Shape::ListArray,
        _ => return None,
    })
}

/// `i_validate_type_nelem()`.
fn check_type_nelem(t: u32, nelem: u32, offset: usize) -> Result<Shape> {
    let s = shape(t).ok_or_else(|| malformed(offset, format!("unknown nvpair data type {t}")))?;
    let ok = match s {
        Shape::Flag => nelem == 0,
        Shape::Scalar(_) | Shape::Str | Shape::List => nelem == 1,
        Shape::Array(_) | Shape::StrArray | Shape::ListArray => true,
    };
    if ok {
        Ok(s)
    } else {
        Err(malformed(
            offset,
            format!("nvpair of type {} has {nelem} elements", type_name(t)),
        ))
    }
}

fn malformed(offset: usize, reason: impl Into<String>) -> ResumeTokenError {
    ResumeTokenError::MalformedNvlist {
        offset,
        reason: reason.into(),
    }
}

const fn align8(n: usize) -> usize {
    n.saturating_add(7) & !7
}

const fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// A top-level nvpair, with the values this module cares about.
struct Pair<'a> {
    name: &'a [u8],
    type_code: u32,
    value: Value<'a>,
}

enum Value<'a> {
    Flag,
    U64(u64),
    Str(&'a [u8]),
    U64s(Vec<u64>),
    Other,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        if n > rest.len() {
            return Err(ResumeTokenError::Truncated {
                offset: self.pos,
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, be: bool) -> Result<u32> {
        let a = self.array::<4>()?;
        Ok(if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    fn i32(&mut self, be: bool) -> Result<i32> {
        self.u32(be).map(|v| v as i32)
    }

    fn u64(&mut self, be: bool) -> Result<u64> {
        let a = self.array::<8>()?;
        Ok(if be {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    }
}

/// Reads `N` bytes at `at` in `b` (caller has checked the bounds; never panics regardless).
fn field<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        a.copy_from_slice(s);
    }
    a
}

fn rd_u32(b: &[u8], at: usize, be: bool) -> u32 {
    let a = field::<4>(b, at);
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn rd_i16(b: &[u8], at: usize, be: bool) -> i16 {
    let a = field::<2>(b, at);
    if be {
        i16::from_be_bytes(a)
    } else {
        i16::from_le_bytes(a)
    }
}

fn rd_u64(b: &[u8], at: usize, be: bool) -> u64 {
    let a = field::<8>(b, at);
    if be {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    }
}

fn parse_packed(packed: &[u8]) -> Result<Vec<Pair<'_>>> {
    let mut c = Cursor {
        buf: packed,
        pos: 0,
    };
    // nvs_header_t: encoding, endian, reserved, reserved.
    let [encoding, endian, _, _] = c.array::<4>()?;
    let mut pairs = Vec::new();
    match encoding {
        NV_ENCODE_NATIVE => {
            let be = match endian {
                0 => true,
                1 => false,
                other => return Err(ResumeTokenError::UnsupportedEndianness(other)),
            };
            let version = c.i32(be)?;
            if version != 0 {
                return Err(ResumeTokenError::UnsupportedNvlistVersion(version));
            }
            let _nvflag = c.u32(be)?;
            native_pairs(&mut c, be, 0, Some(&mut pairs))?;
        }
        // XDR is always big-endian; the header's endian byte is not used.
        NV_ENCODE_XDR => xdr_list(&mut c, 0, Some(&mut pairs))?,
        other => return Err(ResumeTokenError::UnsupportedEncoding(other)),
    }
    if c.remaining() != 0 {
        return Err(ResumeTokenError::TrailingData {
            after: "packed nvlist",
            bytes: c.remaining(),
        });
    }
    Ok(pairs)
}

fn enter(depth: usize) -> Result<usize> {
    if depth >= MAX_NVLIST_DEPTH {
        Err(ResumeTokenError::TooDeep {
            max: MAX_NVLIST_DEPTH,
        })
    } else {
        Ok(depth + 1)
    }
}

/// Bounds-checks `nelem * size` against `available` without overflow.
fn fits(nelem: u32, size: usize, available: usize) -> bool {
    (u64::from(nelem))
        .checked_mul(size as u64)
        .is_some_and(|n| n <= available as u64)
}

/// Native encoding: the pairs of one nvlist (the version/flag words of the top-level list have
/// already been read; embedded lists have theirs inside the parent's nvpair), up to the 4-byte
/// zero terminator. Mirrors `nvs_native_nvpair()` / `nvs_native_nvp_op()`.
fn native_pairs<'a>(
    c: &mut Cursor<'a>,
    be: bool,
    depth: usize,
    mut sink: Option<&mut Vec<Pair<'a>>>,
) -> Result<()> {
    loop {
        let start = c.pos;
        let size = c.i32(be)?;
        if size == 0 {
            return Ok(());
        }
        c.pos = start;
        let size = usize::try_from(size)
            .map_err(|_| malformed(start, format!("negative nvpair size {size}")))?;
        if size < align8(NVP_HEADER + 1) {
            return Err(malformed(start, format!("nvpair size {size} is too small")));
        }
        let pair = c.take(size)?;

        let name_sz = rd_i16(pair, 4, be);
        let name_sz = usize::try_from(name_sz)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| malformed(start, format!("bad nvpair name size {name_sz}")))?;
        let value_off = align8(NVP_HEADER + name_sz);
        if value_off > size {
            return Err(malformed(start, "nvpair name does not fit in the nvpair"));
        }
        let name = &pair[NVP_HEADER..NVP_HEADER + name_sz];
        let name = match name.split_last() {
            Some((0, name)) if !name.contains(&0) => name,
            _ => return Err(malformed(start, "nvpair name is not NUL-terminated")),
        };
        let nelem = rd_u32(pair, 8, be);
        let type_code = rd_u32(pair, 12, be);
        let region = &pair[value_off..];
        let shape = check_type_nelem(type_code, nelem, start)?;
        let too_small = || malformed(start, "nvpair value does not fit in the nvpair");

        let value = match shape {
            Shape::Flag => Value::Flag,
            Shape::Scalar(n) => {
                if region.len() < n {
                    return Err(too_small());
                }
                if type_code == DATA_TYPE_BOOLEAN_VALUE && rd_u32(region, 0, be) > 1 {
                    return Err(malformed(start, "boolean value is neither 0 nor 1"));
                }
                if type_code == DATA_TYPE_UINT64 {
                    Value::U64(rd_u64(region, 0, be))
                } else {
                    Value::Other
                }
            }
            Shape::Str => match region.iter().position(|&b| b == 0) {
                Some(end) => Value::Str(&region[..end]),
                None => return Err(malformed(start, "string value is not NUL-terminated")),
            },
            Shape::Array(n) => {
                if !fits(nelem, n, region.len()) {
                    return Err(too_small());
                }
                if type_code == DATA_TYPE_UINT64_ARRAY {
                    Value::U64s(
                        region
                            .chunks_exact(8)
                            .take(nelem as usize)
                            .map(|w| rd_u64(w, 0, be))
                            .collect(),
                    )
                } else {
                    Value::Other
                }
            }
            Shape::StrArray => {
                if !fits(nelem, 8, region.len()) {
                    return Err(too_small());
                }
                // Pointer slots, then the strings back to back.
                let mut rest = &region[nelem as usize * 8..];
                for _ in 0..nelem {
                    match rest.iter().position(|&b| b == 0) {
                        Some(end) => rest = &rest[end + 1..],
                        None => {
                            return Err(malformed(start, "string array element is not terminated"))
                        }
                    }
                }
                Value::Other
            }
            Shape::List => {
                if region.len() < NVLIST_T_SIZE {
                    return Err(too_small());
                }
                check_embedded_header(region, be)?;
                native_pairs(c, be, enter(depth)?, None)?;
                Value::Other
            }
            Shape::ListArray => {
                if !fits(nelem, 8 + NVLIST_T_SIZE, region.len()) {
                    return Err(too_small());
                }
                let headers = &region[nelem as usize * 8..];
                for h in headers.chunks_exact(NVLIST_T_SIZE).take(nelem as usize) {
                    check_embedded_header(h, be)?;
                }
                let inner = enter(depth)?;
                for _ in 0..nelem {
                    native_pairs(c, be, inner, None)?;
                }
                Value::Other
            }
        };
        if let Some(sink) = sink.as_deref_mut() {
            sink.push(Pair {
                name,
                type_code,
                value,
            });
        }
    }
}

/// The `nvlist_t` stored in the value of a native DATA_TYPE_NVLIST(_ARRAY) pair.
fn check_embedded_header(h: &[u8], be: bool) -> Result<()> {
    let version = rd_u32(h, 0, be) as i32;
    if version != 0 {
        return Err(ResumeTokenError::UnsupportedNvlistVersion(version));
    }
    Ok(())
}

/// XDR encoding: one nvlist (version, flags, pairs, 8-byte terminator). Mirrors
/// `nvs_xdr_nvlist()` / `nvs_xdr_nvpair()` / `nvs_xdr_nvp_op()`.
fn xdr_list<'a>(
    c: &mut Cursor<'a>,
    depth: usize,
    mut sink: Option<&mut Vec<Pair<'a>>>,
) -> Result<()> {
    let version = c.i32(true)?;
    if version != 0 {
        return Err(ResumeTokenError::UnsupportedNvlistVersion(version));
    }
    let _nvflag = c.u32(true)?;
    loop {
        let start = c.pos;
        let _encode_size = c.i32(true)?;
        let decode_size = c.i32(true)?;
        if decode_size == 0 {
            return Ok(());
        }
        if decode_size < 0 {
            return Err(malformed(
                start,
                format!("negative nvpair size {decode_size}"),
            ));
        }
        let name = xdr_bytes(c)?;
        if name.contains(&0) {
            return Err(malformed(start, "nvpair name contains a NUL byte"));
        }
        let type_code = c.u32(true)?;
        let nelem = c.u32(true)?;
        let shape = check_type_nelem(type_code, nelem, start)?;
        let value = if nelem == 0 {
            // nvs_xdr_nvp_op() encodes nothing after nelem when it is 0.
            match (shape, type_code) {
                (Shape::Flag, _) => Value::Flag,
                (_, DATA_TYPE_UINT64_ARRAY) => Value::U64s(Vec::new()),
                _ => Value::Other,
            }
        } else {
            match shape {
                Shape::Flag => Value::Flag, // unreachable: booleans have nelem 0
                Shape::Scalar(n) => {
                    if n <= 4 {
                        let v = c.u32(true)?;
                        if type_code == DATA_TYPE_BOOLEAN_VALUE && v > 1 {
                            return Err(malformed(start, "boolean value is neither 0 nor 1"));
                        }
                        Value::Other
                    } else {
                        let v = c.u64(true)?;
                        if type_code == DATA_TYPE_UINT64 {
                            Value::U64(v)
                        } else {
                            Value::Other
                        }
                    }
                }
                Shape::Str => {
                    let s = xdr_bytes(c)?;
                    if s.contains(&0) {
                        return Err(malformed(start, "string value contains a NUL byte"));
                    }
                    Value::Str(s)
                }
                Shape::Array(n) => {
                    if type_code == DATA_TYPE_BYTE_ARRAY {
                        // xdr_opaque: the bytes, padded to 4, without a count.
                        c.take(align4(nelem as usize))?;
                        Value::Other
                    } else {
                        let count = c.u32(true)?;
                        if count != nelem {
                            return Err(malformed(
                                start,
                                format!("array count {count} differs from nelem {nelem}"),
                            ));
                        }
                        let unit = if n == 8 { 8 } else { 4 };
                        if !fits(nelem, unit, c.remaining()) {
                            return Err(ResumeTokenError::Truncated {
                                offset: c.pos,
                                needed: (nelem as usize)
                                    .saturating_mul(unit)
                                    .saturating_sub(c.remaining()),
                            });
                        }
                        let data = c.take(nelem as usize * unit)?;
                        if type_code == DATA_TYPE_UINT64_ARRAY {
                            Value::U64s(data.chunks_exact(8).map(|w| rd_u64(w, 0, true)).collect())
                        } else {
                            Value::Other
                        }
                    }
                }
                Shape::StrArray => {
                    for _ in 0..nelem {
                        let s = xdr_bytes(c)?;
                        if s.contains(&0) {
                            return Err(malformed(start, "string array element contains NUL"));
                        }
                    }
                    Value::Other
                }
                Shape::List => {
                    xdr_list(c, enter(depth)?, None)?;
                    Value::Other
                }
                Shape::ListArray => {
                    let inner = enter(depth)?;
                    for _ in 0..nelem {
                        xdr_list(c, inner, None)?;
                    }
                    Value::Other
                }
            }
        };
        if let Some(sink) = sink.as_deref_mut() {
            sink.push(Pair {
                name,
                type_code,
                value,
            });
        }
    }
}

/// An XDR string/opaque with a length prefix, padded to 4 bytes.
fn xdr_bytes<'a>(c: &mut Cursor<'a>) -> Result<&'a [u8]> {
    let len = c.u32(true)? as usize;
    let padded = align4(len);
    if padded > c.remaining() || padded < len {
        return Err(ResumeTokenError::Truncated {
            offset: c.pos,
            needed: padded.saturating_sub(c.remaining()).max(1),
        });
    }
    let s = c.take(padded)?;
    Ok(&s[..len])
}

fn token_from_pairs(pairs: Vec<Pair<'_>>) -> Result<ResumeToken> {
    struct Slots {
        toguid: Option<u64>,
        toname: Option<String>,
        fromguid: Option<u64>,
        object: Option<u64>,
        offset: Option<u64>,
        bytes: Option<u64>,
        flags: [Option<()>; 5],
        redact_snaps: Option<Vec<u64>>,
        book_redact_snaps: Option<Vec<u64>>,
    }
    let mut s = Slots {
        toguid: None,
        toname: None,
        fromguid: None,
        object: None,
        offset: None,
        bytes: None,
        flags: [None; 5],
        redact_snaps: None,
        book_redact_snaps: None,
    };

    fn put<T>(slot: &mut Option<T>, field: &'static str, v: T) -> Result<()> {
        if slot.is_some() {
            return Err(ResumeTokenError::DuplicateField { field });
        }
        *slot = Some(v);
        Ok(())
    }
    fn wrong(field: &'static str, expected: u32, found: u32) -> ResumeTokenError {
        ResumeTokenError::WrongType {
            field,
            expected: type_name(expected),
            found: type_name(found),
        }
    }
    const FLAGS: [&str; 5] = ["largeblockok", "embedok", "compressok", "rawok", "savedok"];

    for p in pairs {
        let Ok(name) = std::str::from_utf8(p.name) else {
            continue; // not a field we know
        };
        match name {
            "toguid" | "fromguid" | "object" | "offset" | "bytes" => {
                let (slot, field) = match name {
                    "toguid" => (&mut s.toguid, "toguid"),
                    "fromguid" => (&mut s.fromguid, "fromguid"),
                    "object" => (&mut s.object, "object"),
                    "offset" => (&mut s.offset, "offset"),
                    _ => (&mut s.bytes, "bytes"),
                };
                match p.value {
                    Value::U64(v) => put(slot, field, v)?,
                    _ => return Err(wrong(field, DATA_TYPE_UINT64, p.type_code)),
                }
            }
            "toname" => match p.value {
                Value::Str(b) => {
                    let v = String::from_utf8(b.to_vec())
                        .map_err(|_| ResumeTokenError::InvalidUtf8 { field: "toname" })?;
                    put(&mut s.toname, "toname", v)?
                }
                _ => return Err(wrong("toname", DATA_TYPE_STRING, p.type_code)),
            },
            "redact_snaps" | "book_redact_snaps" => {
                let (slot, field) = if name == "redact_snaps" {
                    (&mut s.redact_snaps, "redact_snaps")
                } else {
                    (&mut s.book_redact_snaps, "book_redact_snaps")
                };
                match p.value {
                    Value::U64s(v) => put(slot, field, v)?,
                    _ => return Err(wrong(field, DATA_TYPE_UINT64_ARRAY, p.type_code)),
                }
            }
            _ => {
                if let Some(i) = FLAGS.iter().position(|f| *f == name) {
                    // The kernel only ever writes presence-only booleans. libzfs tests mere
                    // presence (`nvlist_exists`), so any other type would be ambiguous (is
                    // `rawok = B_FALSE` a raw send? libzfs says yes): refuse it.
                    match p.value {
                        Value::Flag => put(&mut s.flags[i], FLAGS[i], ())?,
                        _ => return Err(wrong(FLAGS[i], DATA_TYPE_BOOLEAN, p.type_code)),
                    }
                }
                // Unknown fields are ignored, as libzfs does.
            }
        }
    }

    let toguid = s.toguid.ok_or(ResumeTokenError::MissingField("toguid"))?;
    let toname = s.toname.ok_or(ResumeTokenError::MissingField("toname"))?;
    let [largeblockok, embedok, compressok, rawok, savedok] = s.flags.map(|f| f.is_some());
    Ok(ResumeToken {
        toguid,
        toname,
        fromguid: s.fromguid,
        object: s.object,
        offset: s.offset,
        bytes: s.bytes,
        largeblockok,
        embedok,
        compressok,
        rawok,
        savedok,
        redact_snaps: s.redact_snaps,
        book_redact_snaps: s.book_redact_snaps,
    })
}

// ---------------------------------------------------------------------------------------------
// nvlist packing
// ---------------------------------------------------------------------------------------------

/// One nvpair to pack, with its value in a neutral form.
enum PackValue<'a> {
    Flag,
    U64(u64),
    Str(&'a [u8]),
    U64s(&'a [u64]),
}

/// The token's pairs in the order the kernel adds them (`get_receive_resume_token_impl()`);
/// `savedok` (only ever added by libzfs) goes last.
fn token_pairs(t: &ResumeToken) -> Vec<(&'static str, PackValue<'_>)> {
    let mut v = Vec::new();
    let name = t.toname.as_bytes();
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    if let Some(g) = t.fromguid {
        v.push(("fromguid", PackValue::U64(g)));
    }
    if let Some(x) = t.object {
        v.push(("object", PackValue::U64(x)));
    }
    if let Some(x) = t.offset {
        v.push(("offset", PackValue::U64(x)));
    }
    if let Some(x) = t.bytes {
        v.push(("bytes", PackValue::U64(x)));
    }
    v.push(("toguid", PackValue::U64(t.toguid)));
    v.push(("toname", PackValue::Str(name)));
    for (on, n) in [
        (t.largeblockok, "largeblockok"),
        (t.embedok, "embedok"),
        (t.compressok, "compressok"),
        (t.rawok, "rawok"),
    ] {
        if on {
            v.push((n, PackValue::Flag));
        }
    }
    if let Some(r) = &t.redact_snaps {
        v.push(("redact_snaps", PackValue::U64s(r)));
    }
    if let Some(r) = &t.book_redact_snaps {
        v.push(("book_redact_snaps", PackValue::U64s(r)));
    }
    if t.savedok {
        v.push(("savedok", PackValue::Flag));
    }
    v
}

fn pack_nvlist(t: &ResumeToken, encoding: NvlistEncoding) -> Vec<u8> {
    let pairs = token_pairs(t);
    let mut out = Vec::new();
    match encoding {
        NvlistEncoding::NativeLittleEndian | NvlistEncoding::NativeBigEndian => {
            let be = encoding == NvlistEncoding::NativeBigEndian;
            out.extend_from_slice(&[NV_ENCODE_NATIVE, u8::from(!be), 0, 0]);
            put_u32(&mut out, 0, be); // nvl_version
            put_u32(&mut out, NV_UNIQUE_NAME, be);
            for (name, value) in &pairs {
                let (type_code, nelem, data) = native_value(value, be);
                native_pair(&mut out, be, name.as_bytes(), type_code, nelem, &data);
            }
            put_u32(&mut out, 0, be);
        }
        NvlistEncoding::Xdr => {
            out.extend_from_slice(&[NV_ENCODE_XDR, 1, 0, 0]);
            put_u32(&mut out, 0, true);
            put_u32(&mut out, NV_UNIQUE_NAME, true);
            for (name, value) in &pairs {
                xdr_pair(&mut out, name.as_bytes(), value);
            }
            put_u32(&mut out, 0, true);
            put_u32(&mut out, 0, true);
        }
    }
    out
}

fn put_u32(out: &mut Vec<u8>, v: u32, be: bool) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

fn put_u64(out: &mut Vec<u8>, v: u64, be: bool) {
    out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
}

/// Type, nelem and unpadded native value bytes.
fn native_value(v: &PackValue<'_>, be: bool) -> (u32, u32, Vec<u8>) {
    match v {
        PackValue::Flag => (DATA_TYPE_BOOLEAN, 0, Vec::new()),
        PackValue::U64(x) => {
            let mut d = Vec::new();
            put_u64(&mut d, *x, be);
            (DATA_TYPE_UINT64, 1, d)
        }
        PackValue::Str(s) => {
            let mut d = s.to_vec();
            d.push(0);
            (DATA_TYPE_STRING, 1, d)
        }
        PackValue::U64s(xs) => {
            let mut d = Vec::new();
            for x in *xs {
                put_u64(&mut d, *x, be);
            }
            (DATA_TYPE_UINT64_ARRAY, xs.len() as u32, d)
        }
    }
}

/// `NVP_SIZE_CALC(name_sz, value_sz)`.
fn nvp_size(name_len: usize, value_len: usize) -> usize {
    align8(NVP_HEADER + name_len + 1) + align8(value_len)
}

fn native_pair(out: &mut Vec<u8>, be: bool, name: &[u8], type_code: u32, nelem: u32, data: &[u8]) {
    let start = out.len();
    let size = nvp_size(name.len(), data.len());
    put_u32(out, size as u32, be);
    let name_sz = (name.len() + 1) as u16;
    out.extend_from_slice(&if be {
        name_sz.to_be_bytes()
    } else {
        name_sz.to_le_bytes()
    });
    out.extend_from_slice(&[0, 0]); // nvp_reserve
    put_u32(out, nelem, be);
    put_u32(out, type_code, be);
    out.extend_from_slice(name);
    out.push(0);
    out.resize(start + align8(NVP_HEADER + name.len() + 1), 0);
    out.extend_from_slice(data);
    out.resize(start + size, 0);
}

fn xdr_put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32, true);
    out.extend_from_slice(s);
    out.resize(out.len() + align4(s.len()) - s.len(), 0);
}

fn xdr_pair(out: &mut Vec<u8>, name: &[u8], value: &PackValue<'_>) {
    // encode size as nvs_xdr_nvp_size() computes it; decode size is the native nvpair size.
    let base = 4 + 4 + 4 + align4(name.len()) + 4 + 4;
    let (type_code, nelem, data_size, native_len) = match value {
        PackValue::Flag => (DATA_TYPE_BOOLEAN, 0, 0, 0),
        PackValue::U64(_) => (DATA_TYPE_UINT64, 1, 8, 8),
        PackValue::Str(s) => (DATA_TYPE_STRING, 1, 4 + align4(s.len()), s.len() + 1),
        PackValue::U64s(xs) => (
            DATA_TYPE_UINT64_ARRAY,
            xs.len() as u32,
            4 + 8 * xs.len(),
            8 * xs.len(),
        ),
    };
    put_u32(out, (base + data_size) as u32, true);
    put_u32(out, nvp_size(name.len(), native_len) as u32, true);
    xdr_put_bytes(out, name);
    put_u32(out, type_code, true);
    put_u32(out, nelem, true);
    match value {
        PackValue::Flag => {}
        PackValue::U64(x) => put_u64(out, *x, true),
        PackValue::Str(s) => xdr_put_bytes(out, s),
        PackValue::U64s(xs) => {
            if !xs.is_empty() {
                put_u32(out, xs.len() as u32, true);
                for x in *xs {
                    put_u64(out, *x, true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Real tokens, with the field values `zfs send -nvt` printed for them.
    struct Real {
        origin: &'static str,
        token: &'static str,
        fromguid: Option<u64>,
        object: u64,
        offset: u64,
        bytes: u64,
        toguid: u64,
        toname: &'static str,
        compressok: bool,
        rawok: bool,
    }

    // zrepl `internal/platformtest/tests/resumeTokenParsing.go` (generated on ZoL 0.8.1 by
    // resumeTokensGenerate.bash), zrepl `internal/zfs/zfs_test.go` (TestDrySendInfo, with the
    // `zfs send -nvP -t` output) and zrepl `internal/zfs/resume_token.go` (comment with the
    // `zfs send -nvt` output).
    const REAL: &[Real] = &[
        Real {
            origin: "zrepl platformtest dst/full",
            token: "1-b338b54f3-c0-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a796806474e0f26c48f2499525a9c540ba42430fabfe92fcf4d2cc140686c88a76d578ae45530c90e439c1f27989b9a90c0c5545a905390539892569f945b940234bf48b8b921d12c1660200c61a1aba",
            fromguid: None,
            object: 2,
            offset: 0x2c0000,
            bytes: 0x2e2878,
            toguid: 0x94a20a5f25877859,
            toname: "zreplplatformtest/src@a",
            compressok: false,
            rawok: false,
        },
        Real {
            origin: "zrepl platformtest dst/full_raw",
            token: "1-e3f40c323-f8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a796806474e0f26c48f2499525a9c540da454f0fabfe92fcf4d2cc140686c88a76d578ae45530c90e439c1f27989b9a90c0c5545a905390539892569f945b940234bf48b8b921d12c1e6713320dc9f9c9f5b50945a5c9c9f0d119380ba07265f94580e936200004ff12141",
            fromguid: None,
            object: 2,
            offset: 0x2c0000,
            bytes: 0x2e2e44,
            toguid: 0x94a20a5f25877859,
            toname: "zreplplatformtest/src@a",
            compressok: true,
            rawok: true,
        },
        Real {
            origin: "zrepl platformtest dst/inc",
            token: "1-eadabb296-e8-789c636064000310a501c49c50360710a715e5e7a69766a63040416445bb6a3cd7a2290a40363b92bafca4acd4e412060626a83a0cf9b4b4e2d412908c0e5c9e0d493ea9b224b518483ba8ea61d55f920f714515bf9b3fc3c396ef0648f29c60f9bcc4dc54a07c516a414e414e62495a7e512ed0c812fde2a2648724b09900d43e2191",
            fromguid: Some(0x94a20a5f25877859),
            object: 2,
            offset: 0x2c0000,
            bytes: 0x2e2540,
            toguid: 0xf784e1004f460f7a,
            toname: "zreplplatformtest/src@b",
            compressok: false,
            rawok: false,
        },
        Real {
            origin: "zrepl platformtest dst/inc_raw",
            token: "1-1164f8d409-120-789c636064000310a501c49c50360710a715e5e7a69766a63040416445bb6a3cd7a2290a40363b92bafca4acd4e412060626a83a0cf9b4b4e2d412908c0e5c9e0d493ea9b224b51848f368eb61d55f920f714515bf9b3fc3c396ef0648f29c60f9bcc4dc54a07c516a414e414e62495a7e512ed0c812fde2a2648724b079dc0c087f26e7e71614a51617e76743c424a0ee81c9172596c3a41800dd2c2818",
            fromguid: Some(0x94a20a5f25877859),
            object: 2,
            offset: 0x2c0000,
            bytes: 0x2e2b0c,
            toguid: 0xf784e1004f460f7a,
            toname: "zreplplatformtest/src@b",
            compressok: true,
            rawok: true,
        },
        Real {
            origin: "zrepl zfs_test.go TestDrySendInfo full",
            token: "1-9baebea70-b8-789c636064000310a500c4ec50360710e72765a52697303030419460caa7a515a79680647ce0f26c48f2499525a9c5405ac3c90fabfe92fcf4d2cc140686b30972c7850efd0cd24092e704cbe725e6a632305415e5e797e803cd2ad14f743084b805001b201795",
            fromguid: None,
            object: 2,
            offset: 0x4c0000,
            bytes: 0x4e4228,
            toguid: 0x52f9c212c71e60cd,
            toname: "zroot/test/a@1",
            compressok: false,
            rawok: false,
        },
        Real {
            origin: "zrepl zfs_test.go TestDrySendInfo incremental",
            token: "1-ef01e717e-e0-789c636064000310a501c49c50360710a715e5e7a69766a63040c1d904b9e342877e062900d9ec48eaf293b252934b181898a0ea30e4d3d28a534b40323e70793624f9a4ca92d46220fdc1ce0fabfe927c882bc46c8a0a9f71ad3baf8124cf0996cf4bcc4d6560a82acacf2fd1079a55a29fe86004710b00d8ae1f93",
            fromguid: Some(0x52f9c212c71e60cd),
            object: 2,
            offset: 0x4c0000,
            bytes: 0x4e3ef0,
            toguid: 0xcfae0ae671723c16,
            toname: "zroot/test/a@2",
            compressok: false,
            rawok: false,
        },
        Real {
            origin: "zrepl resume_token.go comment (incremental)",
            token: "1-c49b979a2-e0-789c636064000310a501c49c50360710a715e5e7a69766a63040c1eabb735735ce8f8d5400b2d991d4e52765a5269740f82080219f96569c5ac2000720793624f9a4ca92d46206547964fd25f91057f09e37babb88c9bf5503499e132c9f97989bcac050909f9f63a80f34abc421096616007c881d4c",
            fromguid: Some(0x595d9f81aa9dddab),
            object: 1,
            offset: 0,
            bytes: 0,
            toguid: 0x854f02a2dd32cf0d,
            toname: "pool1/test@b",
            compressok: false,
            rawok: false,
        },
    ];

    /// zrepl's "corrupted" platform test case: `inc_raw` with the zlib header overwritten.
    const ZREPL_CORRUPTED: &str = "1-1164f8d409-120-badf00d064000310a501c49c50360710a715e5e7a69766a63040416445bb6a3cd7a2290a40363b92bafca4acd4e412060626a83a0cf9b4b4e2d412908c0e5c9e0d493ea9b224b51848f368eb61d55f920f714515bf9b3fc3c396ef0648f29c60f9bcc4dc54a07c516a414e414e62495a7e512ed0c812fde2a2648724b079dc0c087f26e7e71614a51617e76743c424a0ee81c9172596c3a41800dd2c2818";

    fn expected(r: &Real) -> ResumeToken {
        ResumeToken {
            fromguid: r.fromguid,
            object: Some(r.object),
            offset: Some(r.offset),
            bytes: Some(r.bytes),
            compressok: r.compressok,
            rawok: r.rawok,
            ..ResumeToken::new(r.toguid, r.toname)
        }
    }

    fn real_packed(token: &str) -> Vec<u8> {
        let fields: Vec<&str> = token.split('-').collect();
        inflate(&decode_hex(fields[3]).unwrap(), MAX_PACKED_LEN).unwrap()
    }

    /// A token with a correct checksum and length around `packed`.
    fn forge(packed: &[u8]) -> String {
        wrap_compressed_payload(&deflate(packed), packed.len() as u64)
    }

    fn sample() -> ResumeToken {
        expected(&REAL[3])
    }

    /// A raw nvpair for [`native_le`]: name, type, nelem, value bytes, bytes to append after it.
    type RawPair = (&'static str, u32, u32, Vec<u8>, Vec<u8>);

    /// A native little-endian top-level nvlist from raw pairs (name, type, nelem, value bytes),
    /// with `after` appended after each pair (used for embedded nvlists).
    fn native_le(pairs: &[RawPair]) -> Vec<u8> {
        let mut out = vec![0, 1, 0, 0];
        put_u32(&mut out, 0, false);
        put_u32(&mut out, 1, false);
        for (name, ty, nelem, data, after) in pairs {
            native_pair(&mut out, false, name.as_bytes(), *ty, *nelem, data);
            out.extend_from_slice(after);
        }
        put_u32(&mut out, 0, false);
        out
    }

    fn le64(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn minimal_pairs() -> Vec<RawPair> {
        vec![
            ("toguid", 8, 1, le64(7), vec![]),
            ("toname", 9, 1, cstr("p/fs@s"), vec![]),
        ]
    }

    /// The `nvlist_t` value of a native embedded-nvlist pair.
    fn nvlist_t() -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[4] = 1; // NV_UNIQUE_NAME
        v
    }

    #[test]
    fn real_tokens_decode() {
        for r in REAL {
            let t = decode(r.token).unwrap_or_else(|e| panic!("{}: {e}", r.origin));
            assert_eq!(t, expected(r), "{}", r.origin);
            assert!(!t.largeblockok && !t.embedok && !t.savedok, "{}", r.origin);
            assert_eq!(t.redact_snaps, None);
            assert_eq!(t.book_redact_snaps, None);
            assert_eq!(t.is_incremental(), r.fromguid.is_some(), "{}", r.origin);
        }
    }

    #[test]
    fn real_tokens_are_native_little_endian_and_repack_identically() {
        for r in REAL {
            let packed = real_packed(r.token);
            assert_eq!(&packed[..4], &[0, 1, 0, 0], "{}: nvs_header_t", r.origin);
            let t = decode(r.token).unwrap();
            // Our packer reproduces the kernel's nvlist byte for byte (pair order included).
            assert_eq!(
                pack_nvlist(&t, NvlistEncoding::NativeLittleEndian),
                packed,
                "{}",
                r.origin
            );
            // And our whole token decodes the same (the zlib bytes may differ from the kernel's).
            assert_eq!(decode(&encode(&t)).unwrap(), t, "{}", r.origin);
        }
    }

    #[test]
    fn zrepl_json_shape_matches_platform_test_expectations() {
        // zrepl's ExpectToken values for its four platform test tokens.
        let full = ZreplDecodedToken::from(&decode(REAL[0].token).unwrap());
        assert_eq!(
            full,
            ZreplDecodedToken {
                has_from_guid: false,
                has_to_guid: true,
                from_guid: 0,
                to_guid: 0x94a20a5f25877859,
                to_name: "zreplplatformtest/src@a".into(),
                has_compress_ok: false,
                compress_ok: false,
                has_raw_ok: false,
                raw_ok: false,
                has_large_block_ok: false,
                large_block_ok: false,
                has_embed_ok: false,
                embed_ok: false,
                has_saved_ok: false,
                saved_ok: false,
            }
        );
        let inc_raw = ZreplDecodedToken::from(&decode(REAL[3].token).unwrap());
        assert!(inc_raw.has_from_guid && inc_raw.has_to_guid);
        assert_eq!(inc_raw.from_guid, 0x94a20a5f25877859);
        assert_eq!(inc_raw.to_guid, 0xf784e1004f460f7a);
        assert_eq!(inc_raw.to_name, "zreplplatformtest/src@b");
        assert!(inc_raw.has_compress_ok && inc_raw.compress_ok);
        assert!(inc_raw.has_raw_ok && inc_raw.raw_ok);
        assert!(!inc_raw.has_large_block_ok && !inc_raw.has_embed_ok && !inc_raw.has_saved_ok);
    }

    #[test]
    fn toname_helpers() {
        let t = decode(REAL[2].token).unwrap();
        assert_eq!(t.to_filesystem(), Some("zreplplatformtest/src"));
        assert_eq!(t.to_snapshot_name(), Some("b"));
        let no_at = ResumeToken::new(1, "pool/fs");
        assert_eq!(no_at.to_filesystem(), None);
        assert_eq!(no_at.to_snapshot_name(), None);
    }

    #[test]
    fn accepts_whitespace_and_uppercase_hex() {
        let r = &REAL[1];
        let t = decode(&format!("  \t{}\n", r.token)).unwrap();
        assert_eq!(t, expected(r));
        assert_eq!(decode(&r.token.to_ascii_uppercase()).unwrap(), expected(r));
    }

    #[test]
    fn all_encodings_decode_alike() {
        let mut t = sample();
        t.largeblockok = true;
        t.embedok = true;
        t.savedok = true;
        t.redact_snaps = Some(vec![1, u64::MAX, 0x1234_5678_9abc_def0]);
        t.book_redact_snaps = Some(vec![]);
        for enc in [
            NvlistEncoding::NativeLittleEndian,
            NvlistEncoding::NativeBigEndian,
            NvlistEncoding::Xdr,
        ] {
            let s = encode_with(&t, enc);
            assert_eq!(decode(&s), Ok(t.clone()), "{enc:?}");
            let packed = pack_nvlist(&t, enc);
            assert_eq!(decode_packed_nvlist(&packed), Ok(t.clone()), "{enc:?}");
        }
        // A big-endian host's token carries a big-endian checksum.
        let be = encode_with(&t, NvlistEncoding::NativeBigEndian);
        let fields: Vec<&str> = be.split('-').collect();
        let compressed = decode_hex(fields[3]).unwrap();
        assert_eq!(
            u64::from_str_radix(fields[1], 16).unwrap(),
            fletcher4_word0(&compressed, true)
        );
        assert_eq!(
            pack_nvlist(&t, NvlistEncoding::NativeBigEndian)[..2],
            [0, 0]
        );
        assert_eq!(pack_nvlist(&t, NvlistEncoding::Xdr)[..1], [1]);
    }

    #[test]
    fn checksum_is_word0_of_fletcher4_ignoring_partial_word() {
        assert_eq!(fletcher4_word0(&[], false), 0);
        assert_eq!(fletcher4_word0(&[1, 0, 0, 0, 2, 0, 0, 0, 9], false), 3);
        assert_eq!(fletcher4_word0(&[0, 0, 0, 1, 0, 0, 0, 2, 9, 9], true), 3);
        assert_eq!(fletcher4_word0(&[0xff; 8], false), 2 * 0xffff_ffff);
    }

    #[test]
    fn unknown_fields_of_every_type_are_skipped() {
        let mut pairs = minimal_pairs();
        // byte, int16, boolean_value, double, hrtime, uint8 array, string array.
        pairs.push(("a_byte", 2, 1, vec![7], vec![]));
        pairs.push(("a_int16", 3, 1, vec![7, 0], vec![]));
        pairs.push(("a_bool", 21, 1, vec![1, 0, 0, 0], vec![]));
        pairs.push(("a_double", 27, 1, 1.5f64.to_le_bytes().to_vec(), vec![]));
        pairs.push(("a_u8s", 26, 3, vec![1, 2, 3], vec![]));
        let mut strs = vec![0u8; 16];
        strs.extend_from_slice(b"ab\0c\0");
        pairs.push(("a_strs", 17, 2, strs, vec![]));
        // An embedded nvlist holding one uint64 and an empty embedded nvlist array... of 1.
        let mut inner = Vec::new();
        native_pair(&mut inner, false, b"x", 8, 1, &le64(1));
        let mut arr = vec![0u8; 8];
        arr.extend_from_slice(&nvlist_t());
        native_pair(&mut inner, false, b"arr", 20, 1, &arr);
        put_u32(&mut inner, 0, false); // end of the array's single list
        put_u32(&mut inner, 0, false); // end of the embedded list
        pairs.push(("nested", 19, 1, nvlist_t(), inner));
        let packed = native_le(&pairs);
        let t = decode(&forge(&packed)).unwrap();
        assert_eq!(t, ResumeToken::new(7, "p/fs@s"));
    }

    /// XDR pair with raw data, for unusual types.
    fn xdr_raw(out: &mut Vec<u8>, name: &str, ty: u32, nelem: u32, data: &[u8]) {
        put_u32(out, 0, true); // encode size (unused by decoders)
        put_u32(out, 64, true); // decode size
        xdr_put_bytes(out, name.as_bytes());
        put_u32(out, ty, true);
        put_u32(out, nelem, true);
        out.extend_from_slice(data);
    }

    #[test]
    fn xdr_unknown_fields_are_skipped() {
        let t = ResumeToken::new(9, "a@b");
        let mut packed = pack_nvlist(&t, NvlistEncoding::Xdr);
        packed.truncate(packed.len() - 8); // reopen the list
        xdr_raw(&mut packed, "bytes8", 10, 5, &[1, 2, 3, 4, 5, 0, 0, 0]);
        let mut i8s = Vec::new();
        put_u32(&mut i8s, 2, true);
        put_u32(&mut i8s, 1, true);
        put_u32(&mut i8s, 2, true);
        xdr_raw(&mut packed, "i8s", 25, 2, &i8s);
        let mut strs = Vec::new();
        xdr_put_bytes(&mut strs, b"one");
        xdr_put_bytes(&mut strs, b"three");
        xdr_raw(&mut packed, "strs", 17, 2, &strs);
        let mut nested = Vec::new();
        put_u32(&mut nested, 0, true);
        put_u32(&mut nested, 1, true);
        xdr_raw(&mut nested, "flag", 1, 0, &[]);
        nested.extend_from_slice(&[0; 8]);
        xdr_raw(&mut packed, "nested", 19, 1, &nested);
        packed.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&forge(&packed)), Ok(t));
    }

    fn err(token: &str) -> ResumeTokenError {
        decode(token).expect_err(token)
    }

    fn packed_err(pairs: &[RawPair]) -> ResumeTokenError {
        decode(&forge(&native_le(pairs))).expect_err("forged token must not decode")
    }

    #[test]
    fn token_level_errors() {
        use ResumeTokenError as E;
        let good = REAL[0].token;
        let payload = good.rsplit('-').next().unwrap();
        let cases: Vec<(String, E)> = vec![
            ("".into(), E::Empty),
            (" \n\t".into(), E::Empty),
            ("-".into(), E::Empty),
            ("1-abc".into(), E::FieldCount { found: 2 }),
            ("1-abc-10".into(), E::FieldCount { found: 3 }),
            (format!("{good}-00"), E::FieldCount { found: 5 }),
            (
                format!("x-1-2-{payload}"),
                E::BadNumber {
                    field: "version",
                    radix: "decimal",
                    value: "x".into(),
                },
            ),
            (
                format!("+1-1-2-{payload}"),
                E::BadNumber {
                    field: "version",
                    radix: "decimal",
                    value: "+1".into(),
                },
            ),
            (
                format!("1-xyz-2-{payload}"),
                E::BadNumber {
                    field: "checksum",
                    radix: "hexadecimal",
                    value: "xyz".into(),
                },
            ),
            (
                format!("1--2-{payload}"),
                E::BadNumber {
                    field: "checksum",
                    radix: "hexadecimal",
                    value: "".into(),
                },
            ),
            (
                format!("1-11112222333344445-c0-{payload}"),
                E::BadNumber {
                    field: "checksum",
                    radix: "hexadecimal",
                    value: "11112222333344445".into(),
                },
            ),
            (
                format!("1-b338b54f3-0xc0-{payload}"),
                E::BadNumber {
                    field: "length",
                    radix: "hexadecimal",
                    value: "0xc0".into(),
                },
            ),
            (good.replacen("1-", "2-", 1), E::UnsupportedVersion(2)),
            (good.replacen("1-", "0-", 1), E::UnsupportedVersion(0)),
            (
                good.replacen("-c0-", "-100001-", 1),
                E::PackedLengthTooLarge {
                    declared: 0x100001,
                    max: MAX_PACKED_LEN,
                },
            ),
            (
                good.replacen("-c0-", "-ffffffffffffffff-", 1),
                E::PackedLengthTooLarge {
                    declared: u64::MAX,
                    max: MAX_PACKED_LEN,
                },
            ),
            (
                format!("{good}0"),
                E::OddHexLength {
                    len: payload.len() + 1,
                },
            ),
            (
                good.replacen("-789c", "-78g9c", 1),
                E::BadHex { offset: 2, ch: 'g' },
            ),
            (
                good.replacen("-789c", "-78é9", 1),
                E::BadHex {
                    offset: 2, ch: 'é'
                },
            ),
            (
                // The checksum does not cover the declared length, so this gets past it.
                good.replacen("-c0-", "-c1-", 1),
                E::LengthMismatch {
                    declared: 0xc1,
                    actual: 0xc0,
                },
            ),
            (
                good.replacen("-c0-", "-bf-", 1),
                E::LengthMismatch {
                    declared: 0xbf,
                    actual: 0xc0,
                },
            ),
        ];
        for (token, want) in cases {
            assert_eq!(err(&token), want, "{token:?}");
        }
        let long = format!("1-0-10-{}", "0".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            err(&long),
            E::TooLong {
                len: long.len(),
                max: MAX_TOKEN_LEN
            }
        );
    }

    #[test]
    fn checksum_mismatch_zrepl_corrupted_vector() {
        match err(ZREPL_CORRUPTED) {
            ResumeTokenError::ChecksumMismatch { expected, got, .. } => {
                assert_eq!(expected, 0x1164f8d409);
                assert_ne!(got, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Any payload change in a whole word is caught; a changed checksum field too.
        let good = REAL[4].token;
        let altered = good.replacen("-789c6360", "-789c6361", 1);
        assert!(matches!(
            err(&altered),
            ResumeTokenError::ChecksumMismatch { .. }
        ));
        let altered = good.replacen("1-9baebea70-", "1-9baebea71-", 1);
        assert_eq!(
            err(&altered),
            ResumeTokenError::ChecksumMismatch {
                expected: 0x9baebea71,
                got: 0x9baebea70,
                got_big_endian: fletcher4_word0(
                    &decode_hex(good.rsplit('-').next().unwrap()).unwrap(),
                    true
                ),
            }
        );
    }

    #[test]
    fn compression_layer_errors() {
        use ResumeTokenError as E;
        // Not zlib at all.
        assert!(matches!(
            err(&wrap_compressed_payload(b"definitely not zlib", 10)),
            E::Decompression(_)
        ));
        // Empty payload.
        assert!(matches!(err("1-0-10-"), E::Decompression(_)));
        // A zlib stream cut short.
        let packed = pack_nvlist(&sample(), NvlistEncoding::NativeLittleEndian);
        let z = deflate(&packed);
        assert!(matches!(
            err(&wrap_compressed_payload(
                &z[..z.len() / 2],
                packed.len() as u64
            )),
            E::Decompression(_)
        ));
        // The zlib trailer (adler32) is checked: the fletcher sum skips a partial last word,
        // so damage there must be caught by zlib.
        let mut bad = z.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            err(&wrap_compressed_payload(&bad, packed.len() as u64)),
            E::Decompression(_)
        ));
        // Data after the end of the zlib stream.
        let mut trailing = z.clone();
        trailing.extend_from_slice(&[0, 0]);
        assert_eq!(
            err(&wrap_compressed_payload(&trailing, packed.len() as u64)),
            E::TrailingData {
                after: "zlib stream",
                bytes: 2
            }
        );
        // A zip bomb is cut off at the cap.
        let bomb = deflate(&vec![0u8; MAX_PACKED_LEN + 1]);
        assert_eq!(
            err(&wrap_compressed_payload(&bomb, MAX_PACKED_LEN as u64)),
            E::DecompressedTooLarge {
                max: MAX_PACKED_LEN
            }
        );
    }

    #[test]
    fn nvlist_layer_errors() {
        use ResumeTokenError as E;
        let good = native_le(&minimal_pairs());
        assert_eq!(
            decode_packed_nvlist(&good),
            Ok(ResumeToken::new(7, "p/fs@s"))
        );

        // Truncated anywhere.
        for cut in [0, 2, 4, 10, 12, 20, good.len() - 4, good.len() - 1] {
            let e = decode(&forge(&good[..cut])).unwrap_err();
            assert!(matches!(e, E::Truncated { .. }), "cut at {cut}: {e:?}");
        }
        // Trailing data after the nvlist.
        let mut long = good.clone();
        long.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            decode(&forge(&long)),
            Err(E::TrailingData {
                after: "packed nvlist",
                bytes: 3
            })
        );
        // Header bytes.
        let mut x = good.clone();
        x[0] = 2;
        assert_eq!(decode(&forge(&x)), Err(E::UnsupportedEncoding(2)));
        let mut x = good.clone();
        x[1] = 7;
        assert_eq!(decode(&forge(&x)), Err(E::UnsupportedEndianness(7)));
        let mut x = good.clone();
        x[4] = 1;
        assert_eq!(decode(&forge(&x)), Err(E::UnsupportedNvlistVersion(1)));
        // Little-endian data labelled big-endian: sizes become absurd.
        let mut x = good.clone();
        x[1] = 0;
        assert!(decode(&forge(&x)).is_err());

        // Malformed pairs.
        let mut x = good.clone();
        x[12..16].copy_from_slice(&16u32.to_le_bytes()); // pair size below minimum
        assert!(matches!(decode(&forge(&x)), Err(E::MalformedNvlist { .. })));
        let mut x = good.clone();
        x[12..16].copy_from_slice(&(-8i32).to_le_bytes());
        assert!(matches!(decode(&forge(&x)), Err(E::MalformedNvlist { .. })));
        let mut x = good.clone();
        x[12..16].copy_from_slice(&0x1000u32.to_le_bytes()); // beyond the end
        assert!(matches!(decode(&forge(&x)), Err(E::Truncated { .. })));
        let mut x = good.clone();
        x[16..18].copy_from_slice(&0i16.to_le_bytes()); // name size 0
        assert!(matches!(decode(&forge(&x)), Err(E::MalformedNvlist { .. })));
        let mut x = good.clone();
        x[16..18].copy_from_slice(&100i16.to_le_bytes()); // name longer than the pair
        assert!(matches!(decode(&forge(&x)), Err(E::MalformedNvlist { .. })));
        let mut x = good.clone();
        x[16..18].copy_from_slice(&3i16.to_le_bytes()); // name not NUL-terminated at its size
        assert!(matches!(decode(&forge(&x)), Err(E::MalformedNvlist { .. })));

        let m = |pairs: &[RawPair]| {
            let e = packed_err(pairs);
            assert!(matches!(e, E::MalformedNvlist { .. }), "{e:?}");
        };
        m(&[("x", 99, 1, vec![0; 8], vec![])]); // unknown type
        m(&[("x", 0, 1, vec![0; 8], vec![])]); // DATA_TYPE_UNKNOWN
        m(&[("x", 1, 1, vec![], vec![])]); // boolean with an element
        m(&[("x", 8, 2, le64(1), vec![])]); // uint64 with 2 elements
        m(&[("x", 9, 1, b"abcdefgh".to_vec(), vec![])]); // unterminated string
        m(&[("x", 21, 1, vec![2, 0, 0, 0], vec![])]); // boolean value 2
        m(&[("x", 16, 3, le64(1), vec![])]); // array larger than the pair
        m(&[("x", 17, 2, vec![0; 16], vec![])]); // string array without strings
        m(&[("x", 19, 1, vec![0; 8], vec![])]); // nvlist_t missing

        // An embedded nvlist with an unsupported version.
        let mut hdr = nvlist_t();
        hdr[0] = 3;
        assert_eq!(
            packed_err(&[("x", 19, 1, hdr, vec![0; 4])]),
            E::UnsupportedNvlistVersion(3)
        );
    }

    #[test]
    fn nesting_is_limited() {
        fn nested(levels: usize) -> Vec<u8> {
            // levels embedded nvlists inside each other, inside a top-level list with the
            // required fields.
            let mut pairs = minimal_pairs();
            let mut after = Vec::new();
            for _ in 1..levels {
                native_pair(&mut after, false, b"n", 19, 1, &nvlist_t());
            }
            after.extend(std::iter::repeat_n(0u8, 4 * levels));
            pairs.push(("n", 19, 1, nvlist_t(), after));
            native_le(&pairs)
        }
        assert!(decode(&forge(&nested(MAX_NVLIST_DEPTH))).is_ok());
        assert_eq!(
            decode(&forge(&nested(MAX_NVLIST_DEPTH + 1))),
            Err(ResumeTokenError::TooDeep {
                max: MAX_NVLIST_DEPTH
            })
        );
        assert_eq!(
            decode(&forge(&nested(1000))),
            Err(ResumeTokenError::TooDeep {
                max: MAX_NVLIST_DEPTH
            })
        );
    }

    #[test]
    fn field_level_errors() {
        use ResumeTokenError as E;
        let with = |extra: (&'static str, u32, u32, Vec<u8>, Vec<u8>)| {
            let mut p = minimal_pairs();
            p.push(extra);
            p
        };
        assert_eq!(
            packed_err(&[
                ("toguid", 9, 1, cstr("123"), vec![]),
                ("toname", 9, 1, cstr("a@b"), vec![]),
            ]),
            E::WrongType {
                field: "toguid",
                expected: "uint64",
                found: "string"
            }
        );
        assert_eq!(
            packed_err(&[
                ("toguid", 8, 1, le64(1), vec![]),
                ("toname", 8, 1, le64(1), vec![]),
            ]),
            E::WrongType {
                field: "toname",
                expected: "string",
                found: "uint64"
            }
        );
        assert_eq!(
            packed_err(&with(("fromguid", 6, 1, vec![1, 0, 0, 0], vec![]))),
            E::WrongType {
                field: "fromguid",
                expected: "uint64",
                found: "uint32"
            }
        );
        assert_eq!(
            packed_err(&with(("rawok", 21, 1, vec![0; 4], vec![]))),
            E::WrongType {
                field: "rawok",
                expected: "boolean",
                found: "boolean value"
            }
        );
        assert_eq!(
            packed_err(&with(("redact_snaps", 8, 1, le64(1), vec![]))),
            E::WrongType {
                field: "redact_snaps",
                expected: "uint64 array",
                found: "uint64"
            }
        );
        assert_eq!(
            packed_err(&with(("toguid", 8, 1, le64(8), vec![]))),
            E::DuplicateField { field: "toguid" }
        );
        let mut twice = with(("compressok", 1, 0, vec![], vec![]));
        twice.push(("compressok", 1, 0, vec![], vec![]));
        assert_eq!(
            packed_err(&twice),
            E::DuplicateField {
                field: "compressok"
            }
        );
        assert_eq!(
            packed_err(&[("toname", 9, 1, cstr("a@b"), vec![])]),
            E::MissingField("toguid")
        );
        assert_eq!(
            packed_err(&[("toguid", 8, 1, le64(1), vec![])]),
            E::MissingField("toname")
        );
        assert_eq!(
            packed_err(&[
                ("toguid", 8, 1, le64(1), vec![]),
                ("toname", 9, 1, vec![b'a', 0xff, b'@', b'b', 0], vec![]),
            ]),
            E::InvalidUtf8 { field: "toname" }
        );
        // A NUL inside a name is malformed.
        let mut p = minimal_pairs();
        p.push(("to\u{0}guid", 8, 1, le64(1), vec![]));
        assert!(matches!(packed_err(&p), E::MalformedNvlist { .. }));
        // Names that are not UTF-8 are simply unknown fields.
        let mut packed = native_le(&minimal_pairs());
        packed.truncate(packed.len() - 4);
        native_pair(&mut packed, false, b"\xfftoguid", 9, 1, b"x\0");
        put_u32(&mut packed, 0, false);
        assert_eq!(decode(&forge(&packed)), Ok(ResumeToken::new(7, "p/fs@s")));
    }

    #[test]
    fn errors_have_actionable_messages() {
        let e = err(ZREPL_CORRUPTED).to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains("0x1164f8d409"),
            "{e}"
        );
        let e = err("1-abc").to_string();
        assert!(e.contains("expected 4"), "{e}");
        let e = err("-").to_string();
        assert!(e.contains("no partial receive state"), "{e}");
    }

    fn arb_token() -> impl Strategy<Value = ResumeToken> {
        let name = prop_oneof![
            "[a-zA-Z0-9_.:-]{1,20}(/[a-zA-Z0-9_.: -]{1,20}){0,4}@[a-zA-Z0-9_.:-]{1,20}",
            "[^\u{0}]{0,40}",
        ];
        let guids = proptest::collection::vec(any::<u64>(), 0..6);
        (
            (any::<u64>(), name, proptest::option::of(any::<u64>())),
            proptest::array::uniform3(proptest::option::of(any::<u64>())),
            proptest::array::uniform5(any::<bool>()),
            proptest::option::of(guids.clone()),
            proptest::option::of(guids),
        )
            .prop_map(
                |((toguid, toname, fromguid), [object, offset, bytes], flags, rs, brs)| {
                    let [largeblockok, embedok, compressok, rawok, savedok] = flags;
                    ResumeToken {
                        toguid,
                        toname,
                        fromguid,
                        object,
                        offset,
                        bytes,
                        largeblockok,
                        embedok,
                        compressok,
                        rawok,
                        savedok,
                        redact_snaps: rs,
                        book_redact_snaps: brs,
                    }
                },
            )
    }

    fn arb_encoding() -> impl Strategy<Value = NvlistEncoding> {
        prop_oneof![
            Just(NvlistEncoding::NativeLittleEndian),
            Just(NvlistEncoding::NativeBigEndian),
            Just(NvlistEncoding::Xdr),
        ]
    }

    proptest! {
        #[test]
        fn prop_roundtrip(t in arb_token(), enc in arb_encoding()) {
            prop_assert_eq!(decode(&encode_with(&t, enc)), Ok(t.clone()));
            prop_assert_eq!(decode(&encode(&t)), Ok(t));
        }

        #[test]
        fn prop_decode_never_panics_on_strings(s in ".{0,300}") {
            let _ = decode(&s);
        }

        #[test]
        fn prop_decode_never_panics_on_token_like_strings(
            s in "[0-9]{0,2}-[0-9a-fA-F]{0,17}-[0-9a-f]{0,6}-[0-9a-fg]{0,400}"
        ) {
            let _ = decode(&s);
        }

        #[test]
        fn prop_decode_never_panics_on_mutated_tokens(
            which in 0..REAL.len(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), "[0-9a-f\\- g]"), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut s: Vec<char> = REAL[which].token.chars().collect();
            for (i, c) in edits {
                let i = i.index(s.len());
                s[i] = c.chars().next().unwrap();
            }
            if let Some(c) = cut {
                s.truncate(c.index(s.len() + 1));
            }
            let s: String = s.into_iter().collect();
            let _ = decode(&s);
        }

        #[test]
        fn prop_packed_nvlist_never_panics_on_bytes(
            b in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let _ = decode_packed_nvlist(&b);
            let mut hdr = vec![0u8, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
            hdr.extend_from_slice(&b);
            let _ = decode_packed_nvlist(&hdr);
            hdr[0] = 1;
            let _ = decode_packed_nvlist(&hdr);
        }

        /// Mutations of valid packed nvlists reach deep into the parser; the full token path
        /// must agree with the nvlist-only path.
        #[test]
        fn prop_mutated_nvlists(
            t in arb_token(),
            enc in arb_encoding(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut p = pack_nvlist(&t, enc);
            for (i, v) in edits {
                let i = i.index(p.len());
                p[i] = v;
            }
            if let Some(c) = cut {
                p.truncate(c.index(p.len() + 1));
            }
            let direct = decode_packed_nvlist(&p);
            prop_assert_eq!(decode(&forge(&p)), direct.clone());
            if let Ok(t2) = direct {
                prop_assert_eq!(decode(&encode(&t2)), Ok(t2));
            }
        }
    }
}

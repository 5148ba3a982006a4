//! Fuzz target for `zrepl_zfs_types::resume_token`.
//!
//! Run it (needs a nightly toolchain and `cargo install cargo-fuzz`), from `fuzz/`:
//!
//! ```text
//! cargo +nightly fuzz run resume_token                  # until stopped
//! cargo +nightly fuzz run resume_token -- -max_total_time=60
//! ```
//!
//! Check that it builds on stable, from the repository root:
//! `cargo check --manifest-path fuzz/Cargo.toml`.
//!
//! Each input is used three ways, so that the fuzzer reaches every layer of the decoder:
//!
//! 1. as a token string (when it is UTF-8): the header, hex and checksum layers;
//! 2. as a packed nvlist, both directly and wrapped into a token with a correct checksum and
//!    length around its zlib compression: the nvlist parser; both paths must agree;
//! 3. as a zlib payload behind a 2-byte declared length, with a correct checksum: the
//!    decompression layer.
//!
//! Whatever decodes must survive a round trip through `encode`.

#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use zrepl_zfs_types::resume_token::{
    decode, decode_packed_nvlist, encode, wrap_compressed_payload, ResumeToken, ResumeTokenError,
    MAX_PACKED_LEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        roundtrip(decode(s));
    }

    let direct = decode_packed_nvlist(data);
    if data.len() <= MAX_PACKED_LEN {
        let token = wrap_compressed_payload(&zlib(data), data.len() as u64);
        assert_eq!(
            decode(&token),
            direct,
            "token path and nvlist path disagree"
        );
    }
    roundtrip(direct);

    if let [a, b, payload @ ..] = data {
        let declared = u64::from(u16::from_le_bytes([*a, *b]));
        roundtrip(decode(&wrap_compressed_payload(payload, declared)));
    }
});

fn roundtrip(decoded: Result<ResumeToken, ResumeTokenError>) {
    if let Ok(t) = decoded {
        match decode(&encode(&t)) {
            Ok(again) => assert_eq!(again, t, "decode(encode(t)) != t"),
            // Re-packing natively can grow an XDR nvlist that was right at the size cap.
            Err(ResumeTokenError::DecompressedTooLarge { .. })
            | Err(ResumeTokenError::PackedLengthTooLarge { .. }) => {}
            Err(e) => panic!("re-encoded token does not decode: {e}"),
        }
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("in-memory compression");
    enc.finish().expect("in-memory compression")
}

//! Fuzz target for `zrepl_zfs::read_send_begin`, which reads the header of every zfs stream a
//! receiver gets from a peer (and of every stream the sender's `zfs send` produces) before
//! anything is changed: the first BEGIN record and, for a compound stream, its properties, END
//! record and the substream's BEGIN record.
//!
//! Run it from `fuzz/` (nightly, `cargo install cargo-fuzz`):
//! `cargo +nightly fuzz run send_stream_header -- -max_total_time=60`.
//!
//! Properties: no panic, no allocation beyond the declared (bounded) header; what it returns
//! is a prefix of the input that ends right after the last BEGIN record read, and the BEGIN it
//! returns is never a compound one, and it may carry properties exactly when the stream has a
//! compound header with a payload.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut r = std::io::Cursor::new(data.to_vec());
    if let Ok((head, begin)) = rt.block_on(zrepl_zfs::read_send_begin(&mut r)) {
        assert!(
            data.starts_with(&head),
            "returned bytes are not the input's prefix"
        );
        assert_eq!(r.position() as usize, head.len());
        assert!(!begin.compound);
        assert!(
            head.len() == zrepl_zfs::SEND_BEGIN_LEN || head.len() >= 3 * zrepl_zfs::SEND_BEGIN_LEN
        );
        // A compound stream with a header may carry properties; a plain one, or a compound
        // one without a header (a package), not.
        let with_header = head.len() > 3 * zrepl_zfs::SEND_BEGIN_LEN;
        assert_eq!(begin.may_carry_properties, with_header);
        let mut again =
            zrepl_zfs::parse_send_begin(&head[head.len() - zrepl_zfs::SEND_BEGIN_LEN..])
                .expect("the returned BEGIN parses again");
        again.may_carry_properties = with_header;
        assert_eq!(again, begin);
    }
});

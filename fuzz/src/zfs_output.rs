//! The parsers of `zfs` output and the classifiers of its stderr (`zrepl_zfs::parse`, and
//! `zrepl_endpoint::classify_recv_failure` for a failed `zfs recv`, whose stderr echoes names and
//! data from the peer's stream).
//!
//! Input: a selector byte, then the text (lossy UTF-8, as the command runner reads it). Beyond
//! "no panic": what parses prints back and parses to the same value, listings come out in
//! zrepl's order with valid names, the classifiers agree with each other, and a receive failure's
//! class is deterministic, ignores ASCII case and is decided line by line.

use std::fmt::Write;

use zrepl_endpoint::{classify_recv_failure, RecvFailure};
use zrepl_zfs::parse::{
    dataset_does_not_exist_path, is_bookmark_does_not_exist, is_bookmark_exists,
    is_dataset_does_not_exist, is_destroy_no_snapshots, is_hold_tag_exists,
    is_recv_abort_nothing_to_abort, is_recv_cannot_read_from_stream,
    is_recv_destroy_or_overwrite_encrypted, is_release_no_such_tag, parse_dataset_names,
    parse_destroy_snapshots_error, parse_get, parse_holds, parse_program_return,
    parse_send_dry_run, parse_versions_listing, parse_zfs_version, recv_resume_token,
    split_get_listing, PropertySource, VersionsByFilesystem,
};
use zrepl_zfs_types::VersionType;

pub const KINDS: &[&str] = &[
    "list",
    "get",
    "holds",
    "names",
    "send-dry-run",
    "version",
    "program",
    "stderr",
    "destroy-stderr",
    "recv-stderr",
];

pub fn run(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match KINDS[sel as usize % KINDS.len()] {
        "list" => list(&text),
        "get" => get(&text),
        "holds" => {
            if let Ok(h) = parse_holds(&text) {
                assert_eq!(h.len(), text.split_terminator('\n').count());
                assert!(h
                    .iter()
                    .all(|(n, t)| !n.contains('\t') && !t.contains('\n')));
            }
        }
        "names" => {
            if let Ok(names) = parse_dataset_names(&text) {
                let again: String = names.iter().map(|n| format!("{n}\n")).collect();
                assert_eq!(parse_dataset_names(&again).as_ref(), Ok(&names));
            }
        }
        "send-dry-run" => {
            if let Ok(i) = parse_send_dry_run(&text, 1 << 40) {
                assert!(i.size < 1 << 40);
                assert!(i.to.contains('@'));
            }
        }
        "version" => {
            let _ = parse_zfs_version(&text);
        }
        "program" => {
            let _ = parse_program_return(&text);
        }
        "stderr" => stderr(&text),
        "destroy-stderr" => {
            let (fs, stderr) = text.split_once('\n').unwrap_or((&text, ""));
            if let Some(u) = parse_destroy_snapshots_error(fs, stderr) {
                assert_eq!(u.len(), stderr.lines().count());
                assert!(u.iter().all(|u| !u.snapshot.is_empty()));
            }
        }
        "recv-stderr" => recv_stderr(&text),
        other => unreachable!("{other}"),
    }
}

fn print_listing(m: &VersionsByFilesystem) -> String {
    let mut out = String::new();
    for (fs, versions) in m {
        writeln!(out, "{fs}\t0\t0\t0\t-").unwrap();
        for v in versions {
            let (delim, refs) = match v.typ {
                VersionType::Snapshot => ('@', v.userrefs.unwrap_or(0).to_string()),
                VersionType::Bookmark => ('#', "-".to_string()),
            };
            writeln!(
                out,
                "{fs}{delim}{}\t{}\t{}\t{}\t{refs}",
                v.name, v.guid, v.createtxg, v.creation
            )
            .unwrap();
        }
    }
    out
}

fn list(text: &str) {
    let Ok(m) = parse_versions_listing(text) else {
        return;
    };
    for versions in m.values() {
        assert!(versions
            .windows(2)
            .all(|w| w[0].order_key() <= w[1].order_key()));
        for v in versions {
            assert!(zrepl_zfs_types::name::check_component(&v.name).is_ok());
            assert_eq!(v.userrefs.is_some(), v.typ == VersionType::Snapshot);
        }
    }
    let again = parse_versions_listing(&print_listing(&m)).expect("printed listing parses");
    assert_eq!(again, m);
}

fn source(s: &PropertySource) -> String {
    match s {
        PropertySource::Local => "local".into(),
        PropertySource::Default => "default".into(),
        PropertySource::Inherited { from } => format!("inherited from {from}"),
        PropertySource::None => "-".into(),
        PropertySource::Temporary => "temporary".into(),
        PropertySource::Received => "received".into(),
    }
}

fn get(text: &str) {
    let Ok(rows) = parse_get(text) else {
        return;
    };
    let mut printed = String::new();
    for (name, props) in &rows {
        for (p, v) in props {
            writeln!(printed, "{name}\t{p}\t{}\t{}", v.value, source(&v.source)).unwrap();
        }
    }
    let again = parse_get(&printed).expect("printed rows parse");
    assert_eq!(again, rows);
    if let Ok((props, versions)) = split_get_listing(rows, &["zrepl:placeholder"]) {
        // The user property is absent when not set locally (read with `-s local,none`).
        assert!(props.values().all(|p| p.len() <= 1));
        for vs in versions.values() {
            assert!(vs.windows(2).all(|w| w[0].order_key() <= w[1].order_key()));
        }
        assert!(props.keys().all(|k| versions.contains_key(k)));
    }
}

fn stderr(text: &str) {
    if let Some(p) = dataset_does_not_exist_path(text) {
        assert!(is_dataset_does_not_exist(text, p));
    }
    if let Some(t) = recv_resume_token(text) {
        assert!(!t.is_empty() && !t.contains(char::is_whitespace) && text.contains(t));
    }
    let first = text.lines().next().unwrap_or("");
    let _ = is_dataset_does_not_exist(text, first);
    let _ = is_bookmark_does_not_exist(text, first);
    let _ = is_bookmark_exists(text);
    let _ = is_destroy_no_snapshots(text);
    let _ = is_recv_destroy_or_overwrite_encrypted(text);
    let _ = is_recv_cannot_read_from_stream(text);
    let _ = is_recv_abort_nothing_to_abort(text);
    let _ = is_hold_tag_exists(text);
    let _ = is_release_no_such_tag(text);
}

/// The class of several lines' worth of stderr: out of space wins over modified.
fn join(a: Option<RecvFailure>, b: Option<RecvFailure>) -> Option<RecvFailure> {
    match (a, b) {
        (Some(RecvFailure::OutOfSpace), _) | (_, Some(RecvFailure::OutOfSpace)) => {
            Some(RecvFailure::OutOfSpace)
        }
        (Some(RecvFailure::Modified), _) | (_, Some(RecvFailure::Modified)) => {
            Some(RecvFailure::Modified)
        }
        (None, None) => None,
    }
}

fn recv_stderr(text: &str) {
    let class = classify_recv_failure(text);
    assert_eq!(classify_recv_failure(text), class, "deterministic");
    // OpenZFS's casing is not relied on (and a rewording in case only does not change a hint).
    assert_eq!(classify_recv_failure(&text.to_ascii_uppercase()), class);
    assert_eq!(classify_recv_failure(&text.to_ascii_lowercase()), class);
    // Decided by single lines: no phrase is made of text spread over lines, so the class of the
    // whole is the class of its lines, and a line keeps its class whatever surrounds it.
    let lines = text.split('\n').map(classify_recv_failure);
    assert_eq!(lines.clone().fold(None, join), class);
    if let Some(c) = class {
        assert!(lines.clone().any(|l| l == Some(c)));
    }
    let wrapped =
        format!("cannot receive: failed to read from stream\n{text}\nsince most recent snapshot");
    assert_eq!(classify_recv_failure(&wrapped), class);
    // The `zrepl_zfs` classifiers of the same stderr do not panic on it either.
    if let Some(t) = recv_resume_token(text) {
        assert!(text.contains(t));
    }
    let _ = is_recv_cannot_read_from_stream(text);
    let _ = is_recv_destroy_or_overwrite_encrypted(text);
}

/// Seeds: captured outputs and messages (from this crate's unit tests and OpenZFS 2.3).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let seed = |kind: &str, name: &str, text: &str| {
        let sel = KINDS.iter().position(|k| *k == kind).expect("known kind") as u8;
        let mut s = vec![sel];
        s.extend_from_slice(text.as_bytes());
        (format!("{kind}-{name}"), s)
    };
    vec![
        seed(
            "list",
            "subtree",
            "pool/a\t111\t5\t1700000000\t-\npool/b b\t222\t6\t1700000001\t-\n\
             pool/a@s1\t10\t7\t1700000002\t0\npool/b b@s 1\t20\t7\t1700000002\t2\n\
             pool/a#s1\t10\t7\t1700000002\t-\npool/a@s2\t11\t9\t1700000003\t1\n",
        ),
        seed(
            "list",
            "zrepl-names",
            "pool/src\t7311098371519386497\t26\t1764000000\t-\n\
             pool/src@zrepl_20251201_000000_000\t16245917412830394839\t40\t1764547200\t1\n\
             pool/src#zrepl_CURSOR_G_e175b5b7dde1a7d7_J_push\t16245917412830394839\t40\t1764547200\t-\n\
             pool/src@zrepl_20251201_001000_000\t4021117425862181090\t52\t1764547800\t0\n",
        ),
        seed(
            "list",
            "unsorted",
            "p/x@c\t3\t30\t3\t0\np/x@a\t1\t10\t1\t0\np/x#b\t2\t20\t2\t-\np/x@b\t2\t20\t2\t0\n",
        ),
        seed(
            "get",
            "props",
            "pool/a\tzrepl:placeholder\ton\tlocal\npool/a\tmountpoint\t/mnt/a\tinherited from pool\n\
             pool/a\treceive_resume_token\t-\t-\npool/a\tweird\tx\ty\treceived\n",
        ),
        seed(
            "get",
            "listing",
            "p/u\tguid\t1\t-\np/u\tcreatetxg\t9\t-\np/u\tcreation\t100\t-\n\
             p/u\tuserrefs\t-\t-\np/u\tzrepl:placeholder\ton\tlocal\n\
             p/u/a\tguid\t2\t-\np/u/a\tcreatetxg\t10\t-\np/u/a\tcreation\t101\t-\n\
             p/u/a\tuserrefs\t-\t-\np/u/a\tzrepl:placeholder\ton\tinherited from p/u\n\
             p/u/a@s2\tguid\t5\t-\np/u/a@s2\tcreatetxg\t30\t-\np/u/a@s2\tcreation\t200\t-\n\
             p/u/a@s2\tuserrefs\t1\t-\np/u/a@s2\tzrepl:placeholder\ton\tinherited from p/u\n\
             p/u/a#b\tguid\t4\t-\np/u/a#b\tcreatetxg\t20\t-\np/u/a#b\tcreation\t150\t-\n\
             p/u/a#b\tuserrefs\t-\t-\np/u/a#b\tzrepl:placeholder\t-\t-\n",
        ),
        seed(
            "holds",
            "tags",
            "pool/a@s\tzrepl_STEP_J_x\tThu Nov 20 10:00 2025\n\
             pool/a@s\ttag with space\tThu Nov 20 10:00 2025\n\
             pool/a@t\tzrepl_last_received_J_sink\tFri Nov 21 11:30 2025\n",
        ),
        seed("names", "subtree", "pool\npool/a\npool/b b\npool/a/c:d\n"),
        seed(
            "send-dry-run",
            "full",
            "full\tzroot/test/a@3\t10518512\nsize\t10518512\n",
        ),
        seed(
            "send-dry-run",
            "incremental",
            "incremental\t1\tzroot/test/a@2\t10511856\nsize\t10511856\n",
        ),
        seed(
            "send-dry-run",
            "resumed",
            "resume token contents:\nnvlist version: 0\n\tobject = 0x6\n\ttoname = p/a@s\n\
             full\tp/a@s\t1234\nsize\t1234\n",
        ),
        seed(
            "version",
            "2.3",
            "zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n",
        ),
        seed(
            "program",
            "return",
            "{\"return\": {\"pool/a#zrepl_CURSOR_G_1_J_x\": 0, \"pool/b#c\": 17}}\n",
        ),
        seed(
            "stderr",
            "not-exist",
            "cannot open 'pool/a b': dataset does not exist\n",
        ),
        seed(
            "stderr",
            "no-pool",
            "cannot open 'nopool/x': no such pool or dataset\n",
        ),
        seed(
            "stderr",
            "bookmark-exists",
            "cannot create bookmark 'pool/a#b': bookmark exists\n",
        ),
        seed(
            "stderr",
            "no-snapshots",
            "could not find any snapshots to destroy; check snapshot names.\n",
        ),
        seed(
            "stderr",
            "bookmark-missing",
            "bookmark 'pool/a#b' does not exist\n",
        ),
        seed(
            "stderr",
            "resume-token",
            "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n\
             Partially received snapshot is saved.\n\
             A resuming stream can be generated on the sending system by running:\n    \
             zfs send -t 1-e604ea4bf-e0-789c63a2\n",
        ),
        seed(
            "stderr",
            "encrypted",
            "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an \
             encrypted filesystem or overwrite an unencrypted one with an encrypted one\n",
        ),
        seed(
            "stderr",
            "abort",
            "'pool/a' does not have any resumable receive state to abort\n",
        ),
        seed(
            "stderr",
            "hold-exists",
            "cannot hold snapshot 'pool/a@s': tag already exists on this dataset\n",
        ),
        seed(
            "stderr",
            "out-of-space",
            "cannot receive incremental stream: out of space\n",
        ),
        seed(
            "destroy-stderr",
            "busy-held",
            "pool/with space\ncannot destroy snapshot pool/with space@4 5 6: dataset is busy\n\
             cannot destroy snapshot pool/with space@x: it's being held. Run 'zfs holds -r \
             pool/with space@x' to see holders.\n",
        ),
        // `zfs recv` failures (libzfs_sendrecv.c's wording, as in zrepl-endpoint's error.rs tests).
        seed(
            "recv-stderr",
            "modified",
            "cannot receive incremental stream: destination pool/sink/a has been modified\n\
             since most recent snapshot\n",
        ),
        seed(
            "recv-stderr",
            "partial-state",
            "cannot receive new filesystem stream: destination 'pool/sink/a' contains \
             partially-complete state from \"zfs receive -s\".\n",
        ),
        seed(
            "recv-stderr",
            "out-of-space",
            "cannot receive new filesystem stream: out of space\n",
        ),
        seed(
            "recv-stderr",
            "quota",
            "cannot receive incremental stream: destination pool/sink/a space quota exceeded.\n",
        ),
        seed(
            "recv-stderr",
            "checksum-resumable",
            "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n\
             Partially received snapshot is saved.\n\
             A resuming stream can be generated on the sending system by running:\n    \
             zfs send -t 1-e604ea4bf-e0-789c63a2\n",
        ),
        seed(
            "recv-stderr",
            "not-incremental-source",
            "cannot receive incremental stream: most recent snapshot of pool/sink/a does not\n\
             match incremental source\n",
        ),
        seed(
            "recv-stderr",
            "has-snapshots",
            "cannot receive new filesystem stream: destination has snapshots (eg. \
             pool/sink/a@s1)\nmust destroy them to overwrite it\n",
        ),
        // A name from the peer, echoed by zfs, that contains a class's phrase.
        seed(
            "recv-stderr",
            "peer-name-echoed",
            "cannot receive incremental stream: most recent snapshot of pool/sink/out of space \
             does not\nmatch incremental source\n",
        ),
    ]
}

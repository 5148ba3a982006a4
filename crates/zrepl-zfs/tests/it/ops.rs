//! Non-streaming operations: argv, parsing, error classification, batching, accounting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zrepl_zfs::{
    Binary, CommandInfo, CommandObserver, CommandResult, DatasetPath, FeatureOverrides,
    FilesystemVersion, PlaceholderEncryption, PropertySource, VersionPath, VersionType,
    VersionTypes, Zfs, ZfsConfig, ZfsError,
};

use crate::mock::{v, Mock, PROBES_2_3};

fn p(s: &str) -> DatasetPath {
    DatasetPath::parse(s).unwrap()
}

fn snap(fs: &str, name: &str) -> VersionPath {
    VersionPath::snapshot(&p(fs), name).unwrap()
}

fn version(typ: VersionType, name: &str, guid: u64) -> FilesystemVersion {
    FilesystemVersion {
        typ,
        name: name.into(),
        guid,
        createtxg: 10,
        creation: 1_700_000_000,
        userrefs: None,
    }
}

#[tokio::test]
async fn list_subtree_is_one_command_and_grouped() {
    let m = Mock::new(
        r#"printf 'pool/a b\t1\t5\t100\t-\npool/a b/c\t2\t6\t101\t-\npool/a b@s1\t3\t7\t102\t0\npool/a b/c@s1\t4\t7\t102\t1\npool/a b#s1\t3\t7\t102\t-\n'"#,
    );
    let zfs = m.zfs();
    let map = zfs.list_subtree_versions(&p("pool/a b")).await.unwrap();
    assert_eq!(
        m.calls(),
        [v(&[
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid,createtxg,creation,userrefs",
            "-r",
            "-t",
            "filesystem,volume,snapshot,bookmark",
            "-s",
            "createtxg",
            "--",
            "pool/a b"
        ])]
    );
    assert_eq!(zfs.zfs_commands_started("list"), 1);
    assert_eq!(map.len(), 2);
    let root = &map[&p("pool/a b")];
    assert_eq!(
        root.iter().map(|v| v.relative_name()).collect::<Vec<_>>(),
        ["#s1", "@s1"]
    );
    assert_eq!(map[&p("pool/a b/c")][0].userrefs, Some(1));
}

#[tokio::test]
async fn list_versions_and_filesystems_argv() {
    let m = Mock::new(
        r#"case "$1" in
  list) if [ "$5" = name ]; then printf 'pool\npool/x y\n'; else printf 'pool/x y@a\t1\t2\t3\t0\n'; fi ;;
esac"#,
    );
    let zfs = m.zfs();
    let fss = zfs.list_filesystems(None).await.unwrap();
    assert_eq!(fss, [p("pool"), p("pool/x y")]);
    zfs.list_filesystems(Some(&p("pool"))).await.unwrap();
    let vs = zfs
        .list_versions(&p("pool/x y"), VersionTypes::All)
        .await
        .unwrap();
    assert_eq!(vs.len(), 1);
    zfs.list_versions(&p("pool/x y"), VersionTypes::Snapshots)
        .await
        .unwrap();
    assert_eq!(
        m.calls(),
        [
            v(&[
                "list",
                "-H",
                "-p",
                "-o",
                "name",
                "-r",
                "-t",
                "filesystem,volume"
            ]),
            v(&[
                "list",
                "-H",
                "-p",
                "-o",
                "name",
                "-r",
                "-t",
                "filesystem,volume",
                "--",
                "pool"
            ]),
            v(&[
                "list",
                "-H",
                "-p",
                "-o",
                "name,guid,createtxg,creation,userrefs",
                "-r",
                "-d",
                "1",
                "-t",
                "bookmark,snapshot",
                "-s",
                "createtxg",
                "--",
                "pool/x y"
            ]),
            v(&[
                "list",
                "-H",
                "-p",
                "-o",
                "name,guid,createtxg,creation,userrefs",
                "-r",
                "-d",
                "1",
                "-t",
                "snapshot",
                "-s",
                "createtxg",
                "--",
                "pool/x y"
            ]),
        ]
    );
}

#[tokio::test]
async fn nonexistent_dataset_is_classified() {
    let m = Mock::new(
        r#"for last; do :; done
echo "cannot open '$last': dataset does not exist" >&2; exit 1"#,
    );
    let zfs = m.zfs();
    let e = zfs
        .list_versions(&p("pool/gone"), VersionTypes::All)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ZfsError::DatasetDoesNotExist { path } if path == "pool/gone"),
        "{e}"
    );
    let e = zfs.get_property(&p("pool/gone"), "guid").await.unwrap_err();
    assert!(e.is_does_not_exist(), "{e}");
    assert!(!zfs.exists(&snap("pool/gone", "x")).await.unwrap());
    let st = zfs.placeholder_state(&p("pool/gone")).await.unwrap();
    assert!(!st.exists && !st.is_placeholder);
    let e = zfs
        .list_subtree_versions(&p("pool/gone"))
        .await
        .unwrap_err();
    assert!(e.is_does_not_exist(), "{e}");
}

#[tokio::test]
async fn invalid_names_spawn_nothing() {
    let m = Mock::new("exit 0");
    let zfs = m.zfs();
    let fs = p("pool/ok");
    assert!(VersionPath::snapshot(&fs, "ü").is_err());
    assert!(VersionPath::snapshot(&fs, "a%b").is_err());
    assert!(VersionPath::snapshot(&fs, "a\nb").is_err());
    assert!(DatasetPath::parse("pool/\u{7}").is_err());
    let bad_names = ["ü", "a%b", "a\tb", "x@y", "", "a/b"];
    for n in bad_names {
        let e = zfs
            .destroy_snapshots(&fs, &[n.to_string()])
            .await
            .unwrap_err();
        assert!(matches!(e, ZfsError::InvalidName { .. }), "{n:?}: {e}");
        let e = zfs
            .bookmark(&fs, &version(VersionType::Snapshot, "ok", 1), n)
            .await
            .unwrap_err();
        assert!(matches!(e, ZfsError::InvalidName { .. }), "{n:?}: {e}");
    }
    let s = snap("pool/ok", "s");
    assert!(zfs
        .hold("tag\u{1}", std::slice::from_ref(&s))
        .await
        .is_err());
    assert!(zfs.hold("-r", std::slice::from_ref(&s)).await.is_err());
    assert!(zfs
        .set_properties(&fs, &[("zrepl:x", "a\tb")])
        .await
        .is_err());
    assert!(zfs.set_properties(&fs, &[("-x", "a")]).await.is_err());
    assert!(zfs.get_properties(&fs, &["guid,name"]).await.is_err());
    assert!(zfs
        .list_filesystems(Some(&DatasetPath::empty()))
        .await
        .is_err());
    assert!(zfs
        .send(&zrepl_zfs::SendRequest::resume("-nvt"))
        .await
        .is_err());
    assert!(zfs.destroy_dataset(&p("pool"), true).await.is_err());
    assert_eq!(zfs.total_commands_started(), 0);
    assert!(m.calls().is_empty());
}

#[tokio::test]
async fn properties_get_set_and_sources() {
    let m = Mock::new(
        r#"case "$1" in
  get) for last; do :; done
       printf '%s\tname\t%s\t-\n' "$last" "$last"
       printf '%s\tzrepl:placeholder\ton\tlocal\n' "$last"
       printf '%s\treceive_resume_token\t-\t-\n' "$last" ;;
esac"#,
    );
    let zfs = m.zfs();
    let fs = p("pool/with space");
    // User properties are read from local values only (`-s local,none`): `com.example:x`,
    // inherited or received, is not printed and is absent.
    let props = zfs
        .get_properties(
            &fs,
            &["zrepl:placeholder", "receive_resume_token", "com.example:x"],
        )
        .await
        .unwrap();
    assert_eq!(props["zrepl:placeholder"].source, PropertySource::Local);
    assert_eq!(props["receive_resume_token"].value, "-");
    assert!(!props.contains_key("com.example:x"));
    assert!(!props.contains_key("name"));
    zfs.set_properties(&fs, &[("zrepl:a", "1"), ("zrepl:b", "two words")])
        .await
        .unwrap();
    zfs.inherit_property(&fs, "zrepl:a").await.unwrap();
    assert_eq!(
        m.calls(),
        [
            v(&[
                "get",
                "-Hp",
                "-o",
                "name,property,value,source",
                "-s",
                "local,none",
                "--",
                "name,zrepl:placeholder,receive_resume_token,com.example:x",
                "pool/with space"
            ]),
            v(&["set", "zrepl:a=1", "zrepl:b=two words", "pool/with space"]),
            v(&["inherit", "--", "zrepl:a", "pool/with space"]),
        ]
    );
    // The mock returns more properties than asked for: refuse.
    let e = zfs
        .get_properties(&fs, &["zrepl:placeholder", "name"])
        .await
        .unwrap_err();
    assert!(matches!(e, ZfsError::UnexpectedOutput { .. }), "{e}");
}

#[tokio::test]
async fn placeholder_detection_and_resume_token() {
    let fs = p("pool/ph");
    let legacy = zrepl_zfs::legacy_placeholder_value(&fs);
    for (value, source, want) in [
        ("on", "local", true),
        ("off", "local", false),
        (legacy.as_str(), "local", true),
        // Not set locally: `-s local,none` prints no row for it.
        ("", "", false),
    ] {
        let row = if value.is_empty() {
            String::new()
        } else {
            format!("printf '%s\\tzrepl:placeholder\\t%s\\t%s\\n' \"$last\" '{value}' '{source}'")
        };
        let m = Mock::new(&format!(
            "for last; do :; done; printf '%s\\tname\\t%s\\t-\\n' \"$last\" \"$last\"; {row}"
        ));
        let st = m.zfs().placeholder_state(&fs).await.unwrap();
        assert!(st.exists);
        assert_eq!(st.is_placeholder, want, "{value} {source}");
    }
    let m = Mock::new(r#"printf 'pool/ph\treceive_resume_token\t-\t-\n'"#);
    assert_eq!(m.zfs().receive_resume_token(&fs).await.unwrap(), None);
    let m = Mock::new(r#"printf 'pool/ph\treceive_resume_token\t1-abc-def-0123\t-\n'"#);
    assert_eq!(
        m.zfs().receive_resume_token(&fs).await.unwrap().as_deref(),
        Some("1-abc-def-0123")
    );
}

#[tokio::test]
async fn create_placeholder_rollback_abort_argv() {
    let m = Mock::new(
        r#"case "$1" in
  recv) echo "'pool/a b' does not have any resumable receive state to abort" >&2; exit 1 ;;
esac"#,
    );
    let zfs = m.zfs();
    zfs.create_placeholder(&p("pool/a b"), PlaceholderEncryption::Off)
        .await
        .unwrap();
    zfs.create_placeholder(&p("pool/a b"), PlaceholderEncryption::Inherit)
        .await
        .unwrap();
    zfs.rollback(&snap("pool/a b", "s 1"), true).await.unwrap();
    zfs.recv_abort(&p("pool/a b")).await.unwrap();
    assert!(zfs
        .rollback(&VersionPath::bookmark(&p("pool/a"), "b").unwrap(), false)
        .await
        .is_err());
    assert_eq!(
        m.calls(),
        [
            v(&[
                "create",
                "-o",
                "zrepl:placeholder=on",
                "-o",
                "mountpoint=none",
                "-o",
                "encryption=off",
                "--",
                "pool/a b"
            ]),
            v(&[
                "create",
                "-o",
                "zrepl:placeholder=on",
                "-o",
                "mountpoint=none",
                "--",
                "pool/a b"
            ]),
            v(&["rollback", "-r", "--", "pool/a b@s 1"]),
            v(&["recv", "-A", "--", "pool/a b"]),
        ]
    );
}

#[tokio::test]
async fn multi_snapshot_one_command_per_pool() {
    let m = Mock::new("exit 0");
    let zfs = m.zfs();
    zfs.snapshot(&[
        snap("pool/a", "s"),
        snap("other/x", "s"),
        snap("pool/b c", "s"),
    ])
    .await
    .unwrap();
    assert_eq!(
        m.calls(),
        [
            v(&["snapshot", "--", "other/x@s"]),
            v(&["snapshot", "--", "pool/a@s", "pool/b c@s"]),
        ]
    );
    assert!(zfs
        .snapshot(&[VersionPath::bookmark(&p("pool/a"), "b").unwrap()])
        .await
        .is_err());
}

#[tokio::test]
async fn hold_release_idempotent_and_batched() {
    let m = Mock::new(
        r#"case "$1" in
  hold) shift 3; for s; do echo "cannot hold snapshot '$s': tag already exists on this dataset" >&2; done; exit 1 ;;
  release) shift 3; for s; do echo "cannot release hold from snapshot '$s': no such tag on this dataset" >&2; done; exit 1 ;;
esac"#,
    );
    let zfs = Zfs::new(ZfsConfig {
        argv_batch_limit: 67,
        ..m.config()
    });
    let snaps: Vec<VersionPath> = (0..6)
        .map(|i| snap("pool/fs x", &format!("s{i}")))
        .collect();
    zfs.hold("my tag", &snaps).await.unwrap();
    zfs.release("my tag", &snaps).await.unwrap();
    let calls = m.calls();
    // Up to 8 concurrent commands of at least 5 snapshots each: [s0..s4] and [s5]. Each is
    // further split by the argv limit of 67 bytes: "hold" + "--" + "my tag" take 15 bytes of
    // prefix and each snapshot 13, so 4 per hold command ("release": 18 bytes of prefix, 3).
    // The concurrent commands may run in any order.
    let s = |i: usize| format!("pool/fs x@s{i}");
    for (verb, batches) in [
        ("hold", vec![vec![0, 1, 2, 3], vec![4], vec![5]]),
        ("release", vec![vec![0, 1, 2], vec![3, 4], vec![5]]),
    ] {
        let mut got: Vec<Vec<String>> = calls.iter().filter(|c| c[1] == verb).cloned().collect();
        got.sort();
        let want: Vec<Vec<String>> = batches
            .iter()
            .map(|b| {
                let mut c = v(&[verb, "--", "my tag"]);
                c.extend(b.iter().map(|i| s(*i)));
                c
            })
            .collect();
        assert_eq!(got, want, "{calls:?}");
        assert_eq!(zfs.zfs_commands_started(verb), 3);
    }
}

#[tokio::test]
async fn hold_other_errors_surface() {
    let m = Mock::new(r#"echo "cannot open 'pool/a@gone': dataset does not exist" >&2; exit 1"#);
    let zfs = m.zfs();
    let e = zfs.hold("t", &[snap("pool/a", "gone")]).await.unwrap_err();
    assert!(
        matches!(&e, ZfsError::DatasetDoesNotExist { path } if path == "pool/a@gone"),
        "{e}"
    );
    let e = zfs
        .release("t", &[snap("pool/a", "gone"), snap("pool/a", "x")])
        .await
        .unwrap_err();
    assert!(matches!(e, ZfsError::Command { .. }), "{e}");
}

#[tokio::test]
async fn holds_parsed_per_snapshot() {
    let m = Mock::new(
        r#"printf 'pool/a@s1\ttag one\tThu Nov 20 10:00 2025\npool/a@s1\tzrepl_STEP_J_j\tThu Nov 20 10:00 2025\n'"#,
    );
    let zfs = m.zfs();
    let h = zfs
        .holds(&[snap("pool/a", "s1"), snap("pool/a", "s2")])
        .await
        .unwrap();
    assert_eq!(h[&snap("pool/a", "s1")], ["tag one", "zrepl_STEP_J_j"]);
    assert!(h[&snap("pool/a", "s2")].is_empty());
    assert_eq!(
        m.calls(),
        [v(&["holds", "-H", "--", "pool/a@s1", "pool/a@s2"])]
    );
}

#[tokio::test]
async fn bookmark_idempotency() {
    // `zfs bookmark` says "exists"; `zfs get guid` of the bookmark answers 42.
    let m = Mock::new(&format!(
        r#"{PROBES_2_3}
case "$1" in
  bookmark) echo "cannot create bookmark '$4': bookmark exists" >&2; exit 1 ;;
  get) printf '%s\tguid\t42\t-\n' "$7" ;;
esac"#
    ));
    let zfs = m.zfs();
    let fs = p("pool/a b");
    let bm = zfs
        .bookmark(&fs, &version(VersionType::Snapshot, "s 1", 42), "bm 1")
        .await
        .unwrap();
    assert_eq!(bm.typ, VersionType::Bookmark);
    assert_eq!(bm.guid, 42);
    let e = zfs
        .bookmark(&fs, &version(VersionType::Snapshot, "s 2", 43), "bm 1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ZfsError::BookmarkExists {
                existing_guid: 42,
                wanted_guid: 43,
                ..
            }
        ),
        "{e}"
    );
    let calls = m.calls_no_probes();
    assert_eq!(
        calls[0],
        v(&["bookmark", "--", "pool/a b@s 1", "pool/a b#bm 1"])
    );
    assert_eq!(
        calls[1],
        v(&[
            "get",
            "-Hp",
            "-o",
            "name,property,value,source",
            "--",
            "guid",
            "pool/a b#bm 1"
        ])
    );
    // Bookmark copy is used when detected.
    zfs.bookmark(&fs, &version(VersionType::Bookmark, "other", 42), "bm 1")
        .await
        .unwrap();
    assert_eq!(
        m.calls_no_probes()[4],
        v(&["bookmark", "--", "pool/a b#other", "pool/a b#bm 1"])
    );
}

#[tokio::test]
async fn bookmark_copy_unsupported_and_missing_source() {
    let m = Mock::new(
        r#"case "$1" in
  bookmark) echo "cannot open '$3': dataset does not exist" >&2; exit 1 ;;
  get) echo "cannot open '$7': dataset does not exist" >&2; exit 1 ;;
esac"#,
    );
    let zfs = Zfs::new(ZfsConfig {
        feature_overrides: FeatureOverrides {
            bookmark_copy: Some(false),
            ..Default::default()
        },
        ..m.config()
    });
    let fs = p("pool/a");
    let e = zfs
        .bookmark(&fs, &version(VersionType::Bookmark, "src", 1), "dst")
        .await
        .unwrap_err();
    assert!(matches!(e, ZfsError::BookmarkCloningNotSupported), "{e}");
    assert_eq!(zfs.zfs_commands_started("bookmark"), 0);
    let e = zfs
        .bookmark(&fs, &version(VersionType::Snapshot, "gone", 1), "dst")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ZfsError::DatasetDoesNotExist { path } if path == "pool/a@gone"),
        "{e}"
    );
}

/// Real OpenZFS 2.3 output for a batch destroy where one snapshot is held (zfs_main.c prints
/// one line per undestroyable snapshot and destroys nothing).
#[tokio::test]
async fn batched_destroy_strips_held_and_reports_exactly_them() {
    let m = Mock::new(&format!(
        r#"{PROBES_2_3}
case "$1" in
  destroy)
    arg="$3"; fs="${{arg%%@*}}"; snaps="${{arg#*@}}"
    IFS=, read -ra list <<< "$snaps"
    rc=0
    for s in "${{list[@]}}"; do
      if [ "$s" = "held 2" ]; then echo "cannot destroy snapshot $fs@$s: dataset is busy" >&2; rc=1; fi
    done
    exit $rc ;;
esac"#
    ));
    let zfs = m.zfs();
    let fs = p("pool/with space");
    let names: Vec<String> = ["c", "held 2", "a"].iter().map(|s| s.to_string()).collect();
    let out = zfs.destroy_snapshots(&fs, &names).await.unwrap();
    let failed: Vec<&String> = out
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(failed, ["held 2"]);
    let (_, err) = out.iter().find(|(n, _)| n == "held 2").unwrap();
    let err = err.as_ref().unwrap_err();
    match &**err {
        ZfsError::DestroySnapshots { undestroyable, .. } => {
            assert_eq!(undestroyable.len(), 1);
            assert_eq!(undestroyable[0].snapshot, "held 2");
            assert!(undestroyable[0].is_held());
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        m.calls_no_probes(),
        [
            v(&["destroy", "--", "pool/with space@a,c,held 2"]),
            v(&["destroy", "--", "pool/with space@a,c"]),
            v(&["destroy", "--", "pool/with space@held 2"]),
        ]
    );
}

#[tokio::test]
async fn destroy_without_comma_support_is_sequential_and_classified() {
    let m = Mock::new(
        r#"case "$1" in
  destroy) case "$3" in
      *@gone) echo "could not find any snapshots to destroy; check snapshot names." >&2; exit 1 ;;
      *#gone) echo "bookmark '$3' does not exist" >&2; exit 1 ;;
      pool/nofs*) echo "cannot open 'pool/nofs': dataset does not exist" >&2; exit 1 ;;
    esac ;;
esac"#,
    );
    let zfs = Zfs::new(ZfsConfig {
        feature_overrides: FeatureOverrides {
            comma_destroy: Some(false),
            ..Default::default()
        },
        ..m.config()
    });
    let out = zfs
        .destroy_snapshots(&p("pool/a"), &["x".into(), "gone".into()])
        .await
        .unwrap();
    assert!(out[0].0 == "gone" && out[0].1.as_ref().unwrap_err().is_does_not_exist());
    assert!(out[1].0 == "x" && out[1].1.is_ok());
    let bm = VersionPath::bookmark(&p("pool/a"), "gone").unwrap();
    assert!(zfs
        .destroy_version(&bm)
        .await
        .unwrap_err()
        .is_does_not_exist());
    zfs.destroy_version_idempotent(&bm).await.unwrap();
    let e = zfs
        .destroy_dataset(&p("pool/nofs"), false)
        .await
        .unwrap_err();
    assert!(matches!(&e, ZfsError::DatasetDoesNotExist { path } if path == "pool/nofs"));
    zfs.destroy_dataset(&p("pool/a/b c"), true).await.unwrap();
    let calls = m.calls_no_probes();
    assert_eq!(
        calls.last().unwrap(),
        &v(&["destroy", "-r", "--", "pool/a/b c"])
    );
}

#[tokio::test]
async fn destroy_batches_split_on_limit() {
    let m = Mock::new(&format!("{PROBES_2_3}\nexit 0"));
    let zfs = Zfs::new(ZfsConfig {
        argv_batch_limit: 60,
        ..m.config()
    });
    let names: Vec<String> = (0..20).map(|i| format!("snap{i:02}")).collect();
    let out = zfs.destroy_snapshots(&p("pool/a"), &names).await.unwrap();
    assert!(out.iter().all(|(_, r)| r.is_ok()));
    let calls = m.calls_no_probes();
    assert!(calls.len() > 1 && calls.len() < 20, "{calls:?}");
    let mut destroyed: Vec<String> = calls
        .iter()
        .flat_map(|c| {
            assert_eq!(c[..3], ["zfs", "destroy", "--"], "{c:?}");
            c[3].strip_prefix("pool/a@")
                .unwrap()
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    destroyed.sort();
    assert_eq!(destroyed, names);
}

#[tokio::test]
async fn destroy_if_guid_matches() {
    let m = Mock::new(r#"case "$1" in get) printf '%s\tguid\t7\t-\n' "$7" ;; esac"#);
    let zfs = m.zfs();
    let s = snap("pool/a", "s");
    let e = zfs.destroy_if_guid_matches(&s, 8).await.unwrap_err();
    assert!(
        matches!(
            e,
            ZfsError::GuidMismatch {
                expected: 8,
                actual: 7,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(zfs.zfs_commands_started("destroy"), 0);
    zfs.destroy_if_guid_matches(&s, 7).await.unwrap();
    assert_eq!(zfs.zfs_commands_started("destroy"), 1);
}

#[tokio::test]
async fn feature_detection_cached() {
    let m = Mock::new(&format!(
        "{PROBES_2_3}\ncase \"$1\" in get) printf 'active\\n' ;; esac"
    ));
    let zfs = m.zfs();
    let f = zfs.features().await.unwrap();
    assert!(f.resumable_send && f.resumable_recv_cli && f.encryption && f.comma_destroy);
    assert!(f.bookmark_copy && f.snapshots_changed);
    assert_eq!(f.version.as_ref().unwrap().numeric, Some((2, 3, 2)));
    let n = zfs.total_commands_started();
    assert_eq!(n, 7);
    zfs.clone().features().await.unwrap();
    assert_eq!(zfs.total_commands_started(), n);
    assert!(zfs.resumable_recv_supported(&p("pool/a")).await.unwrap());
    assert!(zfs.resumable_recv_supported(&p("pool/b")).await.unwrap());
    let zpool_calls: Vec<_> = m.calls().into_iter().filter(|c| c[0] == "zpool").collect();
    assert_eq!(
        zpool_calls,
        [[
            "zpool",
            "get",
            "-H",
            "-p",
            "-o",
            "value",
            "--",
            "feature@extensible_dataset",
            "pool"
        ]]
    );
    let stats = zfs.command_stats();
    assert_eq!(stats[&(Binary::Zpool, "get".to_string())].started, 1);
}

#[tokio::test]
async fn old_zfs_features_off() {
    let m = Mock::new(r#"echo "unrecognized command '$1'" >&2; exit 2"#);
    let f = m.zfs().features().await.unwrap();
    assert!(f.version.is_none());
    assert!(!f.resumable_send && !f.encryption && !f.comma_destroy && !f.bookmark_copy);
}

#[tokio::test]
async fn timeout_kills() {
    let m = Mock::new("exec sleep 30");
    let zfs = Zfs::new(ZfsConfig {
        command_timeout: Some(Duration::from_millis(200)),
        ..m.config()
    });
    let t = std::time::Instant::now();
    let e = zfs.list_filesystems(None).await.unwrap_err();
    assert!(matches!(e, ZfsError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let st = &zfs.command_stats()[&(Binary::Zfs, "list".to_string())];
    assert_eq!((st.started, st.cancelled), (1, 1));
    assert!(zfs.active_commands().is_empty());
}

#[tokio::test]
async fn spawn_failure_and_generic_error() {
    let zfs = Zfs::with_binaries("/nonexistent/zfs", "/nonexistent/zpool");
    let e = zfs.list_filesystems(None).await.unwrap_err();
    assert!(matches!(e, ZfsError::Spawn { .. }), "{e}");
    assert_eq!(zfs.total_commands_started(), 0);
    let m = Mock::new("echo 'internal error: out of cheese' >&2; exit 3");
    let e = m.zfs().list_filesystems(None).await.unwrap_err();
    match e {
        ZfsError::Command {
            status,
            stderr,
            argv,
        } => {
            assert_eq!(status.code(), Some(3));
            assert!(stderr.contains("out of cheese"));
            assert_eq!(argv.0[1], "list");
        }
        e => panic!("{e}"),
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, CommandResult)>>);

impl CommandObserver for Recorder {
    fn finished(&self, cmd: &CommandInfo, result: CommandResult, _elapsed: Duration) {
        self.0.lock().unwrap().push((cmd.verb.clone(), result));
    }
}

#[tokio::test]
async fn observer_sees_commands() {
    let m = Mock::new(r#"[ "$1" = get ] && exit 1; exit 0"#);
    let rec = Arc::new(Recorder::default());
    let zfs = Zfs::new(ZfsConfig {
        observer: Some(rec.clone()),
        ..m.config()
    });
    zfs.list_filesystems(None).await.unwrap();
    let _ = zfs.get_property(&p("pool/a"), "guid").await;
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            ("list".to_string(), CommandResult::Success),
            ("get".to_string(), CommandResult::Failure)
        ]
    );
}

#[tokio::test]
async fn get_version_parses_numbers() {
    let m = Mock::new(
        r#"t="$7"
printf '%s\tcreatetxg\t17\t-\n%s\tguid\t99\t-\n%s\tcreation\t1700000000\t-\n%s\tuserrefs\t2\t-\n' "$t" "$t" "$t" "$t""#,
    );
    let v = m.zfs().get_version(&snap("pool/a", "s")).await.unwrap();
    assert_eq!(
        (v.guid, v.createtxg, v.creation, v.userrefs),
        (99, 17, 1_700_000_000, Some(2))
    );
}

#[tokio::test]
async fn recursive_get_argv_and_grouping() {
    let m = Mock::new(
        r#"printf 'pool/a\tname\tpool/a\t-\npool/a\tzrepl:placeholder\ton\tlocal\npool/a/b c\tname\tpool/a/b c\t-\n'"#,
    );
    let zfs = m.zfs();
    let r = zfs
        .get_properties_recursive(&p("pool/a"), Some(2), &["zrepl:placeholder"])
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[&p("pool/a")]["zrepl:placeholder"].source,
        PropertySource::Local
    );
    assert!(r[&p("pool/a/b c")].is_empty());
    assert_eq!(
        m.calls(),
        [v(&[
            "get",
            "-Hp",
            "-o",
            "name,property,value,source",
            "-r",
            "-s",
            "local,none",
            "-d",
            "2",
            "-t",
            "filesystem,volume",
            "--",
            "name,zrepl:placeholder",
            "pool/a"
        ])]
    );
}

#[tokio::test]
async fn get_versions_of_named_versions() {
    let m = Mock::new(
        r#"printf 'pool/a@s1\t11\t5\t1700000000\t1\npool/b#m\t22\t6\t1700000001\t-\n'
echo "cannot open 'pool/c@gone': dataset does not exist" >&2; exit 1"#,
    );
    let zfs = m.zfs();
    let got = zfs
        .get_versions(&[
            snap("pool/a", "s1"),
            VersionPath::bookmark(&p("pool/b"), "m").unwrap(),
            snap("pool/c", "gone"),
        ])
        .await
        .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    let a = &got[&p("pool/a")][0];
    assert_eq!((a.name.as_str(), a.guid, a.userrefs), ("s1", 11, Some(1)));
    let b = &got[&p("pool/b")][0];
    assert_eq!(
        (b.name.as_str(), b.guid, b.typ),
        ("m", 22, VersionType::Bookmark)
    );
    assert_eq!(
        m.calls(),
        [v(&[
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid,createtxg,creation,userrefs",
            "-t",
            "snapshot,bookmark",
            "--",
            "pool/a@s1",
            "pool/b#m",
            "pool/c@gone"
        ])]
    );

    // Any other failure, or a row that was not asked for, is an error.
    let m = Mock::new(r#"echo "internal error: out of memory" >&2; exit 1"#);
    assert!(m.zfs().get_versions(&[snap("pool/a", "s1")]).await.is_err());
    let m = Mock::new(r#"printf 'pool/x@evil\t1\t1\t1\t0\n'"#);
    assert!(m.zfs().get_versions(&[snap("pool/a", "s1")]).await.is_err());
}

#[tokio::test]
async fn get_properties_of_many_datasets_in_one_command() {
    // pool/gone vanished after the caller listed it: the others still get their values.
    let m = Mock::new(
        r#"printf 'pool/a\twritten\t0\t-\npool/b c\twritten\t4096\t-\n'
echo "cannot open 'pool/gone': dataset does not exist" >&2; exit 1"#,
    );
    let zfs = m.zfs();
    let r = zfs
        .get_properties_of(&[p("pool/a"), p("pool/b c"), p("pool/gone")], &["written"])
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[&p("pool/b c")]["written"].value, "4096");
    assert_eq!(
        m.calls(),
        [v(&[
            "get",
            "-Hp",
            "-o",
            "name,property,value,source",
            "--",
            "written",
            "pool/a",
            "pool/b c",
            "pool/gone"
        ])]
    );
}

#[tokio::test]
async fn get_properties_of_fails_on_other_errors() {
    let m = Mock::new(r#"echo "cannot get property: permission denied" >&2; exit 1"#);
    let err = m
        .zfs()
        .get_properties_of(&[p("pool/a")], &["written"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    // Nothing to ask: no command.
    let m = Mock::new("exit 1");
    assert!(m
        .zfs()
        .get_properties_of(&[], &["written"])
        .await
        .unwrap()
        .is_empty());
    assert!(m.calls().is_empty());
}

#[tokio::test]
async fn list_versions_of_many_filesystems_in_one_command() {
    // pool/gone vanished: the others are listed; pool/b has no versions and is an entry.
    let m = Mock::new(
        r#"printf 'pool/a@s1\t3\t12\t102\t1\npool/a#m\t3\t12\t102\t-\n'
echo "cannot open 'pool/gone': dataset does not exist" >&2; exit 1"#,
    );
    let r = m
        .zfs()
        .list_versions_of(&[p("pool/a"), p("pool/b"), p("pool/gone")])
        .await
        .unwrap();
    assert_eq!(
        r.keys().cloned().collect::<Vec<_>>(),
        [p("pool/a"), p("pool/b")]
    );
    let names: Vec<&str> = r[&p("pool/a")].iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["m", "s1"]);
    assert!(r[&p("pool/b")].is_empty());
    assert_eq!(
        m.calls(),
        [v(&[
            "list",
            "-H",
            "-p",
            "-o",
            "name,guid,createtxg,creation,userrefs",
            "-d",
            "1",
            "-t",
            "snapshot,bookmark",
            "-s",
            "createtxg",
            "--",
            "pool/a",
            "pool/b",
            "pool/gone"
        ])]
    );

    // Any other failure (also next to a missing one), or versions of something not asked
    // for, is an error.
    for script in [
        r#"echo "internal error: out of memory" >&2; exit 1"#,
        r#"echo "cannot open 'pool/a': dataset does not exist" >&2; echo "internal error" >&2; exit 1"#,
        r#"echo "cannot open 'pool/x': dataset does not exist" >&2; exit 1"#,
        r#"printf 'pool/x@evil\t1\t1\t1\t0\n'"#,
        r#"printf 'pool/a/child@s\t1\t1\t1\t0\n'"#,
    ] {
        let m = Mock::new(script);
        assert!(
            m.zfs().list_versions_of(&[p("pool/a")]).await.is_err(),
            "{script}"
        );
    }
    // A "does not exist" only counts with zfs's own exit code 1 (not a kill after it).
    let m = Mock::new(
        r#"printf 'pool/a@s1	3	12	102	1
'; echo "cannot open 'pool/b': dataset does not exist" >&2; kill -9 $$"#,
    );
    assert!(m
        .zfs()
        .list_versions_of(&[p("pool/a"), p("pool/b")])
        .await
        .is_err());
    // A warning next to success is no failure; a filesystem named twice is listed once.
    let m = Mock::new(
        r#"printf 'pool/a@s1	3	12	102	1
'; echo "warning: something harmless" >&2"#,
    );
    let r = m
        .zfs()
        .list_versions_of(&[p("pool/a"), p("pool/a")])
        .await
        .unwrap();
    assert_eq!(r[&p("pool/a")].len(), 1);
    assert_eq!(m.calls()[0].iter().filter(|a| *a == "pool/a").count(), 1);
    // Nothing to ask: no command.
    let m = Mock::new("exit 1");
    assert!(m.zfs().list_versions_of(&[]).await.unwrap().is_empty());
    assert!(m.calls().is_empty());
}

#[tokio::test]
async fn placeholder_states_of_a_path_in_one_command() {
    let m = Mock::new(
        r#"printf 'pool	zrepl:placeholder	-	-
pool/r	zrepl:placeholder	on	local
pool/r/x	zrepl:placeholder	on	inherited from pool/r
'
echo "cannot open 'pool/r/x/y': dataset does not exist" >&2; exit 1"#,
    );
    let r = m
        .zfs()
        .placeholder_states(&[p("pool"), p("pool/r"), p("pool/r/x"), p("pool/r/x/y")])
        .await
        .unwrap();
    assert_eq!(r.len(), 4);
    assert!(r[&p("pool")].exists && !r[&p("pool")].is_placeholder);
    assert!(r[&p("pool/r")].is_placeholder);
    // Inherited is no mark.
    assert!(r[&p("pool/r/x")].exists && !r[&p("pool/r/x")].is_placeholder);
    assert_eq!(r[&p("pool/r/x/y")], zrepl_zfs::PlaceholderState::MISSING);
    assert_eq!(m.calls().len(), 1);
}

/// The operands of the commands in `every_name_follows_double_dash` all name datasets of the
/// pool `tank`, or are this hold tag.
const TAG: &str = "my tag";

fn is_operand(a: &str) -> bool {
    a == TAG
        || a == "tank"
        || a.starts_with("tank/")
        || a.starts_with("tank@")
        || a.starts_with("tank#")
}

/// `Err` unless `call` (binary, subcommand, arguments) has exactly one `--` and every dataset,
/// snapshot or bookmark name and the hold tag come after it. The exception is the option
/// argument of `zfs send -i`/`-I`, which comes before `--`.
fn check_double_dash(call: &[String]) -> Result<(), String> {
    let dd: Vec<usize> = (0..call.len()).filter(|&i| call[i] == "--").collect();
    let [dd] = dd[..] else {
        return Err(format!("expected one `--`, found {}", dd.len()));
    };
    for i in 2..dd {
        let option_argument = matches!(call[i - 1].as_str(), "-i" | "-I");
        if is_operand(&call[i]) && !option_argument {
            return Err(format!("{:?} comes before `--`", call[i]));
        }
    }
    Ok(())
}

type Op<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ZfsError>> + 'a>>;

async fn send_all(zfs: &Zfs, req: zrepl_zfs::SendRequest) -> Result<(), ZfsError> {
    use tokio::io::AsyncReadExt;
    let mut s = zfs.send(&req).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"stream");
    s.finish().await
}

/// Every command that takes a name puts `--` before it (defense in depth against a name being
/// read as an option), except `zfs set` (no getopt before OpenZFS 2.3).
#[tokio::test]
async fn every_name_follows_double_dash() {
    use zrepl_zfs::{RecvRequest, SendFlags, SendRequest};
    // `get` answers every property after `--` of every dataset after them (`1`, set locally),
    // `send -n` a size of 5 bytes; the channel program reports the one bookmark it is asked to
    // create as created.
    let m = Mock::new(&format!(
        r#"{PROBES_2_3}
if [ "$BIN" = zpool ]; then echo active; exit 0; fi
case "$1" in
  get) while [ $# -gt 0 ] && [ "$1" != -- ]; do shift; done; IFS=, read -ra props <<< "$2"; shift 2
       for d; do
         for q in "${{props[@]}}"; do
           if [ "$q" = name ]; then printf '%s\tname\t%s\t-\n' "$d" "$d"
           else printf '%s\t%s\t1\tlocal\n' "$d" "$q"; fi
         done
       done ;;
  send) if [ "$2" = -n ]; then printf 'full\ttank/a b@s 2\t5\nsize\t5\n'; else printf 'stream'; fi ;;
  recv) cat > /dev/null ;;
  program) cat > /dev/null; printf '{{"return": {{"tank/a b#bm 2": 0}}}}\n' ;;
esac"#
    ));
    let zfs = m.zfs();
    let zfs = &zfs;
    let root = p("tank");
    let fs = p("tank/a b");
    let s1 = snap("tank/a b", "s 1");
    let s2 = snap("tank/a b", "s 2");
    let bm1 = VersionPath::bookmark(&fs, "bm 1").unwrap();
    let bm2 = VersionPath::bookmark(&fs, "bm 2").unwrap();
    let ops: Vec<(&str, &str, Op)> = vec![
        (
            "list filesystems",
            "list",
            Box::pin(async { zfs.list_filesystems(Some(&root)).await.map(drop) }),
        ),
        (
            "list versions",
            "list",
            Box::pin(async { zfs.list_versions(&fs, VersionTypes::All).await.map(drop) }),
        ),
        (
            "list subtree",
            "list",
            Box::pin(async { zfs.list_subtree_versions(&root).await.map(drop) }),
        ),
        (
            "list named versions",
            "list",
            Box::pin(async { zfs.get_versions(&[s1.clone(), bm1.clone()]).await.map(drop) }),
        ),
        (
            "list subtree with properties",
            "get",
            Box::pin(async {
                zfs.list_subtree_with_properties(&root, &["zrepl:placeholder"])
                    .await
                    .map(drop)
            }),
        ),
        (
            "get",
            "get",
            Box::pin(async {
                let r = zfs.get_properties(&fs, &["zrepl:placeholder"]).await?;
                assert_eq!(r["zrepl:placeholder"].value, "1");
                Ok(())
            }),
        ),
        (
            "get recursive",
            "get",
            Box::pin(async {
                zfs.get_properties_recursive(&root, Some(1), &["zrepl:placeholder"])
                    .await
                    .map(drop)
            }),
        ),
        (
            "get of many",
            "get",
            Box::pin(async {
                zfs.get_properties_of(&[root.clone(), fs.clone()], &["written"])
                    .await
                    .map(drop)
            }),
        ),
        (
            "inherit",
            "inherit",
            Box::pin(zfs.inherit_property(&fs, "zrepl:a")),
        ),
        (
            "snapshot",
            "snapshot",
            Box::pin(zfs.snapshot(std::slice::from_ref(&s2))),
        ),
        (
            "bookmark",
            "bookmark",
            Box::pin(async {
                zfs.bookmark(&fs, &version(VersionType::Snapshot, "s 1", 1), "bm 1")
                    .await
                    .map(drop)
            }),
        ),
        (
            "bookmarks by channel program",
            "program",
            Box::pin(async {
                let r = zfs
                    .create_bookmarks(&[(s1.clone(), bm2.clone(), 1)])
                    .await?;
                assert_eq!(r["tank/a b#bm 2"], Ok(()));
                Ok(())
            }),
        ),
        (
            "hold",
            "hold",
            Box::pin(zfs.hold(TAG, std::slice::from_ref(&s1))),
        ),
        (
            "holds",
            "holds",
            Box::pin(async { zfs.holds(std::slice::from_ref(&s1)).await.map(drop) }),
        ),
        (
            "release",
            "release",
            Box::pin(zfs.release(TAG, std::slice::from_ref(&s1))),
        ),
        (
            "destroy snapshots",
            "destroy",
            Box::pin(async {
                let out = zfs
                    .destroy_snapshots(&fs, &["s 1".into(), "s 2".into()])
                    .await?;
                assert!(out.iter().all(|(_, r)| r.is_ok()));
                Ok(())
            }),
        ),
        (
            "destroy bookmark",
            "destroy",
            Box::pin(zfs.destroy_version(&bm1)),
        ),
        (
            "destroy filesystem",
            "destroy",
            Box::pin(zfs.destroy_dataset(&fs, true)),
        ),
        ("recv -A", "recv", Box::pin(zfs.recv_abort(&fs))),
        ("rollback", "rollback", Box::pin(zfs.rollback(&s1, true))),
        (
            "create",
            "create",
            Box::pin(zfs.create_filesystem(&fs, &[("zrepl:x", "y")], true)),
        ),
        (
            "create placeholder",
            "create",
            Box::pin(zfs.create_placeholder(&fs, PlaceholderEncryption::Off)),
        ),
        (
            "send full",
            "send",
            Box::pin(send_all(
                zfs,
                SendRequest::full(s2.clone(), SendFlags::default()),
            )),
        ),
        (
            "send incremental",
            "send",
            Box::pin(send_all(
                zfs,
                SendRequest::incremental(bm1.clone(), s2.clone(), SendFlags::default()),
            )),
        ),
        (
            "send package",
            "send",
            Box::pin(send_all(
                zfs,
                SendRequest::package(s1.clone(), s2.clone(), SendFlags::default()),
            )),
        ),
        (
            "send dry run",
            "send",
            Box::pin(async {
                let i = zfs
                    .send_dry(&SendRequest::full(s2.clone(), SendFlags::default()))
                    .await?;
                assert_eq!(i.size, 5);
                Ok(())
            }),
        ),
        (
            "recv",
            "recv",
            Box::pin(async {
                let req = RecvRequest {
                    force_rollback: true,
                    save_partial: true,
                    ..RecvRequest::new(s2.clone())
                };
                zfs.receive(&req, &b"stream"[..]).await.map(drop)
            }),
        ),
        (
            "recv package",
            "recv",
            Box::pin(async {
                let req = RecvRequest {
                    package: true,
                    ..RecvRequest::new(s2.clone())
                };
                zfs.receive(&req, &b"stream"[..]).await.map(drop)
            }),
        ),
        (
            "pool feature",
            "get",
            Box::pin(async {
                assert!(zfs.pool_resumable_recv("tank").await?);
                Ok(())
            }),
        ),
    ];
    let mut seen = 0;
    for (what, verb, op) in ops {
        op.await.unwrap_or_else(|e| panic!("{what}: {e}"));
        // Feature probes (`zfs version`, `zfs send` without arguments) have no operands.
        let calls = m.calls();
        let new: Vec<&Vec<String>> = calls[seen..].iter().filter(|c| c.len() > 2).collect();
        seen = calls.len();
        assert!(
            new.iter().any(|c| c[1] == verb),
            "{what}: no {verb} in {new:?}"
        );
        for c in new {
            if let Err(e) = check_double_dash(c) {
                panic!("{what}: {e}: {c:?}");
            }
        }
    }

    // `zfs set` is the exception: no `--`, the name last.
    zfs.set_properties(&fs, &[("zrepl:a", "1")]).await.unwrap();
    assert_eq!(
        m.calls().last().unwrap(),
        &v(&["set", "zrepl:a=1", "tank/a b"])
    );
    // The check itself catches a name before `--` and a missing `--`.
    assert!(check_double_dash(&v(&["destroy", "tank/a@x", "--"])).is_err());
    assert!(check_double_dash(&v(&["hold", TAG, "--", "tank/a@x"])).is_err());
    assert!(check_double_dash(&v(&["rollback", "-r", "tank/a@x"])).is_err());
    assert!(check_double_dash(&v(&["send", "-i", "tank/a@x", "--", "tank/a@y"])).is_ok());
}

/// A remote handle runs every command as `ssh … -- host '<quoted argv>'` (here a mock `ssh`)
/// and never more than `REMOTE_SESSIONS` at once (sshd's MaxSessions per connection).
#[tokio::test]
async fn remote_commands_go_over_ssh_with_bounded_sessions() {
    let m = Mock::new(
        r#"exec 9>>"$D/lock"
flock 9; n=$(( $(cat "$D/n" 2>/dev/null || echo 0) + 1 )); echo $n > "$D/n"
max=$(cat "$D/max" 2>/dev/null || echo 0); [ $n -gt $max ] && echo $n > "$D/max"; flock -u 9
sleep 0.2
flock 9; echo $(( $(cat "$D/n") - 1 )) > "$D/n"; flock -u 9"#,
    );
    let remote = zrepl_zfs::Remote {
        ssh_binary: m.dir().join("zfs"),
        host: "backup.example".into(),
        user: "zrepl".into(),
        port: 22,
        identity_file: "/k".into(),
        known_hosts: None,
        options: Vec::new(),
        control_path: m.dir().join("ctl/ssh-x"),
        zfs_binary: "zfs".into(),
        zpool_binary: "zpool".into(),
    };
    let zfs = Zfs::new(ZfsConfig {
        remote: Some(remote.clone()),
        ..ZfsConfig::default()
    });
    assert!(!zfs.uses_libzfs_core());
    // A remote handle made from a local one is accounted with it (status, metrics).
    let local = Zfs::default();
    let via = local.with_remote(remote);
    assert!(!via.uses_libzfs_core());
    via.recv_abort(&p("tank/x")).await.unwrap();
    assert_eq!(
        local.command_stats()[&(Binary::Zfs, "recv".to_string())].started,
        1
    );
    assert_eq!(via.command_stats(), local.command_stats());
    let fss: Vec<DatasetPath> = (0..20).map(|i| p(&format!("tank/fs {i}"))).collect();
    let results = futures::future::join_all(fss.iter().map(|f| zfs.recv_abort(f))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let max: usize = std::fs::read_to_string(m.dir().join("max"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (2..=zrepl_zfs::REMOTE_SESSIONS).contains(&max),
        "{max} commands at once"
    );
    // The control socket's directory is created, private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(m.dir().join("ctl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let calls = m.calls();
    assert_eq!(calls.len(), 21);
    let c = calls
        .iter()
        .find(|c| c.iter().any(|a| a.contains("tank/fs ")))
        .unwrap();
    let dd = c.iter().position(|a| a == "--").unwrap();
    assert_eq!(c[dd + 1], "backup.example");
    assert!(
        c[dd + 2].starts_with("exec env LC_ALL=C TZ=UTC 'zfs' 'recv' '-A' '--' 'tank/fs "),
        "{:?}",
        c[dd + 2]
    );
    assert!(c.iter().any(|a| a == "ControlMaster=auto"));
    // Status and logs name the remote.
    let stats = zfs.command_stats();
    assert!(!stats.is_empty());
}

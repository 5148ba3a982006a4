//! Batched replication rounds on real OpenZFS: the command count of a round, the channel
//! program that moves cursors, and the checks that batching must keep (GUIDs of what is sent
//! and what was received).

use zrepl_protocol::{ErrorKind, ReceiveRequest, Receiver, ReplicationConfig, SendRequest, Sender};
use zrepl_zfs::{FilesystemVersion, VersionPath, VersionType};
use zrepl_zfs_types::abstraction::{cursor_bookmark_name, last_received_hold_tag};

use crate::replication::{
    all_holds, create, dp, guid, holds, must_succeed, one_attempt, receiver, recv_path, replicate,
    sender, snapshot, versions, write, zfs, RECEIVER_JOB, SENDER_JOB,
};
use crate::{Ctx, TestResult};
use zrepl_endpoint::PlaceholderPolicy;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

fn zfs_verb(t: &Ctx, verb: &str) -> u64 {
    t.zfs.zfs_commands_started(verb)
}

/// An incremental round of N filesystems runs N sends and N receives and a constant number of
/// other commands (listings, holds, the cursor program), and leaves zrepl's abstractions exactly
/// as step-by-step replication does.
pub async fn repl_batched_round_is_two_commands_per_filesystem(t: Ctx) -> TestResult {
    const N: usize = 6;
    let names: Vec<String> = (1..=N).map(|i| format!("f{i}")).collect();
    for n in &names {
        let fs = create(&t, &format!("src/{n}"))?;
        write(&fs, "a", 1)?;
        snapshot(&format!("{fs}@1"))?;
    }
    let s = sender(&t, &[("src<", true), ("src", false)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    for n in &names {
        let fs = format!("{}/src/{n}", t.pool);
        write(&fs, "b", 1)?;
        snapshot(&format!("{fs}@2"))?;
    }
    let before = t.zfs.total_commands_started();
    let (sends, recvs) = (zfs_verb(&t, "send"), zfs_verb(&t, "recv"));
    let programs = zfs_verb(&t, "program");
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let total = t.zfs.total_commands_started() - before;
    ensure!(
        zfs_verb(&t, "send") - sends == N as u64,
        "one zfs send per filesystem"
    );
    ensure!(
        zfs_verb(&t, "recv") - recvs == N as u64,
        "one zfs recv per filesystem"
    );
    ensure!(
        zfs_verb(&t, "program") - programs == 1,
        "one channel program moves all cursors"
    );
    let other = total - 2 * N as u64;
    ensure!(
        other <= 16,
        "{other} commands besides sends and receives for {N} filesystems: {:?}",
        t.zfs.command_stats()
    );
    for n in &names {
        let fs = format!("{}/src/{n}", t.pool);
        let rfs = recv_path(&t, n);
        let g2 = guid(&format!("{fs}@2"))?;
        ensure!(guid(&format!("{rfs}@2"))? == g2, "{n}: guid of @2");
        let sv = versions(&fs)?;
        let cursors: Vec<&String> = sv
            .iter()
            .filter(|v| v.starts_with("#zrepl_CURSOR"))
            .collect();
        ensure!(
            cursors == [&format!("#{}", cursor_bookmark_name(g2, SENDER_JOB))],
            "{n}: cursors {sv:?}"
        );
        ensure!(
            all_holds(&fs)?.is_empty(),
            "{n}: step holds left: {:?}",
            all_holds(&fs)?
        );
        ensure!(
            holds(&format!("{rfs}@2"))? == [last_received_hold_tag(RECEIVER_JOB)],
            "{n}: last-received hold on @2"
        );
        ensure!(
            holds(&format!("{rfs}@1"))?.is_empty(),
            "{n}: old last-received hold not released"
        );
    }
    Ok(())
}

fn version(name: &str, guid: u64, createtxg: u64) -> FilesystemVersion {
    FilesystemVersion {
        typ: VersionType::Snapshot,
        name: name.into(),
        guid,
        createtxg,
        creation: 0,
        userrefs: None,
    }
}

async fn listed(s: &impl Sender, fs: &str, name: &str) -> Result<FilesystemVersion, String> {
    s.list_versions(&dp(fs))
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|v| v.typ == VersionType::Snapshot && v.name == name)
        .ok_or_else(|| format!("{fs}@{name} not listed"))
}

/// Batching must not skip validation: a send request whose GUID does not match is refused even
/// after `prepare_sends` (which keeps no hold for it), and `receives_completed` detects a
/// received snapshot with a GUID other than the planned one.
pub async fn repl_batched_round_still_checks_guids(t: Ctx) -> TestResult {
    let fs = create(&t, "src/a")?;
    write(&fs, "a", 1)?;
    snapshot(&format!("{fs}@1"))?;
    write(&fs, "b", 1)?;
    snapshot(&format!("{fs}@2"))?;
    let s = sender(&t, &[("src/a", true)]);
    let from = listed(&s, &fs, "1").await?;
    let to = listed(&s, &fs, "2").await?;
    let mut wrong_to = to.clone();
    wrong_to.guid ^= 1;
    let req = SendRequest {
        filesystem: dp(&fs),
        from: Some(from.clone()),
        to: wrong_to,
        resume_token: None,
        replication: ReplicationConfig::default(),
    };
    s.prepare_sends(std::slice::from_ref(&req))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        all_holds(&fs)?.is_empty(),
        "holds kept for an unprepared request: {:?}",
        all_holds(&fs)?
    );
    match s.send(req).await {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest && e.message.contains("guid"),
            "{e:?}"
        ),
        Ok(_) => return Err("a send with a wrong 'to' guid was accepted".into()),
    }

    // Replicate for real, then ask the receiver to complete steps that did not happen as
    // planned.
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let rel = dp(&fs);
    let mut wrong = ReceiveRequest {
        filesystem: rel.clone(),
        to: version("2", to.guid ^ 1, to.createtxg),
        clear_resume_token: false,
        replication: ReplicationConfig::default(),
        from: Some(from.clone()),
        deferred: true,
    };
    let mut missing = wrong.clone();
    missing.to = version("3", 7, to.createtxg + 1);
    let res = r
        .receives_completed(&[wrong.clone(), missing])
        .await
        .map_err(|e| e.to_string())?;
    match &res[0] {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest && e.message.contains("has guid"),
            "{e:?}"
        ),
        Ok(()) => return Err("a received snapshot with the wrong guid was accepted".into()),
    }
    ensure!(
        matches!(&res[1], Err(e) if e.kind == ErrorKind::NotFound),
        "{:?}",
        res[1]
    );
    // The real one completes (idempotently: it holds already).
    wrong.to = to.clone();
    let res = r
        .receives_completed(&[wrong])
        .await
        .map_err(|e| e.to_string())?;
    ensure!(res[0].is_ok(), "{:?}", res[0]);
    ensure!(
        holds(&format!("{}@2", recv_path(&t, "a")))? == [last_received_hold_tag(RECEIVER_JOB)],
        "last-received hold"
    );
    Ok(())
}

/// `Zfs::bookmarks_in_one_txg`: creations, idempotent re-creation, a conflicting bookmark, and
/// destroys that only happen where their guard was created — one `zfs program` per pool.
pub async fn repl_bookmark_channel_program(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    for fs in [&a, &b] {
        snapshot(&format!("{fs}@0"))?;
        write(fs, "x", 1)?;
        snapshot(&format!("{fs}@1"))?;
        zfs(&["bookmark", &format!("{fs}@0"), &format!("{fs}#old")])?;
    }
    // b#x exists already, of another snapshot: creating it from b@1 must fail.
    zfs(&["bookmark", &format!("{b}@0"), &format!("{b}#x")])?;
    let vp = |s: &str| VersionPath::parse(s).map_err(|e| e.to_string());
    let create_ops = vec![
        (vp(&format!("{a}@1"))?, vp(&format!("{a}#x"))?),
        (vp(&format!("{b}@1"))?, vp(&format!("{b}#x"))?),
    ];
    let destroy_ops = vec![
        (Some(vp(&format!("{a}#x"))?), vp(&format!("{a}#old"))?),
        (Some(vp(&format!("{b}#x"))?), vp(&format!("{b}#old"))?),
        (None, vp(&format!("{a}#gone"))?),
    ];
    let programs = zfs_verb(&t, "program");
    let out = t
        .zfs
        .bookmarks_in_one_txg(&create_ops, &destroy_ops)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(zfs_verb(&t, "program") - programs == 1, "one program");
    ensure!(out[&format!("{a}#x")] == Ok(()), "{out:?}");
    ensure!(out[&format!("{b}#x")] == Err(17), "EEXIST: {out:?}");
    ensure!(out[&format!("{a}#old")] == Ok(()), "{out:?}");
    ensure!(
        out[&format!("{b}#old")] == Err(125),
        "guard failed: {out:?}"
    );
    ensure!(
        out[&format!("{a}#gone")] == Ok(()),
        "missing is fine: {out:?}"
    );
    let sorted = |fs: &str| -> Result<Vec<String>, String> {
        let mut v = versions(fs)?;
        v.sort();
        Ok(v)
    };
    ensure!(sorted(&a)? == ["#x", "@0", "@1"], "{:?}", versions(&a)?);
    ensure!(
        sorted(&b)? == ["#old", "#x", "@0", "@1"],
        "{:?}",
        versions(&b)?
    );
    ensure!(
        guid(&format!("{a}#x"))? == guid(&format!("{a}@1"))?,
        "a#x is a bookmark of a@1"
    );
    // Again: the existing bookmark with the right guid is success.
    let out = t
        .zfs
        .bookmarks_in_one_txg(&create_ops[..1], &[])
        .await
        .map_err(|e| e.to_string())?;
    ensure!(out[&format!("{a}#x")] == Ok(()), "idempotent: {out:?}");
    Ok(())
}

//! Batched replication rounds on real OpenZFS: the command count of a round, the channel
//! program that moves cursors, and the checks that batching must keep (GUIDs of what is sent
//! and what was received).

use zrepl_protocol::{ErrorKind, ReceiveRequest, Receiver, ReplicationConfig, SendRequest, Sender};
use zrepl_zfs::{FilesystemVersion, VersionPath, VersionType};
use zrepl_zfs_types::abstraction::{cursor_bookmark_name, last_received_hold_tag};

use crate::replication::{
    all_holds, create, dp, exists, guid, holds, must_succeed, one_attempt, receiver, recv_path,
    replicate, sender, snapshot, versions, write, zfs, RECEIVER_JOB, SENDER_JOB,
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

/// libzfs_core calls of `verb` started so far.
fn lzc_verb(t: &Ctx, verb: &str) -> u64 {
    t.zfs
        .command_stats()
        .get(&(zrepl_zfs::Binary::LibzfsCore, verb.to_string()))
        .map_or(0, |s| s.started)
}

/// `<pool>/<rel>` with snapshots `@1` and `@2`, each after new data.
fn two_snapshots(t: &Ctx, rel: &str) -> Result<String, String> {
    let fs = create(t, rel)?;
    write(&fs, "a", 1)?;
    snapshot(&format!("{fs}@1"))?;
    write(&fs, "b", 1)?;
    snapshot(&format!("{fs}@2"))?;
    Ok(fs)
}

fn send_req(fs: &str, from: Option<FilesystemVersion>, to: FilesystemVersion) -> SendRequest {
    SendRequest {
        intermediates: Vec::new(),
        filesystem: dp(fs),
        from,
        to,
        resume_token: None,
        replication: ReplicationConfig::default(),
    }
}

/// A deferred receive (completed by `receives_completed`), as the batched driver sends it.
fn recv_req(fs: &str, from: Option<FilesystemVersion>, to: FilesystemVersion) -> ReceiveRequest {
    ReceiveRequest {
        intermediates: Vec::new(),
        filesystem: dp(fs),
        to,
        clear_resume_token: false,
        replication: ReplicationConfig::default(),
        from,
        deferred: true,
    }
}

/// An incremental round of N filesystems runs N sends, N receives and a constant number of
/// other commands (listings, the cursor program) and libzfs_core calls (holds, releases, the
/// destruction of the old cursors), and leaves zrepl's abstractions exactly as step-by-step
/// replication does.
pub async fn repl_batched_round_commands_per_filesystem(t: Ctx) -> TestResult {
    const N: usize = 6;
    let names: Vec<String> = (1..=N).map(|i| format!("f{i}")).collect();
    for n in &names {
        let fs = create(&t, &format!("src/{n}"))?;
        write(&fs, "a", 1)?;
        snapshot(&format!("{fs}@1"))?;
    }
    let s = sender(&t, &[("src<", true), ("src", false)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let lists = zfs_verb(&t, "list");
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    // The initial round: the size estimates of the full sends are checked against the
    // planning listing and list nothing of their own (the sender's listing, the receiver's
    // after the receives).
    let lists = zfs_verb(&t, "list") - lists;
    ensure!(
        lists <= 2,
        "{lists} zfs list for the initial round of {N} filesystems: {:?}",
        t.zfs.command_stats()
    );
    for n in &names {
        let fs = format!("{}/src/{n}", t.pool);
        write(&fs, "b", 1)?;
        snapshot(&format!("{fs}@2"))?;
    }
    let before = t.zfs.total_commands_started();
    let (sends, recvs) = (zfs_verb(&t, "send"), zfs_verb(&t, "recv"));
    let programs = zfs_verb(&t, "program");
    ensure!(
        t.zfs.uses_libzfs_core(),
        "libzfs_core must load where OpenZFS is installed"
    );
    let destroys = zfs_verb(&t, "destroy");
    let holds_releases = zfs_verb(&t, "hold") + zfs_verb(&t, "release");
    let lzc_hr = lzc_verb(&t, "hold") + lzc_verb(&t, "release");
    let lzc_destroys = lzc_verb(&t, "destroy");
    let listings = zfs_verb(&t, "list") + zfs_verb(&t, "get");
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    // Listings: the sender's filesystems with their versions (one `zfs get`), the receiver's
    // root and its subtree, all for planning. Nothing is listed again: the step holds keep
    // what the plan names, the streams' first records prove the GUIDs on both sides, and
    // completion reuses the planning listings.
    let listings = zfs_verb(&t, "list") + zfs_verb(&t, "get") - listings;
    ensure!(
        listings <= 3,
        "{listings} listings for {N} filesystems: {:?}",
        t.zfs.command_stats()
    );
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
    // The old cursors: one libzfs_core call for all of them, no `zfs destroy`.
    ensure!(
        zfs_verb(&t, "destroy") == destroys && lzc_verb(&t, "destroy") - lzc_destroys == 1,
        "old cursors destroyed in one call: {:?}",
        t.zfs.command_stats()
    );
    // Holds and releases: step holds, last-received holds, the old last-received holds and the
    // step holds again: one libzfs_core call each (one transaction group), whatever N is, and no
    // `zfs hold`/`zfs release` (the CLI takes one transaction group per snapshot).
    let hr = zfs_verb(&t, "hold") + zfs_verb(&t, "release") - holds_releases;
    let lzc = lzc_verb(&t, "hold") + lzc_verb(&t, "release") - lzc_hr;
    ensure!(
        hr == 0 && lzc <= 4,
        "{hr} hold/release commands and {lzc} libzfs_core calls for {N} filesystems: {:?}",
        t.zfs.command_stats()
    );
    let other = total - 2 * N as u64;
    ensure!(
        other <= 12,
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
    let fs = two_snapshots(&t, "src/a")?;
    let s = sender(&t, &[("src/a", true)]);
    let from = listed(&s, &fs, "1").await?;
    let to = listed(&s, &fs, "2").await?;
    let mut wrong_to = to.clone();
    wrong_to.guid ^= 1;
    let req = send_req(&fs, Some(from.clone()), wrong_to);
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
        intermediates: Vec::new(),
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

/// The race between planning and the step holds: a snapshot destroyed and created again under
/// the same name after the sender was listed. `prepare_sends` checks the requests against that
/// listing (no second listing) and holds the new snapshot; `send` reads the stream's first
/// record, sees another GUID and refuses before a byte leaves; an unchanged request still
/// sends.
pub async fn repl_send_checks_the_stream_guids(t: Ctx) -> TestResult {
    let fs = two_snapshots(&t, "src/a")?;
    let s = sender(&t, &[("src/a", true)]);
    let planned = s
        .list_versions_many(&[dp(&fs)])
        .await
        .map_err(|e| e.to_string())?
        .remove(0)
        .map_err(|e| e.to_string())?;
    let find = |name: &str| {
        planned
            .iter()
            .find(|v| v.typ == VersionType::Snapshot && v.name == name)
            .cloned()
            .ok_or_else(|| format!("@{name} not planned"))
    };
    let (from, to) = (find("1")?, find("2")?);
    zfs(&["destroy", &format!("{fs}@2")])?;
    write(&fs, "c", 1)?;
    snapshot(&format!("{fs}@2"))?;
    let req = send_req(&fs, Some(from.clone()), to.clone());
    let listings = zfs_verb(&t, "list") + zfs_verb(&t, "get");
    s.prepare_sends(std::slice::from_ref(&req))
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        zfs_verb(&t, "list") + zfs_verb(&t, "get") == listings,
        "prepare_sends listed again although the round was planned on a listing"
    );
    match s.send(req.clone()).await {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest
                && e.message.contains("refusing")
                && e.message.contains(&format!("{:#x}", to.guid)),
            "{e:?}"
        ),
        Ok(_) => return Err("a stream of a re-created snapshot was sent".into()),
    }
    // The same request for what exists now is sent, and its stream starts with the record.
    let mut now = req;
    now.to.guid = guid(&format!("{fs}@2"))?;
    let (_, mut stream) = s.send(now).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut head).await?;
    let begin = zrepl_zfs::parse_send_begin(&head)?;
    ensure!(
        begin.toguid == guid(&format!("{fs}@2"))? && begin.fromguid == from.guid,
        "{begin:?}"
    );
    Ok(())
}

/// The receiver reads the stream's first record before it changes anything: a stream of
/// another snapshot than the request names, and bytes that are no zfs stream, are refused and
/// leave nothing behind (no received snapshot, no placeholder, no filesystem).
pub async fn repl_receive_checks_the_stream_guids(t: Ctx) -> TestResult {
    let fs = two_snapshots(&t, "src/a")?;
    let s = sender(&t, &[("src<", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let (from, to) = (listed(&s, &fs, "1").await?, listed(&s, &fs, "2").await?);
    let rfs = recv_path(&t, "a");
    // A full stream of @1 offered as @2 into a filesystem the receiver does not have.
    let (_, stream) = s
        .send(send_req(&fs, None, from.clone()))
        .await
        .map_err(|e| e.to_string())?;
    match r.receive(recv_req(&fs, None, to.clone()), stream).await {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest && e.message.contains("refusing to receive"),
            "{e:?}"
        ),
        Ok(()) => return Err("a stream of another snapshot was received".into()),
    }
    let sink = format!("{}/sink", t.pool);
    ensure!(
        zfs(&["list", "-H", "-o", "name", "-r", &sink])?.trim() == sink,
        "something was created below {sink}"
    );
    // Bytes that are no zfs stream.
    let garbage: zrepl_protocol::ByteStream = Box::pin(std::io::Cursor::new(vec![0x5au8; 4096]));
    match r.receive(recv_req(&fs, None, from.clone()), garbage).await {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest && e.message.contains("unexpected stream"),
            "{e:?}"
        ),
        Ok(()) => return Err("garbage was received".into()),
    }
    ensure!(!exists(&rfs), "{rfs} exists");
    // The real full stream, then an incremental stream offered with the wrong `from`.
    let (_, stream) = s
        .send(send_req(&fs, None, from.clone()))
        .await
        .map_err(|e| e.to_string())?;
    r.receive(recv_req(&fs, None, from.clone()), stream)
        .await
        .map_err(|e| e.to_string())?;
    let (_, stream) = s
        .send(send_req(&fs, Some(from.clone()), to.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let mut wrong_from = from.clone();
    wrong_from.guid ^= 1;
    match r
        .receive(recv_req(&fs, Some(wrong_from), to.clone()), stream)
        .await
    {
        Err(e) => ensure!(
            e.kind == ErrorKind::InvalidRequest && e.message.contains("refusing to receive"),
            "{e:?}"
        ),
        Ok(()) => return Err("an incremental stream from another snapshot was received".into()),
    }
    ensure!(versions(&rfs)? == ["@1"], "{:?}", versions(&rfs)?);
    Ok(())
}

/// A received snapshot that is gone when the round completes (destroyed since, or a receive
/// that `zfs recv` reported done without creating it) fails its own step only: the other
/// filesystems of the batch get their last-received holds and complete.
pub async fn repl_completion_failure_stays_with_its_filesystem(t: Ctx) -> TestResult {
    let s = sender(&t, &[("src<", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let mut reqs = Vec::new();
    for n in ["a", "b"] {
        let fs = create(&t, &format!("src/{n}"))?;
        write(&fs, "a", 1)?;
        snapshot(&format!("{fs}@1"))?;
        let v = listed(&s, &fs, "1").await?;
        let (_, stream) = s
            .send(send_req(&fs, None, v.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let req = recv_req(&fs, None, v);
        r.receive(req.clone(), stream)
            .await
            .map_err(|e| e.to_string())?;
        reqs.push(req);
    }
    let gone = format!("{}@1", recv_path(&t, "b"));
    zfs(&["destroy", &gone])?;
    let res = r
        .receives_completed(&reqs)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(res[0].is_ok(), "a: {:?}", res[0]);
    ensure!(
        matches!(&res[1], Err(e) if e.kind == ErrorKind::NotFound && e.message.contains(&gone)),
        "b: {:?}",
        res[1]
    );
    ensure!(
        holds(&format!("{}@1", recv_path(&t, "a")))? == [last_received_hold_tag(RECEIVER_JOB)],
        "a's last-received hold"
    );
    Ok(())
}

/// `Zfs::create_bookmarks`: bookmarks of several filesystems in one `zfs program` per pool,
/// idempotent re-creation, and a conflicting existing bookmark reported as EEXIST.
pub async fn repl_bookmark_channel_program(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    let b = create(&t, "src/b")?;
    for fs in [&a, &b] {
        snapshot(&format!("{fs}@0"))?;
        write(fs, "x", 1)?;
        snapshot(&format!("{fs}@1"))?;
    }
    // b#x exists already, of another snapshot: creating it from b@1 must fail.
    zfs(&["bookmark", &format!("{b}@0"), &format!("{b}#x")])?;
    let vp = |s: &str| VersionPath::parse(s).map_err(|e| e.to_string());
    let ops = vec![
        (
            vp(&format!("{a}@1"))?,
            vp(&format!("{a}#x"))?,
            guid(&format!("{a}@1"))?,
        ),
        (
            vp(&format!("{b}@1"))?,
            vp(&format!("{b}#x"))?,
            guid(&format!("{b}@1"))?,
        ),
    ];
    let programs = zfs_verb(&t, "program");
    let out = t
        .zfs
        .create_bookmarks(&ops)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(zfs_verb(&t, "program") - programs == 1, "one program");
    ensure!(out[&format!("{a}#x")] == Ok(()), "{out:?}");
    ensure!(out[&format!("{b}#x")] == Err(17), "EEXIST: {out:?}");
    ensure!(
        guid(&format!("{a}#x"))? == guid(&format!("{a}@1"))?,
        "a#x is a bookmark of a@1"
    );
    ensure!(
        guid(&format!("{b}#x"))? == guid(&format!("{b}@0"))?,
        "b#x is untouched"
    );
    // Again: the existing bookmark with the right guid is success.
    let out = t
        .zfs
        .create_bookmarks(&ops[..1])
        .await
        .map_err(|e| e.to_string())?;
    ensure!(out[&format!("{a}#x")] == Ok(()), "idempotent: {out:?}");
    // A source that is no longer the snapshot of the given guid (one renamed into its name)
    // is not bookmarked, nor is a missing one; checked in the program's transaction group.
    let wrong = [
        (
            vp(&format!("{a}@1"))?,
            vp(&format!("{a}#y"))?,
            guid(&format!("{a}@1"))? ^ 1,
        ),
        (vp(&format!("{a}@nope"))?, vp(&format!("{a}#z"))?, 5),
    ];
    let out = t
        .zfs
        .create_bookmarks(&wrong)
        .await
        .map_err(|e| e.to_string())?;
    ensure!(out[&format!("{a}#y")] == Err(3), "guid mismatch: {out:?}");
    ensure!(out[&format!("{a}#z")] == Err(2), "missing source: {out:?}");
    ensure!(
        !exists(&format!("{a}#y")) && !exists(&format!("{a}#z")),
        "bookmarks were created"
    );
    Ok(())
}

/// The receiver completes a round from the named snapshots, not a relisting: a stale
/// last-received hold on an older snapshot (a crash between the new hold and the release of the
/// old one, in an earlier round) must still be found and released, while a user's own hold on a
/// snapshot is left alone.
pub async fn repl_stale_last_received_holds_released(t: Ctx) -> TestResult {
    let fs = create(&t, "src/a")?;
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    // @1 by a full send, then @2 and @3 incrementally: all three on the receiver.
    write(&fs, "f1", 1)?;
    snapshot(&format!("{fs}@1"))?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    for i in 2..=3 {
        write(&fs, &format!("f{i}"), 1)?;
        snapshot(&format!("{fs}@{i}"))?;
    }
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    let rfs = recv_path(&t, "a");
    let tag = last_received_hold_tag(RECEIVER_JOB);
    ensure!(
        holds(&format!("{rfs}@3"))? == [tag.clone()],
        "last-received hold on @3: {:?}",
        holds(&format!("{rfs}@3"))?
    );
    // As if an earlier round had died between holding @3 and releasing @1 and @2.
    zfs(&["hold", &tag, &format!("{rfs}@1"), &format!("{rfs}@2")])?;
    zfs(&["hold", "users-own", &format!("{rfs}@2")])?;
    write(&fs, "f4", 1)?;
    snapshot(&format!("{fs}@4"))?;
    must_succeed(&replicate(&s, &r, &one_attempt()).await)?;
    ensure!(
        holds(&format!("{rfs}@4"))? == [tag.clone()],
        "last-received hold on @4: {:?}",
        holds(&format!("{rfs}@4"))?
    );
    for old in ["1", "3"] {
        ensure!(
            holds(&format!("{rfs}@{old}"))?.is_empty(),
            "@{old} still held: {:?}",
            holds(&format!("{rfs}@{old}"))?
        );
    }
    ensure!(
        holds(&format!("{rfs}@2"))? == ["users-own"],
        "@2: {:?}",
        holds(&format!("{rfs}@2"))?
    );
    Ok(())
}

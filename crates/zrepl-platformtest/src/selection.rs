//! Issue 18 on real ZFS: a job's snapshot selection (`replication.snapshots`) and pruning that
//! spares what the job did not make (`pruning.scope`).

use zrepl_daemon::prune::{prune, Keep};
use zrepl_endpoint::PlaceholderPolicy;
use zrepl_filters::SnapshotFilter;
use zrepl_replication::DriverConfig;

use crate::replication::{
    create, guid, must_succeed, receiver, recv_path, replicate, sender, snapshot, versions, write,
};
use crate::{Ctx, TestResult};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}: {}", file!(), line!(), stringify!($cond), format!($($fmt)+)).into());
        }
    };
}

fn snaps(fs: &str) -> Result<Vec<String>, String> {
    Ok(versions(fs)?
        .into_iter()
        .filter(|v| v.starts_with('@'))
        .collect())
}

/// A filesystem with Proxmox/sanoid-style foreign snapshots interleaved with the job's: only
/// the selected ones are replicated, initially (`all`) and incrementally, with equal guids; a
/// dry run of zrepl 0.7's pruning flags the foreign snapshots it would destroy; `scope: own`
/// destroys only the job's old snapshots on both sides and every foreign one survives.
pub async fn select_foreign_snapshots_skipped_and_spared_by_pruning(t: Ctx) -> TestResult {
    let a = create(&t, "src/a")?;
    let mut n = 0;
    let mut snap = |name: &str| -> Result<(), String> {
        n += 1;
        write(&a, &format!("f{n}"), 1)?;
        snapshot(&format!("{a}@{name}"))
    };
    for name in ["zrepl_1", "autosnap_1", "zrepl_2", "manual-x", "zrepl_3"] {
        snap(name)?;
    }
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    let cfg = DriverConfig {
        max_attempts: 1,
        policy: zrepl_planner::Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            snapshots: SnapshotFilter::prefix("zrepl_"),
            packages: false,
        },
        ..DriverConfig::default()
    };
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    let ra = recv_path(&t, "a");
    ensure!(
        snaps(&ra)? == ["@zrepl_1", "@zrepl_2", "@zrepl_3"],
        "initial: {:?}",
        snaps(&ra)?
    );

    for name in ["autosnap_2", "zrepl_4", "zrepl_5", "autosnap_3"] {
        snap(name)?;
    }
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    let got = snaps(&ra)?;
    ensure!(
        got == ["@zrepl_1", "@zrepl_2", "@zrepl_3", "@zrepl_4", "@zrepl_5"],
        "incremental: {got:?}"
    );
    for v in &got {
        ensure!(
            guid(&format!("{a}{v}"))? == guid(&format!("{ra}{v}"))?,
            "guid of {v} differs"
        );
    }
    // Nothing new selected: a round is a no-op, not an error.
    snap("autosnap_4")?;
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    ensure!(snaps(&ra)?.len() == 5, "{:?}", snaps(&ra)?);

    let last1 = || {
        vec![zrepl_pruning::Rule::LastN {
            count: 1,
            regex: None,
        }]
    };
    let keep = |scope| {
        let mut k = Keep::new(&[], scope, &SnapshotFilter::all(), Some("zrepl_"));
        k.rules = last1();
        k
    };
    // zrepl 0.7's meaning: the dry run says it would destroy foreign snapshots, and flags them.
    let all = keep(zrepl_config::PruningScope::All);
    let dry = prune(&s, &r, &all, &all, true).await;
    let sd = dry
        .sender
        .filesystems
        .iter()
        .find(|f| f.filesystem == a)
        .ok_or("sender fs missing in dry run")?;
    ensure!(
        sd.foreign == ["autosnap_1", "manual-x", "autosnap_2", "autosnap_3"],
        "dry run must flag the foreign snapshots it would destroy: {sd:?}"
    );
    ensure!(snaps(&a)?.len() == 10, "the dry run destroyed something");

    let own = keep(zrepl_config::PruningScope::Own);
    let real = prune(&s, &r, &own, &own, false).await;
    for side in [&real.sender, &real.receiver] {
        ensure!(side.error.is_none(), "{real:?}");
        for f in &side.filesystems {
            ensure!(f.errors.is_empty() && f.foreign.is_empty(), "{f:?}");
        }
    }
    let left = snaps(&a)?;
    ensure!(
        left == [
            "@autosnap_1",
            "@manual-x",
            "@autosnap_2",
            "@zrepl_5",
            "@autosnap_3",
            "@autosnap_4"
        ],
        "sender after pruning: {left:?}"
    );
    ensure!(
        snaps(&ra)? == ["@zrepl_5"],
        "receiver after pruning: {:?}",
        snaps(&ra)?
    );

    // Replication goes on from the cursor after pruning.
    snap("zrepl_6")?;
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    ensure!(
        snaps(&ra)? == ["@zrepl_5", "@zrepl_6"],
        "after pruning: {:?}",
        snaps(&ra)?
    );
    Ok(())
}

/// `mapping: {identity_component: false, strip_prefix: <pool>/src/data}` on the receiver: a
/// 1:1 mirror (`src/data/x` -> `dst/backup/x`, children and placeholders included), initial and
/// incremental, pruned by sender names; a path outside the prefix is refused before any zfs
/// command, and the prefix itself fails clearly instead of landing on root_fs.
pub async fn select_mapping_strip_prefix_mirrors_one_to_one(t: Ctx) -> TestResult {
    use zrepl_endpoint::{LocalReceiver, ReceiverConfig};
    use zrepl_protocol::Receiver as _;
    let data = create(&t, "src/data")?;
    let x = create(&t, "src/data/x")?;
    let y = create(&t, "src/data/x/y")?;
    let z = create(&t, "src/data/deep/z")?;
    for fs in [&data, &x, &y, &z] {
        write(fs, "f", 1)?;
        snapshot(&format!("{fs}@zrepl_1"))?;
    }
    let backup = crate::replication::path(&t, "dst/backup");
    crate::replication::zfs(&["create", "-p", &backup])?;
    let rcv = || {
        LocalReceiver::new(
            t.zfs.clone(),
            ReceiverConfig {
                job: "sink".into(),
                root_fs: crate::replication::dp(&backup),
                client_identity: Some("client".into()),
                placeholder: PlaceholderPolicy::Inherit,
                inherit: vec![],
                // Mounting the received child x/y would otherwise modify x (as without mapping).
                override_: vec![("readonly".into(), "on".into())],
                bandwidth_limit: None,
                identity_component: false,
                strip_prefix: Some(crate::replication::dp(&data)),
            },
            &t.reg,
        )
        .map_err(|e| e.to_string())
    };
    let r = rcv()?;
    let s = sender(
        &t,
        &[
            ("src/data<", true),
            ("src/data", false),
            ("src/data/deep", false),
        ],
    );
    let cfg = crate::replication::one_attempt();
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    for (rel, src) in [("x", &x), ("x/y", &y), ("deep/z", &z)] {
        let dst = format!("{backup}/{rel}");
        ensure!(
            guid(&format!("{dst}@zrepl_1"))? == guid(&format!("{src}@zrepl_1"))?,
            "{dst}"
        );
    }
    // `deep` is not replicated (filtered out): a placeholder; nothing at root_fs/client.
    ensure!(
        crate::replication::zfs(&[
            "get",
            "-H",
            "-o",
            "value",
            "zrepl:placeholder",
            &format!("{backup}/deep")
        ])?
        .trim()
            == "on",
        "deep must be a placeholder"
    );
    ensure!(
        !crate::replication::exists(&format!("{backup}/client")),
        "identity component must be left out"
    );
    // Incremental.
    snapshot(&format!("{x}@zrepl_2"))?;
    must_succeed(&replicate(&s, &r, &cfg).await)?;
    ensure!(
        guid(&format!("{backup}/x@zrepl_2"))? == guid(&format!("{x}@zrepl_2"))?,
        "incremental"
    );
    // The receiver lists by sender names: pruning finds its counterpart.
    let listed: Vec<String> = r
        .list_filesystems()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|f| f.path.to_string())
        .collect();
    ensure!(
        listed.contains(&x) && listed.contains(&y) && listed.contains(&z),
        "listing in sender names: {listed:?}"
    );
    let keep = zrepl_daemon::prune::Keep::rules_only(vec![zrepl_pruning::Rule::LastN {
        count: 1,
        regex: None,
    }]);
    let pr = zrepl_daemon::prune::prune(&s, &r, &keep, &keep, true).await;
    let rx = pr
        .receiver
        .filesystems
        .iter()
        .find(|f| f.filesystem == x)
        .ok_or_else(|| format!("receiver side of {x} not pruned: {pr:?}"))?;
    ensure!(rx.destroy == ["zrepl_1"], "{rx:?}");

    // Outside the prefix: refused, nothing created anywhere.
    let outside = crate::replication::dp(&crate::replication::path(&t, "other/w"));
    let e = r
        .list_versions(&outside)
        .await
        .err()
        .ok_or("a path outside strip_prefix must be refused")?;
    ensure!(
        e.to_string()
            .contains("outside the receiver's mapping.strip_prefix"),
        "{e}"
    );
    let before = crate::replication::zfs(&["list", "-H", "-o", "name", "-r", &backup])?;

    // The prefix itself has nowhere to go: a clear error, root_fs untouched.
    let s2 = sender(&t, &[("src/data<", true), ("src/data/deep", false)]);
    let rep = replicate(&s2, &rcv()?, &cfg).await;
    let d = crate::replication::fs_report(&rep, &data)?;
    ensure!(
        d.error()
            .unwrap_or("")
            .contains("is the sink's mapping.strip_prefix itself"),
        "{d:?}"
    );
    let after = crate::replication::zfs(&["list", "-H", "-o", "name", "-r", &backup])?;
    ensure!(before == after, "datasets changed:\n{before}\n->\n{after}");
    ensure!(
        crate::replication::versions(&backup)?.is_empty(),
        "nothing may be received into root_fs"
    );
    Ok(())
}

fn packaged() -> DriverConfig {
    DriverConfig {
        max_attempts: 1,
        policy: zrepl_planner::Policy {
            packages: true,
            ..Default::default()
        },
        ..DriverConfig::default()
    }
}

/// `replication.packages`: a backlog of 150 snapshots goes as one `zfs send -I` stream (one
/// step, one `zfs send`), every snapshot arriving with its guid; a package cut in the middle
/// leaves a resume token inside it, and the next run resumes that snapshot and sends the rest
/// as one more package; afterwards the round's abstractions are as after single steps (no step
/// hold left, the cursor on the newest snapshot, the last-received hold on the receiver's
/// newest).
pub async fn select_packages_backlog_one_stream_and_cut_package_resumes(t: Ctx) -> TestResult {
    use crate::replication::{all_holds, holds, zfs, CuttingSender, RECEIVER_JOB, SENDER_JOB};
    use zrepl_zfs_types::abstraction::{cursor_bookmark_name, last_received_hold_tag};
    let a = create(&t, "src/a")?;
    write(&a, "f0", 1)?;
    snapshot(&format!("{a}@p000"))?;
    let s = sender(&t, &[("src/a", true)]);
    let r = receiver(&t, "client", PlaceholderPolicy::Inherit)?;
    must_succeed(&replicate(&s, &r, &packaged()).await)?;
    let ra = recv_path(&t, "a");
    for i in 1..=150 {
        if i % 10 == 0 {
            write(&a, &format!("f{i}"), 1)?;
        }
        snapshot(&format!("{a}@p{i:03}"))?;
    }
    let sends = t.zfs.zfs_commands_started("send");
    let rep = replicate(&s, &r, &packaged()).await;
    must_succeed(&rep)?;
    ensure!(
        t.zfs.zfs_commands_started("send") - sends == 1,
        "a backlog must go as one zfs send, not {}",
        t.zfs.zfs_commands_started("send") - sends
    );
    let fsr = crate::replication::fs_report(&rep, &a)?;
    ensure!(
        fsr.steps.len() == 1 && fsr.steps[0].intermediates.len() == 149,
        "one package of 150 snapshots: {:?}",
        fsr.steps
            .iter()
            .map(|s| (s.from.clone(), s.to.clone(), s.intermediates.len()))
            .collect::<Vec<_>>()
    );
    let got = snaps(&ra)?;
    ensure!(got.len() == 151, "{} snapshots received", got.len());
    for v in ["@p001", "@p077", "@p150"] {
        ensure!(
            guid(&format!("{a}{v}"))? == guid(&format!("{ra}{v}"))?,
            "guid of {v}"
        );
    }

    // A package cut in the middle.
    for i in 1..=24 {
        write(&a, &format!("q{i}"), 1)?;
        snapshot(&format!("{a}@q{i:03}"))?;
    }
    let cut = CuttingSender {
        inner: sender(&t, &[("src/a", true)]),
        cut: 6 << 20,
    };
    let rep = replicate(&cut, &r, &packaged()).await;
    ensure!(
        rep.state != zrepl_replication::RunState::Done,
        "the cut must fail the run"
    );
    let token = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &ra])?
        .trim()
        .to_string();
    ensure!(token != "-", "no resume token after the cut");
    let partial = snaps(&ra)?.iter().filter(|v| v.starts_with("@q")).count();
    ensure!(partial < 24, "the cut came too late: {partial} received");

    let rep = replicate(&s, &r, &packaged()).await;
    must_succeed(&rep)?;
    let fsr = crate::replication::fs_report(&rep, &a)?;
    ensure!(
        fsr.steps.first().is_some_and(|s| s.resumed),
        "first step resumes: {:?}",
        fsr.steps
    );
    ensure!(
        fsr.steps.len() <= 2,
        "resume, then one package: {:?}",
        fsr.steps
    );
    let got: Vec<String> = snaps(&ra)?
        .into_iter()
        .filter(|v| v.starts_with("@q"))
        .collect();
    ensure!(got.len() == 24, "{got:?}");
    for v in &got {
        ensure!(
            guid(&format!("{a}{v}"))? == guid(&format!("{ra}{v}"))?,
            "guid of {v}"
        );
    }
    let tok = zfs(&["get", "-H", "-o", "value", "receive_resume_token", &ra])?;
    ensure!(tok.trim() == "-", "token left: {tok}");
    ensure!(
        all_holds(&a)?.is_empty(),
        "sender holds left: {:?}",
        all_holds(&a)?
    );
    let newest = format!("{a}@q024");
    let cursor = cursor_bookmark_name(guid(&newest)?, SENDER_JOB);
    ensure!(
        crate::replication::versions(&a)?.contains(&format!("#{cursor}")),
        "cursor on @q024: {:?}",
        crate::replication::versions(&a)?
    );
    ensure!(
        holds(&format!("{ra}@q024"))? == [last_received_hold_tag(RECEIVER_JOB)],
        "last-received hold on the newest: {:?}",
        all_holds(&ra)?
    );
    ensure!(
        all_holds(&ra)?.len() == 1,
        "one last-received hold only: {:?}",
        all_holds(&ra)?
    );
    Ok(())
}

/// Every kind of package stream passes the receiver's record check (packages go without the
/// protected `-x` list because the receiver checks each of their records on the way): one
/// with compressed records, embedded data and large blocks (`-c -e -L`), a raw one of an
/// encrypted filesystem (`-w`: key data in every substream's BEGIN record) and one with
/// properties (`-p`: a header, so the `-x` list too). Each backlog of five snapshots arrives
/// as one package with every guid.
pub async fn select_packages_of_every_stream_kind_pass_the_record_check(t: Ctx) -> TestResult {
    use crate::pool::sh;
    use crate::replication::{fs_report, zfs, SENDER_JOB};
    use zrepl_endpoint::{LocalSender, SenderConfig};
    use zrepl_filters::DatasetFilter;
    std::fs::write(&t.key_file, "platformtest-passphrase")?;
    let src = create(&t, "src")?;
    let keyloc = format!("keylocation=file://{}", t.key_file.display());
    type Tweak = fn(&mut SenderConfig);
    let kinds: [(&str, Vec<&str>, Tweak); 3] = [
        (
            "cel",
            vec!["-o", "compression=lz4", "-o", "recordsize=1M"],
            |c| {
                c.compressed = true;
                c.embedded_data = true;
                c.large_blocks = true;
            },
        ),
        (
            "raw",
            vec![
                "-o",
                "encryption=on",
                "-o",
                "keyformat=passphrase",
                "-o",
                &keyloc,
            ],
            |c| {
                c.encrypted = true;
                c.raw = true;
            },
        ),
        (
            "props",
            vec!["-o", "compression=gzip", "-o", "atime=off"],
            |c| c.send_properties = true,
        ),
    ];
    let r = receiver(&t, "client", PlaceholderPolicy::Off)?;
    for (kind, opts, tweak) in kinds {
        let fs = format!("{src}/{kind}");
        let mut args = vec!["create"];
        args.extend(opts.iter().copied());
        args.push(&fs);
        zfs(&args)?;
        let mp = zfs(&["get", "-H", "-o", "value", "mountpoint", &fs])?
            .trim()
            .to_string();
        for i in 0..=5 {
            // Small files (embedded block pointers where compressed small enough), a
            // compressible file and random data.
            sh(&[
                "sh",
                "-c",
                &format!(
                    "for j in $(seq 1 20); do printf 'small %s %s' $j {i} > {mp}/s{i}_$j; done; \
                     yes 'a compressible line {i}' | head -c 3000000 > {mp}/big{i}; sync"
                ),
            ])?;
            write(&fs, &format!("r{i}"), 1)?;
            snapshot(&format!("{fs}@{i}"))?;
        }
        let f = DatasetFilter::new([(fs.as_str(), true)]).map_err(|e| format!("{e:?}"))?;
        let mut cfg = SenderConfig::new(SENDER_JOB, f);
        tweak(&mut cfg);
        let s = LocalSender::new(t.zfs.clone(), cfg, &t.reg);
        // Initial replication of all: @0 in full, then @1..@5 as a package.
        let mut all = packaged();
        all.policy.initial_replication = zrepl_planner::InitialReplication::All;
        must_succeed(&replicate(&s, &r, &all).await)?;
        let rfs = recv_path(&t, kind);
        for i in 0..=5 {
            ensure!(
                guid(&format!("{fs}@{i}"))? == guid(&format!("{rfs}@{i}"))?,
                "{kind}: guid of @{i}"
            );
        }
        // Then a backlog of five as one package.
        for i in 6..=10 {
            sh(&[
                "sh",
                "-c",
                &format!("printf 'more %s' {i} > {mp}/m{i}; sync"),
            ])?;
            write(&fs, &format!("r{i}"), 1)?;
            snapshot(&format!("{fs}@{i}"))?;
        }
        let rep = replicate(&s, &r, &packaged()).await;
        must_succeed(&rep)?;
        let fsr = fs_report(&rep, &fs)?;
        ensure!(
            fsr.steps.len() == 1 && fsr.steps[0].intermediates.len() == 4,
            "{kind}: one package of five: {:?}",
            fsr.steps
                .iter()
                .map(|s| (s.from.clone(), s.to.clone(), s.intermediates.len()))
                .collect::<Vec<_>>()
        );
        for i in 6..=10 {
            ensure!(
                guid(&format!("{fs}@{i}"))? == guid(&format!("{rfs}@{i}"))?,
                "{kind}: guid of @{i}"
            );
        }
        if kind == "cel" {
            let dump = sh(&[
                "sh",
                "-c",
                &format!("zfs send -c -e -L -I {fs}@5 {fs}@10 | zstream dump"),
            ])?;
            let count = |what: &str| {
                dump.lines()
                    .find(|l| l.contains(&format!("Total {what} records")))
                    .and_then(|l| l.rsplit('=').next())
                    .and_then(|n| n.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ensure!(
                count("DRR_WRITE_EMBEDDED") > 0 && count("DRR_WRITE") > 0,
                "the stream has embedded and ordinary writes: {dump}"
            );
        }
    }
    Ok(())
}

/// The initial round with `replication.packages` into a receiver that has nothing yet: each new
/// filesystem (below two placeholder levels and the client identity) is inspected with its
/// ancestors in one command, the package after its full step is checked against what that step
/// left (no listing of the target), and completion lists the received snapshots by name, not
/// the received tree. Counted on the receiver's own `zfs`; the result is checked as always
/// (GUIDs, placeholders, one last-received hold per filesystem, no step hold).
pub async fn select_packages_initial_round_inspects_new_filesystems_once(t: Ctx) -> TestResult {
    use crate::replication::{all_holds, dp, path, zfs, RECEIVER_JOB};
    use zrepl_endpoint::{LocalReceiver, ReceiverConfig};
    use zrepl_zfs_types::abstraction::last_received_hold_tag;
    const N: usize = 6;
    let mut fss = Vec::new();
    for i in 0..N {
        let fs = create(&t, &format!("src/deep/er/f{i}"))?;
        for j in 1..=4 {
            write(&fs, &format!("w{j}"), 1)?;
            snapshot(&format!("{fs}@zrepl_{j}"))?;
        }
        fss.push(fs);
    }
    let s = sender(&t, &[("src/deep/er<", true), ("src/deep/er", false)]);
    let root = path(&t, "sink");
    zfs(&["create", "-p", &root])?;
    let rz = zrepl_zfs::Zfs::new(zrepl_zfs::ZfsConfig::default());
    rz.features().await.map_err(|e| e.to_string())?;
    let r = LocalReceiver::new(
        rz.clone(),
        ReceiverConfig {
            job: RECEIVER_JOB.into(),
            root_fs: dp(&root),
            client_identity: Some("client".into()),
            placeholder: PlaceholderPolicy::Inherit,
            inherit: vec![],
            override_: vec![],
            bandwidth_limit: None,
            identity_component: true,
            strip_prefix: None,
        },
        &t.reg,
    )
    .map_err(|e| e.to_string())?;
    let cfg = DriverConfig {
        policy: zrepl_planner::Policy {
            initial_replication: zrepl_planner::InitialReplication::All,
            ..packaged().policy
        },
        ..packaged()
    };
    let count = |z: &zrepl_zfs::Zfs| {
        (
            z.zfs_commands_started("list"),
            z.zfs_commands_started("get"),
        )
    };
    let (l0, g0) = count(&rz);
    let rep = replicate(&s, &r, &cfg).await;
    must_succeed(&rep)?;
    let (l1, g1) = count(&rz);
    let (lists, gets) = (l1 - l0, g1 - g0);
    eprintln!("  receiver: {lists} zfs list, {gets} zfs get for {N} new filesystems");
    for fs in &fss {
        let fsr = crate::replication::fs_report(&rep, fs)?;
        ensure!(
            fsr.steps.len() == 2 && fsr.steps[1].intermediates.len() == 2,
            "{fs}: a full step, then one package of 3: {:?}",
            fsr.steps
                .iter()
                .map(|s| (s.from.clone(), s.to.clone(), s.intermediates.len()))
                .collect::<Vec<_>>()
        );
        let rel = fs.rsplit('/').next().unwrap_or_default();
        let ra = recv_path(&t, &format!("deep/er/{rel}"));
        for j in 1..=4 {
            ensure!(
                guid(&format!("{fs}@zrepl_{j}"))? == guid(&format!("{ra}@zrepl_{j}"))?,
                "{ra}@zrepl_{j}"
            );
        }
        let held = all_holds(&ra)?;
        let tag = last_received_hold_tag(RECEIVER_JOB);
        ensure!(
            held == vec![format!("{ra}@zrepl_4 {tag}")],
            "{ra}: one last-received hold on the newest: {held:?}"
        );
    }
    for level in ["deep", "deep/er"] {
        let p = recv_path(&t, level);
        let v = zfs(&["get", "-H", "-o", "value,source", "zrepl:placeholder", &p])?;
        ensure!(v.trim() == "on\tlocal", "{p} is a placeholder: {v:?}");
    }
    // Planning (filesystems, then the versions of those that exist: none), one inspection per
    // new filesystem (ancestors included), the placeholder levels created once under the lock
    // (inspected again there), and one listing of the received snapshots by name: 1 zfs list
    // and 9 zfs get in the VM. Before, each filesystem cost about eight inspections, a listing
    // for the package's check and one in completion.
    ensure!(
        lists + gets <= N as u64 + 6,
        "the receiver ran {lists} zfs list and {gets} zfs get for {N} new filesystems: {:?}",
        rz.command_stats()
    );
    Ok(())
}

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
        left == ["@autosnap_1", "@manual-x", "@autosnap_2", "@zrepl_5", "@autosnap_3", "@autosnap_4"],
        "sender after pruning: {left:?}"
    );
    ensure!(snaps(&ra)? == ["@zrepl_5"], "receiver after pruning: {:?}", snaps(&ra)?);

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

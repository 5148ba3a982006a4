//! zrepl platform tests: zrepl-zfs, the endpoints, the replication driver and the daemon against
//! real OpenZFS (2.3 in the test VM).
//!
//! Run as root where the zfs module is loaded (`tools/platform-test.sh [FILTER]` does that in a
//! qemu VM). Every test gets a fresh pool on a sparse 256 MiB file vdev under /tmp (the pool name
//! contains `zreplplatformtest`), destroyed afterwards even if the test failed or panicked.
//! Tests run one at a time by default (`--test-threads=1`), and the usual libtest arguments work
//! (name filter, `--exact`, `--skip`, `--list`).
//!
//! Without `/dev/zfs` the binary fails loudly instead of skipping: a platform test run that tests
//! nothing must never look green.

mod crash;
mod dbhooks;
mod faults;
mod issue19;
mod logging;
mod monitor;
mod network;
mod observe;
mod orch;
mod parity;
mod pool;
mod replication;
mod scripting;
mod selection;
mod tests;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use zrepl_zfs::{Argv, CommandInfo, CommandObserver, CommandResult, Zfs, ZfsConfig};

use crate::pool::TestPool;

/// What a test gets: a zrepl-zfs handle with fresh counters and its pool.
#[derive(Clone)]
pub struct Ctx {
    pub zfs: Zfs,
    pub pool: String,
    pub key_file: std::path::PathBuf,
    /// The endpoints' shared state of this test (a daemon has one of its own).
    pub reg: zrepl_endpoint::Registry,
}

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Remembers the commands a test ran, to print the last ones when it fails.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl CommandObserver for Recorder {
    fn finished(&self, cmd: &CommandInfo, result: CommandResult, elapsed: Duration) {
        let line = format!(
            "{} -> {result:?} ({:.0} ms)",
            Argv(cmd.argv.clone()),
            elapsed.as_secs_f64() * 1e3
        );
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl Recorder {
    fn tail(&self, n: usize) -> String {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let skip = v.len().saturating_sub(n);
        v[skip..].join("\n    ")
    }
}

fn run<F, Fut>(name: &'static str, f: F) -> Result<(), Failed>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let start = Instant::now();
    let mut pool = TestPool::create().map_err(|e| format!("creating the test pool: {e}"))?;
    let recorder = Arc::new(Recorder::default());
    let ctx = Ctx {
        zfs: Zfs::new(ZfsConfig {
            observer: Some(recorder.clone()),
            ..ZfsConfig::default()
        }),
        pool: pool.name.clone(),
        key_file: pool.key_file(),
        reg: zrepl_endpoint::Registry::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let res = rt.block_on(f(ctx));
    // Dropping the runtime drops leftover tasks and children (kill_on_drop) before the pool goes.
    drop(rt);
    let cleanup = pool.destroy();
    eprintln!("  [{name}: {:.1}s]", start.elapsed().as_secs_f64());
    res.map_err(|e| {
        Failed::from(format!(
            "{e}\n  last zrepl-zfs commands:\n    {}",
            recorder.tail(20)
        ))
    })?;
    cleanup.map_err(|e| Failed::from(format!("destroying the test pool: {e}")))
}

macro_rules! trials {
    ($module:ident: $($name:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($name), || run(stringify!($name), $module::$name))),*]
    };
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let mut trials = trials![tests:
        feature_detection,
        get_set_user_properties,
        received_user_property_cannot_forge_listing_rows,
        nonexistent_datasets_are_classified,
        multi_dataset_snapshot_is_one_command,
        bookmark_idempotent_and_exists_error,
        idempotent_hold_and_release,
        destroy_bookmarks_batched_and_idempotent,
        holds_block_destroy,
        destroy_refuses_when_guid_changed,
        batched_destroy_reports_exactly_the_held_snapshot,
        send_dry_run_estimate_nonzero,
        incremental_send_from_bookmark_after_snapshot_destroyed,
        raw_send_of_encrypted_dataset_received_without_key,
        interrupted_full_receive_resumes_with_token,
        interrupted_incremental_receive_resumes_with_token,
        recv_abort_clears_resume_token,
        send_stream_drop_kills_zfs_send,
        placeholder_creation_and_detection,
        names_with_spaces_end_to_end,
        invalid_names_rejected_before_any_command,
        subtree_listing_200x20_is_one_command,
    ];
    trials.extend(trials![network:
        net_push_pull_tcp,
        net_push_pull_tls,
        net_push_pull_ssh_stdinserver,
        net_signal_reset_aborts_and_next_run_resumes,
        net_received_properties_cannot_mount_or_hook_into_the_host,
        net_source_bounds_what_a_pull_client_destroys,
        net_sink_refuses_a_replication_stream,
        net_sink_refuses_properties_hidden_in_a_package,
        net_push_to_agentless_ssh_remote,
        net_pull_from_agentless_ssh_remote,
        net_push_to_agentless_remote_as_delegated_user,
        net_pull_from_agentless_remote_as_delegated_user,
        net_source_expires_step_holds_of_a_client_that_never_completes,
        net_sink_bounds_connections_per_client,
        net_push_beyond_message_limits,
        net_noop_round_lists_filesystems_not_snapshots,
    ]);
    trials.extend(trials![replication:
        repl_initial_then_incremental_chain,
        repl_interrupted_transfer_resumes_without_leftover_holds,
        repl_dropin_from_zrepl07_cursor_and_hold,
        repl_encrypted_raw_to_keyless_receiver,
        repl_properties_override_and_inherit,
        repl_conflict_on_one_filesystem_while_five_replicate,
        repl_initial_replication_policies,
        repl_protection_levels,
        repl_malicious_requests_refused,
        prune_both_sides_dry_run_matches_and_holds_are_kept,
        daemon_push_sink_local_wakeup_and_kill,
        daemon_periodic_push_rounds_and_snap_job,
        ops_zfs_abstraction_migrate_and_placeholder,
        daemon_snapshot_hooks,
    ]);
    trials.extend(trials![logging: logging_syslog_outlet_to_rsyslogd]);
    trials.extend(trials![dbhooks: dbhooks_postgres_checkpoint, dbhooks_mysql_lock_tables]);
    trials.extend(trials![observe:
        observe_status_tui_mid_replication,
        observe_metrics_promtool_and_last_success,
    ]);
    trials.extend(trials![orch: repl_batched_round_commands_per_filesystem, repl_batched_round_still_checks_guids,
        repl_send_checks_the_stream_guids,
        repl_receive_checks_the_stream_guids,
        repl_completion_failure_stays_with_its_filesystem, repl_bookmark_channel_program, repl_stale_last_received_holds_released]);
    trials.extend(trials![crash:
        crash_lost_completion_converges_guarantee_resumability,
        crash_lost_completion_converges_guarantee_incremental,
        crash_after_step_holds,
        crash_mid_stream,
        crash_after_receive_before_completion,
        crash_after_receives_completed,
        crash_between_new_cursor_and_old_cursor,
        crash_during_last_received_hold_move,
        crash_after_placeholder_marked_before_recv,
        crash_after_placeholder_replaced_before_unmark,
        crash_in_convergence_after_new_cursor,
        crash_in_convergence_after_new_hold,
        crash_in_pruning_after_sender_destroys,
        crash_after_snapshotting,
        crash_injected_error_fails_the_run_then_converges,
        crash_injected_error_converges_in_the_same_daemon,
        crash_kill_anywhere_campaign,
    ]);
    trials.extend(trials![selection: select_foreign_snapshots_skipped_and_spared_by_pruning, select_mapping_strip_prefix_mirrors_one_to_one,
        select_packages_backlog_one_stream_and_cut_package_resumes,
        select_packages_of_every_stream_kind_pass_the_record_check,
        select_packages_initial_round_inspects_new_filesystems_once]);
    trials.extend(trials![faults:
        fault_quota_mid_stream_then_resume,
        fault_stalled_transfer_is_aborted_and_resumed,
        fault_hanging_zfs_command_is_bounded,
        fault_receiving_pool_exported_then_imported,
        fault_modified_receiving_dataset,
    ]);
    trials.extend(trials![monitor: monitor_skip_empty_snapshots, monitor_checks_exit_codes]);
    trials.extend(trials![issue19:
        issue19_sink_session_hooks_tcp_and_local,
        issue19_backpressure_stops_and_resumes_snapshots,
        issue19_source_session_hooks_and_backpressure,
    ]);
    trials.extend(trials![scripting:
        script_wakeup_wait_exit_codes,
        script_zrepl_run_to_pool_imported_for_the_run,
        script_push_replication_interval,
        script_sigterm_lets_the_run_finish,
        script_second_sigterm_aborts,
        script_replication_hooks,
    ]);
    trials.extend(trials![parity:
        parity_list_versions_types_and_userrefs,
        parity_list_filesystems_includes_volumes,
        parity_idempotent_destroy,
        parity_receive_force_rollback_and_encrypted_refusal,
        parity_replication_cursor_names_with_spaces,
        parity_failing_initial_parent_prohibits_child,
        parity_receiver_error_while_still_sending,
        parity_stale_abstractions_cleaned_other_jobs_kept,
        parity_resumable_full_send,
        parity_step_holds_released_after_switch_to_incremental,
        parity_tentative_cursor_as_incremental_source,
        parity_chained_replication_of_placeholders,
        parity_placeholder_encryption_unspecified,
        parity_step_completed_lost,
        parity_send_encryption_and_raw_policies,
        parity_zvol_replication_below_placeholders,
        parity_encrypted_root_fs_placeholder_inherit,
        parity_send_properties_recv_override_inherit,
        parity_clone_on_receiver_blocks_only_its_origin,
        parity_two_jobs_same_filesystem_and_users_objects,
        parity_recreated_snapshot_name_fails_only_that_filesystem,
        parity_resume_partial_receive_made_outside_zrepl,
    ]);
    // Every failpoint has its crash test.
    for (fp, _) in zrepl_failpoint::ALL {
        assert!(
            crash::COVERED.contains(fp),
            "failpoint {fp} has no crash test in crash.rs"
        );
    }
    // A renamed test must not silently leave the core.
    for name in CORE_NAMED.iter().chain(CORE_EXCLUDED) {
        assert!(
            trials.iter().any(|t| t.name() == *name),
            "the core names {name}, which is no test"
        );
    }
    match std::env::var("ZREPL_PLATFORMTEST_SET").as_deref() {
        Err(_) | Ok("" | "all") => {}
        Ok("core") => trials.retain(|t| in_core(t.name())),
        Ok(other) => {
            eprintln!("FATAL: ZREPL_PLATFORMTEST_SET={other:?} is not a test set (all, core)");
            std::process::exit(2);
        }
    }
    if !args.list && !std::path::Path::new("/dev/zfs").exists() {
        eprintln!(
            "FATAL: /dev/zfs does not exist: the zfs kernel module is not loaded here.\n\
             The platform tests need real ZFS and never skip; run them with \
             tools/platform-test.sh (qemu VM)."
        );
        std::process::exit(1);
    }
    libtest_mimic::run(&args, trials).exit();
}

/// The replication core (`ZREPL_PLATFORMTEST_SET=core`), for the OpenZFS series other than the
/// default one (`ZREPL_TEST_EXTRA_SERIES` of tools/test.sh): zrepl-zfs's own command tests (feature
/// detection, listings, holds, bookmarks, resume tokens; not the 200 x 20 listing), every
/// replication and orchestration case (`repl_`), zrepl's parity cases (`parity_`) but two,
/// pruning, and the daemon end to end over tcp. About 5.5 minutes of VM time against the whole
/// suite's 40.
fn in_core(name: &str) -> bool {
    (name.starts_with("repl_") || name.starts_with("parity_") || CORE_NAMED.contains(&name))
        && !CORE_EXCLUDED.contains(&name)
}

/// The two slowest parity cases (a minute and a half together), whose subjects the core covers
/// with other tests: raw sends of encrypted filesystems (`repl_encrypted_raw_to_keyless_receiver`,
/// `raw_send_of_encrypted_dataset_received_without_key`) and resuming a full send
/// (`interrupted_full_receive_resumes_with_token`).
const CORE_EXCLUDED: &[&str] = &[
    "parity_send_encryption_and_raw_policies",
    "parity_resumable_full_send",
];

/// The core's tests named one by one (main checks that each exists).
const CORE_NAMED: &[&str] = &[
    "feature_detection",
    "get_set_user_properties",
    "received_user_property_cannot_forge_listing_rows",
    "nonexistent_datasets_are_classified",
    "multi_dataset_snapshot_is_one_command",
    "bookmark_idempotent_and_exists_error",
    "idempotent_hold_and_release",
    "destroy_bookmarks_batched_and_idempotent",
    "holds_block_destroy",
    "destroy_refuses_when_guid_changed",
    "batched_destroy_reports_exactly_the_held_snapshot",
    "send_dry_run_estimate_nonzero",
    "incremental_send_from_bookmark_after_snapshot_destroyed",
    "raw_send_of_encrypted_dataset_received_without_key",
    "interrupted_full_receive_resumes_with_token",
    "interrupted_incremental_receive_resumes_with_token",
    "recv_abort_clears_resume_token",
    "send_stream_drop_kills_zfs_send",
    "placeholder_creation_and_detection",
    "names_with_spaces_end_to_end",
    "invalid_names_rejected_before_any_command",
    "net_push_pull_tcp",
    "prune_both_sides_dry_run_matches_and_holds_are_kept",
];

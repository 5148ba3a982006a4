//! Named failpoints: places in a replication round, in pruning and in snapshotting where a test
//! can make the daemon crash (as SIGKILL would: no destructor, no flush, no cleanup) or make the
//! operation fail, to prove that the next run converges from what is on disk.
//!
//! Inert unless the environment variable `ZREPL_FAILPOINTS` names them when the process starts:
//!
//! ```text
//! ZREPL_FAILPOINTS="driver.step.after_receive=kill;sender.complete.after_new_cursor=error@2"
//! ```
//!
//! Each entry is `NAME=ACTION[@N]`: `kill` sends SIGKILL to this process, `error` fails the
//! operation with an [`Injected`] error, `off` does nothing; `@N` acts on the N-th hit only
//! (1-based; default: every hit). Unknown names are refused when the spec is parsed, so a typo
//! in a test cannot silently test nothing.
//!
//! The enabled set is read once per process from the environment (the one process-global state
//! of this crate: the environment itself is process-global, and failpoints exist only for tests).
//! Hitting a failpoint that is not enabled costs one atomic load after the first call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Every failpoint, with where it sits. Tests iterate over this list; [`hit`] panics in debug
/// builds on a name that is not here.
pub const ALL: &[(&str, &str)] = &[
    (
        "sender.prepare_sends.after_holds",
        "the round's step holds exist, no stream has started",
    ),
    (
        "driver.step.mid_stream",
        "a step's stream has carried its first 256 KiB (once per step)",
    ),
    (
        "driver.step.after_receive",
        "`zfs recv` finished a step, its completion has not run",
    ),
    (
        "driver.complete.after_receives_completed",
        "the receiver checked and held the round's snapshots, the sender's cursors have not moved",
    ),
    (
        "sender.complete.after_new_cursor",
        "the new replication cursors exist, older cursors and the step holds are still there",
    ),
    (
        "receiver.complete.after_new_hold",
        "the new last-received holds exist, the older ones are still there",
    ),
    (
        "receiver.receive.after_placeholder_cleared",
        "a placeholder was marked as being replaced (zrepl:placeholder=replacing), `zfs recv -F` has not started",
    ),
    (
        "receiver.receive.after_recv_before_unmark",
        "`zfs recv -F` replaced a placeholder, its mark is still `replacing`",
    ),
    (
        "converge.sender.after_new_cursor",
        "convergence created a cursor, older cursors, tentative cursors and step holds remain",
    ),
    (
        "converge.receiver.after_new_hold",
        "convergence created a last-received hold, older ones remain",
    ),
    (
        "prune.sender.after_destroy",
        "pruning destroyed snapshots of the sender, the receiver is not pruned yet",
    ),
    (
        "snapshot.after_create",
        "periodic snapshotting created its snapshots, replication has not been woken",
    ),
];

/// The error an `error` failpoint returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected(pub &'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failpoint {} injected an error", self.0)
    }
}

impl std::error::Error for Injected {}

/// What an enabled failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Kill,
    Error,
    Off,
}

/// One enabled failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// Act on this hit only (1-based); `None`: every hit.
    pub nth: Option<u64>,
}

/// Parses a `ZREPL_FAILPOINTS` value. Every problem is an error: a misspelt failpoint must not
/// make a crash test pass without crashing.
pub fn parse(spec: &str) -> Result<HashMap<&'static str, Rule>, String> {
    let mut out = HashMap::new();
    for entry in spec
        .split([';', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, action) = entry
            .split_once('=')
            .ok_or_else(|| format!("failpoint entry {entry:?} is not NAME=ACTION"))?;
        let name = name.trim();
        let known = ALL
            .iter()
            .map(|(n, _)| *n)
            .find(|n| *n == name)
            .ok_or_else(|| format!("unknown failpoint {name:?}"))?;
        let (action, nth) = match action.trim().split_once('@') {
            Some((a, n)) => {
                let n: u64 =
                    n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("failpoint {name}: {n:?} is not a hit number >= 1")
                    })?;
                (a, Some(n))
            }
            None => (action.trim(), None),
        };
        let action = match action {
            "kill" => Action::Kill,
            "error" => Action::Error,
            "off" => Action::Off,
            a => {
                return Err(format!(
                    "failpoint {name}: unknown action {a:?} (kill, error, off)"
                ))
            }
        };
        out.insert(known, Rule { action, nth });
    }
    Ok(out)
}

struct Enabled {
    rules: HashMap<&'static str, (Rule, AtomicU64)>,
}

fn enabled() -> Option<&'static Enabled> {
    static ENABLED: OnceLock<Option<Enabled>> = OnceLock::new();
    ENABLED
        .get_or_init(|| {
            let spec = std::env::var("ZREPL_FAILPOINTS").ok()?;
            match parse(&spec) {
                Ok(rules) if rules.is_empty() => None,
                Ok(rules) => Some(Enabled {
                    rules: rules
                        .into_iter()
                        .map(|(n, r)| (n, (r, AtomicU64::new(0))))
                        .collect(),
                }),
                // A test asked for failpoints we cannot honour: failing loudly is the only
                // answer that cannot make a crash test pass vacuously.
                Err(e) => {
                    eprintln!("zrepl: ZREPL_FAILPOINTS: {e}");
                    std::process::exit(2)
                }
            }
        })
        .as_ref()
}

/// Validates `ZREPL_FAILPOINTS` now (the binary calls this at start, so a bad spec fails before
/// any work) and tells whether any failpoint is enabled.
pub fn init() -> bool {
    enabled().is_some()
}

/// Passes failpoint `name`: returns `Ok` unless it is enabled with `error` for this hit; with
/// `kill`, the process dies here.
pub fn hit(name: &'static str) -> Result<(), Injected> {
    debug_assert!(
        ALL.iter().any(|(n, _)| *n == name),
        "failpoint {name} is not listed in zrepl_failpoint::ALL"
    );
    let Some(en) = enabled() else { return Ok(()) };
    let Some((rule, count)) = en.rules.get(name) else {
        return Ok(());
    };
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    if rule.nth.is_some_and(|want| want != n) {
        return Ok(());
    }
    match rule.action {
        Action::Off => Ok(()),
        Action::Error => Err(Injected(name)),
        Action::Kill => {
            eprintln!("zrepl: failpoint {name}: killing this process (SIGKILL)");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // SIGKILL cannot be caught; should it not be delivered at once, never go on.
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        type Want = &'static [(&'static str, Action, Option<u64>)];
        let ok: &[(&str, Want)] = &[
            ("", &[]),
            (
                "driver.step.after_receive=kill",
                &[("driver.step.after_receive", Action::Kill, None)],
            ),
            (
                " sender.complete.after_new_cursor = error@2 ; snapshot.after_create=off",
                &[
                    ("sender.complete.after_new_cursor", Action::Error, Some(2)),
                    ("snapshot.after_create", Action::Off, None),
                ],
            ),
            (
                "prune.sender.after_destroy=kill,",
                &[("prune.sender.after_destroy", Action::Kill, None)],
            ),
        ];
        for (spec, want) in ok {
            let got = parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(got.len(), want.len(), "{spec:?}");
            for (n, a, nth) in *want {
                assert_eq!(
                    got.get(n),
                    Some(&Rule {
                        action: *a,
                        nth: *nth
                    }),
                    "{spec:?}"
                );
            }
        }
        let bad = [
            "nonsense",
            "driver.step.after_recieve=kill",
            "driver.step.after_receive=explode",
            "driver.step.after_receive=kill@0",
            "driver.step.after_receive=kill@x",
        ];
        for spec in bad {
            assert!(parse(spec).is_err(), "{spec:?} accepted");
        }
    }

    #[test]
    fn names_are_unique_and_described() {
        let mut seen = std::collections::HashSet::new();
        for (n, what) in ALL {
            assert!(seen.insert(n), "{n} listed twice");
            assert!(!what.is_empty());
            assert!(n.split('.').count() >= 2, "{n}: use area.place names");
        }
    }

    #[test]
    fn disabled_points_pass() {
        // Tests run without ZREPL_FAILPOINTS: every point is inert.
        assert!(!init());
        for (n, _) in ALL {
            assert_eq!(hit(n), Ok(()));
        }
    }
}

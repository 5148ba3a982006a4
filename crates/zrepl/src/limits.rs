//! Process limits the daemon raises at start.
//!
//! Every connection of a peer, every stream connection, every `zfs` process's pipes and every
//! listener take file descriptors; the usual soft limit of 1024 would let a busy sink (or a peer
//! opening connections) run out long before the kernel's hard limit. The daemon raises its soft
//! `RLIMIT_NOFILE` to the hard limit (as systemd recommends for such services), capped so that
//! programs we spawn and that loop over every possible descriptor stay fast.

/// The soft limit the daemon runs with: the hard limit, at most [`CAP`], never lower than now.
pub fn nofile_target(soft: Option<u64>, hard: Option<u64>) -> Option<u64> {
    // `None` is RLIM_INFINITY.
    let want = hard.map_or(CAP, |h| h.min(CAP));
    match soft {
        Some(s) if s < want => Some(want),
        _ => None,
    }
}

/// The highest soft limit the daemon asks for.
pub const CAP: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` (see the module documentation); returns (before, after).
pub fn raise_nofile() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    match nofile_target(cur.current, cur.maximum) {
        Some(t) => {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(t),
                    maximum: cur.maximum,
                },
            )?;
            Ok((cur.current, Some(t)))
        }
        None => Ok((cur.current, cur.current)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_target_table() {
        let cases = [
            (Some(1024), Some(524_288), Some(524_288)),
            (Some(1024), None, Some(CAP)),
            (Some(1024), Some(CAP * 4), Some(CAP)),
            (Some(524_288), Some(524_288), None),
            (None, None, None),
            (Some(CAP * 2), Some(CAP * 4), None),
        ];
        for (soft, hard, want) in cases {
            assert_eq!(nofile_target(soft, hard), want, "{soft:?} {hard:?}");
        }
    }

    #[test]
    fn raise_nofile_raises_this_process() {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let cur = getrlimit(Resource::Nofile);
        let low = 256.min(cur.current.unwrap_or(256));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: cur.maximum,
            },
        )
        .unwrap();
        let (before, after) = raise_nofile().unwrap();
        assert_eq!(before, Some(low));
        let now = getrlimit(Resource::Nofile).current;
        assert_eq!(now, after);
        assert!(now.unwrap_or(u64::MAX) > low || cur.maximum == Some(low));
    }
}

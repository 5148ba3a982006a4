//! Connections a serving job accepts at once: per client identity and in total. A client (a
//! compromised one, or one misconfigured with a huge `concurrency`) beyond its bound is refused
//! with a clear reason at the version handshake; every other client goes on.
//!
//! One job invocation of a client needs one control connection plus one stream connection per
//! `zfs send`/`zfs recv` running at once, so the per-client bound also bounds the zfs
//! processes a client can make this host run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Connections of one client identity at once.
pub(crate) const PER_IDENTITY: usize = 64;
/// Connections of all clients of one serving job at once.
pub(crate) const TOTAL: usize = 512;

pub(crate) struct ConnLimits {
    per_identity: usize,
    total: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    by_identity: HashMap<String, usize>,
}

/// An admitted connection; dropping it frees its place.
pub(crate) struct Admitted {
    limits: Arc<ConnLimits>,
    identity: String,
}

impl ConnLimits {
    pub(crate) fn new(per_identity: usize, total: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            per_identity,
            total,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection of `identity`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, identity: &str) -> Result<Admitted, String> {
        let mut st = self.state();
        let mine = st.by_identity.get(identity).copied().unwrap_or(0);
        if mine >= self.per_identity {
            return Err(format!(
                "too many connections of client {identity:?} at once (limit {}); retry later",
                self.per_identity
            ));
        }
        if st.total >= self.total {
            return Err(format!(
                "too many connections to this job at once (limit {}); retry later",
                self.total
            ));
        }
        st.total += 1;
        *st.by_identity.entry(identity.to_string()).or_default() += 1;
        Ok(Admitted {
            limits: self.clone(),
            identity: identity.to_string(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut st = self.limits.state();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.by_identity.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                st.by_identity.remove(&self.identity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_identity_and_in_total() {
        let l = ConnLimits::new(2, 3);
        let a1 = l.admit("a").unwrap();
        let _a2 = l.admit("a").unwrap();
        let e = l.admit("a").err().unwrap();
        assert!(e.contains("client \"a\"") && e.contains("limit 2"), "{e}");
        // Others go on.
        let _b1 = l.admit("b").unwrap();
        let e = l.admit("c").err().unwrap();
        assert!(e.contains("limit 3"), "{e}");
        // A closed connection frees its place.
        drop(a1);
        let _c1 = l.admit("c").unwrap();
        assert!(l.admit("a").is_err());
        assert_eq!(l.state().total, 3);
        assert_eq!(l.state().by_identity.len(), 3);
    }

    #[test]
    fn identities_are_forgotten_when_their_connections_end() {
        let l = ConnLimits::new(1, 10);
        for i in 0..100 {
            let _a = l.admit(&format!("client{i}")).unwrap();
        }
        assert_eq!(l.state().total, 0);
        assert!(l.state().by_identity.is_empty());
    }
}

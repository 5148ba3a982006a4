//! What the endpoints of one daemon share across connections: a server makes one endpoint per
//! connection, and a peer's control RPCs and its streams arrive on different connections, so
//! what must span them lives here, keyed by job (and root or peer). The daemon owns one
//! [`Registry`] and passes it to every endpoint it creates; nothing is process-global, so two
//! daemons (or two tests) in one process share nothing.
//!
//! Entries are weak: state lives as long as some endpoint uses it; the versions listings
//! caches are the exception (they must outlive a job's runs).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use zrepl_zfs_types::DatasetPath;

use crate::listings::Listings;
use crate::ratelimit::{BandwidthLimit, Bucket};
use crate::receiver::RootShared;
use crate::sender::Prepared;

/// The shared state of one daemon's endpoints. Cloning is cheap (one `Arc`).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per job and peer: the steps `prepare_sends` protected and the listings of the round.
    prepared: Mutex<HashMap<String, Weak<Mutex<Prepared>>>>,
    /// Per receiver root: the placeholder-creation lock and the checked receives.
    roots: Mutex<HashMap<DatasetPath, Weak<RootShared>>>,
    /// Per job and side: the bandwidth token bucket.
    buckets: Mutex<HashMap<String, Weak<Bucket>>>,
    /// Per job sender and per receiver root: the versions listings kept between
    /// runs. Held for the registry's (the daemon's) lifetime, unlike the entries above: a
    /// job's cache must outlive its runs. Bounded by the filesystems of the daemon's jobs.
    listings: Mutex<HashMap<String, Arc<Listings>>>,
    /// The listings caches are off (`ZREPL_LISTING_CACHE=off`).
    no_listing_cache: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// The live entry of `key`, or a new one from `make` if there is none (or `keep` rejects it);
/// dead entries are dropped on insertion.
fn entry<K: Eq + Hash + Clone, V>(
    map: &Mutex<HashMap<K, Weak<V>>>,
    key: &K,
    keep: impl Fn(&V) -> bool,
    make: impl FnOnce() -> V,
) -> Arc<V> {
    let mut all = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = all.get(key).and_then(Weak::upgrade) {
        if keep(&v) {
            return v;
        }
    }
    all.retain(|_, w| w.strong_count() > 0);
    let v = Arc::new(make());
    all.insert(key.clone(), Arc::downgrade(&v));
    v
}

impl Registry {
    /// A registry whose endpoints keep no versions listings between runs.
    pub fn without_listing_cache() -> Self {
        Registry {
            inner: Arc::new(Inner {
                no_listing_cache: true,
                ..Default::default()
            }),
        }
    }

    pub(crate) fn prepared(&self, job: &str, peer: &str) -> Arc<Mutex<Prepared>> {
        entry(
            &self.inner.prepared,
            &format!("{job}\0{peer}"),
            |_| true,
            Default::default,
        )
    }

    /// The versions listings cache of `key` (`sender\0<job>`, `receiver\0<root>`).
    pub(crate) fn listings(&self, key: &str) -> Arc<Listings> {
        self.inner
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Listings::new(!self.inner.no_listing_cache)))
            .clone()
    }

    pub(crate) fn root(&self, root: &DatasetPath) -> Arc<RootShared> {
        entry(&self.inner.roots, root, |_| true, Default::default)
    }

    /// The bucket of `key` (a job and side), created with `limit`; a bucket of another limit
    /// (a reloaded config) is replaced.
    pub(crate) fn bucket(&self, key: &str, limit: BandwidthLimit) -> Arc<Bucket> {
        entry(
            &self.inner.buckets,
            &key.to_string(),
            |b| b.has_limit(limit),
            || Bucket::new(limit),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_shared_per_key_and_registry() {
        let a = Registry::default();
        let b = Registry::default();
        let p = DatasetPath::parse("pool/sink").unwrap();
        let q = DatasetPath::parse("pool/other").unwrap();
        assert!(
            Arc::ptr_eq(&a.root(&p), &a.root(&p)) || {
                // Nothing held the first one: a new entry is fine, but a held one is shared.
                false
            }
        );
        let held = a.root(&p);
        assert!(Arc::ptr_eq(&held, &a.root(&p)));
        assert!(!Arc::ptr_eq(&held, &a.root(&q)));
        assert!(!Arc::ptr_eq(&held, &b.root(&p)), "registries share nothing");
        let s1 = a.prepared("job", "peer");
        assert!(Arc::ptr_eq(&s1, &a.prepared("job", "peer")));
        assert!(!Arc::ptr_eq(&s1, &a.prepared("job", "other")));
        assert!(!Arc::ptr_eq(&s1, &a.prepared("job2", "peer")));
        let l = BandwidthLimit {
            bytes_per_sec: 1000.0,
            bucket_capacity: 100,
        };
        let bk = a.bucket("send\0job", l);
        assert!(Arc::ptr_eq(&bk, &a.bucket("send\0job", l)));
        let l2 = BandwidthLimit {
            bytes_per_sec: 2000.0,
            ..l
        };
        assert!(
            !Arc::ptr_eq(&bk, &a.bucket("send\0job", l2)),
            "a new limit replaces the bucket"
        );
    }

    #[test]
    fn unused_entries_are_dropped() {
        let a = Registry::default();
        let p = DatasetPath::parse("pool/sink").unwrap();
        let w = Arc::downgrade(&a.root(&p));
        assert!(
            w.upgrade().is_none(),
            "the registry keeps no strong reference"
        );
    }
}

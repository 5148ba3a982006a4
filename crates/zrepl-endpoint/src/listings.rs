//! Versions listings kept between rounds (issue 22: rounds that cost what changed).
//!
//! OpenZFS >= 2.2 keeps `snapshots_changed` per filesystem: the time (seconds) of the last
//! snapshot created, destroyed or renamed in it. A filesystem listing reads it for every
//! filesystem at the cost of listing filesystems; where it equals the value seen when a
//! filesystem's versions were last listed, that listing still holds every snapshot and is
//! served instead of listing the snapshots again.
//!
//! The cache is evidence, never truth:
//! - an entry is stored only if the change it was listed after lies at least
//!   [`SETTLED_SECS`] before the filesystem listing began (`snapshots_changed` has one-second
//!   resolution: a change later in the same second would leave it equal);
//! - it is used only with a filesystem listing of this endpoint taken within [`OBSERVED_FRESH`];
//! - every call of this endpoint that changes versions (holds, bookmarks, receives, destroys)
//!   drops the entries of its filesystems when it starts and when it ends, and a listing that
//!   overlapped any such call is not stored ([`Listings::generation`]);
//! - bookmarks and holds made by others do not change `snapshots_changed`: a cached listing
//!   may show them stale until the next snapshot change. Nothing relies on that for safety:
//!   streams are checked by GUID and `zfs destroy` refuses held snapshots.
//!
//! It lives in memory only: a restarted daemon lists everything once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zrepl_zfs_types::{DatasetPath, FilesystemVersion};

/// `snapshots_changed` must be at least this many seconds older than the filesystem listing
/// for a versions listing after it to be kept.
pub const SETTLED_SECS: u64 = 2;
/// A filesystem listing stands for the current state this long.
pub const OBSERVED_FRESH: Duration = Duration::from_secs(60);
/// How long what a receive left ([`Listings::begin_receive`]) stands for the filesystem.
pub const RECEIVED_FRESH: Duration = Duration::from_secs(60);
/// The property.
pub const SNAPSHOTS_CHANGED: &str = "snapshots_changed";

/// Whether a listing taken after a filesystem listing that began at `listed_at` (Unix seconds)
/// and saw `changed` may be kept.
pub fn settled(changed: u64, listed_at: u64) -> bool {
    changed > 0
        && changed
            .checked_add(SETTLED_SECS)
            .is_some_and(|c| c <= listed_at)
}

/// Whether an entry kept at `kept` serves a filesystem now seen at `now`.
pub fn reusable(kept: u64, now: Option<u64>) -> bool {
    now == Some(kept)
}

/// The value of `snapshots_changed` as `zfs get -p` prints it (`-` or empty: never changed or
/// not supported).
pub fn parse_changed(v: &str) -> Option<u64> {
    v.trim().parse::<u64>().ok().filter(|&n| n > 0)
}

#[derive(Default)]
struct State {
    /// From the last filesystem listing: when it began (monotonic, and Unix seconds) and what
    /// it saw.
    observed_at: Option<(Instant, u64)>,
    observed: BTreeMap<DatasetPath, u64>,
    entries: HashMap<DatasetPath, (u64, Vec<FilesystemVersion>)>,
    /// Bumped by every invalidation.
    generation: u64,
    /// Per filesystem: the GUIDs of all its snapshots as this endpoint's own receive into it
    /// left them, and when ([`Listings::begin_receive`]).
    received: HashMap<DatasetPath, (Instant, Vec<u64>)>,
    /// Per filesystem: how often it was invalidated (every change through this endpoint
    /// counts twice, at its start and at its end); `invalidate(None)` bumps `epoch` instead.
    changes: HashMap<DatasetPath, u64>,
    epoch: u64,
}

impl State {
    /// See [`Listings::invalidate`].
    fn invalidate(&mut self, fss: Option<&[DatasetPath]>) {
        self.generation += 1;
        match fss {
            None => {
                self.entries.clear();
                self.received.clear();
                self.epoch += 1;
            }
            Some(fss) => {
                for f in fss {
                    self.entries.remove(f);
                    self.received.remove(f);
                    *self.changes.entry(f.clone()).or_default() += 1;
                }
            }
        }
    }
}

/// One endpoint's cache (a job's sender, a receiver root). Shared through the `Registry`, so
/// that it outlives the job's runs.
pub struct Listings {
    state: Mutex<State>,
    enabled: bool,
}

impl Default for Listings {
    fn default() -> Self {
        Listings::new(true)
    }
}

/// The environment variable that turns the cache off (`off`): every run lists everything, as
/// before the cache (an escape hatch, and for tests that count listings).
pub const CACHE_ENV: &str = "ZREPL_LISTING_CACHE";

impl Listings {
    pub fn new(enabled: bool) -> Self {
        Listings {
            state: Mutex::default(),
            enabled,
        }
    }

    /// Whether this cache may be used at all (see [`CACHE_ENV`]).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a filesystem listing that began at `started` (`wall`: Unix seconds) and read
    /// `changed` for the filesystems that have a value. Replaces the previous one.
    pub fn observe(&self, started: Instant, wall: u64, changed: BTreeMap<DatasetPath, u64>) {
        let mut s = self.lock();
        s.observed_at = Some((started, wall));
        s.observed = changed;
    }

    /// Forgets the last filesystem listing (one without `snapshots_changed`).
    pub fn unobserve(&self) {
        let mut s = self.lock();
        s.observed_at = None;
        s.observed.clear();
    }

    /// The cached listings of `fss` that the last filesystem listing confirms, the filesystems
    /// to list, and the generation to pass to [`Listings::store`].
    pub fn lookup(
        &self,
        fss: &[DatasetPath],
        now: Instant,
    ) -> (
        BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
        Vec<DatasetPath>,
        u64,
    ) {
        let s = self.lock();
        let fresh = s
            .observed_at
            .is_some_and(|(at, _)| now.saturating_duration_since(at) < OBSERVED_FRESH);
        let mut hits = BTreeMap::new();
        let mut misses = Vec::new();
        for f in fss {
            match s.entries.get(f) {
                Some((kept, v)) if fresh && reusable(*kept, s.observed.get(f).copied()) => {
                    hits.insert(f.clone(), v.clone());
                }
                _ => misses.push(f.clone()),
            }
        }
        (hits, misses, s.generation)
    }

    /// Keeps `versions` of `fs`, listed after [`Listings::lookup`] returned `generation`, if
    /// nothing invalidated since and the observed change is settled.
    pub fn store(&self, fs: &DatasetPath, versions: &[FilesystemVersion], generation: u64) {
        let mut s = self.lock();
        let Some((_, wall)) = s.observed_at else {
            return;
        };
        let Some(&changed) = s.observed.get(fs) else {
            return;
        };
        if s.generation != generation || !settled(changed, wall) {
            s.entries.remove(fs);
            return;
        }
        s.entries.insert(fs.clone(), (changed, versions.to_vec()));
    }

    /// Whether most filesystems of the last filesystem listing have an entry: then listing
    /// filesystems only and the few others' versions costs less than listing everything.
    pub fn mostly_cached(&self) -> bool {
        let s = self.lock();
        let cached = s
            .observed
            .keys()
            .filter(|f| s.entries.contains_key(*f))
            .count();
        !s.observed.is_empty() && cached * 2 >= s.observed.len()
    }

    /// The current generation: a listing taken after this may be stored with it.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Drops the entries of `fss` (all if `None`).
    pub fn invalidate(&self, fss: Option<&[DatasetPath]>) {
        self.lock().invalidate(fss);
    }

    /// Invalidates `fss` now and again when the guard is dropped: for the calls that change
    /// versions.
    pub fn changing(&self, fss: Vec<DatasetPath>) -> Changing<'_> {
        self.invalidate(Some(&fss));
        Changing { cache: self, fss }
    }

    /// Starts a receive into `fs`: its [`Changing`] guard, and what the previous receive of
    /// this endpoint into `fs` left there (the GUIDs of all its snapshots), if recorded less
    /// than [`RECEIVED_FRESH`] before `now` and nothing changed `fs` through this endpoint
    /// since. Taken at once, so no other change slips in between.
    pub fn begin_receive(
        &self,
        fs: &DatasetPath,
        now: Instant,
    ) -> (Receiving<'_>, Option<Vec<u64>>) {
        let mut s = self.lock();
        let left = s
            .received
            .remove(fs)
            .filter(|(at, _)| now.saturating_duration_since(*at) < RECEIVED_FRESH)
            .map(|(_, g)| g);
        s.invalidate(Some(std::slice::from_ref(fs)));
        let token = (s.epoch, s.changes.get(fs).copied().unwrap_or_default());
        drop(s);
        let guard = Receiving {
            changing: Changing {
                cache: self,
                fss: vec![fs.clone()],
            },
            token,
        };
        (guard, left)
    }

    /// What a receive of this endpoint left on `fs` (see [`Listings::begin_receive`]).
    #[cfg(test)]
    fn received(&self, fs: &DatasetPath, now: Instant) -> Option<Vec<u64>> {
        let s = self.lock();
        s.received
            .get(fs)
            .filter(|(at, _)| now.saturating_duration_since(*at) < RECEIVED_FRESH)
            .map(|(_, g)| g.clone())
    }

    /// How many filesystems have an entry (tests, status).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// See [`Listings::changing`].
pub struct Changing<'a> {
    cache: &'a Listings,
    fss: Vec<DatasetPath>,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.cache.invalidate(Some(&self.fss));
    }
}

/// A receive into one filesystem ([`Listings::begin_receive`]): invalidates it now and when it
/// ends, like [`Changing`].
pub struct Receiving<'a> {
    changing: Changing<'a>,
    /// (epoch, the filesystem's change count) right after this receive's start.
    token: (u64, u64),
}

impl Receiving<'_> {
    /// Ends a receive that succeeded and left the filesystem with exactly the snapshots
    /// `guids` (it knew every snapshot before: a new filesystem has none; a package or
    /// stream adds its own). Kept for the next receive only if nothing else changed the
    /// filesystem through this endpoint meanwhile (another receive, a destroy, a hold) and
    /// the cache is on. Like the rest of the cache it is evidence: snapshots others create
    /// outside this process are not in it (`zfs recv` still refuses to recreate one).
    pub fn succeeded(self, guids: Option<Vec<u64>>) {
        let cache = self.changing.cache;
        let fs = self.changing.fss[0].clone();
        drop(self.changing);
        let Some(guids) = guids.filter(|_| cache.enabled) else {
            return;
        };
        let mut s = cache.lock();
        let now = (s.epoch, s.changes.get(&fs).copied().unwrap_or_default());
        // Our own end counts once.
        if now == (self.token.0, self.token.1 + 1) {
            s.received.insert(fs, (Instant::now(), guids));
        }
    }
}

/// How long versions listed together with the filesystems may stand in for a new listing.
pub(crate) const PREFETCH_FRESH: Duration = Duration::from_secs(10);

/// The versions an endpoint's `list_filesystems` listed together with the filesystems, kept for
/// the `list_versions_many` that usually follows it: taken once, and only while fresh, while
/// nothing invalidated the listings since (a receive, a hold, a destroy through this endpoint
/// bumps the generation) and if they cover every filesystem asked for. A new
/// `list_filesystems` clears what an older one left unused.
#[derive(Default)]
pub(crate) struct Prefetch(Option<(Instant, u64, BTreeMap<DatasetPath, Vec<FilesystemVersion>>)>);

impl Prefetch {
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }

    /// Keeps `versions`, listed when the listings were at `generation`.
    pub(crate) fn put(
        &mut self,
        generation: u64,
        versions: BTreeMap<DatasetPath, Vec<FilesystemVersion>>,
    ) {
        self.0 = Some((Instant::now(), generation, versions));
    }

    /// The versions of each of `paths`, in order, if what was kept may stand in for them
    /// (`generation`: the listings' generation now).
    pub(crate) fn take(
        &mut self,
        generation: u64,
        paths: &[DatasetPath],
    ) -> Option<Vec<Vec<FilesystemVersion>>> {
        let (at, listed_at, m) = self.0.take()?;
        let usable = at.elapsed() < PREFETCH_FRESH
            && listed_at == generation
            && paths.iter().all(|p| m.contains_key(p));
        usable.then(|| paths.iter().map(|p| m[p].clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zrepl_zfs_types::VersionType;

    fn p(s: &str) -> DatasetPath {
        DatasetPath::parse(s).unwrap()
    }

    fn v(g: u64) -> FilesystemVersion {
        FilesystemVersion {
            typ: VersionType::Snapshot,
            name: format!("s{g}"),
            guid: g,
            createtxg: g,
            creation: 0,
            userrefs: None,
        }
    }

    #[test]
    fn received_serves_until_changed_or_old() {
        let c = Listings::new(true);
        let (a, b) = (p("pool/a"), p("pool/b"));
        let now = Instant::now();
        // A receive into a new `a`, then one into `b`.
        let (g, left) = c.begin_receive(&a, now);
        assert_eq!(left, None);
        g.succeeded(Some(vec![1]));
        let (g, _) = c.begin_receive(&b, now);
        g.succeeded(Some(vec![7]));
        assert_eq!(c.received(&a, now), Some(vec![1]));
        // The next receive into `a` takes it; a failed one leaves nothing.
        let (g, left) = c.begin_receive(&a, now);
        assert_eq!(left, Some(vec![1]));
        assert_eq!(c.received(&a, now), None);
        drop(g);
        assert_eq!(c.received(&a, now), None);
        let (g, _) = c.begin_receive(&a, now);
        g.succeeded(Some(vec![1, 2]));
        // Other filesystems' changes leave it; a change of `a` (a destroy) drops it.
        drop(c.changing(vec![b.clone()]));
        assert_eq!(c.received(&a, now), Some(vec![1, 2]));
        assert_eq!(c.received(&b, now), None);
        // Too old.
        assert_eq!(
            c.received(&a, now + RECEIVED_FRESH + Duration::from_secs(1)),
            None
        );
        drop(c.changing(vec![a.clone()]));
        assert_eq!(c.received(&a, now), None);
        // Two receives into `a` at once: neither is kept (each missed the other's snapshots).
        let (g1, _) = c.begin_receive(&a, now);
        let (g2, _) = c.begin_receive(&a, now);
        g1.succeeded(Some(vec![1, 2]));
        assert_eq!(c.received(&a, now), None);
        g2.succeeded(Some(vec![1, 3]));
        assert_eq!(c.received(&a, now), None);
        // A change of `a` during a receive (a destroy, a hold) as well.
        let (g, _) = c.begin_receive(&a, now);
        drop(c.changing(vec![a.clone()]));
        g.succeeded(Some(vec![1]));
        assert_eq!(c.received(&a, now), None);
        // Everything invalidated meanwhile.
        let (g, _) = c.begin_receive(&a, now);
        c.invalidate(None);
        g.succeeded(Some(vec![3]));
        assert_eq!(c.received(&a, now), None);
        // Nothing known: nothing kept.
        let (g, _) = c.begin_receive(&a, now);
        g.succeeded(None);
        assert_eq!(c.received(&a, now), None);
        // Off: nothing is kept.
        let off = Listings::new(false);
        let (g, _) = off.begin_receive(&a, now);
        g.succeeded(Some(vec![1]));
        assert_eq!(off.received(&a, now), None);
    }

    #[test]
    fn settled_and_reusable() {
        let cases: &[(u64, u64, bool)] = &[
            (100, 102, true),
            (100, 101, false),
            (100, 100, false),
            (100, 99, false),
            (0, 1000, false),
            (u64::MAX, u64::MAX, false),
        ];
        for &(changed, at, want) in cases {
            assert_eq!(settled(changed, at), want, "{changed} at {at}");
        }
        assert!(reusable(5, Some(5)));
        assert!(!reusable(5, Some(6)));
        assert!(!reusable(5, None));
        for (s, want) in [
            ("1700000000", Some(1700000000)),
            ("-", None),
            ("", None),
            ("0", None),
            ("x", None),
        ] {
            assert_eq!(parse_changed(s), want, "{s:?}");
        }
    }

    #[test]
    fn served_only_while_the_filesystem_listing_confirms_it() {
        let c = Listings::default();
        let t0 = Instant::now();
        let (a, b) = (p("pool/a"), p("pool/b"));
        // Nothing observed: everything is listed, nothing kept.
        let (hits, misses, g) = c.lookup(std::slice::from_ref(&a), t0);
        assert!(hits.is_empty() && misses == std::slice::from_ref(&a));
        c.store(&a, &[v(1)], g);
        assert!(c.is_empty());

        c.observe(
            t0,
            1000,
            BTreeMap::from([(a.clone(), 900), (b.clone(), 999)]),
        );
        let (_, misses, g) = c.lookup(&[a.clone(), b.clone()], t0);
        assert_eq!(misses.len(), 2);
        c.store(&a, &[v(1)], g);
        // b changed within the last second before the listing: not kept.
        c.store(&b, &[v(2)], g);
        assert_eq!(c.len(), 1);

        assert!(c.mostly_cached(), "one of two");
        // Same value next round: served.
        c.observe(
            t0,
            1100,
            BTreeMap::from([(a.clone(), 900), (b.clone(), 999)]),
        );
        let (hits, misses, _) = c.lookup(&[a.clone(), b.clone()], t0);
        assert_eq!(hits[&a], [v(1)]);
        assert_eq!(misses, std::slice::from_ref(&b));
        // Too long after the filesystem listing: listed again.
        let (hits, _, _) = c.lookup(std::slice::from_ref(&a), t0 + OBSERVED_FRESH);
        assert!(hits.is_empty());
        // A snapshot change: listed again.
        c.observe(t0, 1200, BTreeMap::from([(a.clone(), 1150)]));
        let (hits, _, _) = c.lookup(std::slice::from_ref(&a), t0);
        assert!(hits.is_empty());
        // The filesystem disappeared from the listing (or lost its value): listed again.
        c.observe(t0, 1200, BTreeMap::new());
        let (hits, _, _) = c.lookup(std::slice::from_ref(&a), t0);
        assert!(hits.is_empty());
        c.observe(t0, 1100, BTreeMap::from([(a.clone(), 900)]));
        c.unobserve();
        let (hits, _, _) = c.lookup(std::slice::from_ref(&a), t0);
        assert!(hits.is_empty());
    }

    #[test]
    fn changes_of_our_own_drop_entries_and_racing_listings() {
        let c = Listings::default();
        let t0 = Instant::now();
        let a = p("pool/a");
        c.observe(t0, 1000, BTreeMap::from([(a.clone(), 900)]));
        let (_, _, g) = c.lookup(std::slice::from_ref(&a), t0);
        c.store(&a, &[v(1)], g);
        assert_eq!(c.len(), 1);
        {
            let _guard = c.changing(vec![a.clone()]);
            assert!(c.is_empty(), "dropped when the change starts");
            // A listing taken while the change runs is dropped when it ends.
            let (_, _, g) = c.lookup(std::slice::from_ref(&a), t0);
            c.store(&a, &[v(1)], g);
        }
        assert!(c.is_empty(), "dropped again when it ends");
        let (_, _, g) = c.lookup(std::slice::from_ref(&a), t0);
        c.invalidate(None);
        assert!(!c.mostly_cached());
        c.store(&a, &[v(1)], g);
        assert!(
            c.is_empty(),
            "a listing that overlapped an invalidation is not kept"
        );
    }

    /// What a kept listing answers: only once, only at the generation it was listed at, and
    /// only if it covers every filesystem asked for (a path asked twice gets its versions
    /// twice); a new listing clears an older one.
    #[test]
    fn prefetch_answers_once_at_its_generation_and_only_in_full() {
        let listed = || BTreeMap::from([(p("a/x"), vec![v(1)]), (p("a/y"), vec![v(2), v(3)])]);
        let names = |r: Option<Vec<Vec<FilesystemVersion>>>| {
            r.map(|fss| {
                fss.iter()
                    .map(|vs| vs.iter().map(|v| v.guid).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
        };
        type Case = (&'static str, u64, Vec<&'static str>, Option<Vec<Vec<u64>>>);
        let cases: Vec<Case> = vec![
            (
                "all of it",
                7,
                vec!["a/y", "a/x"],
                Some(vec![vec![2, 3], vec![1]]),
            ),
            (
                "a path twice",
                7,
                vec!["a/x", "a/x"],
                Some(vec![vec![1], vec![1]]),
            ),
            ("nothing asked", 7, vec![], Some(vec![])),
            ("listings changed since", 8, vec!["a/x"], None),
            ("a path not listed", 7, vec!["a/x", "a/z"], None),
        ];
        for (what, generation, paths, want) in cases {
            let mut pf = Prefetch::default();
            pf.put(7, listed());
            let paths: Vec<DatasetPath> = paths.into_iter().map(p).collect();
            assert_eq!(names(pf.take(generation, &paths)), want, "{what}");
            assert_eq!(names(pf.take(7, &[])), None, "{what}: taken twice");
        }
        let mut pf = Prefetch::default();
        pf.put(7, listed());
        pf.clear();
        assert_eq!(names(pf.take(7, &[p("a/x")])), None, "cleared");
    }
}

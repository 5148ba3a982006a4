//! Pure parsers for `zfs` output and classifiers for `zfs` error messages.
//!
//! Nothing here runs a process: every function takes the text a command printed, so each one is
//! unit-tested on captured output. The listing parser is the hot path (a big pool lists millions
//! of lines in one call) and therefore splits by hand, without regexes or per-line allocation
//! beyond the version name itself; `benches/parse_list.rs` measures it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use zrepl_zfs_types::name::check_component;
use zrepl_zfs_types::{DatasetPath, FilesystemVersion, VersionType};

use crate::error::Undestroyable;

/// A line of `zfs` output that did not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line_no: usize,
    pub line: String,
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line_no, self.reason, self.line)
    }
}

impl std::error::Error for ParseError {}

fn perr(line_no: usize, line: &str, reason: impl Into<String>) -> ParseError {
    ParseError {
        line_no,
        line: line.to_string(),
        reason: reason.into(),
    }
}

/// Lines of `text` without the trailing empty line; tolerates a missing final newline.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_terminator('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// Like [`lines`], but splits on bytes: `str::split` with a `char` pattern verifies every match
/// with a `memcmp` call, which dominated the listing parser's profile.
fn byte_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text;
    let mut n = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        n += 1;
        let line = match rest.bytes().position(|b| b == b'\n') {
            Some(i) => {
                let l = &rest[..i];
                rest = &rest[i + 1..];
                l
            }
            None => std::mem::take(&mut rest),
        };
        Some((n, line))
    })
}

/// Splits `line` at tabs into exactly `N` fields.
fn split_tabs<const N: usize>(line: &str) -> Option<[&str; N]> {
    let mut out = [""; N];
    let mut count = 0;
    let mut start = 0;
    for (i, b) in line.bytes().enumerate() {
        if b == b'\t' {
            if count + 1 == N {
                return None;
            }
            out[count] = &line[start..i];
            count += 1;
            start = i + 1;
        }
    }
    if count + 1 != N {
        return None;
    }
    out[count] = &line[start..];
    Some(out)
}

/// Parses `zfs list -H -p -o name ...`: one dataset per line.
pub fn parse_dataset_names(text: &str) -> Result<Vec<DatasetPath>, ParseError> {
    lines(text)
        .map(|(n, l)| {
            DatasetPath::parse(l).map_err(|e| perr(n, l, format!("invalid dataset name: {e}")))
        })
        .collect()
}

/// A small non-cryptographic hasher (rustc's FxHash) for the per-line filesystem lookup. The keys
/// come from `zfs` output of our own pools, not from an adversary, so DoS-resistant SipHash buys
/// nothing here and costs a noticeable share of the parse time.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(26) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(26) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7 bits; the
        // multiply-rotate state mixes neither well, so finish with murmur3's fmix64.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

type BuildFxHasher = std::hash::BuildHasherDefault<FxHasher>;

/// Filesystems (and volumes) of a subtree with their versions, in zrepl order
/// ([`FilesystemVersion::order_key`]: createtxg, bookmarks before snapshots).
pub type VersionsByFilesystem = BTreeMap<DatasetPath, Vec<FilesystemVersion>>;

/// Parses the output of `zfs program -j` whose program returned a table of names to
/// integers: `{"return": {"<name>": <int>, ...}}`.
pub fn parse_program_return(text: &str) -> Result<BTreeMap<String, i64>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let ret = v.get("return").ok_or("no \"return\" in the output")?;
    let mut out = BTreeMap::new();
    match ret {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let n = v
                    .as_i64()
                    .ok_or_else(|| format!("{k}: {v} is not an integer"))?;
                out.insert(k.clone(), n);
            }
        }
        // An empty Lua table comes back as an empty array or nothing at all.
        serde_json::Value::Array(a) if a.is_empty() => {}
        serde_json::Value::Null => {}
        other => return Err(format!("unexpected return value {other}")),
    }
    Ok(out)
}

/// Parses `zfs list -H -p -o name,guid,createtxg,creation,userrefs [-t ...] -s createtxg`.
///
/// Lines without `@`/`#` are filesystems or volumes: they get an entry (possibly with no
/// versions). Snapshot lines must have a decimal `userrefs`, bookmark lines `-`. Filesystem names
/// are validated once per filesystem, version names on every line; anything unexpected is an error
/// rather than a skipped line, because a silently missing snapshot could make a caller destroy or
/// re-send the wrong thing.
pub fn parse_versions_listing(text: &str) -> Result<VersionsByFilesystem, ParseError> {
    // Lines of different filesystems interleave (the output is sorted by createtxg across the
    // whole subtree), so group through a hash map keyed by the borrowed filesystem name and build
    // the owned, validated `DatasetPath` only once per filesystem at the end.
    let mut index: HashMap<&str, usize, BuildFxHasher> = HashMap::default();
    // (filesystem, versions, versions need sorting)
    let mut groups: Vec<(&str, Vec<FilesystemVersion>, bool)> = Vec::new();
    for (n, line) in byte_lines(text) {
        let Some([name, guid, txg, creation, userrefs]) = split_tabs::<5>(line) else {
            return Err(perr(n, line, "expected 5 tab-separated fields"));
        };
        let (fs, version) = match name.bytes().position(|b| b == b'@' || b == b'#') {
            None => (name, None),
            Some(i) => (&name[..i], Some((name.as_bytes()[i], &name[i + 1..]))),
        };
        let slot = *index.entry(fs).or_insert_with(|| {
            groups.push((fs, Vec::new(), false));
            groups.len() - 1
        });
        let Some((delim, short)) = version else {
            continue;
        };
        check_component(short).map_err(|e| perr(n, line, format!("invalid version name: {e}")))?;
        let guid: u64 = guid.parse().map_err(|_| perr(n, line, "invalid guid"))?;
        let createtxg: u64 = txg
            .parse()
            .map_err(|_| perr(n, line, "invalid createtxg"))?;
        let creation: i64 = creation
            .parse()
            .map_err(|_| perr(n, line, "invalid creation"))?;
        let (typ, userrefs) = if delim == b'@' {
            let u: u64 = userrefs
                .parse()
                .map_err(|_| perr(n, line, "invalid userrefs for a snapshot"))?;
            (VersionType::Snapshot, Some(u))
        } else {
            if userrefs != "-" {
                return Err(perr(n, line, "bookmark with userrefs other than '-'"));
            }
            (VersionType::Bookmark, None)
        };
        let v = FilesystemVersion {
            typ,
            name: short.to_string(),
            guid,
            createtxg,
            creation,
            userrefs,
        };
        // `-s createtxg` delivers each filesystem's versions in txg order, but the order among
        // equal txgs (a snapshot and its bookmarks) is not ours, and other listings may not be
        // sorted at all. A version that belongs just a few places back is inserted there (the
        // snapshot/bookmark tie); anything else marks the group for one sort at the end, which
        // keeps adversarial orders at O(n log n).
        let (_, vs, unsorted) = &mut groups[slot];
        let key = v.order_key();
        let n = vs.len();
        let mut pos = n;
        while pos > 0 && n - pos < 8 && vs[pos - 1].order_key() > key {
            pos -= 1;
        }
        if pos == n || pos == 0 || vs[pos - 1].order_key() <= key {
            vs.insert(pos, v);
        } else {
            vs.push(v);
            *unsorted = true;
        }
    }
    let mut out = BTreeMap::new();
    for (fs, mut versions, unsorted) in groups {
        let path = DatasetPath::parse(fs)
            .map_err(|e| perr(0, fs, format!("invalid filesystem name: {e}")))?;
        if unsorted {
            versions.sort_by_key(FilesystemVersion::order_key);
        }
        out.insert(path, versions);
    }
    Ok(out)
}

/// Where a property value comes from (`zfs get` SOURCE column).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PropertySource {
    Local,
    Default,
    /// `inherited from <dataset>`.
    Inherited {
        from: String,
    },
    /// `-`: read-only or unset user property.
    None,
    Temporary,
    Received,
}

impl PropertySource {
    /// Parses the SOURCE column by its first word, as zrepl does.
    pub fn parse(s: &str) -> Option<PropertySource> {
        let (first, rest) = s.split_once(' ').unwrap_or((s, ""));
        Some(match first {
            "local" => PropertySource::Local,
            "default" => PropertySource::Default,
            "inherited" => PropertySource::Inherited {
                from: rest.strip_prefix("from ").unwrap_or(rest).to_string(),
            },
            "-" => PropertySource::None,
            "temporary" => PropertySource::Temporary,
            "received" => PropertySource::Received,
            _ => return None,
        })
    }
}

/// One property value with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValue {
    pub value: String,
    pub source: PropertySource,
}

/// Property name → value of one dataset.
pub type Properties = BTreeMap<String, PropertyValue>;

/// Parses `zfs get -Hp -o name,property,value,source`, grouped by dataset name (the raw name:
/// snapshots and bookmarks can be listed too). The value is everything between the second and the
/// last tab, so a value containing a tab (set by someone else) still parses.
pub fn parse_get(text: &str) -> Result<BTreeMap<String, Properties>, ParseError> {
    let mut out: BTreeMap<String, Properties> = BTreeMap::new();
    for (n, line) in lines(text) {
        let mut it = line.splitn(3, '\t');
        let (Some(name), Some(prop), Some(rest)) = (it.next(), it.next(), it.next()) else {
            return Err(perr(n, line, "expected name, property, value, source"));
        };
        let Some((value, source)) = rest.rsplit_once('\t') else {
            return Err(perr(n, line, "expected name, property, value, source"));
        };
        let source = PropertySource::parse(source)
            .ok_or_else(|| perr(n, line, format!("unknown property source {source:?}")))?;
        let props = out.entry(name.to_string()).or_default();
        let prev = props.insert(
            prop.to_string(),
            PropertyValue {
                value: value.to_string(),
                source,
            },
        );
        if prev.is_some() {
            return Err(perr(n, line, "duplicate property"));
        }
    }
    Ok(out)
}

/// The properties of filesystems and volumes, and the versions of each, from one
/// `zfs get -Hp -o name,property,value,source -r -t filesystem,volume,snapshot,bookmark
/// guid,createtxg,creation,userrefs,<props>` (see [`parse_get`] for the rows). Versions are in
/// zrepl's order (createtxg, bookmarks first); every filesystem has an entry, maybe empty.
pub fn split_get_listing(
    rows: BTreeMap<String, Properties>,
    fs_props: &[&str],
) -> Result<(BTreeMap<DatasetPath, Properties>, VersionsByFilesystem), ParseError> {
    let err = |name: &str, reason: String| ParseError {
        line_no: 0,
        line: name.to_string(),
        reason,
    };
    let mut props = BTreeMap::new();
    let mut versions = VersionsByFilesystem::new();
    for (name, mut p) in rows {
        let (fs, version) = match name.find(['@', '#']) {
            None => (name.as_str(), None),
            Some(i) => (&name[..i], Some((name.as_bytes()[i], &name[i + 1..]))),
        };
        let path = DatasetPath::parse(fs).map_err(|e| err(&name, format!("invalid name: {e}")))?;
        let Some((delim, short)) = version else {
            let mut mine = Properties::new();
            for k in fs_props {
                // A user property is read with `-s local,none` (see `GetPlan`): absent
                // when received or inherited.
                match p.remove(*k) {
                    Some(v) => {
                        mine.insert(k.to_string(), v);
                    }
                    None if k.contains(':') => {}
                    // Optional: a filesystem that never had a snapshot may not print it.
                    None if *k == "snapshots_changed" => {}
                    None => return Err(err(&name, format!("property {k} missing"))),
                }
            }
            props.insert(path.clone(), mine);
            versions.entry(path).or_default();
            continue;
        };
        check_component(short).map_err(|e| err(&name, format!("invalid version name: {e}")))?;
        let mut num = |k: &str| -> Result<Option<u64>, ParseError> {
            let v = p
                .remove(k)
                .ok_or_else(|| err(&name, format!("property {k} missing")))?;
            if v.value == "-" {
                return Ok(None);
            }
            v.value
                .parse()
                .map(Some)
                .map_err(|_| err(&name, format!("invalid {k} {:?}", v.value)))
        };
        let guid = num("guid")?.ok_or_else(|| err(&name, "no guid".into()))?;
        let createtxg = num("createtxg")?.ok_or_else(|| err(&name, "no createtxg".into()))?;
        let creation = num("creation")?.ok_or_else(|| err(&name, "no creation".into()))?;
        // Bookmarks have no holds: their userrefs ('-') is not needed, nor required.
        let userrefs = if delim == b'@' {
            num("userrefs")?
        } else {
            None
        };
        let typ = if delim == b'@' {
            if userrefs.is_none() {
                return Err(err(&name, "snapshot without userrefs".into()));
            }
            VersionType::Snapshot
        } else {
            VersionType::Bookmark
        };
        versions.entry(path).or_default().push(FilesystemVersion {
            typ,
            name: short.to_string(),
            guid,
            createtxg,
            creation: i64::try_from(creation).unwrap_or(i64::MAX),
            userrefs: if typ == VersionType::Snapshot {
                userrefs
            } else {
                None
            },
        });
    }
    for vs in versions.values_mut() {
        vs.sort_by_key(|v| v.order_key());
    }
    Ok((props, versions))
}

/// Parses `zfs holds -H`: `NAME\tTAG\tTIMESTAMP` lines into snapshot name → tags. The tag is
/// everything between the first and the last tab.
pub fn parse_holds(text: &str) -> Result<Vec<(String, String)>, ParseError> {
    Ok(parse_holds_timed(text)?
        .into_iter()
        .map(|h| (h.snapshot, h.tag))
        .collect())
}

/// One hold as `zfs holds -H` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRow {
    pub snapshot: String,
    pub tag: String,
    /// When the hold was taken, in Unix seconds (minute resolution: OpenZFS prints
    /// `%a %b %e %H:%M %Y`, which every `zfs` we run prints in UTC and the C locale); `None`
    /// when the timestamp does not read that way.
    pub since: Option<i64>,
}

/// Like [`parse_holds`], with each hold's timestamp.
pub fn parse_holds_timed(text: &str) -> Result<Vec<HoldRow>, ParseError> {
    lines(text)
        .map(|(n, line)| {
            let (name, rest) = line
                .split_once('\t')
                .ok_or_else(|| perr(n, line, "expected NAME, TAG, TIMESTAMP"))?;
            let (tag, ts) = rest
                .rsplit_once('\t')
                .ok_or_else(|| perr(n, line, "expected NAME, TAG, TIMESTAMP"))?;
            Ok(HoldRow {
                snapshot: name.to_string(),
                tag: tag.to_string(),
                since: parse_hold_timestamp(ts),
            })
        })
        .collect()
}

/// `Sun Dec  6 16:01 2026` (strftime `%a %b %e %H:%M %Y`, C locale, UTC) as Unix seconds.
pub fn parse_hold_timestamp(ts: &str) -> Option<i64> {
    let mut it = ts.split_whitespace();
    let (_wday, mon, day, hm, year) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == mon)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let (h, m) = hm.split_once(':')?;
    let h: i64 = h.parse().ok().filter(|h| (0..24).contains(h))?;
    let m: i64 = m.parse().ok().filter(|m| (0..60).contains(m))?;
    let year: i64 = year.parse().ok().filter(|y| (1970..=9999).contains(y))?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3_600 + m * 60)
}

/// Full or incremental, as `zfs send -nvP` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRunKind {
    Full,
    Incremental,
}

/// The parsed result of `zfs send -n -v -P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendDryRunInfo {
    pub kind: DryRunKind,
    /// `from` as printed (may be a short name like `1` or `@1`); `None` for full sends.
    pub from: Option<String>,
    /// `fs@snap`.
    pub to: String,
    /// Estimated stream size in bytes; 0 if ZFS printed none (ZoL 0.7.12) or if the estimate was
    /// at or above the "obviously wrong" threshold (OpenZFS #12265).
    pub size: u64,
}

/// Parses `zfs send -n -v -P` output (stdout and stderr concatenated), per zrepl: the first line
/// `full\t<to>[\t<size>]` or `incremental\t<from>\t<to>[\t<size>]` counts; a missing size is 0.
/// Sizes `>= incorrect_threshold` are reported as 0.
pub fn parse_send_dry_run(text: &str, incorrect_threshold: u64) -> Result<SendDryRunInfo, String> {
    for (_, line) in lines(text) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (kind, from, to, size) = match fields.as_slice() {
            ["full", to] => (DryRunKind::Full, None, *to, None),
            ["full", to, size] => (DryRunKind::Full, None, *to, Some(*size)),
            ["incremental", from, to] => (DryRunKind::Incremental, Some(*from), *to, None),
            ["incremental", from, to, size] => {
                (DryRunKind::Incremental, Some(*from), *to, Some(*size))
            }
            _ => continue,
        };
        // zrepl's regex requires `[^\t]+@[^\t]+` for `to` and a decimal size; a line not matching
        // that is not an info line.
        match to.split_once('@') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => {}
            _ => continue,
        }
        let size = match size {
            None => 0,
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>()
                    .map_err(|e| format!("cannot parse size {s:?}: {e}"))?
            }
            Some(_) => continue,
        };
        return Ok(SendDryRunInfo {
            kind,
            from: from.map(str::to_string),
            to: to.to_string(),
            size: if size >= incorrect_threshold { 0 } else { size },
        });
    }
    Err(format!(
        "no full/incremental info line in zfs send -nvP output:\n{text}"
    ))
}

/// The OpenZFS version from `zfs version` (OpenZFS >= 0.8), e.g. `zfs-2.3.2-1` and
/// `zfs-kmod-2.3.2-1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsVersion {
    /// Userland version string without the `zfs-` prefix (`2.3.2-1`).
    pub userland: String,
    /// Kernel module version string without `zfs-kmod-` (`2.3.2-1`), if printed.
    pub kernel: Option<String>,
    /// (major, minor, patch) of the userland version if it starts with `N.N.N`.
    pub numeric: Option<(u32, u32, u32)>,
}

/// Parses `zfs version` output.
pub fn parse_zfs_version(text: &str) -> Option<ZfsVersion> {
    let mut userland = None;
    let mut kernel = None;
    for (_, line) in lines(text) {
        let line = line.trim();
        if let Some(k) = line.strip_prefix("zfs-kmod-") {
            kernel = Some(k.to_string());
        } else if let Some(u) = line.strip_prefix("zfs-") {
            userland = Some(u.to_string());
        }
    }
    let userland: String = userland?;
    let numeric = {
        let core = userland.split(['-', '_', '~']).next().unwrap_or("");
        let mut it = core.split('.').map(|x| x.parse::<u32>().ok());
        match (it.next(), it.next(), it.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Some((a, b, c)),
            (Some(Some(a)), Some(Some(b)), None) => Some((a, b, 0)),
            _ => None,
        }
    };
    Some(ZfsVersion {
        userland,
        kernel,
        numeric,
    })
}

// ---------------------------------------------------------------------------------------------
// stderr classifiers. The strings are OpenZFS's (libzfs / zfs_main.c), as matched by zrepl 0.7.

/// `cannot open '<path>': dataset does not exist` or `... no such pool or dataset`, for exactly
/// `expect_path`, on any line of `stderr`.
pub fn is_dataset_does_not_exist(stderr: &str, expect_path: &str) -> bool {
    stderr.lines().any(|l| {
        l.strip_prefix("cannot open '")
            .and_then(|r| r.strip_prefix(expect_path))
            .and_then(|r| r.strip_prefix("': "))
            .is_some_and(|r| {
                r.starts_with("dataset does not exist") || r.starts_with("no such pool or dataset")
            })
    })
}

/// The path of the first `cannot open '<path>': dataset does not exist` line, whatever the path.
pub fn dataset_does_not_exist_path(stderr: &str) -> Option<&str> {
    stderr.lines().find_map(|l| {
        let r = l.strip_prefix("cannot open '")?;
        let (path, rest) = r.split_once("': ")?;
        (rest.starts_with("dataset does not exist") || rest.starts_with("no such pool or dataset"))
            .then_some(path)
    })
}

/// `cannot create bookmark '<x>': bookmark exists` at the start of stderr.
pub fn is_bookmark_exists(stderr: &str) -> bool {
    stderr
        .strip_prefix("cannot create bookmark '")
        .and_then(|r| r.split_once('\''))
        .is_some_and(|(name, rest)| !name.is_empty() && rest.starts_with(": bookmark exists"))
}

/// `could not find any snapshots to destroy; check snapshot names.` at the start of stderr.
pub fn is_destroy_no_snapshots(stderr: &str) -> bool {
    stderr.starts_with("could not find any snapshots to destroy; check snapshot names.")
}

/// `bookmark '<arg>' does not exist` at the start of stderr.
pub fn is_bookmark_does_not_exist(stderr: &str, arg: &str) -> bool {
    stderr
        .strip_prefix("bookmark '")
        .and_then(|r| r.strip_prefix(arg))
        .is_some_and(|r| r.starts_with("' does not exist"))
}

/// Parses the stderr of a failed `zfs destroy <fs>@a,b,c`: every line must be
/// `cannot destroy snapshot <fs>@<snap>: <reason>` for exactly `filesystem`, otherwise `None`
/// (conservative: an unexpected line means we do not know what happened).
pub fn parse_destroy_snapshots_error(filesystem: &str, stderr: &str) -> Option<Vec<Undestroyable>> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let rest = line.strip_prefix("cannot destroy snapshot ")?;
        // zrepl: `^cannot destroy snapshot ([^@]+)@(.+): (.*)$`; dataset names may contain ':'
        // and snapshot names too, so split at the first '@' and then at the last ": ".
        let (fs, rest) = rest.split_once('@')?;
        if fs != filesystem {
            return None;
        }
        let (snap, reason) = rest.rsplit_once(": ")?;
        if snap.is_empty() {
            return None;
        }
        out.push(Undestroyable {
            snapshot: snap.to_string(),
            reason: reason.to_string(),
        });
    }
    (!out.is_empty()).then_some(out)
}

/// Extracts the token from `zfs recv -s` stderr: `A resuming stream can be generated on the
/// sending system by running:\s+zfs send -t\s(\S+)`.
pub fn recv_resume_token(stderr: &str) -> Option<&str> {
    const MARK: &str = "A resuming stream can be generated on the sending system by running:";
    let rest = &stderr[stderr.find(MARK)? + MARK.len()..];
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        return None; // `\s+` needs at least one whitespace character
    }
    let rest = trimmed.strip_prefix("zfs send -t")?;
    let token = rest.strip_prefix(|c: char| c.is_whitespace())?;
    let token = token.split(char::is_whitespace).next()?;
    (!token.is_empty()).then_some(token)
}

/// `cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted
/// filesystem or overwrite an unencrypted one with an encrypted one` at the start of stderr.
pub fn is_recv_destroy_or_overwrite_encrypted(stderr: &str) -> bool {
    stderr.starts_with(
        "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an \
         encrypted filesystem or overwrite an unencrypted one with an encrypted one",
    )
}

/// `cannot receive: failed to read from stream` as the whole (trimmed) stderr.
pub fn is_recv_cannot_read_from_stream(stderr: &str) -> bool {
    stderr.trim() == "cannot receive: failed to read from stream"
}

/// `zfs recv -A` on a dataset without partial state: `... does not have any resumable receive
/// state to abort`.
pub fn is_recv_abort_nothing_to_abort(output: &str) -> bool {
    output.contains("does not have any resumable receive state to abort")
}

/// `zfs hold`: `cannot hold snapshot '<x>': tag already exists on this dataset`.
pub fn is_hold_tag_exists(line: &str) -> bool {
    line.contains("tag already exists on this dataset")
}

/// `zfs release`: `cannot release hold from snapshot '<x>': no such tag on this dataset`.
pub fn is_release_no_such_tag(line: &str) -> bool {
    line.contains("no such tag on this dataset")
}

/// The first record of every `zfs send` stream (`DRR_BEGIN`), as far as zrepl checks it: what
/// the stream really contains, whatever was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendBegin {
    /// GUID of the snapshot the stream recreates.
    pub toguid: u64,
    /// GUID of the incremental source (snapshot or bookmark); 0 for a full stream.
    pub fromguid: u64,
    /// `pool/fs@snap` as the sender named it.
    pub toname: String,
    /// A compound stream (`zfs send -p`, `-b`, `-R`): this record carries the properties
    /// (a payload of `payload_len` bytes, then an END record) and the snapshot's own stream
    /// (a substream with its own BEGIN record and the real GUIDs; 0 here) follows.
    pub compound: bool,
    /// Bytes of payload following this record.
    pub payload_len: u32,
    /// The stream may carry properties for `zfs recv` to set: it is a compound stream with a
    /// header (`zfs send -p`, `-b`), which lists them (`fss`). A plain stream (one substream)
    /// cannot set a property, and neither can a compound stream without a header (a package,
    /// `zfs send -I`) *provided that* no compound header follows any of its substreams: `zfs
    /// recv` follows those too (libzfs's `zfs_receive_package`), so whoever says `false` for a
    /// compound stream must pass its rest through [`crate::CheckedPackage`]. Set by
    /// [`crate::read_send_begin`]; a lone record says `false`.
    pub may_carry_properties: bool,
}

/// Length of the `DRR_BEGIN` record (`sizeof (dmu_replay_record_t)`).
pub const SEND_BEGIN_LEN: usize = 312;

/// `DMU_BACKUP_MAGIC`.
pub(crate) const BACKUP_MAGIC: u64 = 0x2_f5ba_cbac;

/// Parses the `DRR_BEGIN` record at the start of a `zfs send` stream: `drr_type` (u32, 0 =
/// BEGIN) and `drr_payloadlen` (u32), then `drr_magic`, `drr_versioninfo`,
/// `drr_creation_time` (u64 each), the objset type and `drr_flags` (u32 each), `drr_toguid`,
/// `drr_fromguid` (u64 each) and `drr_toname` (256 bytes, NUL-padded). The sender's byte order
/// is told by the magic.
pub fn parse_send_begin(b: &[u8]) -> Result<SendBegin, String> {
    let Some(b) = b.get(..SEND_BEGIN_LEN) else {
        return Err(format!(
            "stream shorter than its first record ({} of {SEND_BEGIN_LEN} bytes)",
            b.len()
        ));
    };
    let u64_at = |at: usize, little: bool| {
        let a: [u8; 8] = b[at..at + 8].try_into().unwrap_or_default();
        if little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    };
    let little = match (u64_at(8, true), u64_at(8, false)) {
        (BACKUP_MAGIC, _) => true,
        (_, BACKUP_MAGIC) => false,
        _ => return Err("not a zfs send stream (no DRR_BEGIN magic)".into()),
    };
    let head = u64_at(0, little);
    let (typ, payload_len) = if little {
        (head & 0xffff_ffff, head >> 32)
    } else {
        (head >> 32, head & 0xffff_ffff)
    };
    if typ != 0 {
        return Err(format!("first record has type {typ}, not DRR_BEGIN"));
    }
    let name = &b[56..SEND_BEGIN_LEN];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    // DMU_GET_STREAM_HDRTYPE(drr_versioninfo): 1 = substream, 2 = compound stream.
    let compound = match u64_at(16, little) & 0x3 {
        1 => false,
        2 => true,
        other => return Err(format!("unknown stream header type {other}")),
    };
    Ok(SendBegin {
        toguid: u64_at(40, little),
        fromguid: u64_at(48, little),
        toname: String::from_utf8_lossy(&name[..end]).into_owned(),
        compound,
        payload_len: payload_len as u32,
        may_carry_properties: false,
    })
}

/// `drr_type` of the record in `b` (in the byte order of a stream whose BEGIN record is
/// `begin`): the END record that closes a compound stream's header must have type 5.
pub fn send_record_type(begin: &[u8], b: &[u8]) -> Option<u32> {
    let magic: [u8; 8] = begin.get(8..16)?.try_into().ok()?;
    let t: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(if u64::from_le_bytes(magic) == BACKUP_MAGIC {
        u32::from_le_bytes(t)
    } else {
        u32::from_be_bytes(t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_listing_groups_and_orders() {
        let text = "pool/a\t111\t5\t1700000000\t-\n\
                    pool/b b\t222\t6\t1700000001\t-\n\
                    pool/a@s1\t10\t7\t1700000002\t0\n\
                    pool/b b@s 1\t20\t7\t1700000002\t2\n\
                    pool/a#s1\t10\t7\t1700000002\t-\n\
                    pool/a@s2\t11\t9\t1700000003\t1\n";
        let m = parse_versions_listing(text).unwrap();
        assert_eq!(m.len(), 2);
        let a = &m[&DatasetPath::parse("pool/a").unwrap()];
        let names: Vec<_> = a.iter().map(|v| v.relative_name()).collect();
        assert_eq!(names, ["#s1", "@s1", "@s2"]);
        assert_eq!(a[0].userrefs, None);
        assert_eq!(a[1].userrefs, Some(0));
        assert_eq!(a[2].guid, 11);
        assert_eq!(a[2].createtxg, 9);
        assert_eq!(a[2].creation, 1700000003);
        let b = &m[&DatasetPath::parse("pool/b b").unwrap()];
        assert_eq!(b[0].name, "s 1");
        assert_eq!(b[0].userrefs, Some(2));
    }

    #[test]
    fn versions_listing_sorts_unsorted_input() {
        let text =
            "p/x@c\t3\t30\t3\t0\np/x@a\t1\t10\t1\t0\np/x#b\t2\t20\t2\t-\np/x@b\t2\t20\t2\t0\n";
        let m = parse_versions_listing(text).unwrap();
        let names: Vec<_> = m[&DatasetPath::parse("p/x").unwrap()]
            .iter()
            .map(|v| v.relative_name())
            .collect();
        assert_eq!(names, ["@a", "#b", "@b", "@c"]);
        // Far out of order (beyond the insertion window) and reversed.
        let mut text = String::new();
        for i in (0..50u64).rev() {
            text.push_str(&format!("p/y@s{i}\t{i}\t{}\t0\t0\n", 100 + i));
        }
        text.push_str("p/y#s3\t3\t103\t0\t-\n");
        let m = parse_versions_listing(&text).unwrap();
        let v = &m[&DatasetPath::parse("p/y").unwrap()];
        assert!(v.windows(2).all(|w| w[0].order_key() <= w[1].order_key()));
        assert_eq!(v[3].relative_name(), "#s3");
        assert_eq!(v[4].relative_name(), "@s3");
    }

    #[test]
    fn versions_listing_without_fs_lines_and_empty() {
        assert!(parse_versions_listing("").unwrap().is_empty());
        let m = parse_versions_listing("p/x@a\t1\t2\t3\t0").unwrap();
        assert_eq!(m[&DatasetPath::parse("p/x").unwrap()].len(), 1);
    }

    #[test]
    fn versions_listing_rejects_garbage() {
        let bad = [
            "p/x@a\t1\t2\t3",
            "p/x@a\t1\t2\t3\t0\textra",
            "p/x@a\tx\t2\t3\t0",
            "p/x@a\t1\t-\t3\t0",
            "p/x@a\t1\t2\t3\t-",
            "p/x#a\t1\t2\t3\t0",
            "p/x@a%b\t1\t2\t3\t0",
            "p/x@\t1\t2\t3\t0",
            "p/ü@a\t1\t2\t3\t0",
            "p//x\t1\t2\t3\t-",
        ];
        for b in bad {
            assert!(parse_versions_listing(b).is_err(), "{b:?}");
        }
        let e = parse_versions_listing("p/x\t1\t2\t3\t-\np/x@a\tx\t2\t3\t0\n").unwrap_err();
        assert_eq!(e.line_no, 2);
    }

    #[test]
    fn get_output() {
        let text = "pool/a\tzrepl:placeholder\ton\tlocal\n\
                    pool/a\tmountpoint\t/mnt/a\tinherited from pool\n\
                    pool/a\treceive_resume_token\t-\t-\n\
                    pool/a\tweird\tx\ty\treceived\n";
        let m = parse_get(text).unwrap();
        let a = &m["pool/a"];
        assert_eq!(a["zrepl:placeholder"].source, PropertySource::Local);
        assert_eq!(
            a["mountpoint"].source,
            PropertySource::Inherited {
                from: "pool".into()
            }
        );
        assert_eq!(a["receive_resume_token"].source, PropertySource::None);
        assert_eq!(a["weird"].value, "x\ty");
        assert!(parse_get("a\tb\tc\tbogus\n").is_err());
        assert!(parse_get("a\tb\n").is_err());
        assert!(parse_get("a\tb\tc\tlocal\na\tb\tc\tlocal\n").is_err());
        for (s, want) in [
            ("default", PropertySource::Default),
            ("temporary", PropertySource::Temporary),
            ("received", PropertySource::Received),
        ] {
            assert_eq!(PropertySource::parse(s), Some(want));
        }
    }

    #[test]
    fn holds_output() {
        let text = "pool/a@s\tzrepl_STEP_J_x\tThu Nov 20 10:00 2025\npool/a@s\ttag with space\tThu Nov 20 10:00 2025\n";
        let h = parse_holds(text).unwrap();
        assert_eq!(h[1], ("pool/a@s".to_string(), "tag with space".to_string()));
        assert!(parse_holds("nonsense\n").is_err());
    }

    #[test]
    fn dry_run() {
        let full = "full\tzroot/test/a@3\t10518512\nsize\t10518512\n";
        let i = parse_send_dry_run(full, u64::MAX).unwrap();
        assert_eq!(i.kind, DryRunKind::Full);
        assert_eq!(i.size, 10518512);
        assert_eq!(i.to, "zroot/test/a@3");
        let inc = "incremental\t1\tzroot/test/a@2\t10511856\nsize\t10511856\n";
        let i = parse_send_dry_run(inc, u64::MAX).unwrap();
        assert_eq!(i.kind, DryRunKind::Incremental);
        assert_eq!(i.from.as_deref(), Some("1"));
        assert_eq!(i.size, 10511856);
        // ZoL 0.7.12: no size
        let i = parse_send_dry_run("full\tzroot/test/a@3\n", u64::MAX).unwrap();
        assert_eq!(i.size, 0);
        // resume token dry run prints the token contents first
        let resumed = "resume token contents:\nnvlist version: 0\n\tobject = 0x6\n\ttoname = p/a@s\nfull\tp/a@s\t1234\nsize\t1234\n";
        assert_eq!(parse_send_dry_run(resumed, u64::MAX).unwrap().size, 1234);
        // threshold
        assert_eq!(parse_send_dry_run(full, 1000).unwrap().size, 0);
        assert!(parse_send_dry_run("size\t5\n", u64::MAX).is_err());
        assert!(parse_send_dry_run("full\tnoat\t5\n", u64::MAX).is_err());
    }

    #[test]
    fn versions() {
        let v = parse_zfs_version("zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n").unwrap();
        assert_eq!(v.numeric, Some((2, 3, 2)));
        assert_eq!(v.kernel.as_deref(), Some("2.3.2-1~bpo12+1"));
        assert!(parse_zfs_version("unrecognized command 'version'\n").is_none());
    }

    #[test]
    fn stderr_classification() {
        assert!(is_dataset_does_not_exist(
            "cannot open 'pool/a b': dataset does not exist\n",
            "pool/a b"
        ));
        assert!(is_dataset_does_not_exist(
            "cannot open 'nopool/x': no such pool or dataset\n",
            "nopool/x"
        ));
        assert!(!is_dataset_does_not_exist(
            "cannot open 'pool/other': dataset does not exist\n",
            "pool/a"
        ));
        assert_eq!(
            dataset_does_not_exist_path("cannot open 'p/x@y': dataset does not exist\n"),
            Some("p/x@y")
        );
        assert!(is_bookmark_exists(
            "cannot create bookmark 'pool/a#b': bookmark exists\n"
        ));
        assert!(!is_bookmark_exists(
            "cannot create bookmark 'pool/a#b': permission denied\n"
        ));
        assert!(is_destroy_no_snapshots(
            "could not find any snapshots to destroy; check snapshot names.\n"
        ));
        assert!(is_bookmark_does_not_exist(
            "bookmark 'pool/a#b' does not exist\n",
            "pool/a#b"
        ));
    }

    #[test]
    fn destroy_snapshots_error() {
        let stderr = "cannot destroy snapshot pool/with space@4 5 6: dataset is busy\n\
                      cannot destroy snapshot pool/with space@x: it's being held. Run 'zfs holds -r pool/with space@x' to see holders.\n";
        let u = parse_destroy_snapshots_error("pool/with space", stderr).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].snapshot, "4 5 6");
        assert!(u[0].is_held());
        assert_eq!(u[1].snapshot, "x");
        assert!(u[1].is_held());
        assert!(parse_destroy_snapshots_error("pool/other", stderr).is_none());
        assert!(parse_destroy_snapshots_error("pool/with space", "something else\n").is_none());
        let u =
            parse_destroy_snapshots_error("p", "cannot destroy snapshot p@a: permission denied\n")
                .unwrap();
        assert!(!u[0].is_held());
    }

    #[test]
    fn recv_errors() {
        let stderr =
            "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n\
                      Partially received snapshot is saved.\n\
                      A resuming stream can be generated on the sending system by running:\n    \
                      zfs send -t 1-e604ea4bf-e0-789c63a2\n";
        assert_eq!(recv_resume_token(stderr), Some("1-e604ea4bf-e0-789c63a2"));
        assert_eq!(
            recv_resume_token("cannot receive: failed to read from stream\n"),
            None
        );
        assert!(is_recv_cannot_read_from_stream(
            "cannot receive: failed to read from stream\n"
        ));
        assert!(is_recv_destroy_or_overwrite_encrypted(
            "cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one\n"
        ));
        assert!(is_recv_abort_nothing_to_abort(
            "'pool/a' does not have any resumable receive state to abort\n"
        ));
    }

    #[test]
    fn hold_timestamps() {
        for (ts, want) in [
            ("Sun Dec  6 16:01 2026", Some(1_796_572_860)),
            ("Thu Jan  1 00:00 1970", Some(0)),
            ("Tue Feb 29 23:59 2028", Some(1_835_481_540)),
            ("Wed Mar  1 00:00 2000", Some(951_868_800)),
            ("Sun Dec 6 16:01 2026", Some(1_796_572_860)),
            ("Sun Dez  6 16:01 2026", None),
            ("Sun Dec  6 24:00 2026", None),
            ("Sun Dec 32 16:01 2026", None),
            ("1796572860", None),
            ("", None),
            ("Sun Dec  6 16:01 2026 extra", None),
        ] {
            assert_eq!(parse_hold_timestamp(ts), want, "{ts:?}");
        }
        let rows = parse_holds_timed("p/a@s\tzrepl_STEP_J_x\tSun Dec  6 16:01 2026\n").unwrap();
        assert_eq!(
            rows,
            [HoldRow {
                snapshot: "p/a@s".into(),
                tag: "zrepl_STEP_J_x".into(),
                since: Some(1_796_572_860)
            }]
        );
    }

    #[test]
    fn get_listing_splits_into_properties_and_versions() {
        let text = "p/u\tguid\t1\t-\np/u\tcreatetxg\t9\t-\np/u\tcreation\t100\t-\n\
                    p/u\tuserrefs\t-\t-\np/u\tzrepl:placeholder\ton\tlocal\n\
                    p/u/a\tguid\t2\t-\np/u/a\tcreatetxg\t10\t-\np/u/a\tcreation\t101\t-\n\
                    p/u/a\tuserrefs\t-\t-\np/u/a\tzrepl:placeholder\ton\tinherited from p/u\n\
                    p/u/a@s2\tguid\t5\t-\np/u/a@s2\tcreatetxg\t30\t-\np/u/a@s2\tcreation\t200\t-\n\
                    p/u/a@s2\tuserrefs\t1\t-\np/u/a@s2\tzrepl:placeholder\ton\tinherited from p/u\n\
                    p/u/a#b\tguid\t4\t-\np/u/a#b\tcreatetxg\t20\t-\np/u/a#b\tcreation\t150\t-\n\
                    p/u/a#b\tuserrefs\t-\t-\np/u/a#b\tzrepl:placeholder\t-\t-\n";
        let rows = parse_get(text).unwrap();
        let (props, versions) = split_get_listing(rows, &["zrepl:placeholder"]).unwrap();
        let u = DatasetPath::parse("p/u").unwrap();
        let a = DatasetPath::parse("p/u/a").unwrap();
        assert_eq!(props[&u]["zrepl:placeholder"].source, PropertySource::Local);
        assert_eq!(props[&a]["zrepl:placeholder"].value, "on");
        assert_eq!(props[&a].len(), 1);
        assert!(versions[&u].is_empty());
        let names: Vec<_> = versions[&a].iter().map(|v| v.relative_name()).collect();
        assert_eq!(names, ["#b", "@s2"]);
        assert_eq!(versions[&a][1].userrefs, Some(1));
        assert_eq!(versions[&a][0].userrefs, None);

        // Missing or malformed values are errors, not defaults.
        for bad in [
            "p/u@s\tguid\tx\t-\np/u@s\tcreatetxg\t1\t-\np/u@s\tcreation\t1\t-\np/u@s\tuserrefs\t0\t-\n",
            "p/u@s\tcreatetxg\t1\t-\np/u@s\tcreation\t1\t-\np/u@s\tuserrefs\t0\t-\n",
            "p/u@s\tguid\t1\t-\np/u@s\tcreatetxg\t1\t-\np/u@s\tcreation\t1\t-\np/u@s\tuserrefs\t-\t-\n",
            "p/u@b@d\tguid\t1\t-\np/u@b@d\tcreatetxg\t1\t-\np/u@b@d\tcreation\t1\t-\np/u@b@d\tuserrefs\t0\t-\n",
        ] {
            let rows = parse_get(bad).unwrap();
            assert!(split_get_listing(rows, &[]).is_err(), "{bad:?}");
        }
        let rows = parse_get("p/u\tguid\t1\t-\n").unwrap();
        assert!(split_get_listing(rows, &["receive_resume_token"]).is_err());
        // A user property is read with `-s local,none`: absent when received or inherited.
        let rows = parse_get("p/u\tguid\t1\t-\n").unwrap();
        let (props, _) = split_get_listing(rows, &["zrepl:placeholder"]).unwrap();
        assert!(props[&DatasetPath::parse("p/u").unwrap()].is_empty());
    }

    /// A `DRR_BEGIN` record as OpenZFS writes it, in the given byte order.
    fn begin_record(little: bool, typ: u32, magic: u64, to: u64, from: u64, name: &str) -> Vec<u8> {
        begin_record_hdr(little, typ, magic, 1, 0, to, from, name)
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_record_hdr(
        little: bool,
        typ: u32,
        magic: u64,
        hdrtype: u64,
        payload: u32,
        to: u64,
        from: u64,
        name: &str,
    ) -> Vec<u8> {
        let mut b = vec![0u8; SEND_BEGIN_LEN];
        let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
            let x = if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            b[at..at + 4].copy_from_slice(&x);
        };
        let put64 = |b: &mut Vec<u8>, at: usize, v: u64| {
            let x = if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            b[at..at + 8].copy_from_slice(&x);
        };
        put32(&mut b, 0, typ);
        put32(&mut b, 4, payload);
        put64(&mut b, 8, magic);
        put64(&mut b, 16, (0x4 << 2) | hdrtype); // versioninfo: feature flags, header type
        put64(&mut b, 24, 1_700_000_000);
        put32(&mut b, 32, 2); // DMU_OST_ZFS
        put32(&mut b, 36, 0x4);
        put64(&mut b, 40, to);
        put64(&mut b, 48, from);
        b[56..56 + name.len()].copy_from_slice(name.as_bytes());
        b
    }

    #[test]
    fn send_begin_records() {
        let ok = |to: u64, from: u64, name: &str| {
            Ok(SendBegin {
                toguid: to,
                fromguid: from,
                toname: name.to_string(),
                compound: false,
                payload_len: 0,
                may_carry_properties: false,
            })
        };
        let long_name = "p/".to_string() + &"x".repeat(254);
        let cases: Vec<(&str, Vec<u8>, Result<SendBegin, &str>)> = vec![
            (
                "little-endian incremental",
                begin_record(
                    true,
                    0,
                    BACKUP_MAGIC,
                    0xdead_beef_0000_0001,
                    42,
                    "pool/fs@b",
                ),
                ok(0xdead_beef_0000_0001, 42, "pool/fs@b"),
            ),
            (
                "big-endian sender, full",
                begin_record(false, 0, BACKUP_MAGIC, u64::MAX, 0, "pool/a b@s 1"),
                ok(u64::MAX, 0, "pool/a b@s 1"),
            ),
            (
                "name fills the field (no NUL)",
                begin_record(true, 0, BACKUP_MAGIC, 1, 2, &long_name),
                ok(1, 2, &long_name),
            ),
            (
                "wrong magic",
                begin_record(true, 0, 0x1234, 1, 2, "p/f@s"),
                Err("not a zfs send stream (no DRR_BEGIN magic)"),
            ),
            (
                "first record is not BEGIN",
                begin_record(true, 5, BACKUP_MAGIC, 1, 2, "p/f@s"),
                Err("first record has type 5, not DRR_BEGIN"),
            ),
            (
                "big-endian, not BEGIN",
                begin_record(false, 1, BACKUP_MAGIC, 1, 2, "p/f@s"),
                Err("first record has type 1, not DRR_BEGIN"),
            ),
            (
                "short",
                vec![0u8; 100],
                Err("stream shorter than its first record (100 of 312 bytes)"),
            ),
            (
                "empty",
                Vec::new(),
                Err("stream shorter than its first record (0 of 312 bytes)"),
            ),
            (
                "compound stream (zfs send -p), big-endian",
                begin_record_hdr(false, 0, BACKUP_MAGIC, 2, 1234, 0, 0, "p/f@s"),
                Ok(SendBegin {
                    toguid: 0,
                    fromguid: 0,
                    toname: "p/f@s".into(),
                    compound: true,
                    payload_len: 1234,
                    may_carry_properties: false,
                }),
            ),
            (
                "unknown header type",
                begin_record_hdr(true, 0, BACKUP_MAGIC, 3, 0, 1, 2, "p/f@s"),
                Err("unknown stream header type 3"),
            ),
        ];
        for (what, bytes, want) in cases {
            let got = parse_send_begin(&bytes);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{what}"),
                (Err(g), Err(w)) => assert_eq!(g, w, "{what}"),
                _ => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
        // Trailing bytes (the rest of the stream) are not looked at.
        let mut b = begin_record(true, 0, BACKUP_MAGIC, 7, 0, "p/f@s");
        b.extend_from_slice(&[0xff; 1000]);
        assert_eq!(parse_send_begin(&b).ok(), ok(7, 0, "p/f@s").ok());
        // The END record's type, in either byte order.
        for little in [true, false] {
            let begin = begin_record(little, 0, BACKUP_MAGIC, 1, 0, "p/f@s");
            let end = begin_record(little, 5, 0, 0, 0, "");
            assert_eq!(send_record_type(&begin, &end), Some(5));
        }
        assert_eq!(send_record_type(&[], &[0; 312]), None);
    }
}

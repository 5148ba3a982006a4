//! The `grid` keep rule's specification: `1x1h(keep=all) | 24x1h | 14x1d`.

use std::fmt;

use crate::units::ZreplDuration;

/// How many snapshots a bucket keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    All,
    /// At least 1 (zrepl 0.7 accepts 0 and panics at prune time; we reject it at parse time).
    N(u64),
}

/// `count x length (keep=...)`: `count` consecutive buckets of the same length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridInterval {
    pub count: u64,
    pub length: ZreplDuration,
    pub keep: Keep,
}

/// One bucket of the expanded grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub length: ZreplDuration,
    pub keep: Keep,
}

/// A parsed and validated grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridSpec {
    intervals: Vec<GridInterval>,
}

/// More buckets than this is certainly a typo (a year of minutely buckets is 525,600).
const MAX_BUCKETS: u64 = 1_000_000;

impl GridSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut intervals = Vec::new();
        for (i, part) in s.split('|').enumerate() {
            intervals.push(
                parse_interval(part)
                    .map_err(|e| format!("interval {} ({:?}): {e}", i + 1, part.trim()))?,
            );
        }
        let total: u64 = intervals.iter().map(|i| i.count).sum();
        if total > MAX_BUCKETS {
            return Err(format!(
                "grid expands to {total} buckets, more than the limit of {MAX_BUCKETS}"
            ));
        }
        // Bucket lengths must not decrease, except right after a run of keep=all buckets.
        let mut all_keep_all = true;
        let mut prev: Option<&GridInterval> = None;
        for iv in &intervals {
            if let Some(p) = prev {
                if iv.length < p.length && !all_keep_all {
                    return Err(format!(
                        "bucket length {} is shorter than the preceding {} (lengths must not decrease, except after keep=all buckets)",
                        iv.length, p.length
                    ));
                }
            }
            all_keep_all &= iv.keep == Keep::All;
            prev = Some(iv);
        }
        Ok(GridSpec { intervals })
    }

    pub fn intervals(&self) -> &[GridInterval] {
        &self.intervals
    }

    /// The buckets, youngest first.
    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.intervals.iter().flat_map(|iv| {
            (0..iv.count).map(move |_| Bucket {
                length: iv.length,
                keep: iv.keep,
            })
        })
    }
}

fn parse_interval(part: &str) -> Result<GridInterval, String> {
    let p = part.trim();
    let (count, rest) = p
        .split_once('x')
        .ok_or("expected <count> x <duration>[(keep=<n|all>)], e.g. 24x1h")?;
    let count: u64 = count.trim().parse().map_err(|_| {
        format!(
            "invalid count {:?}: expected a positive integer",
            count.trim()
        )
    })?;
    if count == 0 {
        return Err("count must be positive".into());
    }
    let (dur, keep) = match rest.split_once('(') {
        None => (rest, None),
        Some((d, k)) => {
            let k = k
                .trim_end()
                .strip_suffix(')')
                .ok_or("missing ')' after keep=...")?;
            (d, Some(k))
        }
    };
    let length = ZreplDuration::parse(dur.trim())?;
    if length.as_secs() <= 0 {
        return Err("bucket length must be positive".into());
    }
    let keep = match keep {
        None => Keep::N(1),
        Some(k) => {
            let v = k.trim().strip_prefix("keep=").ok_or_else(|| {
                format!("invalid option {k:?}: only keep=<n> or keep=all is allowed")
            })?;
            match v.trim() {
                "all" => Keep::All,
                n => match n.parse::<i64>() {
                    Ok(n) if n > 0 => Keep::N(n as u64),
                    Ok(_) => return Err(format!("keep={n} is not allowed: keep must be a positive number or all (zrepl 0.7 would crash at prune time)")),
                    Err(_) => return Err(format!("invalid keep value {n:?}: expected a positive number or all")),
                },
            }
        }
    };
    Ok(GridInterval {
        count,
        length,
        keep,
    })
}

impl fmt::Display for GridSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, iv) in self.intervals.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{}x{}", iv.count, iv.length)?;
            match iv.keep {
                Keep::All => f.write_str("(keep=all)")?,
                Keep::N(1) => {}
                Keep::N(n) => write!(f, "(keep={n})")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zrepl_examples() {
        let g = GridSpec::parse("1x1h(keep=all) | 24x1h | 35x1d | 6x30d").unwrap();
        assert_eq!(g.buckets().count(), 1 + 24 + 35 + 6);
        assert_eq!(g.intervals()[0].keep, Keep::All);
        assert_eq!(g.intervals()[1].keep, Keep::N(1));
        assert_eq!(g.intervals()[3].length.as_secs(), 30 * 86400);
        assert_eq!(g.to_string(), "1x1h(keep=all) | 24x1h | 35x1d | 6x30d");
        let g = GridSpec::parse(" 2 x 10m ( keep=3 ) |1x1h").unwrap();
        assert_eq!(g.intervals()[0].keep, Keep::N(3));
        assert_eq!(GridSpec::parse(&g.to_string()).unwrap(), g);
    }

    #[test]
    fn decreasing_allowed_only_after_keep_all() {
        assert!(GridSpec::parse("1x1d(keep=all) | 24x1h").is_ok());
        assert!(GridSpec::parse("1x1d | 24x1h").is_err());
        assert!(GridSpec::parse("1x1h(keep=all) | 1x1d | 1x1h").is_err());
    }

    #[test]
    fn rejects_bad_specs() {
        for s in [
            "",
            "1h",
            "0x1h",
            "-1x1h",
            "1x0h",
            "1x",
            "x1h",
            "1x1h(keep=0)",
            "1x1h(keep=-1)",
            "1x1h(keep=some)",
            "1x1h(foo=1)",
            "1x1h(keep=1",
            "1x1h || 1x1d",
            "1x1h30m",
            "1000001x1s",
        ] {
            assert!(GridSpec::parse(s).is_err(), "{s:?}");
        }
    }
}

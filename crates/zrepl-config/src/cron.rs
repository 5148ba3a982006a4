//! Cron schedules with the syntax zrepl 0.7 accepts (robfig/cron v3 with an optional seconds
//! field): `[second] minute hour day-of-month month day-of-week`, with `*`, `?`, lists, ranges,
//! steps, month and weekday names, and an optional `TZ=Zone` / `CRON_TZ=Zone` prefix.
//! Descriptors such as `@daily` are rejected, as in zrepl.
//!
//! Day matching follows cron tradition: if either day field is `*` (or `?`), both must match;
//! otherwise a day matching either field matches.

use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    source: String,
    tz: Option<chrono_tz::Tz>,
    second: u64,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSchedule {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut s = spec.trim();
        let mut tz = None;
        if let Some(rest) = s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")) {
            let (zone, fields) = rest
                .split_once(char::is_whitespace)
                .ok_or("missing fields after the time zone")?;
            tz = Some(
                zone.parse::<chrono_tz::Tz>()
                    .map_err(|_| format!("unknown time zone {zone:?}"))?,
            );
            s = fields.trim_start();
        }
        if s.starts_with('@') {
            return Err(format!("descriptors like {s:?} are not supported; write the five fields, e.g. \"0 0 * * *\""));
        }
        let fields: Vec<&str> = s.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found {n}"
                ))
            }
        };
        let (second, _) = parse_field(sec, &SECOND)?;
        let (minute, _) = parse_field(rest[0], &MINUTE)?;
        let (hour, _) = parse_field(rest[1], &HOUR)?;
        let (dom, dom_star) = parse_field(rest[2], &DOM)?;
        let (month, _) = parse_field(rest[3], &MONTH)?;
        let (dow, dow_star) = parse_field(rest[4], &DOW)?;
        Ok(CronSchedule {
            source: spec.to_string(),
            tz,
            second,
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    }

    /// The time zone given with `TZ=`, if any (otherwise the daemon's local time applies).
    pub fn time_zone(&self) -> Option<chrono_tz::Tz> {
        self.tz
    }

    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first matching wall-clock time strictly after `t` (seconds resolution), searching at
    /// most five years ahead.
    pub fn next_naive(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = t.with_nanosecond(0)? + Duration::seconds(1);
        let limit = t.year() + 5;
        'wrap: loop {
            if t.year() > limit {
                return None;
            }
            let mut added = false;
            while self.month & (1 << t.month()) == 0 {
                if !added {
                    added = true;
                    t = t.date().with_day(1)?.and_hms_opt(0, 0, 0)?;
                }
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                if t.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(t.date()) {
                if !added {
                    added = true;
                    t = t.date().and_hms_opt(0, 0, 0)?;
                }
                t += Duration::days(1);
                if t.day() == 1 {
                    continue 'wrap;
                }
            }
            while self.hour & (1 << t.hour()) == 0 {
                if !added {
                    added = true;
                    t = t.date().and_hms_opt(t.hour(), 0, 0)?;
                }
                t += Duration::hours(1);
                if t.hour() == 0 {
                    continue 'wrap;
                }
            }
            while self.minute & (1 << t.minute()) == 0 {
                if !added {
                    added = true;
                    t = t.with_second(0)?;
                }
                t += Duration::minutes(1);
                if t.minute() == 0 {
                    continue 'wrap;
                }
            }
            while self.second & (1 << t.second()) == 0 {
                added = true;
                t += Duration::seconds(1);
                if t.second() == 0 {
                    continue 'wrap;
                }
            }
            let _ = added;
            return Some(t);
        }
    }

    /// The next firing strictly after `now`, evaluated in `now`'s time zone (or the schedule's own
    /// `TZ=` zone). Wall-clock times that do not exist (DST gaps) are skipped; ambiguous ones
    /// (DST overlaps) fire at their first occurrence.
    pub fn next_after<Z: TimeZone>(
        &self,
        now: &chrono::DateTime<Z>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self.tz {
            Some(tz) => self.next_in_zone(&now.with_timezone(&tz)),
            None => self.next_in_zone(now),
        }
    }

    fn next_in_zone<Z: TimeZone>(
        &self,
        now: &chrono::DateTime<Z>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let tz = now.timezone();
        let mut cursor = now.naive_local();
        for _ in 0..10_000 {
            let cand = self.next_naive(cursor)?;
            if let Some(dt) = tz.from_local_datetime(&cand).earliest() {
                if dt.naive_utc() > now.naive_utc() {
                    return Some(dt.with_timezone(&chrono::Utc));
                }
            }
            cursor = cand;
        }
        None
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_value(s: &str, spec: &FieldSpec) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + spec.min);
    }
    s.parse::<u32>()
        .map_err(|_| format!("invalid {} value {s:?}", spec.name))
}

/// Parses one field into a bit set; the bool says whether it was a bare `*` or `?`.
fn parse_field(field: &str, spec: &FieldSpec) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let st: u32 = st
                    .parse()
                    .map_err(|_| format!("invalid step {st:?} in {} field {field:?}", spec.name))?;
                if st == 0 {
                    return Err(format!(
                        "step in {} field {field:?} must be positive",
                        spec.name
                    ));
                }
                (r, Some(st))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            if step.is_none_or(|s| s == 1) {
                star = true;
            }
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (parse_value(a, spec)?, parse_value(b, spec)?)
        } else {
            let v = parse_value(range, spec)?;
            (v, if step.is_some() { spec.max } else { v })
        };
        if lo < spec.min || hi > spec.max {
            return Err(format!(
                "{} field {field:?} is out of range {}-{}",
                spec.name, spec.min, spec.max
            ));
        }
        if lo > hi {
            return Err(format!(
                "{} field {field:?}: beginning of range after end",
                spec.name
            ));
        }
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn next_times() {
        let cases = [
            ("*/5 * * * *", "2024-05-14 21:16:23", "2024-05-14 21:20:00"),
            ("*/5 * * * *", "2024-05-14 21:20:00", "2024-05-14 21:25:00"),
            ("0 0 * * *", "2024-12-31 23:59:59", "2025-01-01 00:00:00"),
            ("30 2 * * 1-5", "2024-05-17 03:00:00", "2024-05-20 02:30:00"),
            ("0 0 29 2 *", "2023-01-01 00:00:00", "2024-02-29 00:00:00"),
            (
                "*/10 * * * * *",
                "2024-01-01 00:00:05",
                "2024-01-01 00:00:10",
            ),
            ("0 12 1 * mon", "2024-05-02 00:00:00", "2024-05-06 12:00:00"),
            (
                "0 12 * JAN,jul SUN",
                "2024-05-02 00:00:00",
                "2024-07-07 12:00:00",
            ),
            ("0 0 ? * 0", "2024-05-14 00:00:00", "2024-05-19 00:00:00"),
            ("5/20 * * * *", "2024-05-14 10:00:00", "2024-05-14 10:05:00"),
        ];
        for (spec, now, want) in cases {
            let c = CronSchedule::parse(spec).unwrap();
            assert_eq!(c.next_naive(dt(now)), Some(dt(want)), "{spec} after {now}");
        }
    }

    #[test]
    fn impossible_date_gives_none() {
        let c = CronSchedule::parse("0 0 31 2 *").unwrap();
        assert_eq!(c.next_naive(dt("2024-01-01 00:00:00")), None);
    }

    #[test]
    fn zones_and_dst() {
        let c = CronSchedule::parse("TZ=Europe/Berlin 30 2 * * *").unwrap();
        // 2024-03-31 02:30 does not exist in Berlin; next is 2024-04-01 02:30 CEST = 00:30 UTC.
        let now = chrono::Utc.with_ymd_and_hms(2024, 3, 30, 12, 0, 0).unwrap();
        let next = c.next_after(&now).unwrap();
        assert_eq!(
            next,
            chrono::Utc.with_ymd_and_hms(2024, 4, 1, 0, 30, 0).unwrap()
        );
    }

    #[test]
    fn rejects() {
        for s in [
            "",
            "* * * *",
            "* * * * * * *",
            "@daily",
            "@every 1h",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "TZ=Nowhere/City * * * * *",
            "1,,2 * * * *",
            "L * * * *",
        ] {
            assert!(CronSchedule::parse(s).is_err(), "{s:?}");
        }
    }
}

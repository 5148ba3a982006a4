//! Snapshot timestamp formats (`timestamp_format`) and locations (`timestamp_location`).
//!
//! zrepl names snapshots `prefix + timestamp`. The keywords `dense`, `human`, `iso-8601` and
//! `unix-seconds` map to Go time layouts; anything else *is* a Go layout (reference time
//! `Mon Jan 2 15:04:05 MST 2006`). We interpret Go layouts ourselves so existing configs produce
//! byte-identical snapshot names.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, Offset, TimeZone, Timelike, Utc};

/// Where timestamps are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Utc,
    /// The daemon's local time zone.
    Local,
    Zone(chrono_tz::Tz),
}

impl Location {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "UTC" => Ok(Location::Utc),
            "Local" => Ok(Location::Local),
            z => z
                .parse::<chrono_tz::Tz>()
                .map(Location::Zone)
                .map_err(|_| format!("unknown time zone {z:?} (use UTC, Local or an IANA name such as Europe/Berlin)")),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Utc => f.write_str("UTC"),
            Location::Local => f.write_str("Local"),
            Location::Zone(z) => f.write_str(z.name()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Lit(String),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    Pm,
    PmLower,
    TzName,
    /// `Z` for UTC if `iso`, else numeric; `colons`, `seconds`, `hours_only` shape the offset.
    Offset {
        iso: bool,
        colons: bool,
        seconds: bool,
        hours_only: bool,
    },
    /// Fractional seconds with `digits`; `trim` for the `9` form; `sep` is `.` or `,`.
    Frac {
        digits: usize,
        trim: bool,
        sep: char,
    },
}

/// A snapshot timestamp format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampFormat {
    source: String,
    kind: FormatKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FormatKind {
    UnixSeconds,
    Layout(Vec<Chunk>),
}

impl TimestampFormat {
    /// Parses a `timestamp_format` for `location`, applying zrepl's rules: the keywords
    /// `dense`, `human` and `unix-seconds` require UTC; custom layouts must not contain `+`.
    pub fn parse(format: &str, location: Location) -> Result<Self, String> {
        let layout = match format.to_ascii_lowercase().as_str() {
            "dense" => Some("20060102_150405_000"),
            "human" => Some("2006-01-02_15:04:05"),
            "iso-8601" => Some("2006-01-02T15:04:05.000Z0700"),
            "unix-seconds" => None,
            _ => {
                if format.contains('+') {
                    return Err(format!("timestamp format {format:?} must not contain '+' (not allowed in ZFS snapshot names)"));
                }
                if format.is_empty() {
                    return Err("timestamp format must not be empty".into());
                }
                Some(format)
            }
        };
        let keyword = matches!(
            format.to_ascii_lowercase().as_str(),
            "dense" | "human" | "unix-seconds"
        );
        if keyword && location != Location::Utc {
            return Err(format!("timestamp format {format:?} requires UTC location (timestamp_location is {location})"));
        }
        let kind = match layout {
            None => FormatKind::UnixSeconds,
            Some(l) => FormatKind::Layout(parse_layout(l)),
        };
        Ok(TimestampFormat {
            source: format.to_string(),
            kind,
        })
    }

    /// Formats `t` in its own time zone. A `+` in the result (positive UTC offsets) becomes `_`,
    /// as in zrepl, because ZFS forbids `+` in snapshot names.
    pub fn format<Z: TimeZone>(&self, t: &DateTime<Z>) -> String {
        let out = match &self.kind {
            FormatKind::UnixSeconds => t.timestamp().to_string(),
            FormatKind::Layout(chunks) => render(chunks, t),
        };
        out.replacen('+', "_", 1)
    }

    /// The format as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// zrepl's validation: `prefix + format(t)` must be a valid snapshot name for sample dates.
    pub fn validate_with_prefix(&self, prefix: &str, location: Location) -> Result<(), String> {
        for (y, m) in [(2020, 6), (2020, 12)] {
            let t = Utc
                .with_ymd_and_hms(y, m, 1, 0, 0, 0)
                .single()
                .expect("valid date");
            let name = match location {
                Location::Zone(z) => format!("{prefix}{}", self.format(&t.with_timezone(&z))),
                _ => format!("{prefix}{}", self.format(&t)),
            };
            zrepl_zfs_types::name::check_component(&name)
                .map_err(|e| format!("snapshot name {name:?} (prefix + timestamp) is not a valid ZFS snapshot name: {e}"))?;
        }
        Ok(())
    }
}

impl fmt::Display for TimestampFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_layout(l: &str) -> Vec<Chunk> {
    use Chunk::*;
    let b = l.as_bytes();
    let mut out: Vec<Chunk> = Vec::new();
    let mut lit = String::new();
    let mut i = 0;
    let starts = |i: usize, p: &str| l[i..].starts_with(p);
    while i < b.len() {
        let (chunk, len): (Option<Chunk>, usize) = match b[i] {
            b'J' if starts(i, "January") => (Some(LongMonth), 7),
            b'J' if starts(i, "Jan") => (Some(Month), 3),
            b'M' if starts(i, "Monday") => (Some(LongWeekDay), 6),
            b'M' if starts(i, "Mon") => (Some(WeekDay), 3),
            b'M' if starts(i, "MST") => (Some(TzName), 3),
            b'0' if starts(i, "002") => (Some(ZeroYearDay), 3),
            b'0' if i + 1 < b.len() && (b'1'..=b'6').contains(&b[i + 1]) => (
                Some(match b[i + 1] {
                    b'1' => ZeroMonth,
                    b'2' => ZeroDay,
                    b'3' => ZeroHour12,
                    b'4' => ZeroMinute,
                    b'5' => ZeroSecond,
                    _ => Year,
                }),
                2,
            ),
            b'1' if starts(i, "15") => (Some(Hour), 2),
            b'1' => (Some(NumMonth), 1),
            b'2' if starts(i, "2006") => (Some(LongYear), 4),
            b'2' => (Some(Day), 1),
            b'_' if starts(i, "__2") => (Some(UnderYearDay), 3),
            b'_' if starts(i, "_2006") => {
                lit.push('_');
                (Some(LongYear), 5)
            }
            b'_' if starts(i, "_2") => (Some(UnderDay), 2),
            b'3' => (Some(Hour12), 1),
            b'4' => (Some(Minute), 1),
            b'5' => (Some(Second), 1),
            b'P' if starts(i, "PM") => (Some(Pm), 2),
            b'p' if starts(i, "pm") => (Some(PmLower), 2),
            b'-' | b'Z' => {
                let iso = b[i] == b'Z';
                let rest = &l[i + 1..];
                let shapes = [
                    ("070000", false, true, false),
                    ("07:00:00", true, true, false),
                    ("0700", false, false, false),
                    ("07:00", true, false, false),
                    ("07", false, false, true),
                ];
                match shapes.iter().find(|(p, ..)| rest.starts_with(p)) {
                    Some((p, colons, seconds, hours_only)) => (
                        Some(Offset {
                            iso,
                            colons: *colons,
                            seconds: *seconds,
                            hours_only: *hours_only,
                        }),
                        1 + p.len(),
                    ),
                    None => (None, 1),
                }
            }
            c @ (b'.' | b',') if i + 1 < b.len() && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                let ch = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == ch {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    (None, 1)
                } else {
                    (
                        Some(Frac {
                            digits: j - i - 1,
                            trim: ch == b'9',
                            sep: c as char,
                        }),
                        j - i,
                    )
                }
            }
            _ => (None, 0),
        };
        match chunk {
            Some(c) => {
                if !lit.is_empty() {
                    out.push(Lit(std::mem::take(&mut lit)));
                }
                out.push(c);
                i += len;
            }
            None => {
                let n = if len == 0 {
                    l[i..].chars().next().map_or(1, char::len_utf8)
                } else {
                    len
                };
                lit.push_str(&l[i..i + n]);
                i += n;
            }
        }
    }
    if !lit.is_empty() {
        out.push(Lit(lit));
    }
    out
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn render<Z: TimeZone>(chunks: &[Chunk], t: &DateTime<Z>) -> String {
    use std::fmt::Write;
    let off: FixedOffset = t.offset().fix();
    let mut s = String::new();
    for c in chunks {
        match c {
            Chunk::Lit(l) => s.push_str(l),
            Chunk::LongMonth => s.push_str(LONG_MONTHS[t.month0() as usize]),
            Chunk::Month => s.push_str(&LONG_MONTHS[t.month0() as usize][..3]),
            Chunk::NumMonth => write!(s, "{}", t.month()).unwrap_or(()),
            Chunk::ZeroMonth => write!(s, "{:02}", t.month()).unwrap_or(()),
            Chunk::LongWeekDay => {
                s.push_str(LONG_DAYS[t.weekday().num_days_from_sunday() as usize])
            }
            Chunk::WeekDay => {
                s.push_str(&LONG_DAYS[t.weekday().num_days_from_sunday() as usize][..3])
            }
            Chunk::Day => write!(s, "{}", t.day()).unwrap_or(()),
            Chunk::UnderDay => write!(s, "{:>2}", t.day()).unwrap_or(()),
            Chunk::ZeroDay => write!(s, "{:02}", t.day()).unwrap_or(()),
            Chunk::UnderYearDay => write!(s, "{:>3}", t.ordinal()).unwrap_or(()),
            Chunk::ZeroYearDay => write!(s, "{:03}", t.ordinal()).unwrap_or(()),
            Chunk::Hour => write!(s, "{:02}", t.hour()).unwrap_or(()),
            Chunk::Hour12 => write!(s, "{}", hour12(t.hour())).unwrap_or(()),
            Chunk::ZeroHour12 => write!(s, "{:02}", hour12(t.hour())).unwrap_or(()),
            Chunk::Minute => write!(s, "{}", t.minute()).unwrap_or(()),
            Chunk::ZeroMinute => write!(s, "{:02}", t.minute()).unwrap_or(()),
            Chunk::Second => write!(s, "{}", t.second()).unwrap_or(()),
            Chunk::ZeroSecond => write!(s, "{:02}", t.second()).unwrap_or(()),
            Chunk::LongYear => write!(s, "{:04}", t.year()).unwrap_or(()),
            Chunk::Year => write!(s, "{:02}", t.year().rem_euclid(100)).unwrap_or(()),
            Chunk::Pm => s.push_str(if t.hour() >= 12 { "PM" } else { "AM" }),
            Chunk::PmLower => s.push_str(if t.hour() >= 12 { "pm" } else { "am" }),
            Chunk::TzName => {
                if off.local_minus_utc() == 0 {
                    s.push_str("UTC")
                } else {
                    push_offset(&mut s, off.local_minus_utc(), false, false, false)
                }
            }
            Chunk::Offset {
                iso,
                colons,
                seconds,
                hours_only,
            } => {
                let secs = off.local_minus_utc();
                if *iso && secs == 0 {
                    s.push('Z');
                } else {
                    push_offset(&mut s, secs, *colons, *seconds, *hours_only);
                }
            }
            Chunk::Frac { digits, trim, sep } => {
                let nanos = t.nanosecond() % 1_000_000_000;
                let full = format!("{nanos:09}");
                let mut d = full[..(*digits).min(9)].to_string();
                if *trim {
                    while d.ends_with('0') {
                        d.pop();
                    }
                    if !d.is_empty() {
                        s.push(*sep);
                        s.push_str(&d);
                    }
                } else {
                    s.push(*sep);
                    s.push_str(&d);
                }
            }
        }
    }
    s
}

fn hour12(h: u32) -> u32 {
    match h % 12 {
        0 => 12,
        x => x,
    }
}

fn push_offset(s: &mut String, secs: i32, colons: bool, with_seconds: bool, hours_only: bool) {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    let (h, m, sec) = (a / 3600, (a / 60) % 60, a % 60);
    s.push(sign);
    s.push_str(&format!("{h:02}"));
    if hours_only {
        return;
    }
    if colons {
        s.push(':');
    }
    s.push_str(&format!("{m:02}"));
    if with_seconds {
        if colons {
            s.push(':');
        }
        s.push_str(&format!("{sec:02}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 14, 21, 16, 23).unwrap()
    }

    #[test]
    fn keywords_match_zrepl() {
        let f = |s| {
            TimestampFormat::parse(s, Location::Utc)
                .unwrap()
                .format(&t())
        };
        assert_eq!(f("dense"), "20240514_211623_000");
        assert_eq!(f("DENSE"), "20240514_211623_000");
        assert_eq!(f("human"), "2024-05-14_21:16:23");
        assert_eq!(f("iso-8601"), "2024-05-14T21:16:23.000Z");
        assert_eq!(f("unix-seconds"), "1715721383");
        assert_eq!(
            Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 7)
                .unwrap()
                .format("%Y")
                .to_string(),
            "2038"
        );
    }

    #[test]
    fn iso_in_berlin_replaces_plus() {
        let loc = Location::parse("Europe/Berlin").unwrap();
        let Location::Zone(z) = loc else { panic!() };
        let f = TimestampFormat::parse("iso-8601", loc).unwrap();
        assert_eq!(
            f.format(&t().with_timezone(&z)),
            "2024-05-14T23:16:23.000_0200"
        );
    }

    #[test]
    fn custom_layouts() {
        let cases = [
            ("2006-01-02", "2024-05-14"),
            ("Jan _2 15:04", "May 14 21:16"),
            ("January Monday", "May Tuesday"),
            ("3:04PM", "9:16PM"),
            ("06.002", "24.135"),
            ("15h04m05s.999", "21h16m23s"),
            ("2006-01-02T15:04:05Z07:00", "2024-05-14T21:16:23Z"),
            ("2006_-0700", "2024_-0000"),
            ("literal_x", "literal_x"),
        ];
        for (layout, want) in cases {
            let f = TimestampFormat::parse(layout, Location::Utc).unwrap();
            let got = f.format(&t());
            // Go prints "+0000" for a zero numeric offset; '+' then becomes '_'.
            let want = if layout == "2006_-0700" {
                "2024__0000"
            } else {
                want
            };
            assert_eq!(got, want, "{layout}");
        }
    }

    #[test]
    fn rules() {
        assert!(TimestampFormat::parse("dense", Location::Local).is_err());
        assert!(
            TimestampFormat::parse("human", Location::parse("Europe/Berlin").unwrap()).is_err()
        );
        assert!(TimestampFormat::parse("iso-8601", Location::Local).is_ok());
        assert!(TimestampFormat::parse("2006+01", Location::Utc).is_err());
        assert!(Location::parse("Mars/Olympus").is_err());
        let f = TimestampFormat::parse("2006/01/02", Location::Utc).unwrap();
        assert!(f.validate_with_prefix("zrepl_", Location::Utc).is_err());
        let f = TimestampFormat::parse("dense", Location::Utc).unwrap();
        assert!(f.validate_with_prefix("zrepl_", Location::Utc).is_ok());
        assert!(f.validate_with_prefix("bad@", Location::Utc).is_err());
    }
}

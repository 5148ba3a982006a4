//! Durations and data sizes in zrepl's two duration syntaxes and its data-size syntax.
//!
//! * [`ZreplDuration`]: `10m`, `1d`, `2w` (units s, m, h, d, w; a bare `0`). Used by snapshot
//!   intervals, pull intervals and grid buckets.
//! * [`GoDuration`]: Go's `time.ParseDuration` syntax (`10s`, `1m30s`, `250ms`). Used by timeouts.
//! * [`DataSize`]: `23.5 MiB`, `12345 B`, `100 Mb` (megabit).

use std::fmt;
use std::time::Duration;

/// A duration written in zrepl's own syntax. Keeps seconds; formats back to the largest exact unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZreplDuration {
    secs: i64,
}

impl ZreplDuration {
    pub fn from_secs(secs: i64) -> Self {
        ZreplDuration { secs }
    }
    pub fn as_secs(self) -> i64 {
        self.secs
    }
    pub fn to_std(self) -> Duration {
        Duration::from_secs(self.secs.max(0) as u64)
    }

    /// Parses `^\s*([+-]?\d+)\s*(|s|m|h|d|w)\s*$`; a unit is required unless the number is 0.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let num_end = t
            .char_indices()
            .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && (*c == '+' || *c == '-'))))
            .map(|(i, _)| i)
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(num_end);
        let unit = unit.trim_start();
        let n: i64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected a number followed by a unit s, m, h, d or w (e.g. 10m)"))?;
        let mult = match unit {
            "" if n == 0 => 0,
            "" => return Err(format!("invalid duration {s:?}: missing unit (s, m, h, d or w)")),
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            other => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {other:?} (expected s, m, h, d or w; compound values like 1h30m are not supported)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(|secs| ZreplDuration { secs })
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))
    }
}

impl fmt::Display for ZreplDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.secs;
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)] {
            if s % len == 0 {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

/// A duration in Go's `time.ParseDuration` syntax, kept in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    nanos: i128,
}

impl GoDuration {
    pub fn from_secs(s: i64) -> Self {
        GoDuration {
            nanos: s as i128 * 1_000_000_000,
        }
    }
    pub fn from_nanos(nanos: i128) -> Self {
        GoDuration { nanos }
    }
    pub fn as_nanos(self) -> i128 {
        self.nanos
    }
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }
    pub fn to_std(self) -> Duration {
        Duration::from_nanos(self.nanos.clamp(0, u64::MAX as i128) as u64)
    }

    /// Parses Go's syntax: `[-+]?(\d*(\.\d*)?(ns|us|µs|μs|ms|s|m|h))+` or `0`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: expected Go duration syntax such as 30s, 1m30s or 250ms"
            )
        };
        let mut t = s.trim();
        let neg = if let Some(r) = t.strip_prefix('-') {
            t = r;
            true
        } else {
            t = t.strip_prefix('+').unwrap_or(t);
            false
        };
        if t == "0" {
            return Ok(GoDuration { nanos: 0 });
        }
        if t.is_empty() {
            return Err(bad());
        }
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid duration {s:?}: missing unit (write e.g. {t}s; a bare number would be nanoseconds in zrepl 0.7)"
            ));
        }
        let mut total: f64 = 0.0;
        let mut exact: i128 = 0;
        let mut all_int = true;
        while !t.is_empty() {
            let num_end = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (num, rest) = t.split_at(num_end);
            if num.is_empty() || num == "." {
                return Err(bad());
            }
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let (unit, rest) = rest.split_at(unit_end);
            let mult: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?} (Go durations use ns, us, ms, s, m, h; d and w are not allowed here)")),
            };
            if num.contains('.') {
                all_int = false;
                let v: f64 = num.parse().map_err(|_| bad())?;
                total += v * mult as f64;
            } else {
                let v: i128 = num.parse().map_err(|_| bad())?;
                exact = v
                    .checked_mul(mult)
                    .and_then(|x| exact.checked_add(x))
                    .ok_or_else(bad)?;
            }
            t = rest;
        }
        let mut nanos = exact + if all_int { 0 } else { total.round() as i128 };
        if nanos > i64::MAX as i128 {
            return Err(format!("invalid duration {s:?}: too large"));
        }
        if neg {
            nanos = -nanos;
        }
        Ok(GoDuration { nanos })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut n = self.nanos;
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 0 {
            f.write_str("-")?;
            n = -n;
        }
        for (unit, len) in [
            ("h", 3_600_000_000_000i128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            if n >= len {
                write!(f, "{}{unit}", n / len)?;
                n %= len;
            }
        }
        Ok(())
    }
}

/// A data size (bandwidth limits, bucket capacities), kept in bytes.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct DataSize {
    bytes: f64,
}

impl DataSize {
    pub fn from_bytes(bytes: f64) -> Self {
        DataSize { bytes }
    }
    pub fn bytes(self) -> f64 {
        self.bytes
    }

    /// Parses `^([-0-9.]*)\s*(bit|(|K|Ki|M|Mi|G|Gi|T|Ti)([bB]))$`: `B` = bytes, `b` = bits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid data size {s:?}: expected a number and a unit such as 12345 B, 128 KiB, 23.5 MiB or 100 Mb (b = bits, B = bytes)")
        };
        let t = s.trim();
        let num_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(num_end);
        let unit = unit.trim_start();
        if num.is_empty() {
            return Err(bad());
        }
        if unit == "bit" {
            let bits: i64 = num
                .parse()
                .map_err(|_| format!("invalid data size {s:?}: unit bit requires an integer"))?;
            return Ok(DataSize {
                bytes: bits as f64 / 8.0,
            });
        }
        let v: f64 = num.parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        // The unit's last character decides bytes or bits; it may be any
        // character of the input, so split on a character boundary.
        let (prefix, per_unit) = if let Some(p) = unit.strip_suffix('B') {
            (p, 1.0)
        } else if let Some(p) = unit.strip_suffix('b') {
            (p, 1.0 / 8.0)
        } else {
            return Err(bad());
        };
        let mult = match prefix {
            "" => 1.0,
            "K" => 1e3,
            "Ki" => 1024.0,
            "M" => 1e6,
            "Mi" => 1024.0 * 1024.0,
            "G" => 1e9,
            "Gi" => 1024.0f64.powi(3),
            "T" => 1e12,
            "Ti" => 1024.0f64.powi(4),
            _ => return Err(bad()),
        };
        Ok(DataSize {
            bytes: v * mult * per_unit,
        })
    }
}

impl fmt::Display for DataSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes;
        if b.fract() == 0.0 {
            for (unit, len) in [
                ("TiB", 1024f64.powi(4)),
                ("GiB", 1024f64.powi(3)),
                ("MiB", 1048576.0),
                ("KiB", 1024.0),
            ] {
                if b != 0.0 && b % len == 0.0 {
                    return write!(f, "{} {unit}", b / len);
                }
            }
            write!(f, "{b} B")
        } else {
            write!(f, "{} bit", (b * 8.0).round() as i64)
        }
    }
}

/// Checks `host:port` as Go's `net.SplitHostPort` would, with a numeric port.
pub fn check_hostport(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("invalid address {s:?}: {why} (expected host:port, [ipv6]:port or :port)")
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let p = p.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if h.contains(':') {
            return Err(bad("IPv6 addresses must be written in brackets"));
        }
        (h, p)
    };
    if host.contains(char::is_whitespace) {
        return Err(bad("whitespace in host"));
    }
    match port.parse::<u16>() {
        Ok(_) => Ok(()),
        Err(_) => Err(bad("port must be a number from 0 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zrepl_durations() {
        let ok = [
            ("10m", 600),
            (" 1 h ", 3600),
            ("2d", 172800),
            ("1w", 604800),
            ("0", 0),
            ("-5s", -5),
            ("+3s", 3),
        ];
        for (s, secs) in ok {
            assert_eq!(ZreplDuration::parse(s).unwrap().as_secs(), secs, "{s}");
        }
        for s in [
            "",
            "10",
            "1h30m",
            "10ms",
            "m",
            "1.5h",
            "1y",
            "99999999999999999999w",
        ] {
            assert!(ZreplDuration::parse(s).is_err(), "{s}");
        }
        for secs in [1, 60, 90, 3600, 86400, 7 * 86400, 8 * 86400] {
            let d = ZreplDuration::from_secs(secs);
            assert_eq!(ZreplDuration::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn go_durations() {
        let ok: [(&str, i128); 7] = [
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("250ms", 250_000_000),
            ("1.5h", 5_400_000_000_000),
            ("0", 0),
            ("-1s", -1_000_000_000),
            ("2h45m0.5s", 9_900_500_000_000),
        ];
        for (s, n) in ok {
            assert_eq!(GoDuration::parse(s).unwrap().as_nanos(), n, "{s}");
        }
        for s in ["", "10", "1d", "1w", "s", "1.2.3s", "10 s", "."] {
            assert!(GoDuration::parse(s).is_err(), "{s}");
        }
        for n in [
            1i128,
            1_000,
            1_500_000_000,
            90_000_000_000,
            3_600_000_000_001,
        ] {
            let d = GoDuration::from_nanos(n);
            assert_eq!(GoDuration::parse(&d.to_string()).unwrap(), d, "{d}");
        }
    }

    #[test]
    fn data_sizes() {
        let ok = [
            ("23.5 MiB", 23.5 * 1048576.0),
            ("12345 B", 12345.0),
            ("100 Mb", 12_500_000.0),
            ("-1 B", -1.0),
            ("128 KiB", 131072.0),
            ("1KB", 1000.0),
            ("16 bit", 2.0),
            ("1 TiB", 1024f64.powi(4)),
        ];
        for (s, b) in ok {
            assert_eq!(DataSize::parse(s).unwrap().bytes(), b, "{s}");
        }
        for s in [
            "", "12", "1.5 bit", "1 kB", "1 XB", "B", "1 MB/s", "inf B", "1 é", "1 Kié", "1 ÿB",
            "1é",
        ] {
            assert!(DataSize::parse(s).is_err(), "{s}");
        }
        for s in ["12345 B", "128 KiB", "-1 B", "1 bit"] {
            let d = DataSize::parse(s).unwrap();
            assert_eq!(DataSize::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn hostports() {
        for s in [
            ":8888",
            "0.0.0.0:8888",
            "[::]:8888",
            "host.example.com:22",
            "[fe80::1%eth0]:1",
        ] {
            assert!(check_hostport(s).is_ok(), "{s}");
        }
        for s in ["host", "host:", "host:http", "::1:22", "host:99999", ""] {
            assert!(check_hostport(s).is_err(), "{s}");
        }
    }
}

//! The three line formats of zrepl: `human`, `logfmt`, `json`. Pure: a [`Record`] in, one line
//! (without the trailing newline) out.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, SecondsFormat, Timelike};
use zrepl_config::{LogFormat, LogLevel};

use crate::record::{
    level_name, level_short, Record, Value, FIELD_JOB, FIELD_SPAN, FIELD_SUBSYSTEM,
};

/// Which metadata a formatter prints (zrepl's `MetadataFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub time: bool,
    pub level: bool,
    pub color: bool,
}

impl Metadata {
    pub const NONE: Metadata = Metadata {
        time: false,
        level: false,
        color: false,
    };
    /// Time and level, no color.
    pub const PLAIN: Metadata = Metadata {
        time: true,
        level: true,
        color: false,
    };
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    #[error("field is not JSON encodable: {0}")]
    NotJsonEncodable(String),
}

/// A format together with its metadata flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Formatter {
    pub format: LogFormat,
    pub meta: Metadata,
}

impl Formatter {
    pub fn new(format: LogFormat, meta: Metadata) -> Self {
        Formatter { format, meta }
    }

    pub fn format(&self, r: &Record) -> Result<String, FormatError> {
        match self.format {
            LogFormat::Human => Ok(human(r, self.meta)),
            LogFormat::Logfmt => Ok(logfmt(r, self.meta)),
            LogFormat::Json => json(r),
        }
    }
}

/// The fields the human and logfmt formats put in front, in this order.
const PREFIX_FIELDS: [&str; 3] = [FIELD_JOB, FIELD_SUBSYSTEM, FIELD_SPAN];

/// `<RFC3339 time> [LEVL][job][subsystem][span]: message key="value" ...`
pub fn human(r: &Record, meta: Metadata) -> String {
    let mut line = String::new();
    let (on, off) = if meta.color {
        (level_color(r.level), "\x1b[0m")
    } else {
        ("", "")
    };
    if meta.time {
        line.push_str(&rfc3339(&r.time));
        line.push(' ');
    }
    if meta.level {
        let _ = write!(line, "[{on}{}{off}]", level_short(r.level));
    }
    for name in PREFIX_FIELDS {
        if let Some(v) = r.get(name) {
            let _ = write!(line, "[{on}{}{off}]", v.to_text());
        }
    }
    if !line.is_empty() {
        line.push_str(": ");
    }
    line.push_str(&r.message);
    for (k, v) in &r.fields {
        if PREFIX_FIELDS.contains(&k.as_str()) {
            continue;
        }
        line.push(' ');
        line.push_str(k);
        line.push('=');
        go_quote(&mut line, &v.to_text());
    }
    line
}

/// `time=<RFC3339Nano> level=<level> job=.. subsystem=.. span=.. msg=".." k=v ...`
pub fn logfmt(r: &Record, meta: Metadata) -> String {
    let mut line = String::new();
    let mut kv = |key: &str, value: &str, is_string: bool| {
        if !line.is_empty() {
            line.push(' ');
        }
        logfmt_key(&mut line, key);
        line.push('=');
        logfmt_value(&mut line, value, is_string);
    };
    if meta.time {
        kv("time", &rfc3339_nano(&r.time), false);
    }
    if meta.level {
        kv("level", level_name(r.level), false);
    }
    for name in PREFIX_FIELDS {
        if let Some(v) = r.get(name) {
            kv(name, &v.to_text(), matches!(v, Value::Str(_)));
        }
    }
    kv("msg", &r.message, true);
    for (k, v) in &r.fields {
        if PREFIX_FIELDS.contains(&k.as_str()) {
            continue;
        }
        kv(k, &v.to_text(), matches!(v, Value::Str(_)));
    }
    line
}

/// One JSON object: every field plus `msg`, `time` (RFC3339) and `level`, keys sorted (as Go's
/// `encoding/json` sorts map keys).
pub fn json(r: &Record) -> Result<String, FormatError> {
    let mut all: Vec<(&str, serde_json::Value)> = Vec::with_capacity(r.fields.len() + 3);
    for (k, v) in &r.fields {
        let jv = match v {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::I64(i) => (*i).into(),
            Value::U64(u) => (*u).into(),
            Value::Bool(b) => (*b).into(),
            Value::F64(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| FormatError::NotJsonEncodable(k.clone()))?,
        };
        all.push((k, jv));
    }
    all.retain(|(k, _)| !matches!(*k, "msg" | "time" | "level"));
    all.push(("msg", r.message.clone().into()));
    all.push(("time", rfc3339(&r.time).into()));
    all.push(("level", level_name(r.level).into()));
    all.sort_by(|a, b| a.0.cmp(b.0));
    let map: serde_json::Map<String, serde_json::Value> =
        all.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(serde_json::Value::Object(map).to_string())
}

/// Go's `time.RFC3339`: seconds, `Z` for UTC.
pub fn rfc3339(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Go's `time.RFC3339Nano`: nanoseconds with trailing zeros removed (none at all when zero).
pub fn rfc3339_nano(t: &DateTime<FixedOffset>) -> String {
    let secs = rfc3339(t);
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos == 0 {
        return secs;
    }
    let frac = format!("{nanos:09}");
    let frac = frac.trim_end_matches('0');
    // Insert the fraction after the seconds (position 19: "YYYY-MM-DDTHH:MM:SS").
    format!("{}.{}{}", &secs[..19], frac, &secs[19..])
}

fn level_color(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "\x1b[94m",
        LogLevel::Info => "\x1b[92m",
        LogLevel::Warn => "\x1b[93m",
        LogLevel::Error => "\x1b[91m",
    }
}

/// Go's `strconv.Quote`: double quotes, backslash escapes for quotes, backslashes and
/// non-printable characters; printable Unicode stays as it is.
pub fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A logfmt key: anything that would break the `key=value` syntax becomes `_`.
fn logfmt_key(out: &mut String, k: &str) {
    if k.is_empty() {
        out.push('_');
        return;
    }
    for c in k.chars() {
        if c <= ' ' || c == '=' || c == '"' || c == '\u{7f}' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
}

/// A logfmt value as go-logfmt writes it: bare unless it contains a space, `=`, `"` or a control
/// character; the string `null` is quoted so it is not read back as a nil value.
fn logfmt_value(out: &mut String, v: &str, is_string: bool) {
    let needs_quotes =
        v.chars().any(|c| c <= ' ' || c == '=' || c == '"') || (is_string && v == "null");
    if !needs_quotes {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(nanos: u32, offset_secs: i32) -> DateTime<FixedOffset> {
        FixedOffset::east_opt(offset_secs)
            .unwrap()
            .with_ymd_and_hms(2024, 3, 5, 14, 7, 9)
            .unwrap()
            .with_nanosecond(nanos)
            .unwrap()
    }

    fn rec() -> Record {
        Record::new(t(0, 3600), LogLevel::Info, "replicating step")
            .with("fs", "pool/data")
            .with("span", "job$repl")
            .with("job", "prod")
            .with("subsystem", "repl")
            .with("step", "@a => @b")
    }

    #[test]
    fn times() {
        let cases = [
            (t(0, 0), "2024-03-05T14:07:09Z", "2024-03-05T14:07:09Z"),
            (
                t(0, 3600),
                "2024-03-05T14:07:09+01:00",
                "2024-03-05T14:07:09+01:00",
            ),
            (
                t(120_000_000, -7200),
                "2024-03-05T14:07:09-02:00",
                "2024-03-05T14:07:09.12-02:00",
            ),
            (
                t(1, 0),
                "2024-03-05T14:07:09Z",
                "2024-03-05T14:07:09.000000001Z",
            ),
        ];
        for (time, secs, nano) in cases {
            assert_eq!(rfc3339(&time), secs);
            assert_eq!(rfc3339_nano(&time), nano);
        }
    }

    #[test]
    fn go_quote_table() {
        let cases = [
            ("plain", r#""plain""#),
            ("", r#""""#),
            ("a \"b\" c\\d", r#""a \"b\" c\\d""#),
            ("line\nnext\ttab\r", r#""line\nnext\ttab\r""#),
            ("\x01\x7f\x0b", r#""\x01\x7f\v""#),
            ("grüße 💾", "\"grüße 💾\""),
            ("\u{85}\u{a0}", r#""\u0085\u00a0""#),
        ];
        for (input, want) in cases {
            let mut s = String::new();
            go_quote(&mut s, input);
            assert_eq!(s, want, "{input:?}");
        }
    }

    #[test]
    fn logfmt_values_table() {
        let cases = [
            ("simple", true, "simple"),
            ("", true, ""),
            ("null", true, r#""null""#),
            ("null", false, "null"),
            ("a b", true, r#""a b""#),
            ("k=v", true, r#""k=v""#),
            ("say \"hi\"", true, r#""say \"hi\"""#),
            ("back\\slash", true, "back\\slash"),
            ("nl\n", true, r#""nl\n""#),
            ("bell\x07 x", true, r#""bell\u0007 x""#),
            ("ü", true, "ü"),
        ];
        for (input, is_string, want) in cases {
            let mut s = String::new();
            logfmt_value(&mut s, input, is_string);
            assert_eq!(s, want, "{input:?}");
        }
    }

    #[test]
    fn human_table() {
        let r = rec();
        let cases = [
            (
                Metadata::PLAIN,
                r#"2024-03-05T14:07:09+01:00 [INFO][prod][repl][job$repl]: replicating step fs="pool/data" step="@a => @b""#,
            ),
            (
                Metadata::NONE,
                r#"[prod][repl][job$repl]: replicating step fs="pool/data" step="@a => @b""#,
            ),
            (
                Metadata {
                    time: false,
                    level: true,
                    color: true,
                },
                "[\x1b[92mINFO\x1b[0m][\x1b[92mprod\x1b[0m][\x1b[92mrepl\x1b[0m][\x1b[92mjob$repl\x1b[0m]: replicating step fs=\"pool/data\" step=\"@a => @b\"",
            ),
        ];
        for (meta, want) in cases {
            assert_eq!(human(&r, meta), want);
        }
        // Nothing in front: no ": ".
        let bare = Record::new(t(0, 0), LogLevel::Warn, "hello").with("n", Value::I64(-3));
        assert_eq!(human(&bare, Metadata::NONE), r#"hello n="-3""#);
        assert_eq!(
            human(&bare, Metadata::PLAIN),
            r#"2024-03-05T14:07:09Z [WARN]: hello n="-3""#
        );
    }

    #[test]
    fn logfmt_table() {
        let cases = [
            (
                rec(),
                Metadata::PLAIN,
                r#"time=2024-03-05T14:07:09+01:00 level=info job=prod subsystem=repl span=job$repl msg="replicating step" fs=pool/data step="@a => @b""#,
            ),
            (
                rec(),
                Metadata::NONE,
                r#"job=prod subsystem=repl span=job$repl msg="replicating step" fs=pool/data step="@a => @b""#,
            ),
            (
                Record::new(t(5_000, 0), LogLevel::Error, "x")
                    .with("ok", Value::Bool(true))
                    .with("n", Value::U64(7))
                    .with("f", Value::F64(0.5)),
                Metadata::PLAIN,
                "time=2024-03-05T14:07:09.000005Z level=error msg=x ok=true n=7 f=0.5",
            ),
        ];
        for (r, meta, want) in cases {
            assert_eq!(logfmt(&r, meta), want);
        }
    }

    #[test]
    fn json_table() {
        let cases = [
            (
                rec(),
                Ok(r#"{"fs":"pool/data","job":"prod","level":"info","msg":"replicating step","span":"job$repl","step":"@a => @b","subsystem":"repl","time":"2024-03-05T14:07:09+01:00"}"#.to_string()),
            ),
            (
                Record::new(t(0, 0), LogLevel::Debug, "n")
                    .with("i", Value::I64(-1))
                    .with("b", Value::Bool(false))
                    .with("msg", "shadowed"),
                Ok(r#"{"b":false,"i":-1,"level":"debug","msg":"n","time":"2024-03-05T14:07:09Z"}"#.to_string()),
            ),
            (
                Record::new(t(0, 0), LogLevel::Debug, "n").with("bad", Value::F64(f64::NAN)),
                Err(FormatError::NotJsonEncodable("bad".into())),
            ),
        ];
        for (r, want) in cases {
            assert_eq!(json(&r), want);
        }
    }
}

//! One log entry as the formatters see it: time, level, message and ordered fields.

use chrono::{DateTime, FixedOffset};
use zrepl_config::LogLevel;

/// A field value. Everything that is not a number or a bool is text (`Display`/`Debug` output,
/// errors with their chain of causes).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Value {
    /// The value as Go's `fmt.Sprint` would print it (used by the human format).
    pub fn to_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::I64(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::F64(v) => go_float(*v),
            Value::Bool(v) => v.to_string(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

/// Go's `%v` of a float64: shortest representation, `+Inf`, `-Inf`, `NaN`.
fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// Standard field names (zrepl's `logging` package).
pub const FIELD_JOB: &str = "job";
pub const FIELD_SUBSYSTEM: &str = "subsystem";
pub const FIELD_SPAN: &str = "span";
pub const FIELD_ERR: &str = "err";

/// A log entry. Field order is the order of insertion (enclosing spans outermost first, then the
/// event); a later field with the same name replaces the earlier one in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: DateTime<FixedOffset>,
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, Value)>,
}

impl Record {
    pub fn new(time: DateTime<FixedOffset>, level: LogLevel, message: impl Into<String>) -> Self {
        Record {
            time,
            level,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.set(key, value.into());
        self
    }

    /// Sets a field, replacing an existing one of the same name.
    pub fn set(&mut self, key: &str, value: Value) {
        set_field(&mut self.fields, key, value)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

pub(crate) fn set_field(fields: &mut Vec<(String, Value)>, key: &str, value: Value) {
    match fields.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => fields.push((key.to_string(), value)),
    }
}

/// zrepl's four-letter level names (human format).
pub fn level_short(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "DEBG",
        LogLevel::Info => "INFO",
        LogLevel::Warn => "WARN",
        LogLevel::Error => "ERRO",
    }
}

/// zrepl's level names (logfmt, json).
pub fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

//! Printing a resolved config back as YAML or JSON (`zrepl configcheck --format`).

use serde::Serialize;
use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::YamlEmitter;

/// Serializes any config value to JSON in config-file syntax.
pub fn to_json_value<T: Serialize>(v: &T) -> serde_json::Value {
    // Serialization of our model cannot fail: every field is a string, number, bool, list or map.
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Renders a JSON value as a YAML document.
pub fn to_yaml_string(v: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut em = YamlEmitter::new(&mut out);
    // Emitting into a String only fails on formatter errors, which String never produces.
    let _ = em.dump(&json_to_yaml(v));
    out.push('\n');
    out
}

fn json_to_yaml(v: &serde_json::Value) -> Yaml {
    match v {
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Bool(b) => Yaml::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        serde_json::Value::String(s) => Yaml::String(s.clone()),
        serde_json::Value::Array(a) => Yaml::Array(a.iter().map(json_to_yaml).collect()),
        serde_json::Value::Object(o) => {
            let mut h = Hash::new();
            for (k, v) in o {
                h.insert(Yaml::String(k.clone()), json_to_yaml(v));
            }
            Yaml::Hash(h)
        }
    }
}

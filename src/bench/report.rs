//! A bench's result as one flat JSON object on one line: what scripts read.
//!
//! Keys keep the order they were added in; numbers are integers or decimals with three places;
//! a figure that could not be measured (no `--server-pid`, nothing delivered) is `null`.

use std::fmt::Write;

/// One value of a report.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An integer.
    Int(u64),
    /// A decimal; written with three places, `null` if not finite.
    Float(f64),
    /// A string.
    Str(String),
    /// Not measured.
    Null,
}

/// An ordered list of named figures.
#[derive(Clone, Debug, Default)]
pub struct Report {
    fields: Vec<(&'static str, Value)>,
}

impl Report {
    /// A report whose first field is `"bench": name`.
    pub fn new(name: &str) -> Report {
        let mut r = Report::default();
        r.set("bench", Value::Str(name.to_owned()));
        r
    }

    /// Sets a field (replacing an earlier value of the same key, keeping its place).
    pub fn set(&mut self, key: &'static str, value: Value) -> &mut Report {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    /// Sets an integer field.
    pub fn int(&mut self, key: &'static str, v: u64) -> &mut Report {
        self.set(key, Value::Int(v))
    }

    /// Sets a decimal field.
    pub fn float(&mut self, key: &'static str, v: f64) -> &mut Report {
        self.set(key, Value::Float(v))
    }

    /// Sets a string field.
    pub fn str(&mut self, key: &'static str, v: impl Into<String>) -> &mut Report {
        self.set(key, Value::Str(v.into()))
    }

    /// Sets a field that may not have been measured.
    pub fn opt_float(&mut self, key: &'static str, v: Option<f64>) -> &mut Report {
        self.set(key, v.map_or(Value::Null, Value::Float))
    }

    /// Sets an integer field that may not have been measured.
    pub fn opt_int(&mut self, key: &'static str, v: Option<u64>) -> &mut Report {
        self.set(key, v.map_or(Value::Null, Value::Int))
    }

    /// The value of a field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A numeric field as `f64`; NaN when absent, null or a string.
    pub fn number(&self, key: &str) -> f64 {
        match self.get(key) {
            Some(Value::Int(n)) => *n as f64,
            Some(Value::Float(x)) => *x,
            _ => f64::NAN,
        }
    }

    /// The report as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(&mut out, key);
            out.push(':');
            match value {
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Float(x) if x.is_finite() => {
                    let _ = write!(out, "{x:.3}");
                }
                Value::Float(_) | Value::Null => out.push_str("null"),
                Value::Str(s) => write_str(&mut out, s),
            }
        }
        out.push('}');
        out
    }
}

/// A JSON string literal.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_flat_json_line_in_order() {
        let mut r = Report::new("fanout");
        r.int("lost", 0)
            .float("p99_us", 12.3456)
            .opt_float("server_cpu_s", None)
            .float("nan", f64::NAN)
            .str("note", "a \"quoted\"\nline");
        r.int("lost", 3);
        assert_eq!(
            r.to_json(),
            r#"{"bench":"fanout","lost":3,"p99_us":12.346,"server_cpu_s":null,"nan":null,"note":"a \"quoted\"\u000aline"}"#
        );
        assert_eq!(r.get("lost"), Some(&Value::Int(3)));
    }
}

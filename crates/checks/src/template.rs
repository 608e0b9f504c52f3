//! `{{ name }}` templates over variables, secrets and captured values.
//!
//! A placeholder names a value of the run's [`Scope`]: a variable of the flow
//! file, a secret, or a value captured by an earlier step. In a JSON body, a
//! string that is exactly one placeholder becomes the value itself, so a
//! captured number stays a number; anywhere else values are spliced in as
//! text. Three built-ins start with `$`: `{{ $uuid }}`, `{{ $now }}`
//! (RFC 3339, UTC) and `{{ $timestamp }}` (Unix seconds).
use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown name `{0}` in a {{{{ }}}} placeholder (define it under [vars] or [secrets], or capture it in an earlier step)"
    )]
    Unknown(String),
    #[error("unclosed `{{{{` in {0:?}")]
    Unclosed(String),
    #[error("bad placeholder name {0:?} (letters, digits, `_`, `-` and `.` only)")]
    BadName(String),
}

/// The built-in names: every other name starting with `$` is unknown.
pub const BUILT_INS: [&str; 3] = ["$uuid", "$now", "$timestamp"];

/// The names a run can template with, and their values.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    values: BTreeMap<String, Value>,
}

impl Scope {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn lookup(&self, name: &str) -> Result<Value, TemplateError> {
        match name {
            "$uuid" => Ok(Value::String(uuid::Uuid::new_v4().to_string())),
            "$now" => Ok(Value::String(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )),
            "$timestamp" => Ok(Value::from(chrono::Utc::now().timestamp())),
            _ => self
                .values
                .get(name)
                .cloned()
                .ok_or_else(|| TemplateError::Unknown(name.to_string())),
        }
    }

    /// Renders a text template.
    pub fn render(&self, template: &str) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(template.len());
        for piece in pieces(template)? {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Name(n) => out.push_str(&as_text(&self.lookup(n)?)),
            }
        }
        Ok(out)
    }

    /// Renders every string inside a JSON value; a string that is exactly
    /// one placeholder takes the value's own JSON type.
    pub fn render_json(&self, value: &Value) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::String(s) => {
                let parts = pieces(s)?;
                match parts.as_slice() {
                    [Piece::Name(n)] => self.lookup(n)?,
                    _ => Value::String(self.render(s)?),
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_json(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((self.render(k)?, self.render_json(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// A value as it is spliced into text: strings bare, the rest as JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The names a template refers to (the [`BUILT_INS`] excluded), for
/// validating a flow before it runs.
pub fn names(template: &str) -> Result<Vec<&str>, TemplateError> {
    Ok(pieces(template)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Name(n) if !BUILT_INS.contains(&n) => Some(n),
            _ => None,
        })
        .collect())
}

/// Every name used in the strings (and keys) of a JSON value.
pub fn names_in_json(value: &Value) -> Result<Vec<&str>, TemplateError> {
    let mut out = Vec::new();
    collect_json_names(value, &mut out)?;
    Ok(out)
}

fn collect_json_names<'a>(value: &'a Value, out: &mut Vec<&'a str>) -> Result<(), TemplateError> {
    match value {
        Value::String(s) => out.extend(names(s)?),
        Value::Array(items) => {
            for v in items {
                collect_json_names(v, out)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                out.extend(names(k)?);
                collect_json_names(v, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| TemplateError::Unclosed(template.to_string()))?;
        let name = after[..close].trim();
        let valid = !name.is_empty()
            && name
                .trim_start_matches('$')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(TemplateError::BadName(name.to_string()));
        }
        out.push(Piece::Name(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::new();
        s.set("base", json!("http://127.0.0.1:9"));
        s.set("n", json!(42));
        s.set("obj", json!({"a": 1}));
        s
    }

    #[test]
    fn text_templates_splice_values() {
        let s = scope();
        assert_eq!(
            s.render("{{ base }}/x?n={{n}}").unwrap(),
            "http://127.0.0.1:9/x?n=42"
        );
        assert_eq!(s.render("no placeholders").unwrap(), "no placeholders");
        assert_eq!(s.render("{{obj}}").unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn a_lone_placeholder_in_json_keeps_its_type() {
        let s = scope();
        let body = json!({"count": "{{ n }}", "label": "n is {{ n }}", "list": ["{{obj}}"]});
        assert_eq!(
            s.render_json(&body).unwrap(),
            json!({"count": 42, "label": "n is 42", "list": [{"a": 1}]})
        );
    }

    #[test]
    fn unknown_and_malformed_placeholders_are_errors() {
        let s = scope();
        assert_eq!(
            s.render("{{ nope }}"),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert!(matches!(
            s.render("{{ base "),
            Err(TemplateError::Unclosed(_))
        ));
        assert!(matches!(
            s.render("{{ a b }}"),
            Err(TemplateError::BadName(_))
        ));
        assert!(matches!(s.render("{{}}"), Err(TemplateError::BadName(_))));
    }

    #[test]
    fn builtins_render_and_are_not_listed_as_names() {
        let s = Scope::new();
        assert_eq!(s.render("{{ $uuid }}").unwrap().len(), 36);
        assert!(s.render("{{$timestamp}}").unwrap().parse::<i64>().unwrap() > 1_700_000_000);
        assert_eq!(
            names("{{ $uuid }} {{ a }}{{b.c}}").unwrap(),
            vec!["a", "b.c"]
        );
        // Only the three built-ins: a mistyped one is a name the flow must
        // define (found by the `template` fuzz target: `{{ $ }}` passed
        // validation, then failed every run).
        assert_eq!(
            names("{{ $now }}{{ $ }}{{ $uuuid }}").unwrap(),
            vec!["$", "$uuuid"]
        );
        assert!(Scope::new().render("{{ $uuuid }}").is_err());
        assert_eq!(
            names_in_json(&json!({"{{k}}": ["{{v}}"]})).unwrap(),
            vec!["k", "v"]
        );
    }
}

//! Keeps secret values out of every output of a run: the printed table, the
//! reports, the stored results, the logs and the alerts.
//!
//! The redactor knows each secret's value (the flow's secrets, and values
//! captured with `redact = true`, such as consent tokens) and replaces every
//! occurrence, also in its URL-encoded and JSON-escaped forms, with `***`.
//! Headers that carry credentials by nature are masked whatever their value.

/// What replaces a secret value.
pub const MASK: &str = "***";

/// Header names whose values are credentials whatever they hold.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first so a secret that contains
    /// another is masked whole.
    needles: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secret value. Empty values are ignored (they would match everywhere).
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let forms = [
            secret.to_string(),
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
            serde_json::to_string(secret)
                .map(|s| s[1..s.len() - 1].to_string())
                .unwrap_or_default(),
        ];
        for form in forms {
            if !form.is_empty() && !self.needles.contains(&form) {
                self.needles.push(form);
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every secret masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }

    /// A header value as it may be shown.
    pub fn header(&self, name: &str, value: &str) -> String {
        if SENSITIVE_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
        {
            // Keep the scheme ("Token", "Bearer") so a reader sees which was sent.
            match value.split_once(' ') {
                Some((scheme, _)) if !scheme.is_empty() && scheme.len() < 16 => {
                    format!("{scheme} {MASK}")
                }
                _ => MASK.to_string(),
            }
        } else {
            self.text(value)
        }
    }

    /// Every string (and key) inside a JSON value, masked.
    pub fn json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.needles.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.json(v)))
                    .collect(),
            ),
            Value::Number(n) => {
                let text = n.to_string();
                if self.needles.contains(&text) {
                    Value::String(MASK.into())
                } else {
                    value.clone()
                }
            }
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_form_of_a_secret() {
        let mut r = Redactor::new();
        r.add("s3cr\"et+/x");
        assert_eq!(r.text("a s3cr\"et+/x b"), "a *** b");
        assert_eq!(r.text("q=s3cr%22et%2B%2Fx"), "q=***");
        assert_eq!(r.text(r#"{"p":"s3cr\"et+/x"}"#), r#"{"p":"***"}"#);
    }

    #[test]
    fn longer_secrets_are_masked_whole() {
        let mut r = Redactor::new();
        r.add("abc");
        r.add("abcdef");
        assert_eq!(r.text("xabcdefx abc"), "x***x ***");
    }

    #[test]
    fn credential_headers_are_masked_whatever_their_value() {
        let r = Redactor::new();
        assert_eq!(r.header("Authorization", "Token undefined"), "Token ***");
        assert_eq!(r.header("cookie", "sid=1"), "***");
        assert_eq!(
            r.header("Content-Type", "application/json"),
            "application/json"
        );
    }

    #[test]
    fn json_values_are_masked_inside() {
        let mut r = Redactor::new();
        r.add("123456");
        r.add("tok");
        let v = serde_json::json!({"pin": 123456, "a": ["tok-1"], "tok": 1});
        assert_eq!(
            r.json(&v),
            serde_json::json!({"pin": "***", "a": ["***-1"], "***": 1})
        );
        assert!(!format!("{r:?}").contains("tok"));
    }
}

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

/// Whether a field named `key` holds a credential by its name: `*token*`,
/// `*secret*`, `*password*`/`*passwd*`, `pin`, `*authorization*`,
/// `consent*`, `*api_key*`/`*apikey*`. Such values are masked in what a run
/// keeps even when the flow does not know them as secrets (a token the bank
/// minted, a consent id).
pub fn is_credential_field(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|p| k.contains(p))
        || k == "pin"
        || k.starts_with("consent")
}

/// `text` (a JSON document, a form or a query string) with the values of
/// credential fields ([`is_credential_field`]) masked; other text as it is.
pub fn mask_credential_fields(text: &str) -> String {
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text)
    {
        if mask_json_fields(&mut v) {
            return serde_json::to_string(&v).unwrap_or_else(|_| text.to_owned());
        }
        return text.to_owned();
    }
    if text.contains('=') && !text.contains(char::is_whitespace) {
        return mask_pairs(text);
    }
    text.to_owned()
}

/// Masks credential fields inside `v`; true when something was masked.
fn mask_json_fields(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut changed = false;
            for (k, value) in map.iter_mut() {
                if is_credential_field(k)
                    && !value.is_null()
                    && !value.is_object()
                    && !value.is_array()
                {
                    *value = Value::String(MASK.into());
                    changed = true;
                } else {
                    changed |= mask_json_fields(value);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, i| mask_json_fields(i) | c),
        _ => false,
    }
}

/// `a=1&token=x` → `a=1&token=***`: each pair kept as written unless its
/// (decoded) key is a credential field.
fn mask_pairs(text: &str) -> String {
    text.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !v.is_empty() => {
                let key: String = url::form_urlencoded::parse(k.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default();
                if is_credential_field(&key) {
                    format!("{k}={MASK}")
                } else {
                    pair.to_owned()
                }
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL with the values of credential query parameters masked.
pub fn mask_url_query(url: &str) -> String {
    match url.split_once('?') {
        Some((head, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let mut out = format!("{head}?{}", mask_pairs(query));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(&mask_pairs(f));
            }
            out
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_fields_are_masked_in_json_forms_and_queries() {
        let body = r#"{"consent_token":"abc","data":{"accessToken":"t1","name":"x","n":[{"client_secret":7}]},"Password":null,"consentId":"c-9"}"#;
        let masked: serde_json::Value =
            serde_json::from_str(&mask_credential_fields(body)).unwrap();
        assert_eq!(
            masked,
            serde_json::json!({"consent_token":"***","data":{"accessToken":"***","name":"x","n":[{"client_secret":"***"}]},"Password":null,"consentId":"***"})
        );
        assert_eq!(
            mask_credential_fields("user=jo&password=s%20x&pin=1234&x=1"),
            "user=jo&password=***&pin=***&x=1"
        );
        assert_eq!(
            mask_url_query("https://b.example/a?access_token=z&page=2#id_token=q&s=1"),
            "https://b.example/a?access_token=***&page=2#id_token=***&s=1"
        );
        // Text that is neither is left alone; so is JSON without such fields.
        assert_eq!(
            mask_credential_fields("hello token=1 world"),
            "hello token=1 world"
        );
        assert_eq!(mask_credential_fields(r#"{"a": 1}"#), r#"{"a": 1}"#);
        assert!(!is_credential_field("tokenizer_version") || is_credential_field("token"));
    }

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

//! Keeps secret values out of every output of a run: the printed table, the
//! reports, the stored results, the logs and the alerts.
//!
//! The redactor knows each secret's value (the flow's secrets, and values
//! captured with `redact = true`, such as consent tokens) and replaces every
//! occurrence, also in its URL-encoded and JSON-escaped forms, with `***`.
//! A secret shorter than [`SHORT_SECRET`] characters is masked only where
//! it stands as a whole word ([`mask_secret`]): masking "ab" inside "table"
//! would garble the text and tell a reader where the secret appears.
//! Headers that carry credentials by nature are masked whatever their value.

/// What replaces a secret value.
pub const MASK: &str = "***";

/// Secrets with fewer characters than this are masked only as whole words.
pub const SHORT_SECRET: usize = 4;

/// `text` with `secret` replaced by `mask`. A secret of [`SHORT_SECRET`] or
/// more characters is replaced wherever it appears; a shorter one only where
/// it is a whole token: the characters on both sides (if any) are not
/// letters or digits. An empty secret changes nothing.
pub fn mask_secret(text: &str, secret: &str, mask: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_owned();
    }
    if secret.chars().count() >= SHORT_SECRET {
        return text.replace(secret, mask);
    }
    mask_whole_tokens(text, secret, mask)
}

/// Replaces the occurrences of `needle` not touching a letter or digit.
fn mask_whole_tokens(text: &str, needle: &str, mask: &str) -> String {
    let free = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    while let Some(found) = text[done..].find(needle) {
        let start = done + found;
        let end = start + needle.len();
        out.push_str(&text[done..start]);
        if free(text[..start].chars().next_back()) && free(text[end..].chars().next()) {
            out.push_str(mask);
        } else {
            out.push_str(needle);
        }
        done = end;
    }
    out.push_str(&text[done..]);
    out
}

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
    /// another is masked whole; with whether its secret is short (masked
    /// only as a whole word, whatever the length of this form).
    needles: Vec<(String, bool)>,
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
        let short = secret.chars().count() < SHORT_SECRET;
        for form in forms {
            if form.is_empty() {
                continue;
            }
            match self.needles.iter_mut().find(|(n, _)| *n == form) {
                // A long secret with the same form as a short one wins.
                Some((_, was_short)) => *was_short &= short,
                None => self.needles.push((form, short)),
            }
        }
        self.needles
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The text with every secret masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (needle, short) in &self.needles {
            if !out.contains(needle.as_str()) {
                continue;
            }
            out = if *short {
                mask_whole_tokens(&out, needle, MASK)
            } else {
                out.replace(needle.as_str(), MASK)
            };
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
                if self.needles.iter().any(|(n, _)| *n == text) {
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
    fn short_secrets_are_masked_only_as_whole_words() {
        let mut r = Redactor::new();
        r.add("ab");
        // Inside a word: left alone, at either end or in the middle.
        assert_eq!(r.text("table abc cab xaby"), "table abc cab xaby");
        // Standing alone, or between non-alphanumerics: masked.
        assert_eq!(r.text("ab"), "***");
        assert_eq!(
            r.text("pin=ab&x=1 (ab) \"ab\" ab-ab"),
            "pin=***&x=1 (***) \"***\" ***-***"
        );
        // Letters of any script count as part of a word.
        assert_eq!(r.text("éab abé"), "éab abé");
        // In JSON: the key and the values only when whole.
        let v = serde_json::json!({"ab": "ab", "table": ["cab", "ab"], "n": 1});
        assert_eq!(
            r.json(&v),
            serde_json::json!({"***": "***", "table": ["cab", "***"], "n": 1})
        );
        // A short number is masked as a whole JSON number, not inside others.
        let mut r = Redactor::new();
        r.add("42");
        assert_eq!(
            r.json(&serde_json::json!({"a": 42, "b": 1421, "c": "id 42", "d": "x421"})),
            serde_json::json!({"a": "***", "b": 1421, "c": "id ***", "d": "x421"})
        );
    }

    #[test]
    fn four_characters_and_more_are_masked_anywhere() {
        let mut r = Redactor::new();
        r.add("abcd");
        assert_eq!(r.text("xabcdx abcd"), "x***x ***");
        assert_eq!(mask_secret("xabcdx", "abcd", "#"), "x#x");
        assert_eq!(mask_secret("table", "abl", "#"), "table");
        assert_eq!(mask_secret("t abl e", "abl", "#"), "t # e");
        assert_eq!(mask_secret("tabl", "", "#"), "tabl");
        // Counted in characters, not bytes: "äö" is short although 4 bytes.
        assert_eq!(mask_secret("xäöx äö", "äö", "#"), "xäöx #");
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

//! Request bodies: JSON read leniently where JSON itself is loose.
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Integral floats as integers, everywhere in `v`: JSON does not tell `9`
/// from `9.0` (JSON Schema's `integer` takes both, and some JSON libraries
/// write every number as a float), but serde's integer types refuse the
/// second form.
pub(crate) fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) {
                if f >= 0.0 && f <= u64::MAX as f64 {
                    *v = Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// A field that may be absent (`None`: no change), `null` (`Some(None)`:
/// clear it) or a value (`Some(Some(v))`). Needs `#[serde(default)]`.
pub(crate) fn patch<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        n: Option<u8>,
        #[serde(default, deserialize_with = "patch")]
        m: Option<Option<u64>>,
    }

    fn parse(s: &str) -> Result<Body, serde_json::Error> {
        let mut v: Value = serde_json::from_str(s).unwrap();
        whole_numbers(&mut v);
        serde_json::from_value(v)
    }

    #[test]
    fn whole_numbers_in_either_form() {
        assert_eq!(parse(r#"{"n": 9}"#).unwrap().n, Some(9));
        assert_eq!(parse(r#"{"n": 9.0}"#).unwrap().n, Some(9));
        assert!(parse(r#"{"n": 9.5}"#).is_err());
        assert!(parse(r#"{"n": 962.0}"#).is_err());
        assert!(parse(r#"{"n": -1.0}"#).is_err());
        assert_eq!(parse(r#"{"n": null}"#).unwrap(), Body { n: None, m: None });
        assert_eq!(parse(r#"{"n": 1, "m": null}"#).unwrap().m, Some(None));
        assert_eq!(parse(r#"{"n": 1, "m": 60.0}"#).unwrap().m, Some(Some(60)));
    }
}

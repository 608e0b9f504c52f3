//! Rule-based categories: a TOML file of rules, first match wins.
//!
//! ```toml
//! [[rule]]
//! category = "groceries"
//! label = "(?i)carrefour|lidl"      # regex on the cleaned or the raw label
//! max_amount = "0"                  # debits only
//!
//! [[rule]]
//! category = "salary"
//! counterparty = "(?i)acme corp"    # regex on the counterparty name or IBAN
//! min_amount = "1000"
//! ```
//!
//! A rule matches when every condition it states holds; a rule with no
//! condition is refused (it would swallow everything after it). The raw
//! label is never changed: the category is a field of its own.
use std::str::FromStr;

use regex::Regex;
use rust_decimal::Decimal;
use serde::Deserialize;

/// What a rule looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub label: &'a str,
    pub raw_label: &'a str,
    pub counterparty_name: Option<&'a str>,
    pub counterparty_iban: Option<&'a str>,
    pub amount: Decimal,
}

impl<'a> From<&'a crate::Transaction> for Subject<'a> {
    fn from(tx: &'a crate::Transaction) -> Self {
        Subject {
            label: &tx.label,
            raw_label: &tx.raw_label,
            counterparty_name: tx.counterparty_name.as_deref(),
            counterparty_iban: tx.counterparty_iban.as_deref(),
            amount: tx.amount,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: rule {rule} ({category:?}): {field}: {message}")]
    Rule {
        source_name: String,
        rule: usize,
        category: String,
        field: &'static str,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    category: String,
    label: Option<String>,
    counterparty: Option<String>,
    min_amount: Option<String>,
    max_amount: Option<String>,
}

#[derive(Debug)]
struct Rule {
    category: String,
    label: Option<Regex>,
    counterparty: Option<Regex>,
    min_amount: Option<Decimal>,
    max_amount: Option<Decimal>,
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> bool {
        let label_ok = self
            .label
            .as_ref()
            .is_none_or(|re| re.is_match(s.label) || re.is_match(s.raw_label));
        let counterparty_ok = self.counterparty.as_ref().is_none_or(|re| {
            s.counterparty_name.is_some_and(|n| re.is_match(n))
                || s.counterparty_iban.is_some_and(|i| re.is_match(i))
        });
        label_ok
            && counterparty_ok
            && self.min_amount.is_none_or(|m| s.amount >= m)
            && self.max_amount.is_none_or(|m| s.amount <= m)
    }
}

/// A parsed rules file.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parse rules; `source_name` (a file path) names the file in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Rules, RulesError> {
        let file: File = toml::from_str(text).map_err(|e| RulesError::Syntax {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, raw) in file.rule.into_iter().enumerate() {
            let fail = |field: &'static str, message: String| RulesError::Rule {
                source_name: source_name.to_owned(),
                rule: i + 1,
                category: raw.category.clone(),
                field,
                message,
            };
            if raw.category.trim().is_empty() {
                return Err(fail("category", "must not be empty".into()));
            }
            let regex = |field: &'static str, p: &Option<String>| {
                p.as_deref()
                    .map(Regex::new)
                    .transpose()
                    .map_err(|e| fail(field, e.to_string()))
            };
            let amount = |field: &'static str, a: &Option<String>| {
                a.as_deref()
                    .map(|t| {
                        Decimal::from_str(t.trim()).map_err(|e| {
                            fail(field, format!("{t:?} is not a decimal amount ({e})"))
                        })
                    })
                    .transpose()
            };
            let rule = Rule {
                label: regex("label", &raw.label)?,
                counterparty: regex("counterparty", &raw.counterparty)?,
                min_amount: amount("min_amount", &raw.min_amount)?,
                max_amount: amount("max_amount", &raw.max_amount)?,
                category: raw.category.trim().to_owned(),
            };
            if rule.label.is_none()
                && rule.counterparty.is_none()
                && rule.min_amount.is_none()
                && rule.max_amount.is_none()
            {
                return Err(fail(
                    "category",
                    "the rule has no condition (label, counterparty, min_amount or max_amount)"
                        .into(),
                ));
            }
            if let (Some(lo), Some(hi)) = (rule.min_amount, rule.max_amount)
                && lo > hi
            {
                return Err(fail("min_amount", format!("{lo} is above max_amount {hi}")));
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    /// The category of the first rule that matches.
    pub fn categorize(&self, subject: &Subject<'_>) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.matches(subject))
            .map(|r| r.category.as_str())
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(label: &str, amount: &str) -> Subject<'static> {
        Subject {
            label: Box::leak(label.to_owned().into_boxed_str()),
            raw_label: Box::leak(label.to_owned().into_boxed_str()),
            counterparty_name: None,
            counterparty_iban: None,
            amount: Decimal::from_str(amount).unwrap(),
        }
    }

    const RULES: &str = r#"
        [[rule]]
        category = "groceries"
        label = "(?i)carrefour|lidl"
        max_amount = "0"

        [[rule]]
        category = "refunds"
        label = "(?i)carrefour"

        [[rule]]
        category = "big"
        min_amount = "1000"
    "#;

    #[test]
    fn first_match_wins() {
        let rules = Rules::parse(RULES, "rules.toml").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules.categorize(&subject("CB CARREFOUR 12/08", "-23.10")),
            Some("groceries")
        );
        assert_eq!(
            rules.categorize(&subject("CB CARREFOUR 12/08", "23.10")),
            Some("refunds")
        );
        assert_eq!(rules.categorize(&subject("SALARY", "2500")), Some("big"));
        assert_eq!(rules.categorize(&subject("COFFEE", "-2")), None);
    }

    #[test]
    fn counterparty_matches_name_or_iban() {
        let rules = Rules::parse(
            "[[rule]]\ncategory = \"rent\"\ncounterparty = \"FR76\"\n",
            "r.toml",
        )
        .unwrap();
        let mut s = subject("VIR SEPA", "-800");
        assert_eq!(rules.categorize(&s), None);
        s.counterparty_iban = Some("FR7630006000011234567890189");
        assert_eq!(rules.categorize(&s), Some("rent"));
    }

    #[test]
    fn errors_name_the_file_rule_and_field() {
        let err = Rules::parse(
            "[[rule]]\ncategory = \"a\"\nlabel = \"(unclosed\"\n",
            "rules.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("rules.toml") && err.contains("rule 1") && err.contains("label"),
            "{err}"
        );
        let err = Rules::parse("[[rule]]\ncategory = \"a\"\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no condition"), "{err}");
        let err = Rules::parse(
            "[[rule]]\ncategory = \"a\"\nmin_amount = \"10\"\nmax_amount = \"5\"\n",
            "r.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("min_amount"), "{err}");
        let err = Rules::parse("[[rule]]\ncategory = \"a\"\nlabel = 3\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.toml:"), "{err}");
        let err = Rules::parse("[[rule]]\ncategory = \"a\"\nlable = \"x\"\n", "r.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lable"), "{err}");
    }
}

//! Bank API connectors: one module per bank API (`fibank`: Fibank's web API;
//! `keypad`: the French keypad bank's web API; `xs2a`: the Berlin Group
//! NextGenPSD2 open-banking API; `gocardless`, `enablebanking` and `klarna`: the
//! GoCardless Bank Account Data, Enable Banking and Klarna open-banking aggregators), each implementing
//! [`bankbridge_core::Connector`]. Connectors speak HTTP to the bank and map
//! its answers to the domain types; they never write to the store and never
//! retry (the sync engine does, from the errors' kinds).
#![forbid(unsafe_code)]

use bankbridge_core::{ConnectionSettings, Connector, ConnectorForm, Credentials};

mod aggregator;
mod budget;
mod common;
pub mod enablebanking;
pub mod fibank;
pub mod gocardless;
pub mod keypad;
pub mod klarna;
pub mod xs2a;

pub use enablebanking::EnableBankingConnector;
pub use fibank::FibankConnector;
pub use gocardless::GoCardlessConnector;
pub use keypad::KeypadConnector;
pub use klarna::KlarnaConnector;
pub use xs2a::Xs2aConnector;

/// Names accepted by [`build`].
pub const KNOWN: &[&str] = &[
    "fibank",
    "keypad",
    "xs2a",
    "gocardless",
    "enablebanking",
    "klarna",
];

/// The add-a-connection form of each connector in [`KNOWN`].
pub const FORMS: &[ConnectorForm] = &[
    ConnectorForm {
        connector: "fibank",
        title: "Fibank (First Investment Bank) web banking",
        base_url_example: "https://my.fibank.bg",
        username_label: "Web banking user name",
        password_label: "Web banking password",
        password_numeric: false,
        password_multiline: false,
        hint: "The user name and password you sign in to my.fibank.bg with.",
        options_hint: "",
    },
    ConnectorForm {
        connector: "keypad",
        title: "Keypad bank web banking (France)",
        base_url_example: "https://www.bank.example/",
        username_label: "Customer number",
        password_label: "PIN (the digits you type on the bank's keypad)",
        password_numeric: true,
        password_multiline: false,
        hint: "The customer number and 6-digit PIN of the bank's web site; the bank may ask you to approve new devices in its app.",
        options_hint: "",
    },
    ConnectorForm {
        connector: "xs2a",
        title: "Open banking (Berlin Group NextGenPSD2)",
        base_url_example: "https://api.bank.example/psd2",
        username_label: "PSU-ID (your online-banking user id)",
        password_label: "Online-banking password (banks with embedded SCA)",
        password_numeric: false,
        password_multiline: false,
        hint: "The bank's NextGenPSD2 address; you give the bank your consent on the first sync.",
        options_hint: "One per line: bank=sandbox-be (or sandbox-se, sandbox-redirect), sca_approach=embedded|decoupled|redirect, psu_id=true|false, timezone=Europe/Brussels, frequency_per_day=4, consent_days=90, history_days=730.",
    },
    ConnectorForm {
        connector: "gocardless",
        title: "GoCardless Bank Account Data (thousands of European banks)",
        base_url_example: "https://bankaccountdata.gocardless.com/api/v2",
        username_label: "Secret ID (of your GoCardless user secret)",
        password_label: "Secret key",
        password_numeric: false,
        password_multiline: false,
        hint: "A user secret from the GoCardless Bank Account Data portal; you link your bank on its page at the first sync.",
        options_hint: "One per line: institution_id=SANDBOXFINANCE_SFIN0000 (needed: the bank at GoCardless), history_days=730, access_days=180, daily_limit=4, redirect_uri.",
    },
    ConnectorForm {
        connector: "enablebanking",
        title: "Enable Banking (European banks through one API)",
        base_url_example: "https://api.enablebanking.com",
        username_label: "Application id (the key id of your Enable Banking application)",
        password_label: "The application's private key (PEM)",
        password_numeric: false,
        password_multiline: true,
        hint: "An application registered in the Enable Banking control panel, with this server's callback address whitelisted; you authorise your bank on its page at the first sync.",
        options_hint: "One per line: aspsp_name=Nordea and aspsp_country=FI (needed: the bank as Enable Banking names it), psu_type=personal|business, consent_days=90, history_days=730, daily_limit=4, redirect_uri.",
    },
    ConnectorForm {
        connector: "klarna",
        title: "Klarna open banking (XS2A: European banks through one consent)",
        base_url_example: "https://api.openbanking.klarna.com",
        username_label: "Your login name at the bank (Klarna's form for the bank asks for it)",
        password_label: "Klarna Open Banking API token",
        password_numeric: false,
        password_multiline: false,
        hint: "An API token from Klarna's Open Banking portal; you log in to your bank through Klarna's form at the first sync (its password is asked then, never kept).",
        options_hint: "One per line: bank_code=00000 and country_code=DE (needed: the bank as Klarna knows it), consent_days=90, history_days=730, daily_limit=4, redirect_uri; a wizard choice by its key (interface=…).",
    },
];

/// Aggregators: the bank is picked by country and name from the service's
/// list, and linked on its page when the connection is added.
pub fn is_aggregator(connector: &str) -> bool {
    matches!(connector, "gocardless" | "enablebanking" | "klarna")
}

/// Connectors whose bank may send the browser back to bankbridge (a
/// redirect SCA, an aggregator's link): a run offers them an address.
pub fn may_redirect(connector: &str) -> bool {
    connector == "xs2a" || is_aggregator(connector)
}

/// Check a connection's options (`KEY=VALUE` settings) as its connector
/// reads them; a connector without options takes none.
pub fn check_options(
    connector: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    match connector {
        "xs2a" => xs2a::BankSettings::from_options(options).map(|_| ()),
        "gocardless" => gocardless::Settings::from_options(options).map(|_| ()),
        "enablebanking" => enablebanking::Settings::from_options(options).map(|_| ()),
        "klarna" => klarna::Settings::from_options(options).map(|_| ()),
        _ if options.is_empty() => Ok(()),
        other => Err(format!(
            "the {other} connector takes no options (they are settings of xs2a and the aggregators)"
        )),
    }
}

/// Build the connector named `connector` for a connection.
///
/// ```
/// use bankbridge_core::{ConnectionSettings, Credentials, Secret};
/// let settings = ConnectionSettings::new("http://127.0.0.1:8080/fibank", "demo");
/// let c = bankbridge_connectors::build("fibank", &settings, Credentials::with_password(Secret::from("pw"))).unwrap();
/// assert_eq!(c.name(), "fibank");
/// assert!(bankbridge_connectors::build("nope", &settings, Credentials::default()).is_err());
/// ```
pub fn build(
    connector: &str,
    settings: &ConnectionSettings,
    credentials: Credentials,
) -> Result<Box<dyn Connector>, String> {
    match connector {
        "fibank" => Ok(Box::new(FibankConnector::new(settings, credentials)?)),
        "keypad" => Ok(Box::new(KeypadConnector::new(settings, credentials)?)),
        "xs2a" => Ok(Box::new(Xs2aConnector::new(settings, credentials)?)),
        "gocardless" => Ok(Box::new(GoCardlessConnector::new(settings, credentials)?)),
        "enablebanking" => Ok(Box::new(EnableBankingConnector::new(
            settings,
            credentials,
        )?)),
        "klarna" => Ok(Box::new(KlarnaConnector::new(settings, credentials)?)),
        other => Err(format!(
            "unknown connector {other:?}: known connectors are {}",
            KNOWN.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn options_are_checked_by_the_connector_that_reads_them() {
        let mut o = std::collections::BTreeMap::new();
        assert!(super::check_options("fibank", &o).is_ok());
        o.insert("bank_code".to_owned(), "00000".to_owned());
        assert!(
            super::check_options("fibank", &o)
                .unwrap_err()
                .contains("no options")
        );
        assert!(
            super::check_options("klarna", &o)
                .unwrap_err()
                .contains("country_code")
        );
        o.insert("country_code".to_owned(), "DE".to_owned());
        assert!(super::check_options("klarna", &o).is_ok());
        assert!(super::is_aggregator("klarna") && !super::is_aggregator("xs2a"));
        assert!(super::may_redirect("xs2a") && !super::may_redirect("keypad"));
    }

    #[test]
    fn every_known_connector_has_its_form() {
        let with_forms: Vec<&str> = super::FORMS.iter().map(|f| f.connector).collect();
        assert_eq!(with_forms, super::KNOWN);
    }
}

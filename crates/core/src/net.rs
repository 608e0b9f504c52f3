//! Where bankbridge may send secrets: a bank's credentials, an agent's
//! token. Over the network only through TLS; in plain HTTP only to this
//! machine (the sandbox, a local test server).
use std::net::IpAddr;
use std::sync::OnceLock;

use url::{Host, Url};

/// The URLs secrets may go to, as a regular expression (the API document
/// publishes it, and [`secure_url`] holds every URL to it): `https` to a
/// lower-case DNS name or an IPv4 address, or `http` to 127.0.0.0/8,
/// `localhost` or `[::1]`; an optional port (1 to 65535) and a plain path;
/// no user, query or fragment.
pub const SECURE_URL_PATTERN: &str = concat!(
    "^(https://(",
    "([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?",
    "|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    ")|http://(127(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}|localhost|\\[::1\\]))",
    "(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    "(/[A-Za-z0-9._~-]*)*$"
);

/// Longest URL [`secure_url`] takes.
pub const MAX_URL_LEN: usize = 2048;

fn pattern() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(SECURE_URL_PATTERN).expect("the URL pattern compiles"))
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// Parse `raw` as a URL secrets may be sent to: `https`, or `http` to a
/// loopback host. `what` names it in the error (`"the base URL"`).
pub fn secure_url(raw: &str, what: &str) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("{what} is longer than {MAX_URL_LEN} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    if url.host().is_none() {
        return Err(format!("{what} {raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} must not carry a user name or password; give credentials separately"
        ));
    }
    let shape = |url: Url| {
        if pattern().is_match(raw) {
            Ok(url)
        } else {
            Err(format!(
                "{what} {raw:?} must be a plain URL: a lower-case host name or IPv4 address, an \
                 optional port and path, no user, query or fragment (e.g. https://bank.example/api)"
            ))
        }
    };
    match url.scheme() {
        "https" => shape(url),
        "http" if is_loopback(&url) => shape(url),
        "http" => Err(format!(
            "{what} {raw:?} is plain http to another machine: use https (plain http is accepted \
             only for 127.0.0.1, ::1 or localhost)"
        )),
        other => Err(format!(
            "{what} {raw:?} uses {other}: only https is accepted"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        for ok in [
            "https://my.fibank.bg",
            "https://bank.example:8443/api",
            "https://10.1.2.3:65535/v1/",
            "http://127.0.0.1:9000/fibank",
            "http://127.8.9.10",
            "http://[::1]:9000",
            "http://localhost:8080",
        ] {
            assert!(secure_url(ok, "the base URL").is_ok(), "{ok}");
        }
        for bad in [
            "http://my.fibank.bg",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost.evil.example",
            "ftp://127.0.0.1",
            "file:///etc/passwd",
            "https://user:pw@bank.example",
            "not a url",
            "https://",
            "https://bank.example/api?x=1",
            "https://Bank.example",
            "http://127.0.0.1:70000",
            "http://LOCALHOST.",
        ] {
            assert!(secure_url(bad, "the base URL").is_err(), "{bad}");
        }
        let e = secure_url("http://bank.example", "the base URL").unwrap_err();
        assert!(e.contains("use https"), "{e}");
    }

    #[test]
    fn the_pattern_and_the_parser_agree() {
        let re = regex::Regex::new(SECURE_URL_PATTERN).unwrap();
        for ok in [
            "https://a",
            "https://a-b.c9",
            "https://0.0.0.0:1",
            "http://127.255.0.1:65535/x/y_z~.-",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(secure_url(ok, "url").is_ok(), "{ok}");
        }
    }
}

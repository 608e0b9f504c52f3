//! Where bankbridge may send secrets: a bank's credentials, an agent's
//! token. Over the network only through TLS; in plain HTTP only to this
//! machine (the sandbox, a local test server).
use std::net::IpAddr;

use url::{Host, Url};

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
    let url = Url::parse(raw.trim()).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    if url.host().is_none() {
        return Err(format!("{what} {raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{what} must not carry a user name or password; give credentials separately"
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
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
            "http://127.0.0.1:9000/fibank",
            "http://127.8.9.10",
            "http://[::1]:9000",
            "http://localhost:8080",
            "http://LOCALHOST.",
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
        ] {
            assert!(secure_url(bad, "the base URL").is_err(), "{bad}");
        }
        let e = secure_url("http://bank.example", "the base URL").unwrap_err();
        assert!(e.contains("use https"), "{e}");
    }
}

//! `completionData` of a completed order: the user, the device, the
//! XML-DSig `signature` and the DER `ocspResponse`, all computed for real.
//!
//! The signature document has the shape of BankID's: a W3C `<Signature>`
//! with two references (`#bidSignedData`, typed with the BankID namespace,
//! and `#bidKeyInfo`), a KeyInfo with the user's certificate, the issuing CA
//! and the root, and an `<Object>` holding `<bankIdSignedData>`. Differences
//! from the real service: ECDSA P-256 (`xmldsig-more#ecdsa-sha256`) where it
//! uses RSA, and simulated client and device values.
//!
//! Every referenced element (and SignedInfo) is written in its inclusive
//! C14N form as a document subset (namespace declaration first, attributes
//! in order, no empty-element tags), so its bytes in the document are
//! exactly what a verifier canonicalises and digests: the digests check
//! both with a C14N library and by hashing the element's text.
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::certs::Pki;
use super::der;
use super::users::User;
use super::validate::{OrderKind, Requirement, Risk};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const BANKID_NS: &str = "http://www.bankid.com/signature/v1.0.0/types";
const C14N: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";
const SHA256_URI: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// The test policy of Mobile BankID, used when an order names none.
const DEFAULT_POLICY: &str = "1.2.3.4.25";

/// What a completed order's data is made from.
pub struct Completion<'a> {
    pub kind: OrderKind,
    pub user: &'a User,
    pub device_ip: String,
    pub requirement: &'a Requirement,
    pub return_risk: bool,
    pub risk: Risk,
    pub user_visible_data: Option<&'a str>,
    pub user_non_visible_data: Option<&'a str>,
    /// The RP certificate's subject, as text.
    pub rp_name: &'a str,
    pub rp_display_name: &'a str,
    pub now: DateTime<Utc>,
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// Text and attribute escaping as C14N writes it.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
    out
}

fn signed_data(c: &Completion<'_>) -> String {
    let mut x = format!(r#"<bankIdSignedData xmlns="{BANKID_NS}" Id="bidSignedData">"#);
    if let Some(v) = c.user_visible_data {
        x += &format!(
            r#"<usrVisibleData charset="UTF-8" visible="wysiwys">{}</usrVisibleData>"#,
            esc(v)
        );
    }
    if let Some(v) = c.user_non_visible_data {
        x += &format!("<usrNonVisibleData>{}</usrNonVisibleData>", esc(v));
    }
    let nonce: [u8; 20] = rand::random();
    x += &format!(
        "<srvInfo><name>{}</name><nonce>{}</nonce><displayName>{}</displayName></srvInfo>",
        b64(c.rp_name),
        b64(nonce),
        b64(c.rp_display_name)
    );
    let mut conditions = String::from("<condition><type>CertificatePolicies</type>");
    if c.requirement.certificate_policies.is_empty() {
        conditions += &format!("<value>{DEFAULT_POLICY}</value>");
    }
    for p in &c.requirement.certificate_policies {
        conditions += &format!("<value>{}</value>", esc(p));
    }
    conditions += "</condition>";
    if !c.kind.is_phone() {
        conditions += "<condition><type>TokenStartRequired</type><value>yes</value></condition>";
    }
    x += &format!(
        "<clientInfo><funcId>{}</funcId><version>{}</version><env><ai><type>{}</type><deviceInfo>{}</deviceInfo><uhi>{}</uhi><fsib>0</fsib><utb>cs1</utb><requirement>{conditions}</requirement><uauth>pw</uauth></ai></env></clientInfo>",
        c.kind.func_id(),
        b64("Personal=bankbridge-sim&BankID_exe=bankbridge-sim&device=SIMULATOR"),
        b64("SIMULATOR"),
        b64("bankbridge sandbox simulated device"),
        esc(&c.user.uhi),
    );
    x += "</bankIdSignedData>";
    x
}

fn reference(uri: &str, ty: Option<&str>, digest: &[u8]) -> String {
    let ty = ty.map(|t| format!(r#" Type="{t}""#)).unwrap_or_default();
    format!(
        r#"<Reference{ty} URI="{uri}"><Transforms><Transform Algorithm="{C14N}"></Transform></Transforms><DigestMethod Algorithm="{SHA256_URI}"></DigestMethod><DigestValue>{}</DigestValue></Reference>"#,
        b64(digest)
    )
}

/// The signature XML document (not yet base64) and the user certificate.
fn signature_xml(pki: &Pki, c: &Completion<'_>) -> Result<(String, Vec<u8>), String> {
    let id = pki.identity(c.user).map_err(|e| e.to_string())?;
    let data = signed_data(c);
    let key_info = format!(
        r#"<KeyInfo xmlns="{DSIG_NS}" Id="bidKeyInfo"><X509Data><X509Certificate>{}</X509Certificate><X509Certificate>{}</X509Certificate><X509Certificate>{}</X509Certificate></X509Data></KeyInfo>"#,
        b64(&id.cert_der),
        b64(pki.customer_ca_der()),
        b64(&pki.ca_der)
    );
    let signed_info = format!(
        r#"<SignedInfo xmlns="{DSIG_NS}"><CanonicalizationMethod Algorithm="{C14N}"></CanonicalizationMethod><SignatureMethod Algorithm="{ECDSA_SHA256}"></SignatureMethod>{}{}</SignedInfo>"#,
        reference("#bidSignedData", Some(BANKID_NS), &Sha256::digest(&data)),
        reference("#bidKeyInfo", None, &Sha256::digest(&key_info)),
    );
    let value = id
        .sign_fixed(signed_info.as_bytes())
        .ok_or("signing failed")?;
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?><Signature xmlns="{DSIG_NS}">{signed_info}<SignatureValue>{}</SignatureValue>{key_info}<Object>{data}</Object></Signature>"#,
        b64(value)
    );
    Ok((xml, id.cert_der.clone()))
}

// OIDs of the OCSP response.
const ID_PKIX_OCSP_BASIC: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 1];
const ID_PKIX_OCSP_NONCE: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 2];
const ID_SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

/// A DER OCSPResponse (RFC 6960): status successful, a BasicOCSPResponse
/// saying the user's certificate is good, signed by its issuing CA.
///
/// Simplified: the issuing CA answers itself (no delegated OCSP responder
/// certificate), CertID hashes with SHA-256 rather than SHA-1, and the nonce
/// extension holds SHA-256 of the signature document, binding the two (the
/// real service's choice of nonce is not documented here).
pub fn ocsp_response(
    pki: &Pki,
    user_cert: &[u8],
    nonce: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, String> {
    let issuer = der::cert_fields(pki.customer_ca_der()).ok_or("unreadable issuer certificate")?;
    let user = der::cert_fields(user_cert).ok_or("unreadable user certificate")?;
    let cert_id = der::seq(&[
        &der::seq(&[&der::oid(ID_SHA256)]),
        &der::tlv(der::OCTET_STRING, &Sha256::digest(user.issuer)),
        &der::tlv(der::OCTET_STRING, &Sha256::digest(issuer.public_key)),
        &der::tlv(der::INTEGER, user.serial),
    ]);
    let single = der::seq(&[
        &cert_id,
        &der::tlv(der::implicit(0), &[]), // good
        &der::generalized_time(now),
        &der::tlv(
            der::explicit(0),
            &der::generalized_time(now + chrono::Duration::days(1)),
        ),
    ]);
    let nonce_ext = der::seq(&[
        &der::oid(ID_PKIX_OCSP_NONCE),
        &der::tlv(der::OCTET_STRING, &der::tlv(der::OCTET_STRING, nonce)),
    ]);
    let response_data = der::seq(&[
        &der::tlv(der::explicit(1), issuer.subject), // responderID byName
        &der::generalized_time(now),
        &der::seq(&[&single]),
        &der::tlv(der::explicit(1), &der::seq(&[&nonce_ext])),
    ]);
    let sig = pki
        .customer_ca_sign(&response_data)
        .map_err(|e| e.to_string())?;
    let basic = der::seq(&[
        &response_data,
        &der::seq(&[&der::oid(ECDSA_WITH_SHA256)]),
        &der::bit_string(&sig),
        &der::tlv(der::explicit(0), &der::seq(&[pki.customer_ca_der()])),
    ]);
    Ok(der::seq(&[
        &der::tlv(der::ENUMERATED, &[0]), // successful
        &der::tlv(
            der::explicit(0),
            &der::seq(&[
                &der::oid(ID_PKIX_OCSP_BASIC),
                &der::tlv(der::OCTET_STRING, &basic),
            ]),
        ),
    ]))
}

/// The `completionData` object of a completed order.
pub fn completion_data(pki: &Pki, c: &Completion<'_>) -> Result<Value, String> {
    let (xml, user_cert) = signature_xml(pki, c)?;
    let ocsp = ocsp_response(pki, &user_cert, &Sha256::digest(xml.as_bytes()), c.now)?;
    let mut data = json!({
        "user": {
            "personalNumber": c.user.personal_number,
            "name": c.user.name,
            "givenName": c.user.given_name,
            "surname": c.user.surname,
        },
        "device": {
            "ipAddress": c.device_ip,
            "uhi": c.user.uhi,
        },
        "bankIdIssueDate": c.user.issue_date.format("%Y-%m-%d").to_string(),
        "signature": b64(xml.as_bytes()),
        "ocspResponse": b64(&ocsp),
    });
    if c.requirement.mrtd {
        data["stepUp"] = json!({ "mrtd": true });
    }
    if c.return_risk || c.requirement.risk.is_some() {
        data["risk"] = json!(c.risk.as_str());
    }
    Ok(data)
}

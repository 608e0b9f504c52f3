//! Client certificates for mutual TLS (BankID's RP certificate, an
//! open-banking TPP certificate): what banks hand out, in the PEM form
//! reqwest's rustls backend takes.
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Secret;

/// Convert a PKCS#12 file (`.p12`/`.pfx`, DER) and its password into one
/// PEM bundle: the certificate chain, then the private key (PKCS#8).
/// A pure-Rust reader (AES/PBES2, 3DES and RC2 encryptions): reqwest reads
/// PKCS#12 only with native-tls.
pub fn pkcs12_to_pem(der: &[u8], password: &str) -> Result<Secret<Vec<u8>>, String> {
    let store = p12_keystore::KeyStore::from_pkcs12(der, password).map_err(|e| {
        format!(
            "cannot open the PKCS#12 client certificate (wrong password, or not a .p12/.pfx file?): {e}"
        )
    })?;
    let (_alias, chain) = store.private_key_chain().ok_or_else(|| {
        "the PKCS#12 file holds no private key with its certificate; export it with the key"
            .to_owned()
    })?;
    let mut pem = String::new();
    for cert in chain.chain() {
        push_pem(&mut pem, "CERTIFICATE", cert.as_der());
    }
    push_pem(&mut pem, "PRIVATE KEY", chain.key());
    Ok(Secret::new(pem.into_bytes()))
}

/// The certificate chain and its key (both PEM) as one bundle.
pub fn pem_bundle(cert_chain_pem: &[u8], key_pem: &[u8]) -> Secret<Vec<u8>> {
    let mut pem = cert_chain_pem.to_vec();
    pem.push(b'\n');
    pem.extend_from_slice(key_pem);
    Secret::new(pem)
}

fn push_pem(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let b64 = BASE64.encode(der);
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

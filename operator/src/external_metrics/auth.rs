//! Who may ask: the API server's front proxy, and nobody else.
//!
//! kube-apiserver forwards a request for an aggregated API over TLS with its front-proxy client
//! certificate (`--proxy-client-cert-file`) and names the user it authenticated in headers
//! (`X-Remote-User`, `X-Remote-Group`). It publishes how to recognise that proxy in the ConfigMap
//! `kube-system/extension-apiserver-authentication`: the CA that signs the proxy's certificate,
//! the common names the certificate may carry, and the header names. A certificate from that CA
//! is checked by rustls during the handshake; the common name and the headers are checked here,
//! per request, so that a ConfigMap refresh applies to connections already open.
//!
//! The headers are honoured only from a connection whose certificate passed both checks: anyone
//! else could write them.

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Namespace of the ConfigMap that describes the front proxy.
pub const AUTH_CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// Name of the ConfigMap that describes the front proxy.
pub const AUTH_CONFIG_MAP_NAME: &str = "extension-apiserver-authentication";
const KEY_CLIENT_CA: &str = "requestheader-client-ca-file";
const KEY_ALLOWED_NAMES: &str = "requestheader-allowed-names";
const KEY_USERNAME_HEADERS: &str = "requestheader-username-headers";
const KEY_GROUP_HEADERS: &str = "requestheader-group-headers";

/// How to recognise the front proxy, as the API server publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontProxy {
    /// CA certificates (DER) that sign the proxy's client certificate.
    pub client_ca: Vec<Vec<u8>>,
    /// Common names the proxy's certificate may carry; empty allows any the CA signed.
    pub allowed_names: Vec<String>,
    /// Headers naming the user, first non-empty one wins.
    pub username_headers: Vec<String>,
    /// Headers naming the user's groups, every value of each counts.
    pub group_headers: Vec<String>,
}

/// Why the front proxy's description could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The ConfigMap has no `requestheader-client-ca-file`: the API server runs without
    /// `--requestheader-client-ca-file`, so it cannot forward to an extension API server.
    #[error(
        "{AUTH_CONFIG_MAP_NAMESPACE}/{AUTH_CONFIG_MAP_NAME} has no {KEY_CLIENT_CA} (the API server is not configured with --requestheader-client-ca-file)"
    )]
    NoClientCa,
    /// A PEM document did not parse.
    #[error("{what}: not a PEM certificate bundle")]
    Pem {
        /// What was parsed.
        what: String,
        /// The parser's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A list-valued key is not a JSON array of strings.
    #[error("{key}: expected a JSON array of strings")]
    List {
        /// The ConfigMap key.
        key: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// rustls refused the CA or the key pair.
    #[error("{what}")]
    Tls {
        /// What was being built.
        what: &'static str,
        /// rustls' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn string_list(
    data: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Vec<String>, TrustError> {
    match data.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(s) => serde_json::from_str(s).map_err(|source| TrustError::List { key, source }),
    }
}

/// Every certificate of a PEM bundle, as DER.
pub fn pem_certificates(what: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>, TrustError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TrustError::Pem {
            what: what.to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TrustError::Pem {
            what: what.to_string(),
            source: rustls::pki_types::pem::Error::NoItemsFound,
        });
    }
    Ok(certs)
}

impl FrontProxy {
    /// Reads the `requestheader-*` keys of the authentication ConfigMap. Header names default to
    /// kube-apiserver's own defaults when the ConfigMap lists none.
    pub fn from_config_map(data: &BTreeMap<String, String>) -> Result<Self, TrustError> {
        let pem = data
            .get(KEY_CLIENT_CA)
            .filter(|s| !s.trim().is_empty())
            .ok_or(TrustError::NoClientCa)?;
        let or_default = |v: Vec<String>, d: &str| {
            if v.is_empty() { vec![d.to_string()] } else { v }
        };
        Ok(Self {
            client_ca: pem_certificates(KEY_CLIENT_CA, pem.as_bytes())?,
            allowed_names: string_list(data, KEY_ALLOWED_NAMES)?,
            username_headers: or_default(string_list(data, KEY_USERNAME_HEADERS)?, "X-Remote-User"),
            group_headers: or_default(string_list(data, KEY_GROUP_HEADERS)?, "X-Remote-Group"),
        })
    }
}

/// The user the front proxy forwarded a request for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// Why a request is refused; the message is safe to return.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No client certificate, so not the front proxy.
    #[error("a client certificate of the API server's front proxy is required")]
    NoCertificate,
    /// A certificate from the right CA with a name not in `requestheader-allowed-names`.
    #[error("client certificate common name {0:?} is not an allowed front-proxy name")]
    NameNotAllowed(String),
    /// The front proxy did not name a user.
    #[error("the front proxy named no user")]
    NoUser,
    /// The front proxy's description could not be read, so nobody can be recognised.
    #[error("the front proxy's client CA is not known yet")]
    NoTrust,
}

/// The first common name of a DER certificate's subject.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// Checks a request: `peer_cn` is the common name of the client certificate that rustls already
/// verified against `proxy.client_ca` (`None`: no certificate).
pub fn authenticate(
    proxy: Option<&FrontProxy>,
    peer_cn: Option<&str>,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, Denied> {
    let proxy = proxy.ok_or(Denied::NoTrust)?;
    let cn = peer_cn.ok_or(Denied::NoCertificate)?;
    if !proxy.allowed_names.is_empty() && !proxy.allowed_names.iter().any(|n| n == cn) {
        return Err(Denied::NameNotAllowed(cn.to_string()));
    }
    let user = proxy
        .username_headers
        .iter()
        .filter_map(|h| headers.get(h.as_str()))
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty())
        .ok_or(Denied::NoUser)?
        .to_string();
    let groups = proxy
        .group_headers
        .iter()
        .flat_map(|h| headers.get_all(h.as_str()))
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    Ok(Caller { user, groups })
}

/// The serving certificate chain and key, DER.
#[derive(Clone, Debug)]
pub struct ServingCert {
    /// Leaf first.
    pub chain: Vec<Vec<u8>>,
    /// PKCS#8, PKCS#1 or SEC1 key.
    pub key: Vec<u8>,
}

impl ServingCert {
    /// Reads PEM files.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TrustError> {
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TrustError::Pem {
            what: "serving key".into(),
            source,
        })?;
        Ok(Self {
            chain: pem_certificates("serving certificate", cert)?,
            key: key.secret_der().to_vec(),
        })
    }

    /// A self-signed certificate for `names` (when no certificate is given: the APIService
    /// must then skip verification, `insecureSkipTLSVerify`).
    pub fn self_signed(names: Vec<String>) -> Result<Self, TrustError> {
        let c = rcgen::generate_simple_self_signed(names).map_err(|e| TrustError::Tls {
            what: "generating a self-signed serving certificate",
            source: Box::new(e),
        })?;
        Ok(Self {
            chain: vec![c.cert.der().to_vec()],
            key: c.signing_key.serialize_der(),
        })
    }
}

/// The TLS settings of the listener: the serving certificate, and client certificates checked
/// against the front proxy's CA when one is known. A client without a certificate may still
/// finish the handshake so that it gets a readable 401 rather than a TLS alert; one with a
/// certificate from another CA does not.
pub fn server_config(
    serving: &ServingCert,
    proxy: Option<&FrontProxy>,
) -> Result<rustls::ServerConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = |what, e: rustls::Error| TrustError::Tls {
        what,
        source: Box::new(e),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls("TLS versions", e))?;
    let builder = match proxy {
        Some(p) => {
            let mut roots = RootCertStore::empty();
            for der in &p.client_ca {
                roots
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| tls("the front proxy's client CA", e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TrustError::Tls {
                    what: "the client certificate verifier",
                    source: Box::new(e),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        // Nobody can be recognised yet: every request gets 401 until the CA is read.
        None => builder.with_no_client_auth(),
    };
    let chain = serving
        .chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let key = PrivateKeyDer::try_from(serving.key.clone()).map_err(|e| TrustError::Tls {
        what: "the serving key",
        source: e.into(),
    })?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls("the serving certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn proxy(allowed: &[&str]) -> FrontProxy {
        FrontProxy {
            client_ca: Vec::new(),
            allowed_names: allowed.iter().map(|s| s.to_string()).collect(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_front_proxy_is_recognised_by_name_and_names_the_user() {
        let h = headers(&[
            ("x-remote-user", "system:serviceaccount:kube-system:hpa"),
            ("x-remote-group", "system:serviceaccounts"),
            ("x-remote-group", "system:authenticated"),
        ]);
        let p = proxy(&["front-proxy-client"]);
        assert_eq!(
            authenticate(Some(&p), Some("front-proxy-client"), &h),
            Ok(Caller {
                user: "system:serviceaccount:kube-system:hpa".into(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    "system:authenticated".into()
                ],
            })
        );
        assert_eq!(
            authenticate(Some(&p), Some("someone-else"), &h),
            Err(Denied::NameNotAllowed("someone-else".into()))
        );
        assert_eq!(authenticate(Some(&p), None, &h), Err(Denied::NoCertificate));
        assert_eq!(
            authenticate(None, Some("front-proxy-client"), &h),
            Err(Denied::NoTrust)
        );
        assert_eq!(
            authenticate(
                Some(&p),
                Some("front-proxy-client"),
                &headers(&[("x-remote-user", "")])
            ),
            Err(Denied::NoUser)
        );
        // No allowed names: any certificate the CA signed is the proxy.
        assert!(authenticate(Some(&proxy(&[])), Some("anything"), &h).is_ok());
    }

    #[test]
    fn the_config_map_is_read_with_kube_apiserver_defaults() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_string()]).expect("ca");
        let data = BTreeMap::from([
            (KEY_CLIENT_CA.to_string(), ca.cert.pem()),
            (
                KEY_ALLOWED_NAMES.to_string(),
                r#"["front-proxy-client"]"#.to_string(),
            ),
            (KEY_USERNAME_HEADERS.to_string(), "[]".to_string()),
        ]);
        let p = FrontProxy::from_config_map(&data).expect("valid");
        assert_eq!(p.client_ca, vec![ca.cert.der().to_vec()]);
        assert_eq!(p.allowed_names, vec!["front-proxy-client".to_string()]);
        assert_eq!(p.username_headers, vec!["X-Remote-User".to_string()]);
        assert_eq!(p.group_headers, vec!["X-Remote-Group".to_string()]);

        assert!(matches!(
            FrontProxy::from_config_map(&BTreeMap::new()),
            Err(TrustError::NoClientCa)
        ));
        let mut bad = data.clone();
        bad.insert(KEY_ALLOWED_NAMES.into(), "front-proxy-client".into());
        assert!(matches!(
            FrontProxy::from_config_map(&bad),
            Err(TrustError::List {
                key: KEY_ALLOWED_NAMES,
                ..
            })
        ));
        let mut bad = data;
        bad.insert(KEY_CLIENT_CA.into(), "not pem".into());
        assert!(matches!(
            FrontProxy::from_config_map(&bad),
            Err(TrustError::Pem { .. })
        ));
    }

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-client");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            common_name(cert.der()).as_deref(),
            Some("front-proxy-client")
        );
        assert_eq!(common_name(b"not a certificate"), None);
    }
}

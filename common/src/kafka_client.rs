//! Kafka client security from a Kubernetes Secret: which keys the Secret may hold, what each
//! means, and the librdkafka properties they become. The updater (consumer and dead-letter
//! producer, reading the Secret mounted as files) and the operator (lag reader, reading it through
//! the API; the KEDA TriggerAuthentication it renders) all go through [`KafkaClientSecret::parse`],
//! so a Secret is accepted or refused the same way everywhere, with the same message.
//!
//! | Secret key | librdkafka property | required |
//! | --- | --- | --- |
//! | `security.protocol` | `security.protocol`: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL` | always |
//! | `sasl.mechanism` | `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` | with `SASL_*` |
//! | `sasl.username` | `sasl.username` | with `SASL_*` |
//! | `sasl.password` | `sasl.password` | with `SASL_*` |
//! | `ca.crt` | `ssl.ca.pem` (PEM, one or more CA certificates) | no (`SSL`, `SASL_SSL`: else the system's CAs) |
//! | `tls.crt` | `ssl.certificate.pem` (client certificate, mTLS) | with `tls.key` |
//! | `tls.key` | `ssl.key.pem` (its private key) | with `tls.crt` |
//! | `tls.key.password` | `ssl.key.password` (when the key is encrypted) | no |
//!
//! The certificate keys are those of a `kubernetes.io/tls` Secret and of cert-manager's. Values
//! that are not PEM lose surrounding white space (`kubectl create secret --from-file` keeps a
//! trailing newline). Certificates and keys go to librdkafka as PEM strings, so the same
//! properties serve a client that read the Secret from files and one that read it from the API.
//! Anything else in the Secret is refused rather than ignored: a misspelt key would otherwise
//! silently leave a connection unauthenticated.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Secret key of the security protocol.
pub const SECURITY_PROTOCOL: &str = "security.protocol";
/// Secret key of the SASL mechanism.
pub const SASL_MECHANISM: &str = "sasl.mechanism";
/// Secret key of the SASL user name.
pub const SASL_USERNAME: &str = "sasl.username";
/// Secret key of the SASL password.
pub const SASL_PASSWORD: &str = "sasl.password";
/// Secret key of the CA certificates (PEM).
pub const CA_CERT: &str = "ca.crt";
/// Secret key of the client certificate (PEM).
pub const CLIENT_CERT: &str = "tls.crt";
/// Secret key of the client certificate's private key (PEM).
pub const CLIENT_KEY: &str = "tls.key";
/// Secret key of the private key's password.
pub const CLIENT_KEY_PASSWORD: &str = "tls.key.password";

/// Every key a Secret may hold.
pub const KEYS: [&str; 8] = [
    SECURITY_PROTOCOL,
    SASL_MECHANISM,
    SASL_USERNAME,
    SASL_PASSWORD,
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    CLIENT_KEY_PASSWORD,
];

/// `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    Plaintext,
    /// TLS (with a client certificate: mTLS).
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether connections use TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn parse(s: &str) -> Option<Self> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

/// `sasl.mechanism` (GSSAPI and OAUTHBEARER need more than a user name and password).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// User name and password in the clear (use with `SASL_SSL`).
    Plain,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
    }
}

/// What a valid Secret says that is not secret: enough to render what refers to it (the KEDA
/// trigger's `sasl`/`tls` and which keys its TriggerAuthentication maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KafkaSecurity {
    /// The protocol.
    pub protocol: SecurityProtocol,
    /// The SASL mechanism, with a `SASL_*` protocol.
    pub mechanism: Option<SaslMechanism>,
    /// `ca.crt` is given.
    pub ca: bool,
    /// `tls.crt` and `tls.key` are given.
    pub client_certificate: bool,
    /// `tls.key.password` is given.
    pub key_password: bool,
}

/// A valid Secret's contents. `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KafkaClientSecret {
    security: KafkaSecurity,
    /// `(librdkafka property, value)`, in the order of [`KEYS`].
    properties: Vec<(&'static str, String)>,
}

impl fmt::Debug for KafkaClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaClientSecret")
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

/// Why a Secret cannot configure a Kafka client. Messages name keys, never values of secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaSecretError {
    /// A required key is absent or empty.
    #[error("key {key} is missing ({why})")]
    Missing {
        /// The key.
        key: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// A key that is not one of [`KEYS`].
    #[error("key {0} is not a Kafka client setting (known: {known})", known = KEYS.join(", "))]
    Unknown(String),
    /// A key the protocol does not use (it would be ignored).
    #[error("key {key} does not apply to security.protocol {protocol}")]
    NotApplicable {
        /// The key.
        key: &'static str,
        /// The protocol given.
        protocol: &'static str,
    },
    /// `security.protocol` or `sasl.mechanism` has a value librdkafka does not know, or prapi
    /// does not support.
    #[error("{key} is {value:?}; expected one of {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// The value given (never a secret's).
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A value that is not UTF-8 text.
    #[error("key {0} is not UTF-8 text")]
    NotText(&'static str),
    /// A certificate or key that is not PEM.
    #[error("key {key} is not PEM (no \"-----BEGIN {expected}\" line)")]
    NotPem {
        /// The key.
        key: &'static str,
        /// What its first line should begin with.
        expected: &'static str,
    },
    /// The mounted Secret's directory or one of its files cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: IoError,
    },
}

/// An I/O error that compares by kind, so [`KafkaSecretError`] can be compared in tests.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct IoError(#[from] pub std::io::Error);

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind()
    }
}

impl Eq for IoError {}

impl KafkaClientSecret {
    /// Checks a Secret's `(key, value)` pairs (its `data`, decoded) and maps them to librdkafka
    /// properties.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, KafkaSecretError> {
        let mut values: BTreeMap<&'static str, &'a str> = BTreeMap::new();
        for (key, bytes) in entries {
            let Some(known) = KEYS.iter().copied().find(|k| *k == key) else {
                return Err(KafkaSecretError::Unknown(key.to_string()));
            };
            let text = std::str::from_utf8(bytes).map_err(|_| KafkaSecretError::NotText(known))?;
            let text = text.trim();
            if !text.is_empty() {
                values.insert(known, text);
            }
        }
        let Some(protocol_text) = values.get(SECURITY_PROTOCOL) else {
            return Err(KafkaSecretError::Missing {
                key: SECURITY_PROTOCOL,
                why: "always",
            });
        };
        let protocol =
            SecurityProtocol::parse(protocol_text).ok_or_else(|| KafkaSecretError::Invalid {
                key: SECURITY_PROTOCOL,
                value: protocol_text.to_string(),
                expected: "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
            })?;
        let not_applicable = |key| KafkaSecretError::NotApplicable {
            key,
            protocol: protocol.as_str(),
        };
        let sasl_keys = [SASL_MECHANISM, SASL_USERNAME, SASL_PASSWORD];
        let tls_keys = [CA_CERT, CLIENT_CERT, CLIENT_KEY, CLIENT_KEY_PASSWORD];
        let mechanism = if protocol.sasl() {
            for key in sasl_keys {
                if !values.contains_key(key) {
                    return Err(KafkaSecretError::Missing {
                        key,
                        why: "with a SASL_* security.protocol",
                    });
                }
            }
            let text = values.get(SASL_MECHANISM).copied().unwrap_or_default();
            Some(
                SaslMechanism::parse(text).ok_or_else(|| KafkaSecretError::Invalid {
                    key: SASL_MECHANISM,
                    value: text.to_string(),
                    expected: "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                })?,
            )
        } else {
            if let Some(key) = sasl_keys.into_iter().find(|k| values.contains_key(k)) {
                return Err(not_applicable(key));
            }
            None
        };
        if !protocol.tls()
            && let Some(key) = tls_keys.into_iter().find(|k| values.contains_key(k))
        {
            return Err(not_applicable(key));
        }
        match (
            values.contains_key(CLIENT_CERT),
            values.contains_key(CLIENT_KEY),
        ) {
            (true, false) => {
                return Err(KafkaSecretError::Missing {
                    key: CLIENT_KEY,
                    why: "with tls.crt",
                });
            }
            (false, true) => {
                return Err(KafkaSecretError::Missing {
                    key: CLIENT_CERT,
                    why: "with tls.key",
                });
            }
            _ => {}
        }
        if values.contains_key(CLIENT_KEY_PASSWORD) && !values.contains_key(CLIENT_KEY) {
            return Err(KafkaSecretError::Missing {
                key: CLIENT_KEY,
                why: "with tls.key.password",
            });
        }
        for (key, expected) in [
            (CA_CERT, "CERTIFICATE"),
            (CLIENT_CERT, "CERTIFICATE"),
            (CLIENT_KEY, ""),
        ] {
            if let Some(v) = values.get(key)
                && !is_pem(v, expected)
            {
                return Err(KafkaSecretError::NotPem {
                    key,
                    expected: if expected.is_empty() {
                        "... PRIVATE KEY"
                    } else {
                        expected
                    },
                });
            }
        }
        let security = KafkaSecurity {
            protocol,
            mechanism,
            ca: values.contains_key(CA_CERT),
            client_certificate: values.contains_key(CLIENT_CERT),
            key_password: values.contains_key(CLIENT_KEY_PASSWORD),
        };
        let mut properties = vec![(SECURITY_PROTOCOL, protocol.as_str().to_string())];
        if let Some(m) = mechanism {
            properties.push((SASL_MECHANISM, m.as_str().to_string()));
        }
        for (key, property) in [
            (SASL_USERNAME, "sasl.username"),
            (SASL_PASSWORD, "sasl.password"),
            (CA_CERT, "ssl.ca.pem"),
            (CLIENT_CERT, "ssl.certificate.pem"),
            (CLIENT_KEY, "ssl.key.pem"),
            (CLIENT_KEY_PASSWORD, "ssl.key.password"),
        ] {
            if let Some(v) = values.get(key) {
                properties.push((property, (*v).to_string()));
            }
        }
        Ok(Self {
            security,
            properties,
        })
    }

    /// Reads a Secret mounted as a volume: one file per key. Kubernetes' own entries (`..data`
    /// and the timestamped directory it points to) are skipped.
    pub fn read_dir(dir: &Path) -> Result<Self, KafkaSecretError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| KafkaSecretError::Read {
                path,
                source: IoError(e),
            }
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
            let entry = entry.map_err(read_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") {
                continue;
            }
            let path = entry.path();
            // Keys are symbolic links into the current data directory: follow them.
            if std::fs::metadata(&path).map_err(read_err(&path))?.is_dir() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(read_err(&path))?;
            files.push((name, bytes));
        }
        Self::parse(files.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// What the Secret says that is not secret.
    pub fn security(&self) -> KafkaSecurity {
        self.security
    }

    /// The librdkafka properties, to set on a client configuration after its own settings.
    pub fn properties(&self) -> &[(&'static str, String)] {
        &self.properties
    }
}

/// The one place a Kafka client's configuration starts: `bootstrap.servers`, then the Secret's
/// properties when there is one. Callers add their own settings (group, commit policy, ...).
#[cfg(feature = "rdkafka")]
pub fn client_config(
    bootstrap: &str,
    security: Option<&KafkaClientSecret>,
) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in security
        .map(KafkaClientSecret::properties)
        .unwrap_or_default()
    {
        config.set(*key, value);
    }
    config
}

/// Whether `text` starts with a PEM block of `label` (any `... PRIVATE KEY` when empty).
fn is_pem(text: &str, label: &str) -> bool {
    let Some(rest) = text.strip_prefix("-----BEGIN ") else {
        return false;
    };
    let Some((block, _)) = rest.split_once("-----") else {
        return false;
    };
    if label.is_empty() {
        block.ends_with("PRIVATE KEY")
    } else {
        block == label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";

    fn parse(pairs: &[(&str, &str)]) -> Result<KafkaClientSecret, KafkaSecretError> {
        KafkaClientSecret::parse(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    fn props(s: &KafkaClientSecret) -> Vec<(&str, &str)> {
        s.properties()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect()
    }

    #[test]
    fn sasl_plain_maps_to_the_four_sasl_properties() {
        let s = parse(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "alice\n"),
            ("sasl.password", "s3cret"),
        ])
        .expect("valid");
        assert_eq!(
            props(&s),
            [
                ("security.protocol", "SASL_PLAINTEXT"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "alice"),
                ("sasl.password", "s3cret"),
            ]
        );
        assert_eq!(
            s.security(),
            KafkaSecurity {
                protocol: SecurityProtocol::SaslPlaintext,
                mechanism: Some(SaslMechanism::Plain),
                ca: false,
                client_certificate: false,
                key_password: false,
            }
        );
    }

    #[test]
    fn names_are_accepted_in_any_case_and_written_as_librdkafka_spells_them() {
        for (given, protocol) in [
            ("plaintext", SecurityProtocol::Plaintext),
            ("ssl", SecurityProtocol::Ssl),
            ("Sasl_Plaintext", SecurityProtocol::SaslPlaintext),
            ("sasl_ssl", SecurityProtocol::SaslSsl),
        ] {
            let mut pairs = vec![("security.protocol", given)];
            if protocol.sasl() {
                pairs.extend([
                    ("sasl.mechanism", "scram-sha-512"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ]);
            }
            let s = parse(&pairs).expect("valid");
            assert_eq!(s.security().protocol, protocol);
            assert_eq!(
                s.properties()[0],
                ("security.protocol", protocol.as_str().into())
            );
            if protocol.sasl() {
                assert_eq!(
                    s.properties()[1],
                    ("sasl.mechanism", "SCRAM-SHA-512".into())
                );
            }
        }
        for (given, m) in [
            ("PLAIN", SaslMechanism::Plain),
            ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
            ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
        ] {
            let s = parse(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", given),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ])
            .expect("valid");
            assert_eq!(s.security().mechanism, Some(m));
        }
    }

    #[test]
    fn mtls_with_sasl_maps_every_key() {
        let s = parse(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("ca.crt", CERT),
            ("tls.crt", CERT),
            ("tls.key", KEY),
            ("tls.key.password", "kp"),
        ])
        .expect("valid");
        assert_eq!(
            props(&s),
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
                ("ssl.ca.pem", CERT.trim()),
                ("ssl.certificate.pem", CERT.trim()),
                ("ssl.key.pem", KEY.trim()),
                ("ssl.key.password", "kp"),
            ]
        );
        assert_eq!(
            s.security(),
            KafkaSecurity {
                protocol: SecurityProtocol::SaslSsl,
                mechanism: Some(SaslMechanism::ScramSha256),
                ca: true,
                client_certificate: true,
                key_password: true,
            }
        );
    }

    #[test]
    fn tls_without_a_ca_uses_the_system_cas_and_an_ec_or_rsa_key_is_accepted() {
        let s = parse(&[("security.protocol", "SSL")]).expect("valid");
        assert_eq!(props(&s), [("security.protocol", "SSL")]);
        for key in [
            "-----BEGIN EC PRIVATE KEY-----\nx\n",
            "-----BEGIN RSA PRIVATE KEY-----\nx\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n",
        ] {
            let s = parse(&[
                ("security.protocol", "SSL"),
                ("tls.crt", CERT),
                ("tls.key", key),
            ]);
            assert!(s.is_ok(), "{key}: {s:?}");
        }
    }

    #[test]
    fn missing_keys_are_named() {
        let missing = |pairs: &[(&str, &str)]| match parse(pairs) {
            Err(KafkaSecretError::Missing { key, .. }) => key,
            other => panic!("{pairs:?}: {other:?}"),
        };
        assert_eq!(missing(&[]), "security.protocol");
        assert_eq!(
            missing(&[("security.protocol", "  \n")]),
            "security.protocol"
        );
        let sasl = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ];
        for left_out in 1..sasl.len() {
            let pairs: Vec<_> = sasl
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != left_out)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(missing(&pairs), sasl[left_out].0);
        }
        assert_eq!(
            missing(&[("security.protocol", "SSL"), ("tls.crt", CERT)]),
            "tls.key"
        );
        assert_eq!(
            missing(&[("security.protocol", "SSL"), ("tls.key", KEY)]),
            "tls.crt"
        );
        assert_eq!(
            missing(&[("security.protocol", "SSL"), ("tls.key.password", "x")]),
            "tls.key"
        );
    }

    #[test]
    fn keys_the_protocol_ignores_are_refused() {
        for (protocol, key, value) in [
            ("PLAINTEXT", "sasl.username", "u"),
            ("SSL", "sasl.mechanism", "PLAIN"),
            ("PLAINTEXT", "ca.crt", CERT),
            ("SASL_PLAINTEXT", "tls.crt", CERT),
            ("SASL_PLAINTEXT", "tls.key.password", "x"),
        ] {
            let mut pairs = vec![("security.protocol", protocol), (key, value)];
            if protocol.starts_with("SASL") {
                pairs.extend([
                    ("sasl.mechanism", "PLAIN"),
                    ("sasl.username", "u"),
                    ("sasl.password", "p"),
                ]);
            }
            let err = parse(&pairs).expect_err("refused");
            assert!(
                matches!(&err, KafkaSecretError::NotApplicable { key: k, .. } if *k == key),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("key {key} does not apply to security.protocol {protocol}")
            );
        }
    }

    #[test]
    fn bad_values_are_refused_without_echoing_secrets() {
        let err = parse(&[("security.protocol", "TLS")]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "security.protocol is \"TLS\"; expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        );
        let err = parse(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "GSSAPI"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ])
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "sasl.mechanism is \"GSSAPI\"; expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
        );
        let err =
            parse(&[("security.protocol", "SSL"), ("ca.crt", "hunter2")]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "key ca.crt is not PEM (no \"-----BEGIN CERTIFICATE\" line)"
        );
        assert!(!err.to_string().contains("hunter2"));
        let err = parse(&[
            ("security.protocol", "SSL"),
            ("tls.crt", CERT),
            ("tls.key", CERT),
        ])
        .expect_err("refused");
        assert_eq!(
            err,
            KafkaSecretError::NotPem {
                key: "tls.key",
                expected: "... PRIVATE KEY"
            }
        );
        let err = KafkaClientSecret::parse([("sasl.password", &[0xff_u8, 0xfe][..])])
            .expect_err("refused");
        assert_eq!(err, KafkaSecretError::NotText("sasl.password"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_ones_listed() {
        let err =
            parse(&[("security.protocol", "SSL"), ("ssl.ca.location", "/x")]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "key ssl.ca.location is not a Kafka client setting (known: security.protocol, \
             sasl.mechanism, sasl.username, sasl.password, ca.crt, tls.crt, tls.key, \
             tls.key.password)"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = parse(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", "hunter2"),
            ("tls.crt", CERT),
            ("tls.key", KEY),
        ])
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("MIGH"),
            "{shown}"
        );
        assert!(shown.contains("SaslSsl"), "{shown}");
    }

    #[test]
    fn a_mounted_secret_is_read_from_its_files_skipping_kubernetes_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The layout of a Secret volume: keys are links into a timestamped data directory.
        let data = dir.path().join("..2026_11_28_00_00_00.1");
        std::fs::create_dir(&data).expect("data dir");
        std::fs::write(data.join("security.protocol"), "SSL\n").expect("write");
        std::fs::write(data.join("ca.crt"), CERT).expect("write");
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).expect("link");
        for key in ["security.protocol", "ca.crt"] {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.path().join(key))
                .expect("link");
        }
        let s = KafkaClientSecret::read_dir(dir.path()).expect("valid");
        assert_eq!(
            props(&s),
            [("security.protocol", "SSL"), ("ssl.ca.pem", CERT.trim())]
        );
        let missing = dir.path().join("nope");
        let err = KafkaClientSecret::read_dir(&missing).expect_err("no directory");
        assert!(
            matches!(&err, KafkaSecretError::Read { path, .. } if *path == missing),
            "{err:?}"
        );
    }
}

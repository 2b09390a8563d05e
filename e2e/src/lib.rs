//! Finds the test environment that `make testenv` starts (Kubernetes with kwok
//! nodes, Kafka, dynalite for DynamoDB, moto for Application Auto Scaling), so
//! that integration tests anywhere in the workspace can use it:
//!
//! ```no_run
//! use prapi_e2e::{Part, TestEnv};
//!
//! let Some(env) = TestEnv::get_for(&[Part::Kafka]) else {
//!     return; // skipped, with a visible note; panics under `make test`
//! };
//! let _bootstrap = env.kafka_bootstrap_servers();
//! ```
//!
//! Where the endpoints come from: when the process has `PRAPI_TESTENV=1` (as
//! after `source target/testenv/env`), from its environment variables; otherwise
//! from `target/testenv/env` of the workspace (or `$PRAPI_TESTENV_DIR/env`).
//! Variables such as `KUBECONFIG` that are set without `PRAPI_TESTENV=1` are
//! ignored on purpose: they may point at a real cluster.
//!
//! When the environment is absent or a component does not answer, the test is
//! skipped with a note on stderr, unless `PRAPI_REQUIRE_TESTENV=1` (set by
//! `make test`), in which case it panics with the reason.

mod envfile;
#[cfg(feature = "kit")]
pub mod kit;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use envfile::{EnvFileError, parse_env_file};

/// The variable that makes tests fail instead of skipping when the
/// environment is missing (`make test` sets it).
pub const REQUIRE_VAR: &str = "PRAPI_REQUIRE_TESTENV";

/// A part of the test environment a test can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// kube-apiserver with controller-manager, scheduler and kwok nodes.
    Kubernetes,
    /// One Kafka broker (KRaft).
    Kafka,
    /// DynamoDB's API (dynalite).
    DynamoDb,
    /// Application Auto Scaling's API (moto).
    ApplicationAutoScaling,
}

impl Part {
    /// Every component, in the order `make testenv` starts them.
    pub const ALL: [Part; 4] = [
        Part::Kafka,
        Part::DynamoDb,
        Part::ApplicationAutoScaling,
        Part::Kubernetes,
    ];

    /// The variable that carries the component's endpoint.
    pub fn endpoint_var(self) -> &'static str {
        match self {
            Part::Kubernetes => "PRAPI_KUBE_APISERVER",
            Part::Kafka => "KAFKA_BOOTSTRAP_SERVERS",
            Part::DynamoDb => "AWS_ENDPOINT_URL_DYNAMODB",
            Part::ApplicationAutoScaling => "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Kubernetes => "Kubernetes",
            Part::Kafka => "Kafka",
            Part::DynamoDb => "DynamoDB (dynalite)",
            Part::ApplicationAutoScaling => "Application Auto Scaling (moto)",
        })
    }
}

/// Why the test environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TestEnvError {
    /// No environment file and no `PRAPI_TESTENV=1` in the process.
    #[error("no test environment: {path} does not exist and PRAPI_TESTENV is not set")]
    NotStarted {
        /// The environment file looked for.
        path: PathBuf,
    },
    /// The environment file exists but cannot be read.
    #[error("cannot read {path}")]
    Unreadable {
        /// The environment file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The environment file is not in the format up.sh writes.
    #[error("{path} is malformed")]
    Malformed {
        /// The environment file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: EnvFileError,
    },
    /// A component the test needs is not part of the running environment.
    #[error("{component} is not running ({var} is not set); start it with `make testenv`")]
    Missing {
        /// The component.
        component: Part,
        /// Its endpoint variable.
        var: &'static str,
    },
    /// An endpoint is not a `host:port` or URL with one.
    #[error("{component}: cannot parse an address from {var}={value:?}")]
    BadEndpoint {
        /// The component.
        component: Part,
        /// Its endpoint variable.
        var: &'static str,
        /// The value found.
        value: String,
    },
    /// The component's port does not accept connections.
    #[error("{component} at {addr} does not answer (stale target/testenv/env?)")]
    Unreachable {
        /// The component.
        component: Part,
        /// The address tried.
        addr: String,
        /// The connection error.
        #[source]
        source: std::io::Error,
    },
}

/// Endpoints and credentials of the running test environment.
#[derive(Debug, Clone)]
pub struct TestEnv {
    vars: BTreeMap<String, String>,
    components: Vec<Part>,
}

impl TestEnv {
    /// The whole environment; `None` (after printing why the test is skipped)
    /// when it is not running. Panics instead under `PRAPI_REQUIRE_TESTENV=1`.
    pub fn get() -> Option<TestEnv> {
        Self::get_for(&Part::ALL)
    }

    /// Like [`TestEnv::get`], needing only `components`.
    pub fn get_for(components: &[Part]) -> Option<TestEnv> {
        match Self::load(components) {
            Ok(env) => Some(env),
            Err(err) => {
                let reason = error_chain(&err);
                if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                    panic!(
                        "the test environment is required ({REQUIRE_VAR}=1) but not usable: {reason}. \
                         Start it with `make testenv`; logs are in target/testenv/logs/."
                    );
                }
                // Straight to the stream, not through eprintln!, which the test
                // harness captures and hides for passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: test environment not running (make testenv): {reason}"
                );
                None
            }
        }
    }

    /// Loads the environment and checks that each of `components` is there
    /// and accepts connections. No skipping or panicking: that is `get_for`'s.
    pub fn load(components: &[Part]) -> Result<TestEnv, TestEnvError> {
        let vars = if std::env::var("PRAPI_TESTENV").is_ok_and(|v| v == "1") {
            std::env::vars().collect()
        } else {
            let path = env_file_path();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(TestEnvError::NotStarted { path });
                }
                Err(source) => return Err(TestEnvError::Unreadable { path, source }),
            };
            parse_env_file(&text).map_err(|source| TestEnvError::Malformed { path, source })?
        };
        Self::from_vars(vars, components)
    }

    /// Builds the environment from variables (as the env file sets them),
    /// checking that `components` are present and reachable.
    pub fn from_vars(
        vars: BTreeMap<String, String>,
        components: &[Part],
    ) -> Result<TestEnv, TestEnvError> {
        let env = TestEnv {
            vars,
            components: components.to_vec(),
        };
        for &component in components {
            let var = component.endpoint_var();
            let value = env
                .var(var)
                .ok_or(TestEnvError::Missing { component, var })?;
            let addr = socket_addr_of(value).ok_or_else(|| TestEnvError::BadEndpoint {
                component,
                var,
                value: value.to_owned(),
            })?;
            check_reachable(&addr).map_err(|source| TestEnvError::Unreachable {
                component,
                addr: addr.clone(),
                source,
            })?;
        }
        if components.contains(&Part::Kubernetes) && env.var("KUBECONFIG").is_none() {
            return Err(TestEnvError::Missing {
                component: Part::Kubernetes,
                var: "KUBECONFIG",
            });
        }
        Ok(env)
    }

    /// A variable of the environment (as `target/testenv/env` exports it).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn expect_var(&self, component: Part, name: &str) -> &str {
        assert!(
            self.components.contains(&component),
            "{component} was not asked for: use TestEnv::get_for(&[Part::{component:?}, ..])"
        );
        self.var(name)
            .unwrap_or_else(|| panic!("{name} is not set although {component} was checked"))
    }

    /// Path of the admin kubeconfig of the test cluster.
    pub fn kubeconfig(&self) -> PathBuf {
        PathBuf::from(self.expect_var(Part::Kubernetes, "KUBECONFIG"))
    }

    /// `https://127.0.0.1:PORT` of the kube-apiserver.
    pub fn kube_apiserver(&self) -> &str {
        self.expect_var(Part::Kubernetes, "PRAPI_KUBE_APISERVER")
    }

    /// Names of the fake (kwok) nodes pods are scheduled on.
    pub fn kwok_nodes(&self) -> Vec<String> {
        self.expect_var(Part::Kubernetes, "PRAPI_KWOK_NODES")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// `host:port` list for Kafka clients.
    pub fn kafka_bootstrap_servers(&self) -> &str {
        self.expect_var(Part::Kafka, "KAFKA_BOOTSTRAP_SERVERS")
    }

    /// The secured listeners of the test Kafka as Kafka client Secrets (docs/updater.md, "Kafka
    /// security"): `sasl-plain` and `sasl-scram` (SASL_PLAINTEXT, PLAIN and SCRAM-SHA-512 users)
    /// and `mtls` (SSL, client certificate required), each with the key/value pairs a Secret
    /// holds. Panics when the environment file names a certificate file that cannot be read.
    pub fn kafka_secured_listeners(&self) -> Vec<SecuredListener> {
        let var = |name: &'static str| self.expect_var(Part::Kafka, name);
        let sasl = |mechanism: &str, user: &'static str, password: &'static str| {
            BTreeMap::from(
                [
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", mechanism),
                    ("sasl.username", var(user)),
                    ("sasl.password", var(password)),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let file = |name: &'static str| {
            let path = var(name);
            std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("{name}={path} cannot be read: {e}"))
        };
        vec![
            SecuredListener {
                name: "sasl-plain",
                bootstrap_servers: var("KAFKA_SASL_BOOTSTRAP_SERVERS").to_string(),
                secret: sasl(
                    "PLAIN",
                    "KAFKA_SASL_PLAIN_USERNAME",
                    "KAFKA_SASL_PLAIN_PASSWORD",
                ),
            },
            SecuredListener {
                name: "sasl-scram",
                bootstrap_servers: var("KAFKA_SASL_BOOTSTRAP_SERVERS").to_string(),
                secret: sasl(
                    "SCRAM-SHA-512",
                    "KAFKA_SASL_SCRAM_USERNAME",
                    "KAFKA_SASL_SCRAM_PASSWORD",
                ),
            },
            SecuredListener {
                name: "mtls",
                bootstrap_servers: var("KAFKA_TLS_BOOTSTRAP_SERVERS").to_string(),
                secret: BTreeMap::from([
                    ("security.protocol".to_string(), "SSL".to_string()),
                    ("ca.crt".to_string(), file("KAFKA_TLS_CA_FILE")),
                    ("tls.crt".to_string(), file("KAFKA_TLS_CERT_FILE")),
                    ("tls.key".to_string(), file("KAFKA_TLS_KEY_FILE")),
                ]),
            },
        ]
    }

    /// Endpoint URL for the DynamoDB client.
    pub fn dynamodb_endpoint(&self) -> &str {
        self.expect_var(Part::DynamoDb, "AWS_ENDPOINT_URL_DYNAMODB")
    }

    /// Endpoint URL for the Application Auto Scaling client.
    pub fn application_autoscaling_endpoint(&self) -> &str {
        self.expect_var(
            Part::ApplicationAutoScaling,
            "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING",
        )
    }

    /// AWS region the emulators are addressed with.
    pub fn aws_region(&self) -> &str {
        self.var("AWS_REGION").unwrap_or("us-east-1")
    }

    /// Access key id the emulators accept (any is accepted).
    pub fn aws_access_key_id(&self) -> &str {
        self.var("AWS_ACCESS_KEY_ID").unwrap_or("testenv")
    }

    /// Secret access key the emulators accept (any is accepted).
    pub fn aws_secret_access_key(&self) -> &str {
        self.var("AWS_SECRET_ACCESS_KEY").unwrap_or("testenv")
    }
}

/// A secured listener of the test Kafka and the Kafka client Secret that connects to it.
#[derive(Clone, Debug)]
pub struct SecuredListener {
    /// `sasl-plain`, `sasl-scram` or `mtls`.
    pub name: &'static str,
    /// Its `host:port`.
    pub bootstrap_servers: String,
    /// The Secret's keys and values.
    pub secret: BTreeMap<String, String>,
}

/// `target/testenv/env` of this workspace, or `$PRAPI_TESTENV_DIR/env`.
pub fn env_file_path() -> PathBuf {
    match std::env::var_os("PRAPI_TESTENV_DIR") {
        Some(dir) => PathBuf::from(dir).join("env"),
        None => workspace_root().join("target").join("testenv").join("env"),
    }
}

/// The workspace root: this crate lives in `<root>/e2e`.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// A name no other test, test binary or earlier run uses: the environment is
/// shared, so tests create their namespaces, topics and tables under such
/// names. Lowercase letters, digits and `-`, at most 40 characters, valid as a
/// Kubernetes namespace, a Kafka topic and a DynamoDB table name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(12)
        .collect();
    let prefix = if prefix.is_empty() {
        "t".to_owned()
    } else {
        prefix
    };
    format!(
        "{prefix}-{:x}-{:x}-{n:x}",
        std::process::id(),
        (secs << 8) ^ u64::from(nanos >> 20)
    )
}

/// `host:port` of an endpoint: a URL (`http://h:p/...`) or a `host:port`
/// list, of which the first entry is taken.
pub fn socket_addr_of(endpoint: &str) -> Option<String> {
    let rest = match endpoint.split_once("://") {
        Some((_, rest)) => rest,
        None => endpoint,
    };
    let first = rest.split(',').next()?.trim();
    let authority = first.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some(authority.to_owned())
}

fn check_reachable(addr: &str) -> std::io::Result<()> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn socket_addr_of_urls_and_lists() {
        assert_eq!(
            socket_addr_of("http://127.0.0.1:4567").as_deref(),
            Some("127.0.0.1:4567")
        );
        assert_eq!(
            socket_addr_of("https://127.0.0.1:6443/api").as_deref(),
            Some("127.0.0.1:6443")
        );
        assert_eq!(
            socket_addr_of("127.0.0.1:9092,127.0.0.1:9093").as_deref(),
            Some("127.0.0.1:9092")
        );
        assert_eq!(socket_addr_of("127.0.0.1"), None);
        assert_eq!(socket_addr_of("http://:80"), None);
        assert_eq!(socket_addr_of("host:notaport"), None);
        assert_eq!(socket_addr_of(""), None);
    }

    #[test]
    fn unique_names_differ_and_are_valid_names() {
        let a = unique_name("Smoke_Test!");
        let b = unique_name("Smoke_Test!");
        assert_ne!(a, b);
        for name in [
            &a,
            &b,
            &unique_name(""),
            &unique_name("a-very-long-prefix-indeed"),
        ] {
            assert!(name.len() <= 40, "{name} is too long");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name} has characters outside [a-z0-9-]"
            );
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()));
        }
        assert!(a.starts_with("smoketest-"));
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn from_vars_reports_a_missing_component() {
        let err = TestEnv::from_vars(vars(&[]), &[Part::Kafka]).expect_err("no kafka var");
        assert!(matches!(
            err,
            TestEnvError::Missing {
                component: Part::Kafka,
                var: "KAFKA_BOOTSTRAP_SERVERS"
            }
        ));
    }

    #[test]
    fn from_vars_reports_an_unreachable_component() {
        // A port that was free a moment ago: nothing listens on it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port")
            .port();
        let err = TestEnv::from_vars(
            vars(&[(
                "AWS_ENDPOINT_URL_DYNAMODB",
                &format!("http://127.0.0.1:{port}"),
            )]),
            &[Part::DynamoDb],
        )
        .expect_err("nothing listens");
        assert!(matches!(err, TestEnvError::Unreachable { .. }), "{err:?}");
    }

    #[test]
    fn from_vars_rejects_a_bad_endpoint() {
        let err = TestEnv::from_vars(
            vars(&[("KAFKA_BOOTSTRAP_SERVERS", "kafka")]),
            &[Part::Kafka],
        )
        .expect_err("no port");
        assert!(matches!(err, TestEnvError::BadEndpoint { .. }), "{err:?}");
    }

    #[test]
    fn from_vars_accepts_reachable_components_and_serves_their_endpoints() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let env = TestEnv::from_vars(
            vars(&[
                ("KAFKA_BOOTSTRAP_SERVERS", &addr.to_string()),
                ("AWS_ENDPOINT_URL_DYNAMODB", &format!("http://{addr}")),
                ("AWS_REGION", "eu-central-1"),
            ]),
            &[Part::Kafka, Part::DynamoDb],
        )
        .expect("both reachable");
        assert_eq!(env.kafka_bootstrap_servers(), addr.to_string());
        assert_eq!(env.dynamodb_endpoint(), format!("http://{addr}"));
        assert_eq!(env.aws_region(), "eu-central-1");
        assert_eq!(env.aws_access_key_id(), "testenv");
    }

    #[test]
    #[should_panic(expected = "was not asked for")]
    fn endpoints_of_components_not_asked_for_panic() {
        let env = TestEnv::from_vars(vars(&[("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")]), &[])
            .expect("nothing to check");
        let _ = env.kafka_bootstrap_servers();
    }

    #[test]
    fn errors_read_as_a_chain() {
        let err = TestEnvError::Unreachable {
            component: Part::Kafka,
            addr: "127.0.0.1:1".to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        };
        assert_eq!(
            error_chain(&err),
            "Kafka at 127.0.0.1:1 does not answer (stale target/testenv/env?): refused"
        );
    }
}

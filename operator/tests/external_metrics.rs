//! The external metrics API (`external.metrics.k8s.io/v1beta1`) over real TLS with certificates
//! made here: only the front proxy gets in (right CA and name; wrong CA, wrong name, no
//! certificate refused), the discovery documents, values from a real Kafka consumer group with
//! known lag, and the whole path through the test environment's kube-apiserver to a real
//! `prapi-operator run`.

mod support;

use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use prapi_e2e::{Part, TestEnv, unique_name};
use prapi_operator::aws::LagReading;
use prapi_operator::aws::lag::{ConsumerGroupRef, KafkaLag, LagSource};
use prapi_operator::external_metrics::Server;
use prapi_operator::external_metrics::api::ApiState;
use prapi_operator::external_metrics::auth::{Caller, FrontProxy, ServingCert};
use prapi_operator::external_metrics::authz::Authorizer;
use prapi_operator::external_metrics::readings::{Groups, Readings, ServedGroup};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::eventually;
use tokio::net::{TcpListener, TcpStream};

const LAG: &str = "prapi_updater_consumer_lag";
const V1BETA1: &str = "/apis/external.metrics.k8s.io/v1beta1";

fn ca(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("CA")
}

/// A certificate and its key, DER and PEM.
struct Leaf {
    der: ServingCert,
    cert_pem: String,
    key_pem: String,
}

impl std::ops::Deref for Leaf {
    type Target = ServingCert;
    fn deref(&self) -> &ServingCert {
        &self.der
    }
}

/// A certificate signed by `ca`: a client certificate with common name `cn`, or a server
/// certificate for `names`.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str, names: &[&str], client: bool) -> Leaf {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, ca).expect("sign");
    Leaf {
        der: ServingCert {
            chain: vec![cert.der().to_vec()],
            key: key.serialize_der(),
        },
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn front_proxy(ca: &CertifiedIssuer<'static, KeyPair>) -> FrontProxy {
    FrontProxy {
        client_ca: vec![ca.der().to_vec()],
        allowed_names: vec!["front-proxy-client".into()],
        username_headers: vec!["X-Remote-User".into()],
        group_headers: vec!["X-Remote-Group".into()],
    }
}

/// Groups the test names, all in one namespace.
struct Fixed(Vec<ServedGroup>);

#[async_trait::async_trait]
impl Groups for Fixed {
    async fn in_namespace(&self, _: &str) -> Result<Vec<ServedGroup>, kube::Error> {
        Ok(self.0.clone())
    }
}

/// Lag the test sets per consumer group.
struct SetLag(Vec<(String, LagReading)>);

#[async_trait::async_trait]
impl LagSource for SetLag {
    async fn lag(&self, g: &ConsumerGroupRef) -> LagReading {
        self.0
            .iter()
            .find(|(name, _)| *name == g.group)
            .map(|(_, l)| l.clone())
            .unwrap_or(LagReading::Unknown("no such group".into()))
    }
}

/// Allows everyone but `denied`.
struct AllowAllBut(&'static str);

#[async_trait::async_trait]
impl Authorizer for AllowAllBut {
    async fn may_read(&self, caller: &Caller, _: &str, _: &str) -> Result<bool, String> {
        Ok(caller.user != self.0)
    }
}

struct Running {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(
    groups: Arc<dyn Groups>,
    lag: Arc<dyn LagSource>,
    serving: &ServingCert,
    proxy: Option<FrontProxy>,
) -> Running {
    prapi_operator::run::install_crypto_provider();
    let state = ApiState {
        groups,
        readings: Readings::new(lag, Duration::from_secs(1)),
        authorizer: Arc::new(AllowAllBut("mallory")),
        proxy: arc_swap::ArcSwapOption::empty(),
    };
    let server = Server::new(state, serving).expect("server");
    server.trust(proxy, serving).expect("trust");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        port,
        stop: Some(stop),
    }
}

/// One GET over TLS, trusting `server_ca`, with `client` as the client certificate and `user`
/// in `X-Remote-User`; `Err` when TLS or HTTP fails.
async fn get(
    port: u16,
    server_ca: &CertifiedIssuer<'static, KeyPair>,
    client: Option<&ServingCert>,
    path: &str,
    user: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(server_ca.der().clone())
        .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                c.chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::try_from(c.key.clone())?,
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("localhost").map_err(|e| e.to_string())?,
            tcp,
        )
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "localhost");
    if let Some(u) = user {
        req = req
            .header("X-Remote-User", u)
            .header("X-Remote-Group", "system:authenticated");
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| format!("HTTP body: {e}"))?
        .to_bytes();
    let json = serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e}): {body:?}"))?;
    Ok((status, json))
}

fn served(name: &str, group: &str, topics: &[&str], bootstrap: &str) -> ServedGroup {
    ServedGroup::new(
        name,
        ConsumerGroupRef {
            bootstrap_servers: bootstrap.into(),
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            security: None,
        },
    )
}

fn selector_path(ns: &str, group: &str) -> String {
    format!("{V1BETA1}/namespaces/{ns}/{LAG}?labelSelector=app_kubernetes_io_instance%3D{group}")
}

#[tokio::test]
async fn only_the_front_proxy_gets_in() {
    let server_ca = ca("serving-ca");
    let serving = leaf(&server_ca, "api", &["localhost"], false);
    let proxy_ca = ca("front-proxy-ca");
    let proxy = leaf(&proxy_ca, "front-proxy-client", &[], true);
    let other_name = leaf(&proxy_ca, "someone-else", &[], true);
    let other_ca = leaf(&ca("another-ca"), "front-proxy-client", &[], true);
    let groups = Arc::new(Fixed(vec![served(
        "dach",
        "dach-updater",
        &["p"],
        "kafka:9092",
    )]));
    let lag = Arc::new(SetLag(vec![("dach-updater".into(), LagReading::Known(7))]));
    let api = start(
        groups.clone(),
        lag.clone(),
        &serving,
        Some(front_proxy(&proxy_ca)),
    )
    .await;
    let path = selector_path("shop", "dach");
    let hpa = Some("system:serviceaccount:kube-system:horizontal-pod-autoscaler");

    let (code, body) = get(api.port, &server_ca, Some(&proxy), &path, hpa)
        .await
        .expect("allowed");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][0]["value"], "7", "{body}");

    let (code, body) = get(api.port, &server_ca, Some(&other_name), &path, hpa)
        .await
        .expect("a wrong name still completes TLS");
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("someone-else"),
        "{body}"
    );

    let (code, body) = get(api.port, &server_ca, None, &path, hpa)
        .await
        .expect("no certificate");
    assert_eq!(code, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("client certificate"),
        "{body}"
    );

    // Headers alone, without the proxy's certificate, are nobody.
    let (code, _) = get(api.port, &server_ca, None, V1BETA1, hpa)
        .await
        .expect("no certificate");
    assert_eq!(code, 401);

    let refused = get(api.port, &server_ca, Some(&other_ca), &path, hpa).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA must fail TLS: {refused:?}"
    );

    let (code, body) = get(api.port, &server_ca, Some(&proxy), &path, None)
        .await
        .expect("no user");
    assert_eq!(
        (code, body["message"].as_str()),
        (401, Some("the front proxy named no user"))
    );

    // Before the front proxy's CA is known nobody gets in, not even the right certificate.
    let blind = start(groups, lag, &serving, None).await;
    let (code, body) = get(blind.port, &server_ca, None, &path, hpa)
        .await
        .expect("TLS");
    assert_eq!(code, 401, "{body}");
}

#[tokio::test]
async fn discovery_documents_are_shaped_as_the_aggregator_reads_them() {
    let server_ca = ca("serving-ca");
    let serving = leaf(&server_ca, "api", &["localhost"], false);
    let proxy_ca = ca("front-proxy-ca");
    let proxy = leaf(&proxy_ca, "front-proxy-client", &[], true);
    let api = start(
        Arc::new(Fixed(Vec::new())),
        Arc::new(SetLag(Vec::new())),
        &serving,
        Some(front_proxy(&proxy_ca)),
    )
    .await;
    let fetch = |path: &'static str| {
        let (server_ca, proxy) = (&server_ca, &proxy);
        async move {
            get(api.port, server_ca, Some(proxy), path, Some("admin"))
                .await
                .expect("GET")
        }
    };
    let version = json!({"groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1"});
    let group = json!({
        "name": "external.metrics.k8s.io",
        "versions": [version],
        "preferredVersion": version,
    });
    let mut expected_group = group.clone();
    expected_group["apiVersion"] = json!("v1");
    expected_group["kind"] = json!("APIGroup");
    assert_eq!(
        fetch("/apis").await,
        (
            200,
            json!({"apiVersion": "v1", "kind": "APIGroupList", "groups": [group]})
        )
    );
    assert_eq!(
        fetch("/apis/external.metrics.k8s.io").await,
        (200, expected_group)
    );
    assert_eq!(
        fetch(V1BETA1).await,
        (
            200,
            json!({
                "apiVersion": "v1",
                "kind": "APIResourceList",
                "groupVersion": "external.metrics.k8s.io/v1beta1",
                "resources": [{
                    "name": LAG,
                    "singularName": "",
                    "namespaced": true,
                    "kind": "ExternalMetricValueList",
                    "verbs": ["get"],
                }],
            })
        )
    );
    let (code, body) = fetch("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!((code, &body["reason"]), (404, &json!("NotFound")));
}

#[tokio::test]
async fn values_come_from_a_real_consumer_group() {
    let Some(env) = TestEnv::get_for(&[Part::Kafka]) else {
        return;
    };
    let bootstrap = env.kafka_bootstrap_servers().to_string();
    // 40 messages over 4 partitions (10 each) and 8 over 4 (2 each).
    let products = support::kafka::topic_with(&bootstrap, 4, 40).await;
    let offers = support::kafka::topic_with(&bootstrap, 4, 8).await;
    let group = unique_name("prapi-updater");
    // Lag: products 7 + 10 + 0 + 5, offers nothing committed: 8. Total 30.
    support::kafka::commit(&bootstrap, &group, &products, &[(0, 3), (2, 10), (3, 5)]);
    let server_ca = ca("serving-ca");
    let serving = leaf(&server_ca, "api", &["localhost"], false);
    let proxy_ca = ca("front-proxy-ca");
    let proxy = leaf(&proxy_ca, "front-proxy-client", &[], true);
    let groups = Arc::new(Fixed(vec![
        served("dach", &group, &[&products, &offers], &bootstrap),
        served("nordics", "nordics-updater", &["no-such-topic"], &bootstrap),
    ]));
    let api = start(
        groups,
        Arc::new(KafkaLag::default()),
        &serving,
        Some(front_proxy(&proxy_ca)),
    )
    .await;
    let user = Some("admin");

    // Right after the topics are filled the broker can answer before its view of them is
    // complete: ask until the known lag shows (each answer is at most 1 s old).
    let body = eventually("the group's known lag of 30", || async {
        let (code, body) = get(
            api.port,
            &server_ca,
            Some(&proxy),
            &selector_path("shop", "dach"),
            user,
        )
        .await
        .ok()?;
        (code == 200 && body["items"][0]["value"] == "30").then_some(body)
    })
    .await;
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["apiVersion"], "external.metrics.k8s.io/v1beta1");
    let item = &body["items"][0];
    assert_eq!(item["metricName"], LAG);
    assert_eq!(
        item["metricLabels"],
        json!({"app_kubernetes_io_instance": "dach", "consumer_group": group})
    );
    assert!(
        item["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{item}"
    );
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));

    // A lag that cannot be read is an error that says why, never a zero.
    let (code, body) = get(
        api.port,
        &server_ca,
        Some(&proxy),
        &selector_path("shop", "nordics"),
        user,
    )
    .await
    .expect("GET");
    assert_eq!(
        (code, &body["reason"]),
        (503, &json!("ServiceUnavailable")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nordics-updater"),
        "{body}"
    );

    // A selector that matches nothing: an empty list. One the API cannot read: 400.
    let (code, body) = get(
        api.port,
        &server_ca,
        Some(&proxy),
        &selector_path("shop", "benelux"),
        user,
    )
    .await
    .expect("GET");
    assert_eq!((code, &body["items"]), (200, &json!([])));
    let path = format!(
        "{V1BETA1}/namespaces/shop/{LAG}?labelSelector=app_kubernetes_io_instance%20in%20(dach)"
    );
    let (code, body) = get(api.port, &server_ca, Some(&proxy), &path, user)
        .await
        .expect("GET");
    assert_eq!(
        (code, &body["reason"]),
        (400, &json!("BadRequest")),
        "{body}"
    );
    let path = format!("{V1BETA1}/namespaces/shop/some_other_metric");
    let (code, _) = get(api.port, &server_ca, Some(&proxy), &path, user)
        .await
        .expect("GET");
    assert_eq!(code, 404);
}

/// Deletes the APIService when dropped, so a failed test leaves no aggregated API behind. Drop
/// cannot await, and the test's client lives on the test's runtime, which Drop blocks: a thread
/// with a runtime and a client of its own does the delete.
struct Registered(std::path::PathBuf);

impl Drop for Registered {
    fn drop(&mut self) {
        let kubeconfig = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let config = kube::config::Kubeconfig::read_from(&kubeconfig).ok()?;
                let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                    .await
                    .ok()?;
                let client = kube::Client::try_from(config).ok()?;
                let api: Api<DynamicObject> = Api::all_with(client, &apiservice_resource());
                api.delete("v1beta1.external.metrics.k8s.io", &DeleteParams::default())
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn apiservice_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    )
}

/// The whole path: kube-apiserver's aggregator forwards `external.metrics.k8s.io` to a real
/// `prapi-operator run`, which authenticates the front proxy with the CA it reads from
/// `kube-system/extension-apiserver-authentication`, lists the MarketGroup and reads its lag from
/// Kafka. The test environment has no pod network, so the APIService's Service is an
/// ExternalName Service for `localhost`, which kube-apiserver (without aggregator routing)
/// resolves to the operator on the host; the chart's ClusterIP Service is proven on kind.
#[tokio::test]
async fn the_api_server_forwards_lag_reads_to_the_operator() {
    let Some(c) = support::cluster().await else {
        return;
    };
    let Some(kafka_env) = TestEnv::get_for(&[Part::Kubernetes, Part::Kafka]) else {
        return;
    };
    let bootstrap = kafka_env.kafka_bootstrap_servers().to_string();
    let ns = c.namespace("em").await;
    let products = format!("{ns}-products");
    let offers = format!("{ns}-offers");
    support::kafka::create_topics(&bootstrap, &[&products, &offers], 4).await;
    support::kafka::produce(&bootstrap, &products, 4, 12).await;
    let spec = json!({
        "countries": ["de"],
        "updater": {"kafka": {"bootstrapServers": bootstrap, "productsTopic": products,
                              "offersTopic": offers, "partitions": 4}},
    });
    let manifest = support::group(&ns, "g", spec);
    support::create_group(&c.client, &ns, &manifest).await;

    // The serving certificate kube-apiserver checks: for the Service's DNS name, from a CA the
    // APIService names.
    let server_ca = ca("serving-ca");
    let svc_name = "prapi-external-metrics";
    let dns = format!("{svc_name}.{ns}.svc");
    let serving = leaf(&server_ca, &dns, &[&dns], false);
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, serving.cert_pem.as_bytes()).expect("write cert");
    std::fs::write(&key_file, serving.key_pem.as_bytes()).expect("write key");
    let op = support::Operator::start(
        &c.env,
        &ns,
        "op",
        &[
            "--updater-autoscaler",
            "hpa",
            "--external-metrics-cert-file",
            cert_file.to_str().expect("utf-8 path"),
            "--external-metrics-key-file",
            key_file.to_str().expect("utf-8 path"),
        ],
    );
    op.wait_up().await;

    // Nothing serves the metric yet: the group says why its updater cannot scale.
    let autoscaling = |status: &'static str, reason: &'static str| {
        let (client, ns) = (c.client.clone(), ns.to_string());
        async move {
            eventually(&format!("AutoscalingActive {status} {reason}"), || async {
                let mg = Api::<prapi_operator::crd::MarketGroup>::namespaced(client.clone(), &ns)
                    .get("g")
                    .await
                    .ok()?;
                let c = support::condition(&mg, "AutoscalingActive")?.clone();
                (c.status == status && c.reason == reason).then_some(c)
            })
            .await
        }
    };
    let missing = autoscaling("False", "FailedGetExternalMetric").await;
    assert!(missing.message.contains(LAG), "{missing:?}");

    let services: Api<Service> = Api::namespaced(c.client.clone(), &ns);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": svc_name},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    }))
    .expect("service");
    services
        .create(&Default::default(), &svc)
        .await
        .expect("create Service");
    let apiservices: Api<DynamicObject> = Api::all_with(c.client.clone(), &apiservice_resource());
    let _registered = Registered(c.env.kubeconfig());
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(server_ca.pem().into_bytes()))
        .expect("base64");
    let apiservice = json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
        "spec": {
            "group": "external.metrics.k8s.io", "version": "v1beta1",
            "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"name": svc_name, "namespace": ns.to_string(), "port": op.external_metrics_port},
            "caBundle": ca_bundle,
        },
    });
    apiservices
        .patch(
            "v1beta1.external.metrics.k8s.io",
            &PatchParams::apply("prapi-operator-tests").force(),
            &Patch::Apply(&apiservice),
        )
        .await
        .expect("register the APIService");
    eventually("the APIService Available", || async {
        let a = apiservices
            .get("v1beta1.external.metrics.k8s.io")
            .await
            .ok()?;
        let conditions = a.data.pointer("/status/conditions")?.as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Available" && c["status"] == "True")
            .then_some(())
    })
    .await;

    // The updater group has committed nothing: its lag is the 12 messages.
    let mg = Api::<prapi_operator::crd::MarketGroup>::namespaced(c.client.clone(), &ns)
        .get("g")
        .await
        .expect("group");
    let plan = prapi_operator::validate::plan(&mg, "", &ns).expect("valid plan");
    let path = selector_path(&ns, "g");
    let body = eventually("the lag through kube-apiserver", || async {
        let req = http::Request::get(&path).body(Vec::new()).ok()?;
        match c.client.request::<Value>(req).await {
            Ok(body) if body["items"][0]["value"] == "12" => Some(body),
            other => {
                eprintln!("GET {path} through kube-apiserver: {other:?}");
                None
            }
        }
    })
    .await;
    assert_eq!(
        body["items"][0]["metricLabels"],
        json!({"app_kubernetes_io_instance": "g", "consumer_group": plan.updater.consumer_group})
    );
    // Discovery through the aggregator lists the metric.
    let req = http::Request::get(V1BETA1)
        .body(Vec::new())
        .expect("request");
    let resources: Value = c
        .client
        .request(req)
        .await
        .expect("discovery through kube-apiserver");
    assert_eq!(resources["resources"][0]["name"], LAG);
    // The HPA controller reads it too, and the group shows that.
    autoscaling("True", "ValidMetricFound").await;
}

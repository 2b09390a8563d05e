//! Kafka security on the test environment: the operator reads a group's Kafka client Secret
//! through the API and reads the updater's lag over the SASL (PLAIN, SCRAM) and mTLS listeners
//! with it; a group whose Secret is missing or incomplete is Degraded with a reason and nothing is
//! applied until the Secret is right, then the updater mounts it.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use prapi_e2e::{Part, SecuredListener, TestEnv, unique_name};
use prapi_operator::aws::LagReading;
use prapi_operator::aws::lag::{ConsumerGroupRef, KafkaLag, LagSource};
use prapi_operator::crd::MarketGroup;
use prapi_operator::render::workloads::{ANNOTATION_KAFKA_CLIENT_VERSION, KAFKA_CLIENT_DIR};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;

fn secret(name: &str, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(data.clone()),
        ..Default::default()
    }
}

fn listeners(env: &TestEnv) -> Vec<SecuredListener> {
    env.kafka_secured_listeners()
}

#[tokio::test]
async fn the_lag_reader_reads_over_sasl_plain_sasl_scram_and_mtls_with_the_secret_from_the_api() {
    let Some(c) = cluster().await else { return };
    let Some(env) = TestEnv::get_for(&[Part::Kafka, Part::Kubernetes]) else {
        return;
    };
    let ns = c.namespace("mg-kafka-lag").await;
    // Topic, messages and the group's commit go through the plaintext listener: the same broker.
    let plain = env.kafka_bootstrap_servers().to_string();
    let topic = support::kafka::topic_with(&plain, 2, 30).await;
    let group = unique_name("prapi-updater");
    support::kafka::commit(&plain, &group, &topic, &[(0, 5)]);
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let lag = KafkaLag {
        timeout: Duration::from_secs(3),
    };
    for listener in listeners(&env) {
        let name = format!("kafka-{}", listener.name);
        secrets
            .create(&PostParams::default(), &secret(&name, &listener.secret))
            .await
            .expect("create the Secret");
        let client = prapi_operator::kafka_secret::read(&c.client, &ns, &name)
            .await
            .expect("a valid Secret");
        let mut k = ConsumerGroupRef {
            bootstrap_servers: listener.bootstrap_servers.clone(),
            group: group.clone(),
            topics: vec![topic.clone()],
            security: Some(client.secret),
        };
        // 15 messages per partition; partition 0 committed at 5.
        let reading = eventually(&format!("lag over {}", listener.name), || {
            let lag = lag.clone();
            let k = k.clone();
            async move {
                match lag.lag(&k).await {
                    LagReading::Known(25) => Some(LagReading::Known(25)),
                    _ => None,
                }
            }
        })
        .await;
        assert_eq!(reading, LagReading::Known(25), "{}", listener.name);
        // Without the Secret's settings the listener does not answer: they were used above.
        k.security = None;
        assert!(
            matches!(lag.lag(&k).await, LagReading::Unknown(_)),
            "{}: lag read without credentials",
            listener.name
        );
    }
}

#[tokio::test]
async fn a_group_is_degraded_until_its_kafka_secret_is_complete_then_the_updater_mounts_it() {
    let Some(c) = cluster().await else { return };
    let ns = c.namespace("mg-kafka-secret").await;
    // A short resync: Secrets are not watched, a fixed one is noticed at the next look.
    let _op = Operator::start(
        &c.env,
        &ns,
        "op-a",
        &["--updater-autoscaler", "hpa", "--resync-seconds", "2"],
    );
    let spec = json!({
        "countries": ["de"],
        "updater": {"kafka": {"clientSecretName": "kafka-client"}},
    });
    create_group(&c.client, &ns, &group(&ns, "g", spec)).await;
    let groups: Api<MarketGroup> = Api::namespaced(c.client.clone(), &ns);
    let degraded = |reason: &'static str| {
        let groups = groups.clone();
        async move {
            eventually(&format!("Degraded {reason}"), || async {
                let mg = groups.get("g").await.ok()?;
                let d = condition(&mg, "Degraded")?;
                (d.status == "True" && d.reason == reason).then(|| d.message.clone())
            })
            .await
        }
    };
    let message = degraded("KafkaSecretMissing").await;
    assert_eq!(
        message,
        "Kafka client Secret kafka-client does not exist in the group's namespace"
    );
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    assert!(
        deployments
            .get_opt("g-updater")
            .await
            .expect("get")
            .is_none(),
        "nothing is applied while the Secret is missing"
    );

    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &ns);
    let mut data = BTreeMap::from([
        ("security.protocol".to_string(), "SASL_SSL".to_string()),
        ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        ("sasl.username".to_string(), "prapi".to_string()),
    ]);
    secrets
        .create(&PostParams::default(), &secret("kafka-client", &data))
        .await
        .expect("create the Secret");
    let message = degraded("KafkaSecretInvalid").await;
    assert_eq!(
        message,
        "Kafka client Secret kafka-client: key sasl.password is missing (with a SASL_* \
         security.protocol)"
    );

    data.insert("sasl.password".into(), "not-in-any-object".into());
    let fixed = secrets
        .patch(
            "kafka-client",
            &PatchParams::apply("prapi-operator-tests").force(),
            &Patch::Apply(&json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "kafka-client"},
                "stringData": data,
            })),
        )
        .await
        .expect("complete the Secret");
    // Applied once the Secret is complete. (Not Ready: the password is not the test
    // environment's, so no lag can be read and the bootstrap gate stays closed, as it should.)
    let updater = eventually("the updater applied with the Secret complete", || async {
        let mg = groups.get("g").await.ok()?;
        (condition(&mg, "Degraded")?.status == "False").then_some(())?;
        deployments.get_opt("g-updater").await.ok()?
    })
    .await;
    let template = updater.spec.expect("spec").template;
    let pod = template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--kafka-client-secret-dir")
        .expect("the flag");
    assert_eq!(args[at + 1], KAFKA_CLIENT_DIR);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "kafka-client")
        .expect("the Secret's volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("kafka-client")
    );
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "kafka-client"
                && m.mount_path == KAFKA_CLIENT_DIR
                && m.read_only == Some(true))
    );
    assert_eq!(
        template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(ANNOTATION_KAFKA_CLIENT_VERSION).cloned()),
        fixed.metadata.resource_version
    );
    // No secret value reached an object the operator wrote.
    let objects: Vec<_> = children(&c.client, &ns, "g", &core_kinds())
        .await
        .into_values()
        .collect();
    let written = serde_json::to_string(&objects).expect("serialize");
    assert!(!written.contains("not-in-any-object"));
}

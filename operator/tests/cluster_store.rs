//! The store step inside the real operator on the test cluster (`--store aws`): StoreReady joins
//! Ready; DynamoDB going away sets Degraded with the AWS error code and coming back recovers
//! without manual steps; deletion with `deletionPolicy: Delete` removes the table before the
//! finalizer goes. DynamoDB is a dynalite of the test's own (so stopping it disturbs nobody),
//! Application Auto Scaling is the environment's moto, the updater's lag is read from its Kafka.

mod aws_support;
mod support;

use aws_support::{OwnDynalite, free_port};
use kube::api::{Api, DeleteParams};
use prapi_e2e::{Part, TestEnv};
use prapi_operator::crd::MarketGroup;
use serde_json::json;
use support::*;

async fn table_names(url: &str) -> Vec<String> {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testenv", "testenv", None, None, "test",
        ))
        .load()
        .await;
    let c = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&conf)
            .endpoint_url(url)
            .build(),
    );
    c.list_tables()
        .send()
        .await
        .map(|o| o.table_names().to_vec())
        .unwrap_or_default()
}

#[tokio::test]
async fn store_ready_degraded_on_outage_recovery_and_deletion() {
    let Some(c) = cluster().await else {
        return;
    };
    let Some(env) =
        TestEnv::get_for(&[Part::Kubernetes, Part::Kafka, Part::ApplicationAutoScaling])
    else {
        return;
    };
    let Some(cli) = OwnDynalite::find_cli() else {
        assert!(
            !std::env::var("PRAPI_REQUIRE_TESTENV").is_ok_and(|v| v == "1"),
            "dynalite is not installed (make testenv installs it)"
        );
        return;
    };
    let mut dynalite = OwnDynalite::start(cli, free_port());
    let ns = c.namespace("st").await;
    let kafka = env.kafka_bootstrap_servers().to_string();
    let products = format!("{ns}-products");
    let offers = format!("{ns}-offers");
    support::kafka::create_topics(&kafka, &[&products, &offers], 1).await;

    let ddb = dynalite.url();
    let aas = env.application_autoscaling_endpoint().to_string();
    let _op = Operator::start_with_env(
        &c.env,
        &ns,
        "op",
        &["--updater-autoscaler", "hpa", "--store", "aws"],
        &[
            ("AWS_ENDPOINT_URL_DYNAMODB", ddb.as_str()),
            ("AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING", aas.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testenv"),
            ("AWS_SECRET_ACCESS_KEY", "testenv"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let spec = json!({
        "countries": ["de"],
        "products": {"replicas": {"min": 1, "max": 2}},
        "batch": {"replicas": {"min": 1, "max": 2}},
        "updater": {"kafka": {"bootstrapServers": kafka, "productsTopic": products,
                              "offersTopic": offers, "partitions": 1}},
        "dynamodb": {"deletionPolicy": "Delete", "read": {"min": 5, "max": 50}, "write": {"min": 5, "max": 50}},
    });
    create_group(&c.client, &ns, &group(&ns, "g", spec)).await;
    let mg = wait_ready(&c.client, &ns, "g").await;
    let store = condition(&mg, "StoreReady").expect("StoreReady");
    assert_eq!(
        (store.status.as_str(), store.reason.as_str()),
        ("True", "TableReady")
    );
    let status = mg.status.clone().expect("status");
    let table = status.table.expect("table status");
    assert_eq!(table.name, format!("prapi-{ns}-g"));
    assert_eq!(table.status.as_deref(), Some("ACTIVE"));
    assert_eq!(status.updater_lag, Some(0));
    assert!(table_names(&ddb).await.contains(&table.name));

    // DynamoDB goes away: Degraded with the AWS error code; StoreReady keeps its last value. A
    // reconcile under way when it went may fail at a later call than the first (its DescribeTable
    // answered): the retries that follow fail at the first.
    dynalite.stop();
    poke(&c.client, &ns, "g", 1).await;
    let mg = eventually("Degraded with the AWS error code", || async {
        let mg = Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get("g")
            .await
            .ok()?;
        condition(&mg, "Degraded")
            .is_some_and(|d| {
                d.status == "True"
                    && d.reason == "ConnectionFailed"
                    && d.message.contains("DynamoDB DescribeTable failed")
            })
            .then_some(mg)
    })
    .await;
    assert_eq!(
        condition(&mg, "StoreReady").map(|s| s.status.as_str()),
        Some("True")
    );

    // Back (empty: dynalite is in memory): the operator's retries recreate the table.
    dynalite.restart();
    eventually("recovered without manual steps", || async {
        let mg = Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get("g")
            .await
            .ok()?;
        (condition(&mg, "Degraded").is_some_and(|d| d.status == "False")
            && condition(&mg, "StoreReady").is_some_and(|s| s.status == "True")
            && condition(&mg, "Ready").is_some_and(|s| s.status == "True"))
        .then_some(())
    })
    .await;
    assert!(table_names(&ddb).await.contains(&table.name));

    // Deletion policy Delete: the table goes before the finalizer.
    Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
        .delete("g", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("group gone", || async {
        Api::<MarketGroup>::namespaced(c.client.clone(), &ns)
            .get_opt("g")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!table_names(&ddb).await.contains(&table.name));
}

//! The store step against the test environment's dynalite (DynamoDB), moto (Application Auto
//! Scaling) and Kafka: tables created, tagged, kept or deleted; foreign tables left alone;
//! scalable targets and policies registered, changed and removed; the bootstrap write floor raised
//! while the updater group lags and restored once it caught up; dynalite down and back.

mod aws_support;
mod support;

use aws_support::OwnDynalite;
use prapi_e2e::{Part, TestEnv, unique_name};
use support::kafka::{commit_all, topic_with};

use async_trait::async_trait;
use prapi_operator::aws::lag::{ConsumerGroupRef, KafkaLag, LagSource};
use prapi_operator::aws::planner::AwsAction;
use prapi_operator::aws::store::{AwsEndpoints, StoreOutcome, StoreStep};
use prapi_operator::aws::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AWS: [Part; 2] = [Part::DynamoDb, Part::ApplicationAutoScaling];

/// A lag the test sets.
struct SetLag(Mutex<LagReading>);

#[async_trait]
impl LagSource for SetLag {
    async fn lag(&self, _: &ConsumerGroupRef) -> LagReading {
        self.0
            .lock()
            .map(|l| l.clone())
            .unwrap_or(LagReading::Unknown("poisoned".into()))
    }
}

fn endpoints(env: &TestEnv, dynamodb: Option<String>) -> AwsEndpoints {
    AwsEndpoints {
        dynamodb: Some(dynamodb.unwrap_or_else(|| env.dynamodb_endpoint().to_string())),
        application_autoscaling: Some(env.application_autoscaling_endpoint().to_string()),
        region: Some(env.aws_region().to_string()),
        credentials: Some((
            env.aws_access_key_id().to_string(),
            env.aws_secret_access_key().to_string(),
        )),
    }
}

fn spec(name: &str, group: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        group: group.into(),
        billing: Billing::Provisioned,
        read: CapacityRange {
            min: 5,
            max: 100,
            target_utilization: 70.0,
        },
        write: CapacityRange {
            min: 5,
            max: 100,
            target_utilization: 70.0,
        },
        bootstrap_write_capacity: 400,
        bootstrap_lag_threshold: 10,
        deletion_policy: DeletionPolicy::Retain,
    }
}

fn kafka_ref(group: &str) -> ConsumerGroupRef {
    ConsumerGroupRef {
        bootstrap_servers: "127.0.0.1:1".into(),
        group: group.into(),
        topics: vec![],
        security: None,
    }
}

async fn step(env: &TestEnv, lag: LagReading) -> (StoreStep, Arc<SetLag>) {
    let lag = Arc::new(SetLag(Mutex::new(lag)));
    let s = StoreStep::from_sdk(endpoints(env, None))
        .await
        .with_lag(lag.clone());
    (s, lag)
}

/// Reconciles until the table is ready (bounded: dynalite takes about half a second per change).
async fn until_ready(s: &StoreStep, spec: &TableSpec, k: &ConsumerGroupRef) -> StoreOutcome {
    let mut last = None;
    for _ in 0..60 {
        let out = s.reconcile(spec, k).await.expect("reconcile");
        let active = out.table.as_ref().is_some_and(|t| t.status == "ACTIVE");
        if out.condition.ready && out.executed.is_empty() && active {
            return out;
        }
        last = Some(out);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("table never became ready: {last:#?}");
}

async fn ddb(env: &TestEnv, url: Option<String>) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testenv", "testenv", None, None, "test",
        ))
        .load()
        .await;
    let c = aws_sdk_dynamodb::config::Builder::from(&conf)
        .endpoint_url(url.unwrap_or_else(|| env.dynamodb_endpoint().to_string()))
        .build();
    aws_sdk_dynamodb::Client::from_conf(c)
}

async fn table_exists(c: &aws_sdk_dynamodb::Client, name: &str) -> bool {
    match c.describe_table().table_name(name).send().await {
        Ok(out) => out
            .table
            .and_then(|t| t.table_status)
            .is_some_and(|s| s.as_str() != "DELETING"),
        Err(e) => {
            assert!(
                e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()),
                "describe failed: {e:?}"
            );
            false
        }
    }
}

#[tokio::test]
async fn table_is_created_tagged_and_kept_or_deleted_per_policy() {
    let Some(env) = TestEnv::get_for(&AWS) else {
        return;
    };
    let (s, _) = step(&env, LagReading::Known(0)).await;
    let client = ddb(&env, None).await;
    for policy in [DeletionPolicy::Retain, DeletionPolicy::Delete] {
        let name = unique_name("prapi-tbl");
        let mut spec = spec(&name, "shop/eu");
        spec.deletion_policy = policy;
        let k = kafka_ref("g");
        let first = s.reconcile(&spec, &k).await.expect("first reconcile");
        assert!(matches!(
            first.executed[..],
            [AwsAction::CreateTable { .. }]
        ));
        assert_eq!(first.condition.reason, "Creating");
        let out = until_ready(&s, &spec, &k).await;
        assert_eq!(out.condition.reason, "TableReady");
        let t = out.table.expect("observed table");
        assert_eq!(t.tags.get(TAG_GROUP).map(String::as_str), Some("shop/eu"));
        assert_eq!(
            t.tags.get(TAG_MANAGED_BY).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(
            t.tags.get(TAG_BOOTSTRAPPED).map(String::as_str),
            Some("true")
        );
        assert_eq!(t.layout_problem(), None);
        assert_eq!((t.read_capacity, t.write_capacity), (5, 5));

        // Deletion: autoscaling always goes; the table per policy.
        let mut done = false;
        for _ in 0..60 {
            done = s.cleanup(&spec).await.expect("cleanup").done;
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(done, "cleanup never finished");
        assert_eq!(
            table_exists(&client, &name).await,
            policy == DeletionPolicy::Retain,
            "{policy:?}"
        );
        if policy == DeletionPolicy::Retain {
            // The same group coming back adopts its retained table.
            let out = until_ready(&s, &spec, &k).await;
            assert_eq!(out.condition.reason, "TableReady");
            client
                .delete_table()
                .table_name(&name)
                .send()
                .await
                .expect("delete the retained table");
        }
    }
}

#[tokio::test]
async fn a_foreign_table_with_the_same_name_is_left_alone() {
    let Some(env) = TestEnv::get_for(&AWS) else {
        return;
    };
    let (s, _) = step(&env, LagReading::Known(0)).await;
    let client = ddb(&env, None).await;
    let name = unique_name("prapi-foreign");
    // Someone else's table: tagged for another group, in on-demand mode.
    let other = spec(&name, "shop/other");
    let (other_step, _) = step(&env, LagReading::Known(0)).await;
    let mut other_ppr = other.clone();
    other_ppr.billing = Billing::PayPerRequest;
    until_ready(&other_step, &other_ppr, &kafka_ref("x")).await;

    let mut mine = spec(&name, "shop/eu");
    mine.deletion_policy = DeletionPolicy::Delete;
    let out = s
        .reconcile(&mine, &kafka_ref("g"))
        .await
        .expect("reconcile");
    assert!(out.executed.is_empty(), "{:?}", out.executed);
    assert_eq!(
        (out.condition.ready, out.condition.reason),
        (false, "TableNotOwned")
    );
    assert!(
        out.condition.message.contains("shop/other"),
        "{}",
        out.condition.message
    );
    assert!(s.cleanup(&mine).await.expect("cleanup").done);
    assert!(
        table_exists(&client, &name).await,
        "a foreign table must survive"
    );
    let d = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .expect("describe");
    let mode = d
        .table
        .and_then(|t| t.billing_mode_summary)
        .and_then(|b| b.billing_mode);
    assert_eq!(
        mode,
        Some(aws_sdk_dynamodb::types::BillingMode::PayPerRequest),
        "untouched"
    );
    // An untagged table is foreign too.
    let bare = unique_name("prapi-bare");
    let (bare_step, _) = step(&env, LagReading::Known(0)).await;
    until_ready(&bare_step, &spec(&bare, "shop/tmp"), &kafka_ref("x")).await;
    let t = ddb(&env, None).await;
    let arn = t
        .describe_table()
        .table_name(&bare)
        .send()
        .await
        .expect("describe")
        .table
        .and_then(|t| t.table_arn)
        .expect("arn");
    t.untag_resource()
        .resource_arn(&arn)
        .tag_keys(TAG_GROUP)
        .send()
        .await
        .expect("untag");
    let out = s
        .reconcile(&spec(&bare, "shop/tmp"), &kafka_ref("g"))
        .await
        .expect("reconcile");
    assert_eq!(out.condition.reason, "TableNotOwned");
    assert!(out.executed.is_empty());
    for n in [&name, &bare] {
        let _ = client.delete_table().table_name(n).send().await;
    }
}

fn target(out: &ScalingState, d: Dimension) -> Option<(i64, i64)> {
    out.targets.get(&d).map(|t| (t.min, t.max))
}

async fn scaling_of(env: &TestEnv, resource: &str) -> ScalingState {
    use prapi_operator::aws::autoscaling::{ScalingApi, SdkScaling};
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testenv", "testenv", None, None, "test",
        ))
        .load()
        .await;
    let c = aws_sdk_applicationautoscaling::config::Builder::from(&conf)
        .endpoint_url(env.application_autoscaling_endpoint())
        .build();
    SdkScaling::new(aws_sdk_applicationautoscaling::Client::from_conf(c))
        .describe(resource)
        .await
        .expect("describe scaling")
}

#[tokio::test]
async fn scalable_targets_and_policies_are_registered_changed_and_removed() {
    let Some(env) = TestEnv::get_for(&AWS) else {
        return;
    };
    let (s, _) = step(&env, LagReading::Known(0)).await;
    let name = unique_name("prapi-aas");
    let mut spec = spec(&name, "shop/eu");
    let k = kafka_ref("g");
    until_ready(&s, &spec, &k).await;
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert_eq!(target(&sc, Dimension::Read), Some((5, 100)));
    assert_eq!(target(&sc, Dimension::Write), Some((5, 100)));
    for d in Dimension::ALL {
        let p = &sc.policies[&d];
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].name, d.policy_name(&name));
        assert_eq!(p[0].target_value, Some(70.0));
        assert_eq!(p[0].metric.as_deref(), Some(d.metric()));
    }

    // Changed: a new read range and write target.
    spec.read.max = 300;
    spec.write.target_utilization = 50.0;
    let out = until_ready(&s, &spec, &k).await;
    assert_eq!(out.condition.reason, "TableReady");
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert_eq!(target(&sc, Dimension::Read), Some((5, 300)));
    assert_eq!(sc.policies[&Dimension::Write][0].target_value, Some(50.0));

    // PayPerRequest: targets go first, then the mode switches.
    spec.billing = Billing::PayPerRequest;
    let out = s.reconcile(&spec, &k).await.expect("switch");
    assert_eq!(
        out.executed,
        vec![
            AwsAction::DeletePolicy {
                dimension: Dimension::Read,
                name: Dimension::Read.policy_name(&name)
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Read
            },
            AwsAction::DeletePolicy {
                dimension: Dimension::Write,
                name: Dimension::Write.policy_name(&name)
            },
            AwsAction::DeregisterTarget {
                dimension: Dimension::Write
            },
            AwsAction::SwitchBilling {
                to: Billing::PayPerRequest,
                read: 0,
                write: 0
            },
        ]
    );
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert!(sc.targets.is_empty() && sc.policies.is_empty(), "{sc:?}");
    let out = until_ready(&s, &spec, &k).await;
    assert_eq!(out.table.map(|t| t.billing), Some(Billing::PayPerRequest));

    // Back to provisioned (allowed at any time), then deletion removes the targets.
    spec.billing = Billing::Provisioned;
    until_ready(&s, &spec, &k).await;
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert_eq!(target(&sc, Dimension::Write), Some((5, 100)));
    spec.deletion_policy = DeletionPolicy::Delete;
    for _ in 0..60 {
        if s.cleanup(&spec).await.expect("cleanup").done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert!(sc.targets.is_empty(), "{sc:?}");
}

#[tokio::test]
async fn bootstrap_floor_is_raised_while_the_updater_lags_and_restored_after() {
    let Some(env) = TestEnv::get_for(&[Part::DynamoDb, Part::ApplicationAutoScaling, Part::Kafka])
    else {
        return;
    };
    let bootstrap = env.kafka_bootstrap_servers().to_string();
    let topic = topic_with(&bootstrap, 2, 40).await;
    let group = unique_name("prapi-updater");
    let k = ConsumerGroupRef {
        bootstrap_servers: bootstrap.clone(),
        group: group.clone(),
        topics: vec![topic.clone()],
        security: None,
    };
    // Right after the topic is created and filled, the broker can answer before the group's view
    // of it is complete (seen once in `make test`): read until the 40 messages show, then go on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut lag = KafkaLag::default().lag(&k).await;
    while lag != LagReading::Known(40) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lag = KafkaLag::default().lag(&k).await;
    }
    assert_eq!(lag, LagReading::Known(40));

    let s = StoreStep::from_sdk(endpoints(&env, None)).await;
    let name = unique_name("prapi-boot");
    let spec = spec(&name, "shop/eu");
    // Lag 40 > threshold 10: created and kept at the bootstrap floor.
    let mut out = s.reconcile(&spec, &k).await.expect("create");
    assert!(matches!(
        out.executed[..],
        [AwsAction::CreateTable { write: 400, .. }]
    ));
    for _ in 0..60 {
        out = s.reconcile(&spec, &k).await.expect("reconcile");
        if out.condition.reason == "BootstrapCapacity" && out.executed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        (out.condition.ready, out.condition.reason),
        (true, "BootstrapCapacity"),
        "{out:#?}"
    );
    assert_eq!(out.lag, LagReading::Known(40));
    assert_eq!(out.table.as_ref().map(|t| t.write_capacity), Some(400));
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert_eq!(target(&sc, Dimension::Write), Some((400, 400)));
    assert_eq!(target(&sc, Dimension::Read), Some((5, 100)));

    // The updater catches up: floor restored, capacity lowered to the maximum, table tagged.
    commit_all(&bootstrap, &group, &topic);
    let out = until_ready(&s, &spec, &k).await;
    assert_eq!(out.lag, LagReading::Known(0));
    let t = out.table.expect("table");
    assert_eq!(t.write_capacity, 100);
    assert_eq!(
        t.tags.get(TAG_BOOTSTRAPPED).map(String::as_str),
        Some("true")
    );
    let sc = scaling_of(&env, &spec.resource_id()).await;
    assert_eq!(target(&sc, Dimension::Write), Some((5, 100)));
    let mut del = spec.clone();
    del.deletion_policy = DeletionPolicy::Delete;
    let _ = s.cleanup(&del).await;
}

#[tokio::test]
async fn dynalite_down_gives_the_aws_error_and_recovery_needs_no_manual_step() {
    let Some(env) = TestEnv::get_for(&AWS) else {
        return;
    };
    let Some(cli) = OwnDynalite::find_cli() else {
        if std::env::var("PRAPI_REQUIRE_TESTENV").is_ok_and(|v| v == "1") {
            panic!("dynalite is not installed under ~/.cache/prapi (make testenv installs it)");
        }
        eprintln!("skipped: dynalite not installed");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut dynalite = OwnDynalite::start(cli, port);
    let s = StoreStep::from_sdk(endpoints(&env, Some(dynalite.url())))
        .await
        .with_lag(Arc::new(SetLag(Mutex::new(LagReading::Known(0)))));
    let name = unique_name("prapi-down");
    let spec = spec(&name, "shop/eu");
    let k = kafka_ref("g");
    until_ready(&s, &spec, &k).await;

    dynalite.stop();
    let err = s.reconcile(&spec, &k).await.expect_err("DynamoDB is down");
    assert_eq!(err.service, "DynamoDB");
    assert_eq!(err.operation, "DescribeTable");
    assert_eq!(err.code, "ConnectionFailed", "{err}");
    assert_eq!(err.reason(), "ConnectionFailed");

    // Back (empty, as dynalite keeps tables in memory): the next reconciles recreate the table.
    dynalite.restart();
    let out = until_ready(&s, &spec, &k).await;
    assert_eq!(out.condition.reason, "TableReady");
    let client = ddb(&env, Some(dynalite.url())).await;
    assert!(table_exists(&client, &name).await);
}

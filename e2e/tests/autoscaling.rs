//! Application Auto Scaling smoke test against moto.

use aws_sdk_applicationautoscaling::Client;
use aws_sdk_applicationautoscaling::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use prapi_e2e::{Part, TestEnv, unique_name};

#[tokio::test]
async fn register_scalable_target_then_describe_returns_it() {
    let Some(env) = TestEnv::get_for(&[Part::ApplicationAutoScaling]) else {
        return;
    };
    let config = aws_sdk_applicationautoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env.aws_region().to_owned()))
        .credentials_provider(Credentials::new(
            env.aws_access_key_id(),
            env.aws_secret_access_key(),
            None,
            None,
            "testenv",
        ))
        .endpoint_url(env.application_autoscaling_endpoint())
        .build();
    let client = Client::from_conf(config);
    let resource_id = format!("table/{}", unique_name("smoke"));

    client
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(&resource_id)
        .scalable_dimension(ScalableDimension::DynamoDbTableWriteCapacityUnits)
        .min_capacity(5)
        .max_capacity(500)
        .send()
        .await
        .expect("RegisterScalableTarget");

    let out = client
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_ids(&resource_id)
        .send()
        .await
        .expect("DescribeScalableTargets");
    let targets = out.scalable_targets();
    assert_eq!(targets.len(), 1, "{targets:?}");
    let t = &targets[0];
    assert_eq!(t.resource_id(), resource_id);
    assert_eq!(
        t.scalable_dimension(),
        &ScalableDimension::DynamoDbTableWriteCapacityUnits
    );
    assert_eq!(t.min_capacity(), 5);
    assert_eq!(t.max_capacity(), 500);

    client
        .deregister_scalable_target()
        .service_namespace(ServiceNamespace::Dynamodb)
        .resource_id(&resource_id)
        .scalable_dimension(ScalableDimension::DynamoDbTableWriteCapacityUnits)
        .send()
        .await
        .expect("DeregisterScalableTarget");
}

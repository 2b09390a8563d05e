//! DynamoDB smoke tests against dynalite: tables become ACTIVE, batch writes
//! are validated as DynamoDB validates them, queries page.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, WriteRequest,
};
use prapi_e2e::kit::PATIENCE;
use prapi_e2e::{Part, TestEnv, unique_name};

fn client(env: &TestEnv) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(env.aws_region().to_owned()))
        .credentials_provider(Credentials::new(
            env.aws_access_key_id(),
            env.aws_secret_access_key(),
            None,
            None,
            "testenv",
        ))
        .endpoint_url(env.dynamodb_endpoint())
        .build();
    Client::from_conf(config)
}

/// Creates a table (pk: S, sk: N) and waits until it is ACTIVE.
async fn create_table(client: &Client) -> String {
    let name = unique_name("smoke");
    let created = client
        .create_table()
        .table_name(&name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
    let status = created
        .table_description()
        .and_then(|t| t.table_status())
        .cloned();
    assert_eq!(
        status,
        Some(TableStatus::Creating),
        "a new table starts CREATING"
    );

    tokio::time::timeout(PATIENCE, async {
        loop {
            let described = client
                .describe_table()
                .table_name(&name)
                .send()
                .await
                .expect("DescribeTable");
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the table becomes ACTIVE");
    name
}

fn put(pk: &str, sk: usize) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .item("pk", AttributeValue::S(pk.to_owned()))
                .item("sk", AttributeValue::N(sk.to_string()))
                .item("v", AttributeValue::S(format!("value {sk}")))
                .build()
                .expect("put request"),
        )
        .build()
}

async fn item_count(client: &Client, table: &str) -> i32 {
    client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .expect("Scan")
        .count()
}

#[tokio::test]
async fn batch_write_of_26_items_is_rejected_and_writes_nothing() {
    let Some(env) = TestEnv::get_for(&[Part::DynamoDb]) else {
        return;
    };
    let client = client(&env);
    let table = create_table(&client).await;

    let requests: Vec<_> = (0..26).map(|i| put("p", i)).collect();
    let err = client
        .batch_write_item()
        .request_items(&table, requests)
        .send()
        .await
        .expect_err("26 items exceed BatchWriteItem's limit of 25");
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert!(
        err.message().is_some_and(|m| m.contains("25")),
        "the message names the limit: {err:?}"
    );
    assert_eq!(item_count(&client, &table).await, 0);

    // 25 is the limit, not an error.
    let requests: Vec<_> = (0..25).map(|i| put("p", i)).collect();
    let out = client
        .batch_write_item()
        .request_items(&table, requests)
        .send()
        .await
        .expect("25 items are accepted");
    assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()));
    assert_eq!(item_count(&client, &table).await, 25);

    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("DeleteTable");
}

#[tokio::test]
async fn batch_write_with_duplicate_keys_is_rejected_and_writes_nothing() {
    let Some(env) = TestEnv::get_for(&[Part::DynamoDb]) else {
        return;
    };
    let client = client(&env);
    let table = create_table(&client).await;

    let err = client
        .batch_write_item()
        .request_items(&table, vec![put("p", 1), put("p", 2), put("p", 1)])
        .send()
        .await
        .expect_err("duplicate keys in one batch");
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert!(
        err.message().is_some_and(|m| m.contains("duplicates")),
        "the message says why: {err:?}"
    );
    assert_eq!(item_count(&client, &table).await, 0);

    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("DeleteTable");
}

#[tokio::test]
async fn query_pages_with_last_evaluated_key() {
    let Some(env) = TestEnv::get_for(&[Part::DynamoDb]) else {
        return;
    };
    let client = client(&env);
    let table = create_table(&client).await;

    for chunk in (0..25).collect::<Vec<_>>().chunks(10) {
        client
            .batch_write_item()
            .request_items(&table, chunk.iter().map(|&i| put("paged", i)).collect())
            .send()
            .await
            .expect("BatchWriteItem");
    }
    // Another partition key, which the query must not return.
    client
        .batch_write_item()
        .request_items(&table, vec![put("other", 0)])
        .send()
        .await
        .expect("BatchWriteItem");

    let mut pages = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S("paged".to_owned()))
            .limit(10)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Query");
        let sks: Vec<usize> = out
            .items()
            .iter()
            .map(|item| match item.get("sk") {
                Some(AttributeValue::N(n)) => n.parse().expect("numeric sort key"),
                other => panic!("item without numeric sk: {other:?}"),
            })
            .collect();
        pages.push(sks);
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages[0].len(), 10);
    assert_eq!(pages[1].len(), 10);
    assert_eq!(pages[2].len(), 5);
    let all: Vec<usize> = pages.into_iter().flatten().collect();
    assert_eq!(
        all,
        (0..25).collect::<Vec<_>>(),
        "ascending sort-key order, no gaps"
    );

    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .expect("DeleteTable");
}

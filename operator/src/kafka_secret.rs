//! The group's Kafka client Secret (`spec.updater.kafka.clientSecretName`), read through the API:
//! checked by the same parser the updater uses ([`KafkaClientSecret::parse`]) before anything
//! that refers to it is applied, and handed to the lag reader. The operator only `get`s the one
//! Secret a group names; it never lists or watches Secrets, so a change is noticed at the next
//! resync.

use crate::plan::KafkaClientPlan;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use prapi_common::kafka_client::{KafkaClientSecret, KafkaSecretError};
use thiserror::Error;

/// Why a group's Kafka client Secret cannot be used. Each is a `Degraded` reason.
#[derive(Debug, Error)]
pub enum KafkaSecretProblem {
    /// No Secret of that name in the group's namespace.
    #[error("Kafka client Secret {name} does not exist in the group's namespace")]
    Missing {
        /// The Secret's name.
        name: String,
    },
    /// The Secret cannot configure a Kafka client.
    #[error("Kafka client Secret {name}: {source}")]
    Invalid {
        /// The Secret's name.
        name: String,
        /// What is wrong with it.
        #[source]
        source: KafkaSecretError,
    },
    /// The API server did not answer, or refused the read.
    #[error("reading Kafka client Secret {name}: {source}")]
    Unreadable {
        /// The Secret's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl KafkaSecretProblem {
    /// The `Degraded` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            KafkaSecretProblem::Missing { .. } => "KafkaSecretMissing",
            KafkaSecretProblem::Invalid { .. } => "KafkaSecretInvalid",
            KafkaSecretProblem::Unreadable { .. } => "KafkaSecretUnreadable",
        }
    }

    /// Whether retrying soon can help without anyone changing anything (the API server was
    /// unavailable); the others wait for the Secret to be created or fixed.
    pub fn transient(&self) -> bool {
        matches!(self, KafkaSecretProblem::Unreadable { .. })
    }
}

/// The plan's view of a Secret as the API returned it (`None`: it does not exist).
pub fn resolve(name: &str, secret: Option<&Secret>) -> Result<KafkaClientPlan, KafkaSecretProblem> {
    let Some(secret) = secret else {
        return Err(KafkaSecretProblem::Missing {
            name: name.to_string(),
        });
    };
    // `stringData` is write-only: the API server folds it into `data`.
    let data = secret.data.as_ref();
    let parsed = KafkaClientSecret::parse(
        data.into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
    .map_err(|source| KafkaSecretProblem::Invalid {
        name: name.to_string(),
        source,
    })?;
    Ok(KafkaClientPlan {
        secret_name: name.to_string(),
        resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
        secret: parsed,
    })
}

/// Reads and checks the Secret `name` of namespace `ns`.
pub async fn read(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<KafkaClientPlan, KafkaSecretProblem> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| KafkaSecretProblem::Unreadable {
            name: name.to_string(),
            source,
        })?;
    resolve(name, secret.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("kafka".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_secret_becomes_the_plan_with_its_resource_version() {
        let s = secret(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]);
        let plan = resolve("kafka", Some(&s)).expect("valid");
        assert_eq!(plan.secret_name, "kafka");
        assert_eq!(plan.resource_version, "42");
        assert_eq!(
            plan.secret.properties()[..2],
            [
                ("security.protocol", "SASL_SSL".to_string()),
                ("sasl.mechanism", "SCRAM-SHA-512".to_string())
            ]
        );
    }

    #[test]
    fn a_missing_or_incomplete_secret_has_a_reason_and_a_message() {
        let e = resolve("kafka", None).expect_err("missing");
        assert_eq!(e.reason(), "KafkaSecretMissing");
        assert!(!e.transient());
        assert_eq!(
            e.to_string(),
            "Kafka client Secret kafka does not exist in the group's namespace"
        );
        let e = resolve(
            "kafka",
            Some(&secret(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
            ])),
        )
        .expect_err("incomplete");
        assert_eq!(e.reason(), "KafkaSecretInvalid");
        assert!(!e.transient());
        assert_eq!(
            e.to_string(),
            "Kafka client Secret kafka: key sasl.username is missing (with a SASL_* security.protocol)"
        );
        let empty = Secret {
            data: None,
            ..secret(&[])
        };
        let e = resolve("kafka", Some(&empty)).expect_err("empty");
        assert_eq!(
            e.to_string(),
            "Kafka client Secret kafka: key security.protocol is missing (always)"
        );
    }
}

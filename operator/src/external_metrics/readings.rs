//! The lag the API serves, and where the groups it is asked about come from.
//!
//! Every replica of the operator serves the API and reads the lag from Kafka itself, the same
//! way the store step does (committed offsets against high watermarks), so the answer does not
//! depend on which replica the API server's Service picked. A reading is kept for at most
//! `max_age`, which bounds how old a served value can be while sparing Kafka one client per HPA
//! poll; concurrent requests for one group share one reading. A failed reading is never kept and
//! never served as a number: the caller gets the reason.

use crate::aws::LagReading;
use crate::aws::lag::{ConsumerGroupRef, LagSource};
use crate::crd::MarketGroup;
use crate::render::autoscaling::UPDATER_LAG_SELECTOR_LABEL;
use async_trait::async_trait;
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One lag reading and when it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Messages behind, summed over the group's partitions.
    pub lag: i64,
    /// When it was read.
    pub at: SystemTime,
}

/// Lag readings of consumer groups, each at most `max_age` old.
pub struct Readings {
    source: Arc<dyn LagSource>,
    cache: moka::future::Cache<ConsumerGroupRef, Reading>,
}

impl Readings {
    /// Readings from `source`, kept for `max_age`.
    pub fn new(source: Arc<dyn LagSource>, max_age: Duration) -> Self {
        Self {
            source,
            cache: moka::future::Cache::builder()
                .time_to_live(max_age)
                .max_capacity(10_000)
                .build(),
        }
    }

    /// The group's lag, read now unless a reading younger than `max_age` exists; `Err` with the
    /// reason when Kafka does not answer.
    pub async fn read(&self, group: &ConsumerGroupRef) -> Result<Reading, String> {
        self.cache
            .try_get_with(group.clone(), async {
                match self.source.lag(group).await {
                    LagReading::Known(lag) => Ok(Reading {
                        lag,
                        at: SystemTime::now(),
                    }),
                    LagReading::Unknown(why) => Err(why),
                }
            })
            .await
            .map_err(|e: Arc<String>| e.as_ref().clone())
    }
}

/// A group the API can report on: the labels its series carries and its updater's consumer
/// group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedGroup {
    /// Labels of the series (what a label selector is matched against).
    pub labels: BTreeMap<String, String>,
    /// The updater's consumer group.
    pub consumer: ConsumerGroupRef,
}

impl ServedGroup {
    /// The series of a group: selected by the label the rendered HPA uses.
    pub fn new(name: &str, consumer: ConsumerGroupRef) -> Self {
        Self {
            labels: BTreeMap::from([
                (UPDATER_LAG_SELECTOR_LABEL.to_string(), name.to_string()),
                ("consumer_group".to_string(), consumer.group.clone()),
            ]),
            consumer,
        }
    }
}

/// The groups of a namespace.
#[async_trait]
pub trait Groups: Send + Sync {
    /// Every group of `namespace` with a valid spec.
    async fn in_namespace(&self, namespace: &str) -> Result<Vec<ServedGroup>, kube::Error>;
}

/// [`Groups`] listed from the API server at each request (the HPA asks every 15 s per group).
pub struct ClusterGroups {
    /// Client.
    pub client: kube::Client,
    /// The namespaces the operator works in: it has no groups, and may read nothing, elsewhere.
    pub scope: crate::scope::WatchScope,
}

#[async_trait]
impl Groups for ClusterGroups {
    async fn in_namespace(&self, namespace: &str) -> Result<Vec<ServedGroup>, kube::Error> {
        if !self.scope.contains(namespace) {
            return Ok(Vec::new());
        }
        let api: Api<MarketGroup> = Api::namespaced(self.client.clone(), namespace);
        let list = api.list(&ListParams::default()).await?;
        let mut served = Vec::new();
        // A group with an invalid spec has no updater to report on; its status says why.
        for plan in list.items.iter().filter_map(|mg| {
            let mut plan = crate::validate::plan(mg, "", namespace).ok()?;
            // The consumer group the operator renders for the updater (a replay's, after a
            // country was added).
            plan.updater.consumer_group = crate::gate::replay(
                &plan.updater.consumer_group,
                &plan.countries,
                mg.status.as_ref(),
            )
            .consumer_group;
            Some(plan)
        }) {
            // The lag is read as the updater connects: with the group's Kafka client Secret.
            let name = &plan.updater.client_secret_name;
            let plan = if name.is_empty() {
                plan
            } else {
                match crate::kafka_secret::read(&self.client, namespace, name).await {
                    Ok(client) => plan.with_kafka_client(Some(client)),
                    // Not served: the group's status says why (the same read, by the reconcile).
                    Err(problem) => {
                        tracing::debug!(group = %plan.owner.name, %problem, "lag not served");
                        continue;
                    }
                }
            };
            served.push(ServedGroup::new(
                &plan.owner.name,
                crate::aws::store::consumer_group(&plan),
            ));
        }
        Ok(served)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers from a script, counting reads.
    struct Scripted {
        answers: std::sync::Mutex<Vec<LagReading>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl LagSource for Scripted {
        async fn lag(&self, _: &ConsumerGroupRef) -> LagReading {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.answers
                .lock()
                .map(|mut a| a.remove(0))
                .unwrap_or(LagReading::Unknown("poisoned".into()))
        }
    }

    fn group() -> ConsumerGroupRef {
        ConsumerGroupRef {
            bootstrap_servers: "kafka:9092".into(),
            group: "g".into(),
            topics: vec!["t".into()],
            security: None,
        }
    }

    #[tokio::test]
    async fn a_failed_reading_is_an_error_and_is_not_kept() {
        let source = Arc::new(Scripted {
            answers: std::sync::Mutex::new(vec![
                LagReading::Unknown("broker down".into()),
                LagReading::Known(42),
                LagReading::Known(7),
            ]),
            reads: AtomicUsize::new(0),
        });
        let readings = Readings::new(source.clone(), Duration::from_secs(3600));
        assert_eq!(
            readings.read(&group()).await,
            Err("broker down".to_string())
        );
        assert_eq!(readings.read(&group()).await.map(|r| r.lag), Ok(42));
        // Within max_age the reading is served again without asking Kafka.
        assert_eq!(readings.read(&group()).await.map(|r| r.lag), Ok(42));
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_reading_older_than_max_age_is_read_again() {
        let source = Arc::new(Scripted {
            answers: std::sync::Mutex::new(vec![LagReading::Known(42), LagReading::Known(7)]),
            reads: AtomicUsize::new(0),
        });
        let readings = Readings::new(source.clone(), Duration::ZERO);
        assert_eq!(readings.read(&group()).await.map(|r| r.lag), Ok(42));
        assert_eq!(readings.read(&group()).await.map(|r| r.lag), Ok(7));
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }
}

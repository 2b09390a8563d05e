//! The pure step of a reconcile: from how far it got ([`Progress`]) and the group's Deployments,
//! what the status summarises ([`Observed`]) and what the controller does next.
//!
//! | progress | `Degraded` problem | autoscaler, table | next |
//! | --- | --- | --- | --- |
//! | spec invalid | `InvalidSpec` | none, none | wait for a spec change: retrying changes nothing |
//! | Kafka client Secret missing or invalid | `KafkaSecretMissing`, `KafkaSecretInvalid` | the stored one, the plan's | look again after [`KAFKA_SECRET_RECHECK`] (Secrets are not watched) |
//! | Kafka client Secret unreadable | `KafkaSecretUnreadable` | the stored one, the plan's | the error: back off and retry |
//! | sync failed | the error | the stored one, the plan's | the error: back off and retry |
//! | synced, a step failed | the step's error | the rendered one, the plan's | the error |
//! | synced, steps fine | none | the rendered one, the plan's | requeue after the resync, or sooner if a step asks |
//! | suspended (`spec.suspend`) | none; `Suspended` True | the stored ones | wait for a change: nothing is written until the spec resumes it |
//!
//! A suspended group keeps the store and routing conditions and readings it had, so its status
//! says what was last known rather than guessing.

use super::error::Error;
use super::steps::StepsReport;
use crate::kafka_secret::KafkaSecretProblem;
use crate::plan::Component;
use crate::render::autoscaling::UpdaterAutoscaler;
use crate::render::routing::shift::Floors;
use crate::status::ConditionUpdate;
use crate::status::{Observed, Problem};
use crate::validate::InvalidSpec;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action;
use std::collections::BTreeMap;
use std::time::Duration;

/// How far a reconcile of a live group got, with what each stage returned.
// One value per reconcile, moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Progress {
    /// The spec did not validate: nothing was applied.
    Invalid(InvalidSpec),
    /// The group's Kafka client Secret cannot be used: nothing was applied (what runs keeps
    /// running as it was).
    KafkaSecret {
        /// The plan's table name.
        table: String,
        /// What is wrong.
        problem: KafkaSecretProblem,
    },
    /// Rendering, applying or pruning the children failed.
    SyncFailed {
        /// The plan's table name.
        table: String,
        /// What failed.
        error: Error,
    },
    /// The children are as rendered; then the store and routing steps ran.
    Synced {
        /// The plan's table name.
        table: String,
        /// The updater autoscaler that was rendered.
        autoscaler: UpdaterAutoscaler,
        /// What the steps observed.
        steps: StepsReport,
        /// The first step that failed, if one did.
        error: Option<Error>,
        /// The products and batch HPA minimums that were applied.
        floors: Floors,
        /// The children's fingerprint after the sync, when known.
        applied: Option<String>,
    },
    /// `spec.suspend`: nothing was rendered, applied or routed.
    Suspended {
        /// The table the stored status names.
        table: Option<String>,
        /// `StoreReady` as stored.
        store: Option<ConditionUpdate>,
        /// `RoutingReady` as stored.
        routing: Option<ConditionUpdate>,
    },
}

/// How soon a group whose Kafka client Secret is missing or invalid is looked at again: the
/// operator does not watch Secrets, so this bounds how long a fixed Secret goes unnoticed.
pub const KAFKA_SECRET_RECHECK: Duration = Duration::from_secs(30);

/// What the outcome needs to know of the group besides the progress.
#[derive(Clone, Copy, Debug)]
pub struct Group<'a> {
    /// The group's name (its Deployments are `<name>-<component>`).
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: i64,
    /// The updater autoscaler the stored status names.
    pub stored_autoscaler: Option<&'a str>,
    /// The group's Deployments: as the sync left them, or as read when it did not run or failed.
    pub deployments: &'a BTreeMap<String, Deployment>,
    /// Requeue period of a healthy group.
    pub resync: Duration,
}

/// What the status summarises and what the controller does next.
pub fn outcome<'a>(group: Group<'a>, progress: Progress) -> (Observed<'a>, Result<Action, Error>) {
    let deployments = Component::ALL.map(|c| {
        let name = format!("{}-{}", group.name, c.as_str());
        (c, group.deployments.get(&name))
    });
    let mut observed = Observed {
        generation: group.generation,
        deployments,
        problem: None,
        store: None,
        routing: None,
        updater_autoscaler: None,
        table: None,
        readings: Default::default(),
        autoscaling: None,
        suspended: false,
        hpa_floors: None,
        gate: None,
        applied: None,
    };
    let next = match progress {
        Progress::Invalid(invalid) => {
            observed.problem = Some(Problem {
                reason: "InvalidSpec".into(),
                message: invalid.to_string(),
            });
            Ok(Action::await_change())
        }
        Progress::KafkaSecret { table, problem } => {
            observed.updater_autoscaler = group.stored_autoscaler.map(str::to_string);
            observed.table = Some(table);
            observed.problem = Some(Problem {
                reason: problem.reason().into(),
                message: problem.to_string(),
            });
            if problem.transient() {
                Err(Error::KafkaSecret(problem))
            } else {
                Ok(Action::requeue(KAFKA_SECRET_RECHECK.min(group.resync)))
            }
        }
        Progress::SyncFailed { table, error } => {
            // Nothing new was rendered: the status keeps naming what was there.
            observed.updater_autoscaler = group.stored_autoscaler.map(str::to_string);
            observed.table = Some(table);
            observed.problem = Some(error.problem());
            Err(error)
        }
        Progress::Suspended {
            table,
            store,
            routing,
        } => {
            observed.suspended = true;
            observed.updater_autoscaler = group.stored_autoscaler.map(str::to_string);
            observed.table = table;
            observed.store = store;
            observed.routing = routing;
            // Resuming is a spec change, and the Deployments are watched: nothing to poll for.
            Ok(Action::await_change())
        }
        Progress::Synced {
            table,
            autoscaler,
            steps,
            error,
            floors,
            applied,
        } => {
            observed.updater_autoscaler = Some(autoscaler.kind().to_string());
            observed.applied = applied;
            observed.table = Some(table);
            observed.hpa_floors = Some(floors);
            observed.store = steps.store;
            observed.routing = steps.routing;
            observed.readings = steps.readings;
            observed.gate = steps.gate;
            match error {
                Some(e) => {
                    observed.problem = Some(e.problem());
                    Err(e)
                }
                None => Ok(Action::requeue(
                    steps
                        .requeue_after
                        .map_or(group.resync, |r| r.min(group.resync)),
                )),
            }
        }
    };
    (observed, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::AwsError;
    use crate::crd::TableStatus;
    use crate::routes::RoutesError;
    use crate::status::{ConditionUpdate, Readings, STORE_READY, Status};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const RESYNC: Duration = Duration::from_secs(300);

    fn deployments(names: &[&str]) -> BTreeMap<String, Deployment> {
        names
            .iter()
            .map(|n| {
                let d = Deployment {
                    metadata: ObjectMeta {
                        name: Some(n.to_string()),
                        ..ObjectMeta::default()
                    },
                    ..Deployment::default()
                };
                (n.to_string(), d)
            })
            .collect()
    }

    fn group(deployments: &BTreeMap<String, Deployment>) -> Group<'_> {
        Group {
            name: "g",
            generation: 4,
            stored_autoscaler: Some("ScaledObject"),
            deployments,
            resync: RESYNC,
        }
    }

    fn synced(requeue_after: Option<Duration>, error: Option<Error>) -> Progress {
        Progress::Synced {
            table: "prapi-ns-g".into(),
            autoscaler: UpdaterAutoscaler::ExternalMetricHpa,
            steps: StepsReport {
                store: Some(ConditionUpdate::new(
                    STORE_READY,
                    Status::True,
                    "Active",
                    "table active",
                )),
                routing: None,
                readings: Readings {
                    updater_lag: Some(3),
                    ..Readings::default()
                },
                requeue_after,
                notices: Vec::new(),
                gate: None,
            },
            error,
            floors: Floors {
                products: 4,
                batch: 2,
            },
            applied: Some("f1".into()),
        }
    }

    fn aws_error() -> Error {
        Error::Store(AwsError {
            service: "DynamoDB",
            operation: "UpdateTable",
            code: "LimitExceededException".into(),
            message: "too many decreases".into(),
        })
    }

    fn present(observed: &Observed<'_>) -> Vec<(Component, bool)> {
        observed
            .deployments
            .iter()
            .map(|(c, d)| (*c, d.is_some()))
            .collect()
    }

    #[test]
    fn an_invalid_spec_reports_it_and_waits_for_a_spec_change() {
        let ds = deployments(&["g-products"]);
        let invalid = InvalidSpec {
            problems: vec!["spec.countries: must not be empty".into()],
        };
        let (observed, next) = outcome(group(&ds), Progress::Invalid(invalid));
        assert_eq!(
            observed.problem,
            Some(Problem {
                reason: "InvalidSpec".into(),
                message: "spec.countries: must not be empty".into(),
            })
        );
        assert_eq!(
            (
                observed.updater_autoscaler.as_deref(),
                observed.table.as_deref()
            ),
            (None, None)
        );
        assert_eq!(observed.generation, 4);
        assert_eq!(
            present(&observed),
            vec![
                (Component::Updater, false),
                (Component::Products, true),
                (Component::Batch, false)
            ]
        );
        assert_eq!(next.ok(), Some(Action::await_change()));
    }

    #[test]
    fn a_missing_or_invalid_kafka_secret_is_degraded_and_looked_at_again_without_backoff() {
        let ds = deployments(&["g-updater", "g-products", "g-batch"]);
        let problem = crate::kafka_secret::resolve("kafka", None).expect_err("missing");
        let progress = Progress::KafkaSecret {
            table: "prapi-ns-g".into(),
            problem,
        };
        let (observed, next) = outcome(group(&ds), progress);
        assert_eq!(
            observed.problem,
            Some(Problem {
                reason: "KafkaSecretMissing".into(),
                message: "Kafka client Secret kafka does not exist in the group's namespace".into(),
            })
        );
        assert_eq!(observed.updater_autoscaler.as_deref(), Some("ScaledObject"));
        assert_eq!(observed.table.as_deref(), Some("prapi-ns-g"));
        assert!(present(&observed).iter().all(|(_, p)| *p));
        assert_eq!(next.ok(), Some(Action::requeue(KAFKA_SECRET_RECHECK)));

        let short = Group {
            resync: Duration::from_secs(5),
            ..group(&ds)
        };
        let problem = crate::kafka_secret::resolve("kafka", None).expect_err("missing");
        let (_, next) = outcome(
            short,
            Progress::KafkaSecret {
                table: "t".into(),
                problem,
            },
        );
        assert_eq!(next.ok(), Some(Action::requeue(Duration::from_secs(5))));
    }

    #[test]
    fn an_unreadable_kafka_secret_is_an_error_that_backs_off() {
        let ds = deployments(&[]);
        let problem = KafkaSecretProblem::Unreadable {
            name: "kafka".into(),
            source: kube::Error::Api(
                kube::core::Status::failure("secrets \"kafka\" is forbidden", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ),
        };
        let (observed, next) = outcome(
            group(&ds),
            Progress::KafkaSecret {
                table: "t".into(),
                problem,
            },
        );
        assert_eq!(
            observed.problem.as_ref().map(|p| p.reason.as_str()),
            Some("KafkaSecretUnreadable")
        );
        match next {
            Err(e) => assert_eq!(e.reason(), "KafkaSecretUnreadable"),
            Ok(a) => panic!("an unreadable Secret must back off, not {a:?}"),
        }
    }

    #[test]
    fn a_failed_sync_reports_the_error_keeps_the_stored_autoscaler_and_fails() {
        let ds = deployments(&["g-updater", "g-products", "g-batch"]);
        let progress = Progress::SyncFailed {
            table: "prapi-ns-g".into(),
            error: Error::MissingField("uid"),
        };
        let (observed, next) = outcome(group(&ds), progress);
        assert_eq!(
            observed.problem,
            Some(Problem {
                reason: "MissingField".into(),
                message: "the MarketGroup has no uid".into(),
            })
        );
        assert_eq!(observed.updater_autoscaler.as_deref(), Some("ScaledObject"));
        assert_eq!(observed.table.as_deref(), Some("prapi-ns-g"));
        assert_eq!((&observed.store, &observed.routing), (&None, &None));
        assert_eq!(observed.readings, Readings::default());
        assert!(present(&observed).iter().all(|(_, p)| *p));
        assert!(matches!(next, Err(Error::MissingField("uid"))));
    }

    #[test]
    fn a_synced_group_with_healthy_steps_requeues_after_the_resync() {
        let ds = deployments(&["g-updater", "g-products", "g-batch"]);
        let (observed, next) = outcome(group(&ds), synced(None, None));
        assert_eq!(observed.problem, None);
        assert_eq!(
            observed.updater_autoscaler.as_deref(),
            Some("HorizontalPodAutoscaler")
        );
        assert_eq!(observed.table.as_deref(), Some("prapi-ns-g"));
        assert_eq!(
            observed.store.map(|s| (s.status, s.reason)),
            Some((Status::True, "Active".to_string()))
        );
        assert_eq!(observed.readings.updater_lag, Some(3));
        assert_eq!(next.ok(), Some(Action::requeue(RESYNC)));
    }

    #[test]
    fn a_step_that_asks_sooner_than_the_resync_is_looked_at_sooner() {
        let ds = BTreeMap::new();
        let soon = Duration::from_secs(10);
        let (_, next) = outcome(group(&ds), synced(Some(soon), None));
        assert_eq!(next.ok(), Some(Action::requeue(soon)));
    }

    #[test]
    fn a_step_that_asks_later_than_the_resync_is_looked_at_after_the_resync() {
        let ds = BTreeMap::new();
        let late = RESYNC + Duration::from_secs(1);
        let (_, next) = outcome(group(&ds), synced(Some(late), None));
        assert_eq!(next.ok(), Some(Action::requeue(RESYNC)));
    }

    #[test]
    fn a_failed_store_step_is_degraded_with_its_aws_code_and_fails() {
        let ds = BTreeMap::new();
        let (observed, next) = outcome(group(&ds), synced(None, Some(aws_error())));
        assert_eq!(
            observed.problem.map(|p| p.reason),
            Some("LimitExceededException".to_string())
        );
        // What the steps did observe still reaches the status.
        assert!(observed.store.is_some());
        assert_eq!(observed.readings.updater_lag, Some(3));
        assert_eq!(
            observed.updater_autoscaler.as_deref(),
            Some("HorizontalPodAutoscaler")
        );
        assert!(matches!(next, Err(Error::Store(_))));
    }

    #[test]
    fn a_failed_routing_step_is_degraded_with_its_reason_and_fails() {
        let ds = BTreeMap::new();
        let e = Error::Routes(RoutesError::Render(
            crate::render::routing::RouteError::NoGateway,
        ));
        let (observed, next) = outcome(group(&ds), synced(None, Some(e)));
        assert_eq!(
            observed.problem.map(|p| p.reason),
            Some("RouteInvalid".to_string())
        );
        assert!(matches!(next, Err(Error::Routes(_))));
    }

    #[test]
    fn a_synced_group_reports_the_hpa_floors_it_applied() {
        let ds = BTreeMap::new();
        let (observed, _) = outcome(group(&ds), synced(None, None));
        assert_eq!(
            observed.hpa_floors,
            Some(Floors {
                products: 4,
                batch: 2
            })
        );
        assert_eq!(observed.applied.as_deref(), Some("f1"));
        assert!(!observed.suspended);
    }

    #[test]
    fn a_suspended_group_keeps_what_was_known_and_waits_for_a_change() {
        let ds = deployments(&["g-updater", "g-products", "g-batch"]);
        let store = ConditionUpdate::new(STORE_READY, Status::True, "Active", "table active");
        let progress = Progress::Suspended {
            table: Some("prapi-ns-g".into()),
            store: Some(store.clone()),
            routing: None,
        };
        let (observed, next) = outcome(group(&ds), progress);
        assert!(observed.suspended);
        assert_eq!(observed.problem, None);
        assert_eq!(observed.store, Some(store));
        assert_eq!(observed.routing, None);
        assert_eq!(observed.table.as_deref(), Some("prapi-ns-g"));
        assert_eq!(observed.updater_autoscaler.as_deref(), Some("ScaledObject"));
        // Nothing applied: the stored floors and readings stay.
        assert_eq!(observed.hpa_floors, None);
        assert_eq!(observed.applied, None);
        assert_eq!(observed.readings, Readings::default());
        assert!(present(&observed).iter().all(|(_, p)| *p));
        assert_eq!(next.ok(), Some(Action::await_change()));
    }

    #[test]
    fn readings_of_a_synced_group_carry_into_the_observation() {
        let ds = BTreeMap::new();
        let table = TableStatus {
            name: "prapi-ns-g".into(),
            ..TableStatus::default()
        };
        let mut progress = synced(None, None);
        if let Progress::Synced { steps, .. } = &mut progress {
            steps.readings.table = Some(table.clone());
        }
        let (observed, _) = outcome(group(&ds), progress);
        assert_eq!(observed.readings.table, Some(table));
    }
}

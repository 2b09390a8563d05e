//! Every way a reconcile fails, and the one place each failure gets its reason.

use crate::apply::ApplyError;
use crate::aws::AwsError;
use crate::kafka_secret::KafkaSecretProblem;
use crate::render::RenderError;
use crate::routes::RoutesError;
use crate::status::Problem;
use kube::runtime::finalizer;
use thiserror::Error;

/// A reconcile error. Every variant backs off and retries.
#[derive(Debug, Error)]
pub enum Error {
    /// Applying or pruning children failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// Writing the status failed.
    #[error("writing the status: {0}")]
    Status(#[source] kube::Error),
    /// Asking the API server whether an add-on's API (KEDA's ScaledObject, the Prometheus
    /// Operator's PodMonitor) is served failed.
    #[error("discovering the {api} API: {source}")]
    Discovery {
        /// The API asked about, e.g. `keda.sh/v1alpha1 ScaledObject`.
        api: &'static str,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The object lacks a field the API server always sets.
    #[error("the MarketGroup has no {0}")]
    MissingField(&'static str),
    /// Cleaning up a step's external state before the finalizer goes failed.
    #[error("cleaning up {what}: {source}")]
    Cleanup {
        /// Which external state (`routes`, `table`).
        what: &'static str,
        /// The step's failure.
        #[source]
        source: Box<Error>,
    },
    /// The store step (DynamoDB, Application Auto Scaling) failed.
    #[error(transparent)]
    Store(#[from] AwsError),
    /// The routing step failed.
    #[error(transparent)]
    Routes(#[from] RoutesError),
    /// The group's Kafka client Secret could not be read (the API server did not answer).
    #[error(transparent)]
    KafkaSecret(#[from] KafkaSecretProblem),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// CamelCase reason for events and metrics: a fixed set, so metric labels stay bounded.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Apply(e) => e.reason(),
            Error::Render(_) => "RenderFailed",
            Error::Status(_) => "StatusFailed",
            Error::Discovery { .. } => "DiscoveryFailed",
            Error::MissingField(_) => "MissingField",
            Error::Cleanup { .. } => "CleanupFailed",
            Error::Store(_) => "AwsError",
            Error::Routes(e) => e.reason(),
            Error::KafkaSecret(e) => e.reason(),
            Error::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }

    /// The error as `Degraded` reports it: the reason of [`Error::reason`], except that an AWS
    /// error names its AWS error code, which is what an operator searches for.
    pub fn problem(&self) -> Problem {
        let reason = match self {
            Error::Store(aws) => aws.reason(),
            other => other.reason().to_string(),
        };
        Problem {
            reason,
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(code: &str) -> AwsError {
        AwsError {
            service: "DynamoDB",
            operation: "DescribeTable",
            code: code.into(),
            message: "slow down".into(),
        }
    }

    #[test]
    fn an_aws_error_is_degraded_with_its_code_but_counted_as_aws_error() {
        let e = Error::Store(aws("ThrottlingException"));
        assert_eq!(e.reason(), "AwsError");
        assert_eq!(
            e.problem(),
            Problem {
                reason: "ThrottlingException".into(),
                message: "DynamoDB DescribeTable failed: ThrottlingException: slow down".into(),
            }
        );
    }

    #[test]
    fn other_errors_are_degraded_with_their_reason_and_message() {
        let e = Error::MissingField("uid");
        assert_eq!(
            e.problem(),
            Problem {
                reason: "MissingField".into(),
                message: "the MarketGroup has no uid".into(),
            }
        );
    }

    #[test]
    fn a_cleanup_failure_keeps_the_step_error_as_its_source() {
        let e = Error::Cleanup {
            what: "table",
            source: Box::new(Error::Store(aws("ResourceInUseException"))),
        };
        assert_eq!(e.reason(), "CleanupFailed");
        assert_eq!(
            e.to_string(),
            "cleaning up table: DynamoDB DescribeTable failed: ResourceInUseException: slow down"
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("DynamoDB DescribeTable failed: ResourceInUseException: slow down")
        );
    }
}

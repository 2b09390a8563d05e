//! The reconcile of one MarketGroup, read top to bottom:
//!
//! 1. [`shell`] is the I/O around everything else. The controller calls [`reconcile`]; it runs
//!    kube's finalizer helper, so a live group goes through [`shell::converge`] and a deleted one
//!    through [`shell::finalize`]. [`error_policy`] turns a failure into a per-group exponential
//!    backoff.
//! 2. `converge` validates the spec into a [`crate::plan::GroupPlan`], renders and applies the
//!    children ([`crate::apply`]) with the updater on the consumer group the bootstrap gate chose
//!    ([`crate::gate::replay`]), then runs the [`Steps`]: the table (`--store aws`), the bootstrap
//!    gate (always), then the routes of the namespace (`--routing`). Each stage's result is collected into a [`Progress`].
//! 3. [`outcome`] is the pure step: from the [`Progress`] and the group's Deployments it derives
//!    what the status summarises ([`crate::status::Observed`]) and what the controller does next
//!    (requeue after the resync or sooner, wait for a spec change, or fail and back off). Every
//!    branch is unit-tested in `outcome.rs`.
//! 4. The shell turns the observation into the status ([`crate::status::desired_status`]),
//!    publishes Events for transitions ([`notices`]: readiness, each traffic weight step, each
//!    country's bootstrap start and end, the table and its capacity floors), writes the status only if it changed, and returns the
//!    action.
//!
//! Deletion: the steps' external state (the group's share of the routes, its autoscaling targets
//! and, per policy, its table) is removed first, waiting while it drains; then the finalizer goes
//! and Kubernetes garbage-collects the children through their owner references.
//!
//! [`Context`] holds what all reconciles share; [`Error`] is every failure, each with one reason.

mod context;
mod error;
mod notices;
mod outcome;
pub mod shell;
mod steps;

pub use context::{Context, Settings, backoff};
pub use error::Error;
pub use outcome::{Group, Progress, outcome};
pub use shell::{FINALIZER, error_policy, keda_installed, pod_monitor_served, reconcile};
pub use steps::{CleanupProgress, GateStep, Steps, StepsReport};

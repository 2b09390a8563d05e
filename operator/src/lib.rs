//! prapi operator: turns `MarketGroup` manifests into running Product Read API deployments.
//!
//! Flow (docs/operator.md): a [`crd::MarketGroup`] is read and [`validate`]d into a
//! [`plan::GroupPlan`] (the domain view with every default resolved), [`render`]ed by pure
//! functions into the desired child objects, server-side applied and pruned by [`apply`], and
//! summarised by [`status`]; [`gate`] holds routing back per country until the group's table holds
//! the catalogue; [`reconcile`] runs that pipeline, [`run`] hosts it with leader
//! election, health and metrics, and [`external_metrics`] serves the updater's lag to its HPA.

pub mod apply;
pub mod aws;
pub mod cli;
pub mod countries;
pub mod crd;
pub mod discovery;
pub mod external_metrics;
pub mod gate;
pub mod http;
pub mod kafka_secret;
pub mod metrics;
pub mod offline;
pub mod plan;
pub mod pod_settings;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod routes;
pub mod run;
pub mod scope;
pub mod status;
pub mod validate;

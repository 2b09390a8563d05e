//! What the prapi operator and data plane must agree on, written once: the countries a group may
//! serve ([`countries`]), the DynamoDB table's key layout ([`table`]), how logs are set up
//! ([`logs`]), the operational endpoints `/healthz`, `/readyz` and `/metrics` ([`ops`]), the
//! build and process metrics every process exports ([`metrics`]), Kubernetes' name rule
//! ([`names`]), how a new products pod fades in ([`fade_in`]), the signals that stop a process ([`shutdown`]), and the Kafka client security a
//! Secret configures ([`kafka_client`]).

pub mod countries;
pub mod fade_in;
pub mod kafka_client;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod shutdown;
pub mod table;

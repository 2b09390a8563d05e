//! The e2e suite on kind (`make e2e`): prapi installed as users install it — images built from
//! the Dockerfiles, the chart installed with helm — on a real cluster whose pods run, with
//! Skipper as the ingress. Every request goes to 127.0.0.1 (the ingress, `prapi local`) or to the
//! kind network's gateway (Kafka, DynamoDB), both set up by `e2e/kind/up.sh`.
//!
//! Reads `target/kind/env` (or the process environment when `PRAPI_KIND=1`). Without it the tests
//! are skipped with a note, unless `PRAPI_REQUIRE_KIND=1` (set by `make e2e`), when they fail.
//! Every wait is bounded (the test kit's `PATIENCE`); each test removes the namespace and topics
//! it made.

mod autoscaling;
mod failures;
mod ring;
mod smoke;
mod stream;
mod support;
mod traffic;

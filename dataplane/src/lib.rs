//! prapi data plane: the Product Read API served from pod-local caches in front of a store.
//!
//! Flow: events ([`model`]) are written by the updater (or `prapi local`) into a [`store`];
//! the products component reads through the [`cache`] and renders [`formats`] over [`http`].

pub mod batch;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod exact;
pub mod formats;
pub mod gzip;
// `gen` is a reserved keyword in edition 2024; callers write `prapi::r#gen`.
pub mod r#gen;
pub mod http;
pub mod lb;
pub mod metrics;
pub mod model;
pub mod products;
pub mod run;
pub mod store;
pub mod updater;

//! The rendered command lines, run through the data plane's real argument parser (`prapi::cli`).
//!
//! Each container gets its §1 command line plus `PRAPI_<FLAG>` variables from the group's
//! ConfigMap; the variables are checked to name real flags of that subcommand and are parsed as
//! those flags, so both halves of what a pod receives go through the parser the pod will run.

use clap::{CommandFactory, Parser};
use prapi::cli::{Cli, Command, StoreKind};
use prapi_operator::offline;
use prapi_operator::plan::{Component, GroupPlan};
use prapi_operator::render::workloads as w;
use prapi_operator::validate;
use std::path::Path;

fn flag_for_env(subcommand: &str, var: &str) -> Option<String> {
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(subcommand)?;
    sub.get_arguments()
        .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(var))
        .and_then(|a| a.get_long())
        .map(str::to_string)
}

/// What the container would run, as argv for the parser: the command line, then each ConfigMap
/// variable as the flag it stands for.
fn argv(plan: &GroupPlan, c: Component) -> Vec<String> {
    let mut argv = vec![w::BINARY.to_string()];
    argv.extend(w::args(plan, c));
    for (var, value) in w::component_env(plan, c) {
        let flag = flag_for_env(c.as_str(), &var)
            .unwrap_or_else(|| panic!("`prapi {}` has no flag reading {var}", c.as_str()));
        argv.push(format!("--{flag}"));
        argv.push(value);
    }
    argv
}

fn parse(plan: &GroupPlan, c: Component) -> Command {
    let argv = argv(plan, c);
    Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("prapi rejects {argv:?}:\n{e}"))
        .command
}

/// The ops listener the probes use and the shutdown settings the grace period is made for.
fn serving(a: &prapi::cli::ServeArgs) {
    assert_eq!(
        a.ops_listen.map(|l| l.to_string()).as_deref(),
        Some(w::OPS_LISTEN_ADDR)
    );
    assert_eq!(
        (a.shutdown_delay_ms, a.drain_timeout_ms),
        (w::SHUTDOWN_DELAY_MS, w::DRAIN_TIMEOUT_MS)
    );
}

fn check(plan: &GroupPlan) {
    let countries = plan.countries.join(",");
    match parse(plan, Component::Products) {
        Command::Products(a) => {
            assert_eq!(a.listen.to_string(), w::LISTEN_ADDR);
            assert_eq!(a.countries.to_string(), countries);
            assert_eq!(a.store.store, StoreKind::Dynamodb);
            assert_eq!(a.store.table.as_deref(), Some(plan.table.as_str()));
            assert!(!a.store.create_table, "the operator owns the table");
            assert_eq!(
                a.cache.cache_ttl_seconds,
                plan.products.cache_ttl_seconds as u64
            );
            assert_eq!(
                a.cache.cache_stale_seconds,
                plan.products.cache_stale_seconds as u64
            );
            assert_eq!(a.cache.cache_max_bytes, plan.products.cache_max_bytes);
            serving(&a.serve);
        }
        other => panic!("products parsed as {other:?}"),
    }
    match parse(plan, Component::Batch) {
        Command::Batch(a) => {
            assert_eq!(a.listen.to_string(), w::LISTEN_ADDR);
            assert_eq!(a.countries.to_string(), countries);
            let service = format!("{}/{}", plan.owner.namespace, plan.products_headless_name());
            assert_eq!(a.products_service.as_deref(), Some(service.as_str()));
            assert!(a.endpoints.is_empty());
            assert_eq!(a.max_items, plan.batch.max_items as usize);
            serving(&a.serve);
        }
        other => panic!("batch parsed as {other:?}"),
    }
    match parse(plan, Component::Updater) {
        Command::Updater(a) => {
            assert_eq!(a.kafka_bootstrap, plan.updater.bootstrap_servers);
            assert_eq!(a.products_topic, plan.updater.products_topic);
            assert_eq!(a.offers_topic, plan.updater.offers_topic);
            assert_eq!(a.group, plan.updater.consumer_group);
            assert_eq!(a.countries.to_string(), countries);
            assert_eq!(a.store.store, StoreKind::Dynamodb);
            assert_eq!(a.store.table.as_deref(), Some(plan.table.as_str()));
            assert_eq!(
                a.listen.to_string(),
                w::LISTEN_ADDR,
                "probes and metrics port"
            );
        }
        other => panic!("updater parsed as {other:?}"),
    }
}

#[test]
fn every_valid_fixture_renders_command_lines_prapi_accepts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        for mg in offline::parse_manifests(&text).expect("parses") {
            let plan = validate::plan(&mg, "img", "default").expect("valid");
            check(&plan);
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn the_headless_service_flag_is_namespace_slash_name() {
    let mg = offline::parse_manifests(
        "apiVersion: prapi.dev/v1alpha1\nkind: MarketGroup\nmetadata: {name: eu-north, namespace: team-a}\nspec: {countries: [se, fi, no, dk], batch: {maxItems: 7}}\n",
    )
    .expect("parses")
    .remove(0);
    let plan = validate::plan(&mg, "img", "default").expect("valid");
    check(&plan);
    let argv = argv(&plan, Component::Batch);
    let i = argv
        .iter()
        .position(|a| a == "--products-service")
        .expect("flag");
    assert_eq!(argv[i + 1], "team-a/eu-north-products-headless");
}

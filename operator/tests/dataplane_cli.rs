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

/// The flag of `subcommand` (or a global one, such as `--log-format`) that reads `var`.
fn flag_for_env(subcommand: &str, var: &str) -> Option<String> {
    let cmd = Cli::command();
    let sub = cmd.find_subcommand(subcommand)?;
    sub.get_arguments()
        .chain(cmd.get_arguments().filter(|a| a.is_global_set()))
        .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(var))
        .and_then(|a| a.get_long())
        .map(str::to_string)
}

/// What the container would run, as argv for the parser: the command line, then each ConfigMap
/// variable as the flag it stands for. The log filter is no flag: the log setup reads it, and its
/// own parser must accept it.
fn argv(plan: &GroupPlan, c: Component) -> Vec<String> {
    let mut argv = vec![w::BINARY.to_string()];
    argv.extend(w::args(plan, c));
    for (var, value) in w::component_env(plan, c) {
        if var == prapi_common::logs::FILTER_VAR {
            prapi_common::logs::check_filter(&value)
                .unwrap_or_else(|e| panic!("{} pods cannot read their filter: {e}", c.as_str()));
            continue;
        }
        let flag = flag_for_env(c.as_str(), &var)
            .unwrap_or_else(|| panic!("`prapi {}` has no flag reading {var}", c.as_str()));
        argv.push(format!("--{flag}"));
        argv.push(value);
    }
    argv
}

fn parse(plan: &GroupPlan, c: Component) -> Command {
    let argv = argv(plan, c);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("prapi rejects {argv:?}:\n{e}"));
    let format = match plan.log_format {
        prapi_operator::crd::LogFormat::Json => prapi_common::logs::LogFormat::Json,
        prapi_operator::crd::LogFormat::Text => prapi_common::logs::LogFormat::Text,
    };
    assert_eq!(cli.log_format, format, "{}", c.as_str());
    cli.command
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
            assert_eq!(a.balance_factor, plan.balance_factor());
            let h = &plan.batch.hedging;
            assert_eq!(a.hedge.hedge, h.enabled);
            assert_eq!(a.hedge.hedge_percentile, f64::from(h.percentile) / 100.0);
            assert_eq!(a.hedge.hedge_budget, f64::from(h.budget_percent) / 100.0);
        }
        other => panic!("batch parsed as {other:?}"),
    }
    match parse(plan, Component::Updater) {
        Command::Updater(a) => {
            assert_eq!(a.kafka_bootstrap, plan.updater.bootstrap_servers);
            assert_eq!(a.products_topic, plan.updater.products_topic);
            assert_eq!(a.offers_topic, plan.updater.offers_topic);
            assert_eq!(a.group, plan.updater.consumer_group);
            let dead_letters = &plan.updater.dead_letter_topic;
            assert_eq!(
                a.dead_letter_topic.as_deref(),
                (!dead_letters.is_empty()).then_some(dead_letters.as_str())
            );
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

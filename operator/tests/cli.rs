//! The `prapi-operator` command line: every flag reads `PRAPI_<FLAG>`, and the offline
//! subcommands work end to end through the real binary.

use clap::{CommandFactory, Parser};
use prapi_operator::cli::{Cli, Command, PodMonitorChoice, UpdaterAutoscalerChoice};
use std::process::Command as Process;

#[test]
fn every_flag_also_reads_its_environment_variable() {
    let cmd = Cli::command();
    let mut checked = 0;
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let expect = format!("PRAPI_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expect.as_str()),
                "{} --{long}",
                sub.get_name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "checked only {checked} flags");
}

#[test]
fn run_flags_parse_with_defaults_and_overrides() {
    let cli = Cli::try_parse_from(["prapi-operator", "run"]).expect("defaults parse");
    let Command::Run(args) = cli.command else {
        panic!("run")
    };
    assert_eq!(args.updater_autoscaler, UpdaterAutoscalerChoice::Auto);
    assert!(
        args.watch_namespaces.is_empty(),
        "every namespace by default"
    );
    assert_eq!(args.pod_monitor, PodMonitorChoice::Auto);
    assert!(args.leader_election);
    assert_eq!(args.lease_duration_seconds, 10);
    assert_eq!(args.listen.port(), 8080);
    assert!(args.external_metrics);
    assert_eq!(args.external_metrics_listen.port(), 6443);
    assert_eq!(args.external_metrics_cert_file, None);
    assert_eq!(args.bootstrap_max_lag, 100);
    assert!(
        Cli::try_parse_from(["prapi-operator", "run", "--bootstrap-max-lag", "-1"]).is_err(),
        "a negative gate threshold is refused"
    );
    // A certificate without its key (or the reverse) is refused, not silently self-signed.
    for flag in [
        "--external-metrics-cert-file",
        "--external-metrics-key-file",
    ] {
        assert!(Cli::try_parse_from(["prapi-operator", "run", flag, "/tls/x.pem"]).is_err());
    }
    let cli = Cli::try_parse_from([
        "prapi-operator",
        "run",
        "--updater-autoscaler",
        "keda",
        "--leader-election",
        "false",
        "--watch-namespaces",
        "team-a,team-b",
        "--watch-namespaces",
        "team-c",
        "--pod-monitor",
        "off",
    ])
    .expect("overrides parse");
    let Command::Run(args) = cli.command else {
        panic!("run")
    };
    assert_eq!(args.updater_autoscaler, UpdaterAutoscalerChoice::Keda);
    assert_eq!(args.pod_monitor, PodMonitorChoice::Off);
    assert!(!args.leader_election);
    assert_eq!(args.watch_namespaces, ["team-a", "team-b", "team-c"]);
    // A namespace name that cannot exist is refused at start, not watched in vain.
    for bad in ["Team-A", "team_a", "-a", "a-", "", &"a".repeat(64)] {
        assert!(
            Cli::try_parse_from(["prapi-operator", "run", "--watch-namespaces", bad]).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(
        Cli::try_parse_from(["prapi-operator", "run", "--updater-autoscaler", "magic"]).is_err()
    );
    assert!(Cli::try_parse_from(["prapi-operator", "run", "--pod-monitor", "maybe"]).is_err());
}

fn operator() -> Process {
    Process::new(env!("CARGO_BIN_EXE_prapi-operator"))
}

#[test]
fn crd_subcommand_prints_the_committed_crd() {
    let out = operator().arg("crd").output().expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf-8"),
        include_str!("../../crds/marketgroup.yaml")
    );
}

#[test]
fn render_subcommand_prints_every_object_or_the_problems() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/valid/minimal.yaml"
    );
    let out = operator()
        .args(["render", "-f", fixture, "--updater-autoscaler", "keda"])
        .env("PRAPI_DEFAULT_IMAGE", "example/prapi:9")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.matches("\n---\n").count() + 1, 20, "20 objects");
    assert!(text.contains("kind: ScaledObject"));
    assert!(text.contains("image: example/prapi:9"));
    assert!(text.contains("namespace: shop"));

    let bad = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/invalid/04-countries-duplicate.yaml"
    );
    let out = operator()
        .args(["render", "-f", bad])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.countries must not list a country twice"),
        "{err}"
    );

    let out = operator()
        .args(["render", "-f", "/nonexistent.yaml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent.yaml"));
}

#[test]
fn data_plane_env_parses_name_value_pairs_and_refuses_bad_names() {
    use prapi_operator::cli::parse_env_var;
    assert_eq!(
        parse_env_var("AWS_ENDPOINT_URL_DYNAMODB=http://10.0.0.1:8000/?a=b"),
        Ok((
            "AWS_ENDPOINT_URL_DYNAMODB".to_string(),
            "http://10.0.0.1:8000/?a=b".to_string()
        ))
    );
    assert_eq!(parse_env_var("EMPTY="), Ok(("EMPTY".into(), String::new())));
    assert_eq!(
        parse_env_var("a.b-c_d=1"),
        Ok(("a.b-c_d".into(), "1".into()))
    );
    for bad in [
        "NOVALUE",
        "=x",
        "1X=y",
        "A B=c",
        "A\u{e9}=x",
        "PRAPI_LISTEN=:1",
    ] {
        let err = parse_env_var(bad).expect_err(bad);
        assert!(!err.is_empty(), "{bad}");
    }
    assert!(
        parse_env_var("PRAPI_LISTEN=:1")
            .expect_err("own")
            .contains("operator's own")
    );
    // Repeated on the command line, or one per line in the environment variable.
    let cli = Cli::try_parse_from([
        "prapi-operator",
        "run",
        "--data-plane-env",
        "A=1",
        "--data-plane-env",
        "B=2",
    ])
    .expect("parses");
    let Command::Run(args) = cli.command else {
        panic!("run")
    };
    assert_eq!(
        args.data_plane.data_plane_env,
        vec![("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    assert!(
        Cli::try_parse_from(["prapi-operator", "run", "--data-plane-env", "PRAPI_X=1"]).is_err()
    );
}

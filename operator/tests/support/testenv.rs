//! The shared test environment's endpoints for the operator's integration tests: from the process
//! (after `source target/testenv/env`, which sets `PRAPI_TESTENV=1`), else from
//! `$PRAPI_TESTENV_DIR/env` or `<workspace>/target/testenv/env`. Missing: the test is skipped
//! with a visible note, or fails under `PRAPI_REQUIRE_TESTENV=1` (`make test`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

/// Variables of the environment.
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// A variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A variable that `get` checked.
    pub fn must(&self, name: &str) -> &str {
        self.var(name)
            .unwrap_or_else(|| panic!("{name} checked but missing"))
    }
}

fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        out.insert(k.to_string(), v.to_string());
    }
    out
}

/// The environment when every variable in `needs` is set; else skip (None) or panic.
pub fn get(test: &str, needs: &[&str]) -> Option<Env> {
    let vars: BTreeMap<String, String> = if std::env::var("PRAPI_TESTENV").is_ok_and(|v| v == "1") {
        std::env::vars().collect()
    } else {
        let path = std::env::var_os("PRAPI_TESTENV_DIR")
            .map(|d| PathBuf::from(d).join("env"))
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/testenv/env")
            });
        std::fs::read_to_string(&path)
            .map(|t| parse(&t))
            .unwrap_or_default()
    };
    let env = Env { vars };
    let missing: Vec<&str> = needs
        .iter()
        .copied()
        .filter(|n| env.var(n).is_none())
        .collect();
    if missing.is_empty() {
        return Some(env);
    }
    let reason = format!(
        "{} not set (start it with `make testenv`)",
        missing.join(", ")
    );
    if std::env::var("PRAPI_REQUIRE_TESTENV").is_ok_and(|v| v == "1") {
        panic!("{test}: the test environment is required: {reason}");
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
    None
}

/// A name unique to this run (valid as a table, topic, namespace).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{prefix}-{:x}-{:x}-{}",
        std::process::id(),
        nanos & 0xff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

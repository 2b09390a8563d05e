//! Gzip bodies as real clients read them: Python's zlib, the `gzip` tool and Go's strict
//! single-member reader decode batch and single-GET bodies of a running server (embedded store,
//! generated catalogue) to exactly the identity bodies, with nothing left over.
//!
//! The tools are required: a missing one fails the test with what to install, it never skips.

mod local_support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use local_support::{Local, get};
use reqwest::StatusCode;

/// Python: one `decompressobj(wbits=31)` (a gzip wrapper, one member) must reach the end of the
/// member with no unused data after it; prints what it decoded.
const PYTHON: &str = r#"
import sys, zlib
data = sys.stdin.buffer.read()
d = zlib.decompressobj(wbits=31)
out = d.decompress(data) + d.flush()
if not d.eof:
    sys.exit("zlib: the gzip member does not end")
if d.unused_data:
    sys.exit("zlib: %d bytes after the first member" % len(d.unused_data))
sys.stdout.buffer.write(out)
"#;

/// Go: `gzip.Reader` with `Multistream(false)` reads exactly one member; anything after it is
/// reported. Standard library only, so `go run` downloads nothing.
const GO_MAIN: &str = r#"package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
)

func main() {
	in := bufio.NewReader(os.Stdin)
	r, err := gzip.NewReader(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gzip header:", err)
		os.Exit(2)
	}
	r.Multistream(false)
	if _, err := io.Copy(os.Stdout, r); err != nil {
		fmt.Fprintln(os.Stderr, "gzip member:", err)
		os.Exit(3)
	}
	rest, _ := io.Copy(io.Discard, in)
	if rest != 0 {
		fmt.Fprintf(os.Stderr, "%d bytes after the first member\n", rest)
		os.Exit(4)
	}
}
"#;

/// Runs `program args` with `input` on stdin; fails the test clearly when the tool is missing.
fn run(program: &str, args: &[&str], dir: &Path, envs: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("this test needs `{program}` on PATH (python3, gzip and go are required): {e}")
        });
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // Written from a thread: a tool that writes while we are still writing must not block us.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait for the tool");
    writer.join().expect("writer thread").expect("write stdin");
    out
}

/// What `program` printed, after checking that it succeeded.
fn decoded(what: &str, program: &str, out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {program} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every reader decodes `gz` to exactly `identity`.
fn check_readers(what: &str, gz: &[u8], identity: &[u8], go_dir: &Path) {
    let tmp = go_dir.parent().expect("temp dir");
    let python = decoded(
        what,
        "python3",
        run("python3", &["-c", PYTHON], tmp, &[], gz),
    );
    assert!(
        python == identity,
        "{what}: python's zlib decoded something else"
    );
    let test = run("gzip", &["-t"], tmp, &[], gz);
    assert!(
        test.status.success(),
        "{what}: gzip -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    let gzip = decoded(what, "gzip", run("gzip", &["-dc"], tmp, &[], gz));
    assert!(gzip == identity, "{what}: gzip -dc decoded something else");
    let go_env = [("GOTOOLCHAIN", "local"), ("GOFLAGS", "-mod=mod")];
    let go = decoded(what, "go", run("go", &["run", "."], go_dir, &go_env, gz));
    assert!(
        go == identity,
        "{what}: Go's single-member reader decoded something else"
    );
}

async fn body(local: &Local, path: &str, headers: &[(&str, &str)], gzip: bool) -> Vec<u8> {
    let mut h = headers.to_vec();
    if gzip {
        h.push(("accept-encoding", "gzip"));
    }
    let resp = get(&local.base, path, &h).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    let encoding = resp.headers().get("content-encoding").cloned();
    assert_eq!(
        encoding.is_some(),
        gzip,
        "{path}: content-encoding {encoding:?}"
    );
    resp.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn batch_and_single_gzip_bodies_are_one_member_for_every_reader() {
    let local = local_support::start(120, 16).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let go_dir = dir.path().join("strict-gunzip");
    std::fs::create_dir_all(&go_dir).expect("go dir");
    std::fs::write(go_dir.join("go.mod"), "module strictgunzip\n\ngo 1.21\n").expect("go.mod");
    std::fs::write(go_dir.join("main.go"), GO_MAIN).expect("main.go");

    let mut ids: Vec<&str> = local
        .ids
        .iter()
        .step_by(2)
        .take(40)
        .map(String::as_str)
        .collect();
    ids.insert(5, "no-such-product");
    let batch = format!("/product-offers?ids={}", ids.join(","));
    let products = format!("/products?ids={}", ids.join(","));
    let single = format!("/product-offers/{}", ids[0]);
    let cases = [
        (
            "product-offers batch, json",
            batch.as_str(),
            "application/json",
        ),
        (
            "product-offers batch, gamma",
            batch.as_str(),
            "application/x.gamma-format+json",
        ),
        ("products batch", products.as_str(), "application/json"),
        (
            "single product-offers",
            single.as_str(),
            "application/x.beta-format+json",
        ),
    ];
    for (what, path, accept) in cases {
        let headers = [("x-country", "de"), ("accept", accept)];
        let identity = body(&local, path, &headers, false).await;
        let gz = body(&local, path, &headers, true).await;
        check_readers(what, &gz, &identity, &go_dir);
    }
    // An empty batch body is one member too.
    let path = "/product-offers?ids=nope-1,nope-2";
    let headers = [("x-country", "at")];
    let identity = body(&local, path, &headers, false).await;
    assert_eq!(
        identity,
        br#"{"items":[],"missing":["nope-1","nope-2"],"failed":[]}"#
    );
    let gz = body(&local, path, &headers, true).await;
    check_readers("empty batch", &gz, &identity, &go_dir);
}

//! `prapi`: one binary, one subcommand per component (docs/cli.md). Parsing and dispatch only; the
//! components live in the library (`prapi::run`).

use std::future::Future;

use anyhow::Context;
use clap::Parser;
use prapi::cli::{Cli, Command};
use prapi::run;

// mimalloc instead of glibc's malloc: the serving path allocates a few small objects per request
// from many threads, where glibc spent ~8 % of the CPU in malloc/free (and malloc_consolidate) in
// profiles; with mimalloc the `serve` benchmark's prapi throughput rose 13 % (docs/development.md, Benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn block_on(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    prapi_common::logs::init(cli.log_format);
    let result = match cli.command {
        Command::Gen(args) => run::gen_catalogue(args),
        Command::Ring(args) => run::ring(args),
        Command::Local(args) => block_on(run::local(args)),
        Command::Products(args) => block_on(run::products(args)),
        Command::Batch(args) => block_on(run::batch(args)),
        Command::Updater(args) => block_on(run::updater(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prapi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

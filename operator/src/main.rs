//! `prapi-operator run | crd | render -f FILE` (docs/operator.md): wiring only.

use anyhow::Context as _;
use clap::Parser;
use prapi_operator::cli::{Cli, Command, RenderAutoscaler};
use prapi_operator::offline;
use prapi_operator::render::autoscaling::UpdaterAutoscaler;
use std::io::Read;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", offline::crd_yaml()?);
            Ok(())
        }
        Command::Render(args) => {
            let text = if args.file.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the manifest from stdin")?;
                s
            } else {
                std::fs::read_to_string(&args.file)
                    .with_context(|| format!("reading {}", args.file.display()))?
            };
            let autoscaler = match args.updater_autoscaler {
                RenderAutoscaler::Keda => UpdaterAutoscaler::Keda,
                RenderAutoscaler::Hpa => UpdaterAutoscaler::ExternalMetricHpa,
            };
            let out = offline::render_manifests(
                &text,
                &args.namespace,
                &args.default_image,
                &args.data_plane,
                autoscaler,
            )
            .with_context(|| format!("rendering {}", args.file.display()))?;
            print!("{out}");
            let extras = offline::render_extras(
                &text,
                &args.namespace,
                &args.default_image,
                args.routing.provider(),
                args.gateway.clone(),
                args.store == prapi_operator::cli::StoreChoice::Aws,
            )
            .with_context(|| format!("rendering routes of {}", args.file.display()))?;
            print!("{extras}");
            Ok(())
        }
        Command::Run(args) => {
            prapi_common::logs::init(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(prapi_operator::run::run(*args))
        }
    }
}

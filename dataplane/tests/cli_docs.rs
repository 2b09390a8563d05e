//! docs/cli.md lists every flag of every `prapi` subcommand, in that subcommand's section: the
//! command line is a contract (the operator renders it), so its reference must not drift.

use clap::CommandFactory;
use prapi::cli::Cli;

#[test]
fn every_flag_of_every_subcommand_is_in_docs_cli_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md"))
        .expect("read docs/cli.md");
    let cli = Cli::command();
    let mut checked = 0;
    for sub in cli.get_subcommands() {
        let heading = format!("### `prapi {}`", sub.get_name());
        let start = doc
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/cli.md has no section {heading}"));
        let section = doc[start + heading.len()..]
            .split("\n### ")
            .next()
            .unwrap_or_default();
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if arg.is_global_set() || matches!(long, "help" | "version") {
                continue;
            }
            assert!(
                section.contains(&format!("| `--{long}` |")),
                "docs/cli.md, {heading}: --{long} is missing"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} flags found");
}

//! The `labeld` command: `label` files in-process, `info` about the model and taxonomy.
//!
//! Parses flags (every flag also has a `LABELD_*` environment variable), builds the pipeline and
//! hands over; no labelling logic lives here.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("labeld: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

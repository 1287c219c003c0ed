//! The `labeld` command: `label` files in-process, `info` about the model and taxonomy.
//!
//! Parses flags (every flag also has a `LABELD_*` environment variable), builds the pipeline and
//! hands over; no labelling logic lives here.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    // Logs go to stderr (stdout carries `label`'s answers). LABELD_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABELD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        cli::LogFormat::Human => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("labeld: error: {err:#}");
            ExitCode::from(1)
        }
    }
}

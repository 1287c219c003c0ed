//! The `labeld` command: `label` files in-process, `info` about the model and taxonomy.
//!
//! Parses flags (every flag also has a `LABELD_*` environment variable), builds the pipeline and
//! hands over; no labelling logic lives here.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps
/// freed memory in it: a server whose I/O, decode and compute threads all handle image-sized
/// buffers would hold several copies of its peak. Two arenas, and freed memory handed back to
/// the kernel every few seconds, keep the resident size near what is in use.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: plain calls into glibc's allocator, before (mallopt) and beside (malloc_trim)
    // other threads' allocations, which glibc supports.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let _ = std::thread::Builder::new()
        .name("labeld-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            // SAFETY: as above.
            unsafe {
                libc::malloc_trim(0);
            }
        });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
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

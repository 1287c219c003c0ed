//! Integration tests, one binary (see STYLE.md: every extra test crate re-links the library).
//!
//! These run the real weights under `weights/` on the CPU.

mod centric;
mod cli;
mod explain;
mod faults;
mod golden;
mod grpc;
mod hostile;
mod http;
mod images;
mod serve;
mod support;
mod taxonomy_data;
mod tls;

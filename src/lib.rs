//! labeld: image label detection with a pretrained EfficientNet-Lite in candle.
//!
//! # Layout
//! Data flows one way: front door → decode → (batch) → model → labels → reply.
//! - [`image`]: validation by magic bytes and header limits, decoding, EXIF orientation, the
//!   model's preprocessing (Pillow-exact bicubic resize, centre crop, channel-major 8-bit
//!   levels that the model normalises as it reads them).
//! - [`model`]: the only module that knows candle: EfficientNet-Lite, device choice, the
//!   [`model::Classifier`] interface.
//! - [`taxonomy`]: the 3-level label hierarchy loaded from `weights/taxonomy.json`.
//! - [`labels`]: prediction → IMM-shaped [`labels::Label`]s (aggregation, threshold, language).
//! - [`centric`]: CentricScore from class activation maps; [`explain`]: heatmaps and boxes from
//!   the same maps.
//! - [`labeler`]: the pipeline assembled in one process (used by the CLI).
//! - [`label_files`]: `labeld label`: folders walked, sharded, resumed, written as json/jsonl/csv;
//!   [`overlay`]: the heatmap PNGs of `--explain`.
//! - [`source`]: `oss://bucket/key` → bytes, from local-folder buckets.
//! - [`batcher`]: the bounded queue and the model worker threads (dynamic batching).
//! - [`detect`]: the transport-neutral use case every door calls.
//! - [`api`]: the front doors (gRPC; OSS-compatible and JSON HTTP with OSS signatures; API keys); the only
//!   code that knows protocols.
//! - [`server`]: wiring for `labeld serve`; [`shutdown`]: the stop signal; [`pb`]: generated types.
//! - [`tls`]: optional TLS (rustls) for the gRPC and HTTP ports: certificate loading and the
//!   bounded handshake every accepted connection goes through.
//! - [`observe`]: Prometheus metrics and the one log line per answered request.
//! - [`error`]: the error codes every door answers in; [`request_id`]: ids for every answer.
//!
//! # Invariants
//! `image`, `taxonomy`, `labels`, `centric` and `explain` never import candle, tokio or any server crate;
//! only `model` knows candle; only `api` (and the wiring in `server`) knows tonic. Nothing below
//! `main.rs` reads environment variables.

pub mod api;
pub mod batcher;
pub mod centric;
pub mod detect;
pub mod error;
pub mod explain;
pub mod image;
pub mod label_files;
pub mod labeler;
pub mod labels;
pub mod model;
pub mod observe;
pub mod overlay;
pub mod pb;
pub mod request_id;
pub mod server;
pub mod shutdown;
pub mod source;
pub mod taxonomy;
pub mod tls;
pub mod worker_pool;

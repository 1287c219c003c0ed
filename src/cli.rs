//! Command-line interface: flag definitions for `label`, `serve` and `info`, and their wiring.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use candle_core::DType;
use clap::{Parser, Subcommand};

use labeld::api::api_keys::ApiKeys;
use labeld::api::auth::Credentials;
use labeld::batcher::BatchConfig;
use labeld::image::ImageLimits;
use labeld::label_files;
use labeld::labeler::TAXONOMY_FILE;
use labeld::labeler::{default_weights_dir, Labeler, LabelerConfig};
use labeld::labels::{LabelOptions, DEFAULT_THRESHOLD};
use labeld::model::{
    init_threads, parse_device, parse_precision, Classifier, LiteClassifier, ModelKind,
};
use labeld::server::{Listeners, ServeSettings, Server};
use labeld::source::Buckets;
use labeld::taxonomy::Language;
use labeld::taxonomy::Taxonomy;
use labeld::tls::ServerTls;
use std::net::SocketAddr;
use std::time::Duration;

/// Image label detection with a pretrained EfficientNet-Lite.
#[derive(Debug, Parser)]
#[command(name = "labeld", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: human (text) or json (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        env = "LABELD_LOG_FORMAT",
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Flags shared by every command that loads the model.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// Model: efficientnet-lite2 (better labels) or efficientnet-lite0 (faster).
    #[arg(long, env = "LABELD_MODEL", default_value = "efficientnet-lite2", value_parser = parse_model)]
    model: ModelKind,
    /// Device: cpu, cuda, cuda:N or metal (GPU devices need a build with that feature).
    #[arg(long, env = "LABELD_DEVICE", default_value = "cpu")]
    device: String,
    /// Compute precision: f32, or on a GPU f16 or bf16 (tensor cores, half the memory traffic).
    #[arg(long, env = "LABELD_PRECISION", default_value = "f32", value_parser = parse_precision)]
    precision: DType,
    /// Directory holding the .safetensors weights and taxonomy.json
    /// [default: ./weights, else the one this binary was built from].
    #[arg(long, env = "LABELD_WEIGHTS_DIR")]
    weights_dir: Option<PathBuf>,
    /// Threads the model computes on (CPU) [default: the CPUs this process may use, the
    /// container's CPU quota included].
    #[arg(long, env = "LABELD_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Label image files and folders in-process; prints one answer per image.
    Label {
        /// Files or folders (folders are searched recursively for .jpg, .jpeg and .png).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// Drop labels less confident than this (0..1).
        #[arg(long, env = "LABELD_THRESHOLD", default_value_t = DEFAULT_THRESHOLD, value_parser = parse_threshold)]
        threshold: f32,
        /// Language of label names: en or zh-Hans.
        #[arg(long, env = "LABELD_LANGUAGE", default_value = "en", value_parser = parse_language)]
        language: Language,
        /// Return at most this many labels per image.
        #[arg(long)]
        max_labels: Option<usize>,
        /// Output: json (the IMM body per image), jsonl (one line per image, with "File") or csv
        /// (one row per label).
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Append answers to this file (jsonl or csv) instead of printing them; files already
        /// answered in it are skipped, so an interrupted run resumes where it stopped.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Label only shard i of n (0 <= i < n): each file belongs to exactly one shard, so n
        /// jobs (a Kubernetes Indexed Job) can split a folder between them.
        #[arg(long, value_parser = label_files::Shard::parse)]
        shard: Option<label_files::Shard>,
        /// No progress bar (it is shown only when stderr is a terminal anyway).
        #[arg(long, short)]
        quiet: bool,
        /// Images per forward pass.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
        batch_size: u16,
        /// Explain: add each label's BoundingBox and Heatmap to the answers and write, per image,
        /// a PNG of its most confident fine label's heatmap and box over the photo into this
        /// folder.
        #[arg(long, value_name = "OUT_DIR")]
        explain: Option<PathBuf>,
        /// Add ImageProperties to each answer: dominant colours, brightness, sharpness, contrast.
        #[arg(long)]
        properties: bool,
    },
    /// Serve the gRPC API (labeld.v1.ImageLabels, grpc.health.v1, reflection) until SIGTERM/SIGINT.
    Serve(Box<ServeArgs>),
    /// Print the model, device and taxonomy this build would serve, as JSON.
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
}

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// gRPC listen address (container images and manifests set 0.0.0.0:50051).
    #[arg(long, env = "LABELD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// HTTP listen address: the OSS-compatible door, POST /v1/labels, /health/live, /health/ready.
    #[arg(long, env = "LABELD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Also serve `/metrics` on this address of its own (it is always on the HTTP port too).
    #[arg(long, env = "LABELD_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The region OSS V4 signatures must be scoped to.
    #[arg(long, env = "LABELD_REGION", default_value = "cn-hangzhou")]
    region: String,
    /// A file of OSS access keys, one `ACCESS_KEY_ID:ACCESS_KEY_SECRET` per line.
    #[arg(long, env = "LABELD_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// An OSS access key id (with LABELD_ACCESS_KEY_SECRET).
    #[arg(long, env = "LABELD_ACCESS_KEY_ID", hide_env_values = true)]
    access_key_id: Option<String>,
    /// The secret of LABELD_ACCESS_KEY_ID (environment only: a flag would show in `ps`).
    #[arg(skip = std::env::var("LABELD_ACCESS_KEY_SECRET").ok())]
    access_key_secret: Option<String>,
    /// Language of label names on the OSS door (it has no language parameter): en or zh-Hans.
    #[arg(long, env = "LABELD_LANGUAGE", default_value = "en", value_parser = parse_language)]
    language: Language,
    /// Most images in one forward pass (16: a few percent more throughput under load than 8 on
    /// both models, BENCHMARKS.md "Batching settings").
    #[arg(long, env = "LABELD_MAX_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_batch: u16,
    /// Longest a batch waits to fill once the model is free, in microseconds.
    #[arg(long, env = "LABELD_MAX_DELAY_US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    max_delay_us: u64,
    /// Most requests admitted at once (decoding, queued or in the model); beyond it requests are
    /// refused at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "LABELD_MAX_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_queue: u32,
    /// Longest a request without a deadline may wait for the model, in milliseconds: when the
    /// model's recent pace says a new request would wait longer (or longer than its own gRPC
    /// deadline), it is refused at once with RESOURCE_EXHAUSTED / 503 + Retry-After.
    #[arg(long, env = "LABELD_MAX_WAIT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    max_wait_ms: u64,
    /// Model worker threads, each with its own copy of the model.
    #[arg(long, env = "LABELD_MODEL_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    model_workers: u16,
    /// Threads of a decode pool of its own [default: none: images are decoded and preprocessed on
    /// the compute threads (`--threads`), between the model's passes, which is faster when the
    /// model runs on the same CPUs].
    #[arg(long, env = "LABELD_DECODE_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    decode_workers: Option<u16>,
    /// A bucket for the OSS door and `source_uri = "oss://NAME/key"`: NAME=DIR, or
    /// NAME=s3://BUCKET[/prefix] for an S3-compatible store configured by the AWS_* variables
    /// (repeatable; the env var is comma-separated) [default: fixtures=tests/fixtures when run
    /// from a checkout].
    #[arg(long = "bucket", env = "LABELD_BUCKETS", value_delimiter = ',')]
    buckets: Vec<String>,
    /// An HTTP client must send its request headers within this many seconds, or its connection
    /// is closed (against clients that trickle bytes to hold connections open).
    #[arg(long, env = "LABELD_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_secs: u64,
    /// A POST /v1/labels body must arrive within this many seconds (504 RequestTimeout).
    #[arg(long, env = "LABELD_BODY_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout_secs: u64,
    /// Longest wait for an S3-compatible bucket to answer a GET, seconds (then 503 /
    /// UNAVAILABLE; the next request tries again).
    #[arg(long, env = "LABELD_S3_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    s3_timeout_secs: u64,
    /// After SIGTERM, how long to wait for calls in progress before closing connections, seconds.
    #[arg(long, env = "LABELD_DRAIN_TIMEOUT_SECS", default_value_t = 25)]
    drain_timeout_secs: u64,
    /// A file of API keys for gRPC and POST /v1/labels, one per line (`authorization: Bearer
    /// <key>`); more keys can come from LABELD_API_KEYS (comma-separated, environment only).
    #[arg(long, env = "LABELD_API_KEYS_FILE")]
    api_keys: Option<PathBuf>,
    /// API keys from the environment (never a flag: it would show in `ps`).
    #[arg(skip = std::env::var("LABELD_API_KEYS").ok())]
    api_keys_env: Option<String>,
    /// Serve gRPC and POST /v1/labels without API keys on a non-loopback address.
    #[arg(long, env = "LABELD_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// A PEM certificate chain (server certificate first): with --tls-key, the gRPC and HTTP
    /// ports speak TLS only (1.2 and 1.3); the --metrics-addr port stays plain HTTP.
    #[arg(
        long,
        env = "LABELD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1; not encrypted).
    #[arg(
        long,
        env = "LABELD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

fn parse_model(s: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(s).ok_or_else(|| {
        let known: Vec<_> = ModelKind::ALL.iter().map(|m| m.name()).collect();
        format!("unknown model {s:?}; expected one of {}", known.join(", "))
    })
}

fn parse_threshold(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
        _ => Err(format!("threshold must be a number from 0 to 1, got {s:?}")),
    }
}

fn parse_language(s: &str) -> Result<Language, String> {
    Language::from_tag(s)
        .ok_or_else(|| format!("unsupported language {s:?}; expected en or zh-Hans"))
}

impl ModelArgs {
    fn weights_dir(&self) -> PathBuf {
        self.weights_dir.clone().unwrap_or_else(default_weights_dir)
    }

    /// Sizes the compute pool; call before any model work.
    fn init_threads(&self) -> usize {
        let threads = init_threads(self.threads.map(usize::from));
        tracing::debug!(threads, "compute pool");
        threads
    }

    fn load(&self) -> anyhow::Result<Labeler> {
        self.init_threads();
        let device = parse_device(&self.device)?;
        let config = LabelerConfig {
            weights_dir: self.weights_dir(),
            model: self.model,
            device,
            precision: self.precision,
            limits: ImageLimits::default(),
        };
        Labeler::load(&config).with_context(|| {
            format!(
                "loading {} from {}",
                config.model,
                config.weights_dir.display()
            )
        })
    }
}

/// Runs the parsed command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Label {
            paths,
            model,
            threshold,
            language,
            max_labels,
            format,
            output,
            shard,
            quiet,
            batch_size,
            explain,
            properties,
        } => {
            let labeler = model.load()?;
            let job = label_files::Job {
                paths,
                options: LabelOptions {
                    threshold,
                    language,
                    max_labels,
                    explain: explain.is_some(),
                    properties,
                },
                batch_size: usize::from(batch_size),
                format: format.into(),
                shard,
                output,
                progress: !quiet,
                explain_dir: explain,
            };
            let summary = label_files::run(&labeler, &job)?;
            if !quiet {
                let shard = shard.map(|s| format!(" (shard {}/{})", s.index, s.count));
                eprintln!("labeld: {summary}{}", shard.unwrap_or_default());
            }
            // Exit status 2 tells a pipeline that some images failed (the rest were labelled).
            Ok(if summary.failed > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve(args) => serve(*args),
        Command::Info { model } => {
            let labeler = model.load()?;
            let taxonomy = labeler.taxonomy();
            let info = serde_json::json!({
                "model": labeler.model().kind().name(),
                "input_size": labeler.model().kind().input_size(),
                "device": model.device,
                "precision": format!("{:?}", model.precision).to_lowercase(),
                "classes": taxonomy.class_count(),
                "taxonomy_version": taxonomy.version(),
                "labels": taxonomy.labels().len(),
                "categories": taxonomy.count_at_level(1),
                "groups": taxonomy.group_count(),
                "labels_at_level_2": taxonomy.count_at_level(2),
                "labels_at_level_3": taxonomy.count_at_level(3),
                "version": env!("CARGO_PKG_VERSION"),
                "git_sha": env!("LABELD_GIT_SHA"),
            });
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How `label` writes its answers (see [`label_files::Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Per image, the IMM body `{"Labels":[...],"RequestId":"..."}` (or an error body
    /// `{"Code","Message","RequestId"}`), pretty-printed, one document after another.
    Json,
    /// One compact JSON object per line: the same bodies with `"File"` added.
    Jsonl,
    /// One row per label (File,LabelName,LabelConfidence,LabelLevel,ParentLabelName,
    /// CentricScore,Code,Message); a failed image gets one row with Code and Message.
    Csv,
}

impl From<Format> for label_files::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Json => label_files::Format::Json,
            Format::Jsonl => label_files::Format::Jsonl,
            Format::Csv => label_files::Format::Csv,
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // First, before the model loads: a bad certificate or key is a mistake to report at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::load(cert, key)?),
        (None, None) => None,
        // clap's `requires` refuses this already; kept for callers that bypass it.
        _ => anyhow::bail!(
            "give both --tls-cert (LABELD_TLS_CERT) and --tls-key (LABELD_TLS_KEY), or neither"
        ),
    };
    let mut api_keys = match &args.api_keys {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading API keys {}", path.display()))?;
            ApiKeys::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => ApiKeys::none(),
    };
    if let Some(list) = &args.api_keys_env {
        api_keys.extend(ApiKeys::parse(list).map_err(|e| anyhow::anyhow!("LABELD_API_KEYS: {e}"))?);
    }
    if api_keys.is_empty() {
        for addr in [args.grpc_addr, args.http_addr] {
            if !addr.ip().is_loopback() && !args.allow_anonymous {
                anyhow::bail!(
                    "refusing to serve without API keys on {addr} (not a loopback address): \
                     give keys (--api-keys FILE or LABELD_API_KEYS), or pass --allow-anonymous \
                     (LABELD_ALLOW_ANONYMOUS=true) to accept anonymous callers there"
                );
            }
        }
        tracing::warn!(
            grpc = %args.grpc_addr,
            http = %args.http_addr,
            "no API keys: gRPC and POST /v1/labels are open to every caller that can reach them"
        );
    } else {
        tracing::info!(
            keys = api_keys.len(),
            "API keys required on gRPC and POST /v1/labels"
        );
    }
    let mut credentials = match &args.credentials {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading credentials {}", path.display()))?;
            Credentials::parse_file_contents(&text)
                .map_err(|e| anyhow::anyhow!("credentials {}: {e}", path.display()))?
        }
        None => Credentials::new(),
    };
    match (&args.access_key_id, &args.access_key_secret) {
        (Some(id), Some(secret)) if !id.trim().is_empty() && !secret.is_empty() => {
            credentials.insert(id.trim(), secret.clone())
        }
        (None, None) => {}
        // An empty key would be a key anyone can sign with.
        (Some(_), Some(_)) => {
            anyhow::bail!("LABELD_ACCESS_KEY_ID and LABELD_ACCESS_KEY_SECRET must not be empty")
        }
        _ => {
            anyhow::bail!("set both LABELD_ACCESS_KEY_ID and LABELD_ACCESS_KEY_SECRET, or neither")
        }
    }
    if credentials.is_empty() {
        tracing::warn!(
            "no OSS access keys: the OSS door refuses every request (AccessDenied), \
             as OSS does for anonymous image/labels"
        );
    }
    let threads = args.model.init_threads();
    tracing::info!(threads, "compute threads");
    let device = parse_device(&args.model.device)?;
    let weights_dir = args.model.weights_dir();
    let models = (0..args.model_workers)
        .map(|_| {
            LiteClassifier::load(
                args.model.model,
                &weights_dir,
                &device,
                args.model.precision,
            )
            .map(|m| Box::new(m) as Box<dyn Classifier>)
        })
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "loading {} from {}",
                args.model.model,
                weights_dir.display()
            )
        })?;
    let taxonomy = Taxonomy::load(&weights_dir.join(TAXONOMY_FILE))?;
    let specs = if args.buckets.is_empty() {
        default_bucket()
    } else {
        args.buckets.clone()
    };
    // S3 buckets connect with the standard AWS_* settings (AWS_ENDPOINT, AWS_REGION, keys...).
    let s3 = object_store::aws::AmazonS3Builder::from_env();
    let buckets = Buckets::with_s3(&specs, &s3)
        .map_err(anyhow::Error::msg)?
        .with_s3_timeout(Duration::from_secs(args.s3_timeout_secs));
    for name in buckets.names() {
        tracing::info!(bucket = name, "serving bucket");
    }
    let settings = ServeSettings {
        batch: BatchConfig {
            max_batch: usize::from(args.max_batch),
            max_delay: Duration::from_micros(args.max_delay_us),
            max_queue: args.max_queue as usize,
            max_wait: Duration::from_millis(args.max_wait_ms),
        },
        decode_workers: args.decode_workers.map(usize::from),
        limits: ImageLimits::default(),
        buckets,
        device_name: args.model.device.clone(),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        credentials,
        region: args.region.clone(),
        language: args.language,
        api_keys,
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("labeld-io")
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.grpc_addr)
            .await
            .with_context(|| format!("binding {}", args.grpc_addr))?;
        let http = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("binding {}", args.http_addr))?;
        let metrics = match args.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        let listeners = Listeners {
            grpc: listener,
            http: Some(http),
            metrics,
        };
        let tls_cert = tls.as_ref().map(|t| t.cert_path().display().to_string());
        let server = Server::start_with_tls(listeners, models, taxonomy, settings, tls).await?;
        let http_addr = server.http_addr().map(|a| a.to_string()).unwrap_or_default();
        let metrics_addr = server.metrics_addr().map(|a| a.to_string()).unwrap_or_default();
        if let Some(cert) = tls_cert {
            tracing::info!(
                cert,
                "TLS on the gRPC and HTTP ports (the metrics port, if any, stays plain HTTP)"
            );
        }
        tracing::info!(addr = %server.local_addr(), http_addr, metrics_addr, model = %args.model.model, "gRPC and HTTP listening; warming up");
        tokio::select! {
            () = labeld::shutdown::signal() => server.shutdown(),
            // The server stops by itself only when it fails (e.g. warm-up failed).
            () = wait_until_stopped(&server) => {}
        }
        server.wait().await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The bucket served when none is configured: `fixtures`, the checkout's `tests/fixtures` photos,
/// so that the quick start works from a clone; none outside a checkout.
fn default_bucket() -> Vec<String> {
    let folder = Path::new("tests/fixtures");
    if folder.join("chelsea.png").is_file() {
        vec![format!("fixtures={}", folder.display())]
    } else {
        tracing::info!("no --bucket given and no tests/fixtures here: no buckets are served");
        Vec::new()
    }
}

/// Resolves if the server shuts itself down (a failed warm-up).
async fn wait_until_stopped(server: &Server) {
    server.stopped().await;
}

//! Build script: compiles the gRPC contract (`proto/labeld/v1/labels.proto`) with protox — a
//! pure-Rust protobuf compiler, so no `protoc` is needed — into OUT_DIR, keeps the descriptor set
//! for server reflection, and records which commit the binary was built from. Writes nothing
//! outside OUT_DIR.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(["labeld/v1/labels.proto"], ["proto"])?;
    std::fs::write(
        out.join("labeld_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // The request's image as `bytes::Bytes`: prost then slices it out of tonic's receive
    // buffer instead of copying it into a fresh `Vec` (a 12-megapixel photo is ~4 MB).
    tonic_prost_build::configure()
        .bytes(".labeld.v1.DetectImageLabelsRequest.image")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");

    // A container build has no .git: the Dockerfiles pass the commit as LABELD_GIT_SHA.
    println!("cargo:rerun-if-env-changed=LABELD_GIT_SHA");
    let given = std::env::var("LABELD_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let sha = given.map(|s| s.trim().to_string()).unwrap_or_else(|| {
        Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string())
    });
    println!("cargo:rustc-env=LABELD_GIT_SHA={sha}");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_cuda_kernels(&out)?;
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}

/// With `--features cuda`: our own CUDA kernels (`src/model/cuda/kernels.cu`) to PTX in OUT_DIR, with
/// the `nvcc` that candle's own kernels already need. PTX for `compute_$CUDA_COMPUTE_CAP`
/// (default 80) is JIT-compiled by the driver for the GPU it runs on, that one or newer.
fn compile_cuda_kernels(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=src/model/cuda");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let status = Command::new("nvcc")
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("src/model/cuda/kernels.cu")
        .arg("-o")
        .arg(out.join("kernels.ptx"))
        .status()
        .map_err(|e| format!("nvcc (needed by --features cuda): {e}"))?;
    if !status.success() {
        return Err(format!("nvcc failed on src/model/cuda/kernels.cu: {status}").into());
    }
    Ok(())
}

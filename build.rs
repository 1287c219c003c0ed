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
    tonic_prost_build::configure()
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
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    Ok(())
}

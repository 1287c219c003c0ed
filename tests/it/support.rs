//! Shared test helpers: fixture paths, golden files, one loaded labeler per model.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use labeld::image::ImageLimits;
use labeld::labeler::{Labeler, LabelerConfig};
use labeld::model::ModelKind;
use serde::Deserialize;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The labeler for `kind`, loaded once per test binary.
pub fn labeler(kind: ModelKind) -> &'static Labeler {
    static LITE0: OnceLock<Labeler> = OnceLock::new();
    static LITE2: OnceLock<Labeler> = OnceLock::new();
    let cell = match kind {
        ModelKind::EfficientNetLite0 => &LITE0,
        ModelKind::EfficientNetLite2 => &LITE2,
    };
    cell.get_or_init(|| {
        Labeler::load(&LabelerConfig {
            weights_dir: root().join("weights"),
            model: kind,
            device: Device::Cpu,
            limits: ImageLimits::default(),
        })
        .expect("weights load")
    })
}

/// Output of the numpy reference (`weights/tools/make_golden.py`).
#[derive(Debug, Deserialize)]
pub struct Golden {
    pub size: u32,
    pub logits: Vec<f32>,
}

pub fn golden(stem: &str, kind: ModelKind) -> Golden {
    let text = std::fs::read_to_string(fixture(&format!("golden/{stem}.{}.json", kind.name())))
        .expect("golden file");
    serde_json::from_str(&text).expect("golden json")
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

pub const PHOTOS: [&str; 4] = ["chelsea", "coffee", "astronaut", "rocket"];
pub const PNG_PHOTOS: [&str; 3] = ["chelsea", "coffee", "astronaut"];

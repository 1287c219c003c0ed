//! Shared test helpers: fixture paths, golden files, one loaded labeler per model.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use candle_core::{DType, Device};
use labeld::image::ImageLimits;
use labeld::labeler::{Labeler, LabelerConfig};
use labeld::model::{
    Classifier, ClassifierHead, LiteClassifier, ModelError, ModelKind, Prediction,
};
use labeld::taxonomy::Taxonomy;
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
            precision: DType::F32,
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

/// A fresh Lite0 model on the CPU.
pub fn lite0() -> Box<dyn Classifier> {
    Box::new(
        LiteClassifier::load(
            ModelKind::EfficientNetLite0,
            &root().join("weights"),
            &Device::Cpu,
            DType::F32,
        )
        .expect("weights load"),
    )
}

/// The committed taxonomy.
pub fn taxonomy() -> Taxonomy {
    Taxonomy::load(&root().join("weights/taxonomy.json")).expect("taxonomy")
}

/// A gate a test opens and closes to hold forward passes.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    pub fn closed() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }

    pub fn close(&self) {
        *self.open.lock().unwrap() = false;
    }

    /// Forward passes that have reached the gate so far (warm-up included).
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.changed.wait(open).unwrap();
        }
    }
}

/// The real model behind a [`Gate`]: every forward pass waits until the gate is open.
/// (A test double only in *when* it runs; what it computes is the real model's answer.)
pub struct Gated {
    inner: Box<dyn Classifier>,
    gate: Arc<Gate>,
}

impl Gated {
    pub fn boxed(inner: Box<dyn Classifier>, gate: &Arc<Gate>) -> Box<dyn Classifier> {
        Box::new(Gated {
            inner,
            gate: Arc::clone(gate),
        })
    }
}

impl Classifier for Gated {
    fn kind(&self) -> ModelKind {
        self.inner.kind()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn head(&self) -> &ClassifierHead {
        self.inner.head()
    }
    fn classify(&self, batch: &[&[u8]]) -> Result<Vec<Prediction>, ModelError> {
        self.gate.pass();
        self.inner.classify(batch)
    }
}

/// The real model, except that it panics on any batch holding a pure-white image: the way to
/// provoke a crash inside a forward pass on demand.
pub struct PanicsOnWhite {
    inner: Box<dyn Classifier>,
}

/// A white pixel's level.
const WHITE: u8 = 255;

impl PanicsOnWhite {
    pub fn boxed(inner: Box<dyn Classifier>) -> Box<dyn Classifier> {
        Box::new(PanicsOnWhite { inner })
    }
}

impl Classifier for PanicsOnWhite {
    fn kind(&self) -> ModelKind {
        self.inner.kind()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn head(&self) -> &ClassifierHead {
        self.inner.head()
    }
    fn classify(&self, batch: &[&[u8]]) -> Result<Vec<Prediction>, ModelError> {
        if batch.iter().any(|image| image.iter().all(|&v| v == WHITE)) {
            panic!("provoked by the test");
        }
        self.inner.classify(batch)
    }
}

/// A small PNG of one colour.
pub fn flat_png(rgb: [u8; 3]) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(32, 32, image::Rgb(rgb));
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

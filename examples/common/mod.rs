//! What the benchmark examples (`forward`, `decode`) share: `--flag value` parsing and the
//! nearest-rank percentile they report. Not an example itself (cargo builds `examples/*.rs`).

use std::time::Duration;

use labeld::model::ModelKind;

/// The command line as `(flag, value)` pairs, each flag followed by its value; an error for a
/// flag that has none.
pub fn flags() -> impl Iterator<Item = anyhow::Result<(String, String)>> {
    let mut it = std::env::args().skip(1);
    std::iter::from_fn(move || {
        let flag = it.next()?;
        Some(match it.next() {
            Some(value) => Ok((flag, value)),
            None => Err(anyhow::anyhow!("{flag} needs a value")),
        })
    })
}

/// `--model`'s value: `lite0`, `lite2` or a full model name.
pub fn model(value: &str) -> anyhow::Result<ModelKind> {
    ModelKind::from_name(value).ok_or_else(|| anyhow::anyhow!("unknown model {value}"))
}

/// The `p` quantile (0..=1, nearest rank) of ascending `sorted`, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

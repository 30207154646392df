//! What every bench shares: where criterion writes, and reading back its figures so that
//! a bench can print ratios against its baseline.

use std::path::{Path, PathBuf};

/// Where criterion writes its figures.
pub fn output_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

/// The mean time of one criterion measurement of this run, in nanoseconds.
pub fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let path = output_dir().join(group).join(id).join("new/estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    estimates["mean"]["point_estimate"].as_f64()
}

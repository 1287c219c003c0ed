//! The `labeld` binary as a user runs it.

use std::process::Command;

use crate::support::{fixture, root};

fn labeld() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labeld"));
    cmd.current_dir(root()).env_remove("LABELD_MODEL");
    cmd
}

#[test]
fn label_prints_one_json_line_per_image_and_fails_bad_ones_alone() {
    let dir = std::env::temp_dir().join(format!("labeld-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("coffee.png"), dir.join("a.png")).unwrap();
    std::fs::write(dir.join("b.jpg"), b"not really a jpeg").unwrap();
    std::fs::write(dir.join("notes.txt"), b"skipped: not an image extension").unwrap();
    let out = labeld()
        .args(["label", "--model", "lite0", "--language", "zh-Hans"])
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let labels = lines[0]["Labels"].as_array().unwrap();
    assert_eq!(labels[0]["LabelName"], "饮品", "{stdout}");
    assert_eq!(labels[0]["Language"], "zh-Hans");
    for field in [
        "LabelName",
        "LabelConfidence",
        "LabelLevel",
        "ParentLabelName",
        "CentricScore",
        "Language",
    ] {
        assert!(labels[0].get(field).is_some(), "missing {field}");
    }
    assert_eq!(lines[1]["Error"]["Code"], "InvalidArgument");
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [
        &["label", "--threshold", "1.5", "x.png"][..],
        &["label", "--model", "resnet", "x.png"],
        &["label", "--language", "fr", "x.png"],
    ] {
        let out = labeld().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("error"), "{stderr}");
    }
}

#[test]
fn info_reports_model_and_taxonomy() {
    let out = labeld().arg("info").output().unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["model"], "efficientnet-lite2");
    assert_eq!(info["input_size"], 260);
    assert_eq!(info["classes"], 1000);
    assert!(info["categories"].as_u64().unwrap() >= 30);
    assert!(info["groups"].as_u64().unwrap() < info["labels_at_level_2"].as_u64().unwrap());
}

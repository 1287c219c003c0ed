//! The `labeld` binary as a user runs it.

use std::process::Command;

use crate::support::{fixture, root};

fn labeld() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labeld"));
    cmd.current_dir(root()).env_remove("LABELD_MODEL");
    cmd
}

#[test]
fn jsonl_prints_one_line_per_image_and_fails_bad_ones_alone() {
    let dir = std::env::temp_dir().join(format!("labeld-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(fixture("coffee.png"), dir.join("sub/a.png")).unwrap();
    std::fs::write(dir.join("b.jpg"), b"not really a jpeg").unwrap();
    std::fs::write(dir.join("notes.txt"), b"skipped: not an image extension").unwrap();
    let out = labeld()
        .args([
            "label",
            "--model",
            "lite0",
            "--language",
            "zh-Hans",
            "--format",
            "jsonl",
        ])
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
    // Sorted walk: b.jpg, then sub/a.png.
    assert!(lines[0]["File"].as_str().unwrap().ends_with("b.jpg"));
    assert_eq!(lines[0]["Code"], "InvalidArgument");
    assert!(
        lines[0]["Message"].as_str().unwrap().contains("JPEG"),
        "{stdout}"
    );
    assert!(lines[1]["File"].as_str().unwrap().ends_with("a.png"));
    let labels = lines[1]["Labels"].as_array().unwrap();
    assert_eq!(labels[0]["LabelName"], "饮品", "{stdout}");
    assert_eq!(labels[0]["Language"], "zh-Hans");
    assert_eq!(lines[1]["RequestId"].as_str().unwrap().len(), 24);
}

/// The default output for one photo is exactly IMM's body, with every label field.
#[test]
fn json_is_the_imm_body() {
    let out = labeld()
        .args(["label", "--threshold", "0.5"])
        .arg(fixture("chelsea.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["Labels", "RequestId"]);
    let labels = body["Labels"].as_array().unwrap();
    let fields = [
        "CentricScore",
        "LabelConfidence",
        "LabelLevel",
        "LabelName",
        "Language",
        "ParentLabelName",
    ];
    for label in labels {
        let mut keys: Vec<&String> = label.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, fields);
    }
    let names: Vec<(&str, u64)> = labels
        .iter()
        .map(|l| {
            (
                l["LabelName"].as_str().unwrap(),
                l["LabelLevel"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("Animal", 1), ("Cat", 2), ("Egyptian cat", 3)]);
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

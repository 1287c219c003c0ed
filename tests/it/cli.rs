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

/// `--shard i/n` splits a folder between jobs with every file labelled exactly once, and
/// `--output` resumes: a second run adds nothing, a torn last line is cut and redone.
#[test]
fn shards_split_a_folder_and_output_resumes() {
    let dir = std::env::temp_dir().join(format!("labeld-shards-{}", std::process::id()));
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for (i, name) in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
        .iter()
        .enumerate()
    {
        std::fs::copy(fixture(name), photos.join(format!("{i}-{name}"))).unwrap();
    }
    std::fs::write(photos.join("4-broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let out = dir.join("labels.jsonl");
    let run = |shard: &str| {
        let result = labeld()
            .args([
                "label", "--model", "lite0", "--format", "jsonl", "--shard", shard,
            ])
            .arg("--output")
            .arg(&out)
            .arg(&photos)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
        // Piped stderr: a summary, no progress bar.
        assert!(!stderr.contains('\r'), "{stderr}");
        assert!(result.stdout.is_empty());
        (result.status.code(), stderr)
    };
    let files = |text: &str| -> Vec<String> {
        let mut files: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["File"].as_str().unwrap().to_string()
            })
            .collect();
        files.sort();
        files
    };

    let (code0, log0) = run("0/2");
    let (code1, log1) = run("1/2");
    // Exactly one of the two shards has the broken file: that one exits 2.
    let mut codes = [code0, code1];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "{log0}\n{log1}");
    let text = std::fs::read_to_string(&out).unwrap();
    let all = files(&text);
    assert_eq!(all.len(), 5, "{text}");
    all.windows(2)
        .for_each(|w| assert_ne!(w[0], w[1], "{text}"));
    assert!(log0.contains("of 5 files found"), "{log0}");

    // Resuming adds nothing.
    let (_, log) = run("0/2");
    assert!(log.contains("labelled 0, failed 0"), "{log}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);

    // A run killed mid-line: the torn line is cut and its file labelled again.
    let kept: Vec<&str> = text.lines().collect();
    let torn = format!("{}\n{}", kept[..4].join("\n"), &kept[4][..10]);
    std::fs::write(&out, torn).unwrap();
    let redo_shard = ["0/2", "1/2"]
        .into_iter()
        .find(|s| {
            let (_, log) = run(s);
            log.contains("labelled 1") || log.contains("failed 1")
        })
        .expect("one shard redoes the cut file");
    let after = std::fs::read_to_string(&out).unwrap();
    assert_eq!(files(&after), all, "{after} (redone by shard {redo_shard})");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn csv_has_one_row_per_label_and_one_per_failure() {
    let out = labeld()
        .args([
            "label",
            "--model",
            "lite0",
            "--format",
            "csv",
            "--threshold",
            "0.3",
        ])
        .arg(fixture("chelsea.png"))
        .arg(fixture("README.md"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        rows[0],
        "File,LabelName,LabelConfidence,LabelLevel,ParentLabelName,CentricScore,Code,Message"
    );
    let cat = rows
        .iter()
        .find(|r| r.contains(",Cat,"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(cat.contains(",2,Animal,"), "{cat}");
    let failed = rows.last().unwrap();
    assert!(
        failed.ends_with("only JPEG and PNG are accepted"),
        "{failed}"
    );
    assert!(failed.contains(",InvalidArgument,"), "{failed}");
}

/// `--explain DIR` writes one overlay PNG per labelled image and adds boxes to the answers;
/// `--properties` adds ImageProperties.
#[test]
fn explain_writes_overlays_and_properties_are_added() {
    let dir = std::env::temp_dir().join(format!("labeld-explain-{}", std::process::id()));
    let overlays = dir.join("overlays");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("chelsea.png"), dir.join("cat.png")).unwrap();
    std::fs::copy(fixture("rocket.jpg"), dir.join("rocket.jpg")).unwrap();
    std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    let out = labeld()
        .args([
            "label",
            "--model",
            "lite0",
            "--threshold",
            "0.2",
            "--format",
            "jsonl",
        ])
        .args(["--properties", "--explain"])
        .arg(&overlays)
        .arg(dir.join("cat.png"))
        .arg(dir.join("rocket.jpg"))
        .arg(dir.join("broken.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("heatmap overlays written: 2"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines[..2] {
        assert!(line["ImageProperties"]["Brightness"].is_number(), "{line}");
        assert!(
            line["Labels"][0]["BoundingBox"]["Width"].is_number(),
            "{line}"
        );
    }
    let mut written: Vec<_> = std::fs::read_dir(&overlays)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "{written:?}");
    for (path, (w, h)) in written.iter().zip([(451, 300), (640, 427)]) {
        let png = image::open(path).unwrap();
        assert_eq!((png.width(), png.height()), (w, h), "{path:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// TLS flags are checked before anything loads: one without the other, or a file that cannot
/// be read, stops `serve` at once with a message that names the flag or the file.
#[test]
fn serve_refuses_incomplete_or_unreadable_tls_flags() {
    let labeld = || {
        let mut cmd = labeld();
        cmd.env_remove("LABELD_TLS_CERT")
            .env_remove("LABELD_TLS_KEY");
        cmd
    };
    let out = labeld()
        .args(["serve", "--tls-cert", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");

    let out = labeld()
        .args([
            "serve",
            "--tls-cert",
            "no-such-cert.pem",
            "--tls-key",
            "no-such-key.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS certificate no-such-cert.pem"),
        "{stderr}"
    );
}

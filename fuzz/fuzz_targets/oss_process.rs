//! The `x-oss-process` parser (`labeld::api::oss::parse_process`) on any UTF-8 text.
//!
//! Checked: no panic; an accepted value has `thr` in 0..=100 and was spelled `image/labels...`;
//! parsing is deterministic; an accepted value written back as `image/labels,thr_{thr}` parses to
//! the same value; a refusal names a parameter and maps to a 4xx/5xx code without panicking.
#![no_main]

use labeld::api::oss::{error_xml, parse_process, DEFAULT_THR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = parse_process(text);
    assert_eq!(first, parse_process(text), "not deterministic on {text:?}");
    match first {
        Ok(process) => {
            assert!(process.thr <= 100, "thr {} accepted from {text:?}", process.thr);
            assert!(
                text.starts_with("image/labels"),
                "accepted {text:?}, which is not image/labels"
            );
            let canonical = format!("image/labels,thr_{}", process.thr);
            assert_eq!(
                parse_process(&canonical),
                Ok(process),
                "{text:?} -> {process:?}, but {canonical:?} parses differently"
            );
            if text == "image/labels" {
                assert_eq!(process.thr, DEFAULT_THR);
            }
        }
        Err(error) => {
            assert!(!error.argument().is_empty(), "{error:?} names no argument");
            // The 400/501 body the OSS door sends: the client's text must not inject markup.
            let xml = error_xml(
                error.code(),
                &error.to_string(),
                "RID",
                "localhost",
                Some((error.argument(), text)),
            );
            assert_no_injected_markup(&xml);
        }
    }
});

/// Every `<`, `>` and `"` left in the document after removing the tags `error_xml` writes itself
/// would have come from the request, unescaped; and the document must stay well-formed XML 1.0
/// (no C0 controls but tab, LF and CR; no U+FFFE or U+FFFF), or the SDKs cannot parse the error.
fn assert_no_injected_markup(xml: &str) {
    let mut rest = xml.replace("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "");
    for tag in [
        "Error", "Code", "Message", "RequestId", "HostId", "ArgumentName", "ArgumentValue", "EC",
    ] {
        rest = rest.replace(&format!("<{tag}>"), "").replace(&format!("</{tag}>"), "");
    }
    assert!(
        !rest.contains(['<', '>', '"']),
        "unescaped markup in the error document:\n{xml}"
    );
    assert!(
        !rest.chars().any(|c| {
            (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
        }),
        "a character XML 1.0 does not allow in the error document:\n{xml:?}"
    );
}

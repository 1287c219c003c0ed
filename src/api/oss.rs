//! OSS wire formats: the `x-oss-process` parameter and the XML `<Error>` body.
//!
//! `image/labels[,thr_NN]` is the only process labeld performs. Everything about the parameter is
//! checked strictly (OSS's own behaviour for a bad `thr` is a 400): a malformed, out-of-range,
//! repeated or unknown parameter is a 400 InvalidArgument naming it, never silently clamped; a
//! different image action is a 501 NotImplemented.

use crate::error::ErrorCode;

/// Default `thr_NN` when none is given (IMM's default threshold, 0.70).
pub const DEFAULT_THR: u8 = 70;

/// A parsed `x-oss-process` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelsProcess {
    /// 0..=100.
    pub thr: u8,
}

/// Why an `x-oss-process` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    #[error("invalid x-oss-process {value:?}: {reason}")]
    Invalid {
        /// The offending parameter (`x-oss-process`, `thr`, or an unknown name).
        argument: String,
        value: String,
        reason: String,
    },
    #[error("x-oss-process {0:?} is not supported: labeld performs only image/labels")]
    NotImplemented(String),
}

impl ProcessError {
    /// The code this error is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProcessError::Invalid { .. } => ErrorCode::InvalidArgument,
            ProcessError::NotImplemented(_) => ErrorCode::NotImplemented,
        }
    }

    /// The parameter to report as `ArgumentName`.
    pub fn argument(&self) -> &str {
        match self {
            ProcessError::Invalid { argument, .. } => argument,
            ProcessError::NotImplemented(_) => "x-oss-process",
        }
    }
}

/// Parses `image/labels` or `image/labels,thr_NN`.
///
/// # Errors
/// [`ProcessError`] naming the offending part.
pub fn parse_process(value: &str) -> Result<LabelsProcess, ProcessError> {
    let invalid = |argument: &str, reason: &str| ProcessError::Invalid {
        argument: argument.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let Some(action) = value.strip_prefix("image/") else {
        return Err(invalid("x-oss-process", "expected image/labels[,thr_NN]"));
    };
    let mut parts = action.split(',');
    let operation = parts.next().unwrap_or_default();
    if operation != "labels" {
        if operation.is_empty() || operation.contains('/') {
            return Err(invalid("x-oss-process", "expected image/labels[,thr_NN]"));
        }
        return Err(ProcessError::NotImplemented(value.to_string()));
    }
    let mut thr = None;
    for part in parts {
        let (name, raw) = part.split_once('_').unwrap_or((part, ""));
        match name {
            "thr" => {
                if thr.is_some() {
                    return Err(invalid("thr", "thr is given more than once"));
                }
                let parsed =
                    if raw.bytes().all(|b| b.is_ascii_digit()) && !raw.is_empty() && raw.len() <= 3
                    {
                        raw.parse::<u8>().ok().filter(|t| *t <= 100)
                    } else {
                        None
                    };
                thr = Some(parsed.ok_or_else(|| {
                    invalid("thr", "thr must be an integer from 0 to 100, as in thr_85")
                })?);
            }
            "" => return Err(invalid("x-oss-process", "empty parameter")),
            other => {
                return Err(ProcessError::Invalid {
                    argument: other.to_string(),
                    value: value.to_string(),
                    reason: format!("unknown parameter {other:?} for image/labels (only thr_NN)"),
                })
            }
        }
    }
    Ok(LabelsProcess {
        thr: thr.unwrap_or(DEFAULT_THR),
    })
}

/// Escapes text for an XML element.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write the C0 controls (but tab, newline and carriage
            // return) or U+FFFE / U+FFFF, even as references: leave them out, or strict
            // parsers (expat, under oss2) reject the whole error document.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The fine-grained OSS `EC` for a code (OSS documents these as opaque; clients only store them).
pub fn error_ec(code: ErrorCode) -> String {
    let index = ErrorCode::ALL.iter().position(|c| *c == code).unwrap_or(0);
    format!("0050-{:08}", index + 1)
}

/// An OSS `<Error>` document, as `oss2` and `alibabacloud-oss-v2` parse it.
pub fn error_xml(
    code: ErrorCode,
    message: &str,
    request_id: &str,
    host_id: &str,
    argument: Option<(&str, &str)>,
) -> String {
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code>{}</Code>\n  <Message>{}</Message>\n  <RequestId>{}</RequestId>\n  <HostId>{}</HostId>\n",
        code.name(),
        xml_escape(message),
        xml_escape(request_id),
        xml_escape(host_id),
    );
    if let Some((name, value)) = argument {
        xml.push_str(&format!(
            "  <ArgumentName>{}</ArgumentName>\n  <ArgumentValue>{}</ArgumentValue>\n",
            xml_escape(name),
            xml_escape(value)
        ));
    }
    xml.push_str(&format!("  <EC>{}</EC>\n</Error>\n", error_ec(code)));
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_and_without_threshold() {
        assert_eq!(parse_process("image/labels"), Ok(LabelsProcess { thr: 70 }));
        assert_eq!(
            parse_process("image/labels,thr_85"),
            Ok(LabelsProcess { thr: 85 })
        );
        assert_eq!(
            parse_process("image/labels,thr_0"),
            Ok(LabelsProcess { thr: 0 })
        );
        assert_eq!(
            parse_process("image/labels,thr_100"),
            Ok(LabelsProcess { thr: 100 })
        );
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (value, argument) in [
            ("image/labels,thr_101", "thr"),
            ("image/labels,thr_-1", "thr"),
            ("image/labels,thr_abc", "thr"),
            ("image/labels,thr_", "thr"),
            ("image/labels,thr_0085", "thr"),
            ("image/labels,thr_8.5", "thr"),
            ("image/labels,thr_80,thr_90", "thr"),
            ("image/labels,foo_1", "foo"),
            ("image/labels,", "x-oss-process"),
            ("video/snapshot", "x-oss-process"),
            ("labels", "x-oss-process"),
            ("image/", "x-oss-process"),
        ] {
            let err = parse_process(value).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{value}");
            assert_eq!(err.argument(), argument, "{value}");
        }
    }

    #[test]
    fn other_image_actions_are_not_implemented() {
        let err = parse_process("image/resize,w_100").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotImplemented);
        assert_eq!(ErrorCode::NotImplemented.http_status(), 501);
    }

    #[test]
    fn error_xml_is_escaped_and_complete() {
        let xml = error_xml(
            ErrorCode::InvalidArgument,
            "a < b & c",
            "RID",
            "host",
            Some(("thr", "x\"y")),
        );
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"));
        for part in [
            "<Code>InvalidArgument</Code>",
            "<Message>a &lt; b &amp; c</Message>",
            "<RequestId>RID</RequestId>",
            "<HostId>host</HostId>",
            "<ArgumentName>thr</ArgumentName>",
            "<ArgumentValue>x&quot;y</ArgumentValue>",
            "<EC>0050-00000001</EC>",
        ] {
            assert!(xml.contains(part), "{part} in {xml}");
        }
    }

    /// Found by the `oss_process` fuzz target: characters XML 1.0 cannot carry are left out.
    #[test]
    fn characters_xml_cannot_carry_are_left_out() {
        let escaped = xml_escape("a\u{FFFF}b\u{FFFE}c\u{1}d\te\rf\ng\u{FFFD}");
        assert_eq!(escaped, "abcd\te\rf\ng\u{FFFD}");
    }
}

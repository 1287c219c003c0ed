//! Error codes: the one vocabulary every door answers in.
//!
//! Each module has its own error type (`DecodeError`, `SourceError`, `DetectError`, ...); each maps
//! to exactly one [`ErrorCode`], and each front door turns an `ErrorCode` into its protocol's
//! status in one table (`api::grpc` for gRPC; the HTTP door adds its own).

use serde::Serialize;

use crate::image::DecodeError;

/// What went wrong, in the terms of the OSS/IMM error table (DESIGN.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad parameter, unsupported format, corrupt image.
    InvalidArgument,
    /// The image is over a size, dimension or pixel limit.
    ImageTooLarge,
    /// The object or file does not exist.
    NoSuchKey,
    /// The bucket is not configured.
    NoSuchBucket,
    /// The queue is full: retry later.
    Overloaded,
    /// The request's deadline passed before it was served.
    DeadlineExceeded,
    /// Warming up or draining.
    NotReady,
    /// Missing credentials, or a presigned URL past its expiry.
    AccessDenied,
    /// The access key id is not known.
    InvalidAccessKeyId,
    /// The signature does not match.
    SignatureDoesNotMatch,
    /// The request's clock is more than 15 minutes off.
    RequestTimeTooSkewed,
    /// A valid request for something labeld does not do (another image action).
    NotImplemented,
    /// A bug or a model failure.
    Internal,
}

impl ErrorCode {
    /// Every code, for tests that check each one is mapped.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidArgument,
        ErrorCode::ImageTooLarge,
        ErrorCode::NoSuchKey,
        ErrorCode::NoSuchBucket,
        ErrorCode::Overloaded,
        ErrorCode::DeadlineExceeded,
        ErrorCode::NotReady,
        ErrorCode::AccessDenied,
        ErrorCode::InvalidAccessKeyId,
        ErrorCode::SignatureDoesNotMatch,
        ErrorCode::RequestTimeTooSkewed,
        ErrorCode::NotImplemented,
        ErrorCode::Internal,
    ];

    /// The OSS `<Code>` name (also the `reason` of a gRPC stream error).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::ImageTooLarge => "ImageTooLarge",
            ErrorCode::NoSuchKey => "NoSuchKey",
            ErrorCode::NoSuchBucket => "NoSuchBucket",
            ErrorCode::Overloaded => "ServiceOverloaded",
            ErrorCode::DeadlineExceeded => "RequestTimeout",
            ErrorCode::NotReady => "ServiceUnavailable",
            ErrorCode::AccessDenied => "AccessDenied",
            ErrorCode::InvalidAccessKeyId => "InvalidAccessKeyId",
            ErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            ErrorCode::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            ErrorCode::NotImplemented => "NotImplemented",
            ErrorCode::Internal => "InternalError",
        }
    }

    /// The HTTP status of each code: the single HTTP mapping table (both HTTP doors).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::ImageTooLarge => 400,
            ErrorCode::AccessDenied
            | ErrorCode::InvalidAccessKeyId
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::RequestTimeTooSkewed => 403,
            ErrorCode::NoSuchKey | ErrorCode::NoSuchBucket => 404,
            ErrorCode::Internal => 500,
            ErrorCode::NotImplemented => 501,
            ErrorCode::Overloaded | ErrorCode::NotReady => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }
}

impl DecodeError {
    /// The code this error is reported as.
    pub fn code(&self) -> ErrorCode {
        if self.is_over_limit() {
            ErrorCode::ImageTooLarge
        } else {
            ErrorCode::InvalidArgument
        }
    }
}

/// The JSON error body (`{"Code","Message","RequestId"}`), the JSON twin of OSS's XML `<Error>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct() {
        let names: std::collections::HashSet<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}

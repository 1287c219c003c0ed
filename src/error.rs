//! Error codes: the one vocabulary every door answers in.
//!
//! Each module has its own error type (`DecodeError`, `ModelError`, ...); each maps to exactly one
//! [`ErrorCode`] here, and each front door turns an `ErrorCode` into its protocol's status once.

use serde::Serialize;

use crate::image::DecodeError;

/// What went wrong, in the terms of the OSS/IMM error table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad parameter, unsupported format, corrupt image.
    InvalidArgument,
    /// The image is over a size, dimension or pixel limit.
    ImageTooLarge,
    /// The object or file does not exist.
    NoSuchKey,
    /// A bug or a model failure.
    Internal,
}

impl ErrorCode {
    /// The OSS `<Code>` name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "InvalidArgument",
            ErrorCode::ImageTooLarge => "ImageTooLarge",
            ErrorCode::NoSuchKey => "NoSuchKey",
            ErrorCode::Internal => "InternalError",
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

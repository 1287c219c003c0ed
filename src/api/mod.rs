//! The front doors: the only code that knows protocols (tonic statuses and metadata, HTTP statuses,
//! headers and XML). Each door parses its request into a [`crate::detect::DetectRequest`], calls the
//! [`crate::detect::Detector`], and maps [`crate::error::ErrorCode`] to its protocol once.

pub mod api_keys;
pub mod auth;
pub mod grpc;
pub mod http;
pub mod http_serve;
pub mod oss;

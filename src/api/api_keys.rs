//! API keys for the gRPC door and the JSON door: `Authorization: Bearer <key>` (gRPC metadata
//! `authorization`). The OSS door has its own signatures ([`super::auth`]).
//!
//! With no keys configured the doors are open (the server refuses to listen on a non-loopback
//! address that way unless told `--allow-anonymous`). With keys, every call of `ImageLabels`
//! and every `POST /v1/labels` needs one; health, reflection and `/metrics` stay open for probes
//! and scrapers. Keys are kept as SHA-256 digests and compared in constant time, so neither a
//! key's bytes nor its length leak through timing, and they never appear in logs or errors.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ErrorCode;

/// The accepted keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("an API key is required: send `authorization: Bearer <key>`")]
    Missing,
    #[error("the authorization header must be `Bearer <key>`")]
    Malformed,
    #[error("the API key you provided is not valid")]
    Unknown,
}

impl KeyError {
    /// The code this refusal is reported as (the same codes as the OSS door's).
    pub fn code(self) -> ErrorCode {
        match self {
            KeyError::Missing => ErrorCode::AccessDenied,
            KeyError::Malformed => ErrorCode::InvalidArgument,
            KeyError::Unknown => ErrorCode::InvalidAccessKeyId,
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Shortest accepted key: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// No keys: the doors are open.
    pub fn none() -> ApiKeys {
        ApiKeys::default()
    }

    /// Keys from a file (one per line; blank lines and `#` comments ignored) or a
    /// comma-separated list.
    ///
    /// # Errors
    /// A key shorter than [`MIN_KEY_LEN`] or with whitespace inside, named by its position
    /// (never echoed).
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::none();
        for (index, key) in text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|k| !k.is_empty() && !k.starts_with('#'))
            .enumerate()
        {
            if key.len() < MIN_KEY_LEN || key.contains(char::is_whitespace) {
                return Err(format!(
                    "API key #{}: keys must be at least {MIN_KEY_LEN} characters without spaces",
                    index + 1
                ));
            }
            keys.digests.push(digest(key));
        }
        Ok(keys)
    }

    /// Adds the keys of `other`.
    pub fn extend(&mut self, other: ApiKeys) {
        self.digests.extend(other.digests);
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Checks an `Authorization` value (`None` when the header is absent).
    ///
    /// # Errors
    /// [`KeyError`] when keys are configured and the value does not carry one of them.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), KeyError> {
        if self.digests.is_empty() {
            return Ok(());
        }
        let value = authorization.ok_or(KeyError::Missing)?;
        let (scheme, key) = value.trim().split_once(' ').ok_or(KeyError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(KeyError::Malformed);
        }
        let given = digest(key.trim());
        // Every configured key is compared, whichever matches.
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |any, d| any | d.ct_eq(&given));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(KeyError::Unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_keys_and_closed_with_them() {
        assert_eq!(ApiKeys::none().check(None), Ok(()));
        let keys = ApiKeys::parse("# ops\nfirst-key-0123456789\n\nsecond-key-0123456789").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some("Bearer first-key-0123456789")), Ok(()));
        assert_eq!(keys.check(Some("bearer  second-key-0123456789 ")), Ok(()));
        assert_eq!(keys.check(None), Err(KeyError::Missing));
        assert_eq!(
            keys.check(Some("first-key-0123456789")),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            keys.check(Some("Basic Zm9vOmJhcg==")),
            Err(KeyError::Malformed)
        );
        assert_eq!(
            keys.check(Some("Bearer first-key-012345678")),
            Err(KeyError::Unknown)
        );
        assert_eq!(keys.check(Some("Bearer ")), Err(KeyError::Malformed));
    }

    #[test]
    fn short_keys_are_refused_without_echoing_them() {
        let err = ApiKeys::parse("good-key-0123456789,short").unwrap_err();
        assert!(err.contains("#2"), "{err}");
        assert!(!err.contains("short"), "{err}");
        assert!(ApiKeys::parse("a key with spaces inside it").is_err());
    }
}

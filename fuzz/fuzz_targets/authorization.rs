//! The `Authorization` parsers: OSS request signatures (`labeld::api::auth::verify`, V4 and V1,
//! header and presigned) and API keys (`labeld::api::api_keys::ApiKeys`, `Bearer <key>`).
//!
//! The input is a small request, one item per line (`\n`):
//!
//! ```text
//! OSS4-HMAC-SHA256 Credential=ak/...   line 1: the Authorization value (empty: no header)
//! /bucket/key                          path ("/" service, "/bucket" bucket, "/bucket/key")
//! !PUT                                 method (default GET)
//! @1702743657                          the server clock, Unix seconds (default 2024-06-10)
//! ?name=value                          a query pair, already percent-decoded (repeatable)
//! name: value                          a header (repeatable)
//! ```
//!
//! Checked, besides "no panic":
//! - a signature is accepted only for the secret it was made with: every request is verified
//!   twice, once with the seeds' secret (`ak`/`sk`, so that the fuzzer can reach the accepting
//!   path) and once with a secret drawn at random when the process starts, which the fuzzer cannot
//!   know. The second must never succeed, and must give exactly the first's answer except where
//!   the first accepted or said SignatureDoesNotMatch: nothing before the HMAC depends on the
//!   secret.
//! - `ApiKeys::check` accepts only `Bearer <configured key>`, and every key `ApiKeys::parse`
//!   accepts from the input is then accepted by `check`.
#![no_main]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use labeld::api::api_keys::{ApiKeys, KeyError};
use labeld::api::auth::{verify, AuthError, Credentials, SignedRequest};
use libfuzzer_sys::fuzz_target;

const REGION: &str = "cn-hangzhou";
/// 2024-06-10T08:00:00Z, the time the oss2 test vectors were signed at.
const DEFAULT_NOW: u64 = 1_718_006_400;
/// The API key configured next to a random one.
const API_KEY: &str = "fuzz-api-key-0123456789abcdef";

/// 32 hex characters from the OS's randomness (std's `RandomState` is seeded from it).
fn random_hex() -> String {
    (0..2)
        .map(|_| format!("{:016x}", RandomState::new().build_hasher().finish()))
        .collect()
}

struct Fixed {
    /// `ak:sk`, the pair the committed seeds (real SDK signatures) were signed with.
    known: Credentials,
    /// The same ids with secrets nobody knows.
    unknown: Credentials,
    unknown_secrets: Vec<String>,
    /// [`API_KEY`] and a random key.
    keys: ApiKeys,
    /// A key no list in the input can hold.
    unlisted: String,
    /// `FUZZ_DEBUG=1`: print each verdict (to check what the seeds reach).
    debug: bool,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let mut known = Credentials::new();
        let mut unknown = Credentials::new();
        let mut unknown_secrets = Vec::new();
        for id in ["ak", "LTAI5tExampleId"] {
            known.insert(id, if id == "ak" { "sk".to_string() } else { random_hex() });
            let secret = random_hex();
            unknown.insert(id, secret.clone());
            unknown_secrets.push(secret);
        }
        let keys = ApiKeys::parse(&format!("{API_KEY},{}", random_hex())).expect("valid keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.check(Some(&format!("Bearer {API_KEY}"))), Ok(()));
        assert_eq!(keys.check(None), Err(KeyError::Missing));
        Fixed {
            known,
            unknown,
            unknown_secrets,
            keys,
            unlisted: format!("Bearer {}", random_hex()),
            debug: std::env::var_os("FUZZ_DEBUG").is_some(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixed = fixed();
    let mut lines = data.split(|&b| b == b'\n');
    let authorization = lines.next().unwrap_or_default();

    let mut method = "GET".to_string();
    let mut bucket: Option<String> = Some("examplebucket".into());
    let mut key: Option<String> = Some("photos/cat.jpg".into());
    let mut now = DEFAULT_NOW;
    let mut query: Vec<(String, String)> = Vec::new();
    let mut headers = HeaderMap::new();
    if !authorization.is_empty() {
        if let Ok(value) = HeaderValue::from_bytes(authorization) {
            headers.append(http::header::AUTHORIZATION, value);
        }
    }
    for line in lines {
        match line.first() {
            Some(b'@') => {
                if let Some(t) = std::str::from_utf8(&line[1..])
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    // Any clock a server could have: 1970 to the year 10000.
                    now = t.min(253_402_300_800);
                }
            }
            Some(b'!') => {
                if let Ok(m) = std::str::from_utf8(&line[1..]) {
                    method = m.to_string();
                }
            }
            Some(b'?') => {
                if let Ok(pair) = std::str::from_utf8(&line[1..]) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    query.push((k.to_string(), v.to_string()));
                }
            }
            Some(b'/') => {
                if let Ok(path) = std::str::from_utf8(&line[1..]) {
                    let (b, k) = match path.split_once('/') {
                        Some((b, k)) => (Some(b), Some(k)),
                        None if path.is_empty() => (None, None),
                        None => (Some(path), None),
                    };
                    bucket = b.map(str::to_string);
                    key = k.map(str::to_string);
                }
            }
            _ => {
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    continue;
                };
                let value = line[colon + 1..].trim_ascii();
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(&line[..colon]),
                    HeaderValue::from_bytes(value),
                ) {
                    headers.append(name, value);
                }
            }
        }
    }

    let request = SignedRequest {
        method: &method,
        bucket: bucket.as_deref(),
        key: key.as_deref(),
        query: &query,
        headers: &headers,
    };
    let clock = UNIX_EPOCH + Duration::from_secs(now);
    let with_known = verify(&request, &fixed.known, REGION, clock);
    let with_unknown = verify(&request, &fixed.unknown, REGION, clock);
    if fixed.debug {
        eprintln!("verify with ak/sk: {with_known:?}; with an unknown secret: {with_unknown:?}");
    }
    assert!(
        with_unknown.is_err(),
        "accepted with a secret the client cannot know: {with_unknown:?}"
    );
    match &with_known {
        Ok(_) | Err(AuthError::SignatureDoesNotMatch) => assert_eq!(
            with_unknown,
            Err(AuthError::SignatureDoesNotMatch),
            "known-secret answer {with_known:?}"
        ),
        Err(_) => assert_eq!(with_unknown, with_known, "the answer depends on the secret"),
    }
    if let Err(error) = &with_unknown {
        let message = format!("{error} {error:?}");
        for secret in &fixed.unknown_secrets {
            assert!(!message.contains(secret.as_str()), "an error carries the secret");
        }
    }

    // API keys: the same Authorization value, as the gRPC and JSON doors see it.
    let value = std::str::from_utf8(authorization).ok();
    let accepted = fixed.keys.check(value).is_ok();
    if accepted {
        let tokens: Vec<&str> = value.unwrap_or_default().split_whitespace().collect();
        assert!(
            tokens.len() == 2 && tokens[0].eq_ignore_ascii_case("bearer") && tokens[1] == API_KEY,
            "accepted {value:?}"
        );
    }

    // API key lists: whatever `parse` accepts is then accepted by `check`, and nothing else is.
    if data.len() <= 4096 {
        if let Ok(text) = std::str::from_utf8(data) {
            if let Ok(keys) = ApiKeys::parse(text) {
                let listed: Vec<&str> = text
                    .split(['\n', ','])
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && !k.starts_with('#'))
                    .collect();
                assert_eq!(keys.len(), listed.len());
                for k in &listed {
                    assert_eq!(keys.check(Some(&format!("Bearer {k}"))), Ok(()), "{k:?}");
                }
                if !keys.is_empty() {
                    assert_eq!(keys.check(None), Err(KeyError::Missing));
                    assert_eq!(keys.check(Some(&fixed.unlisted)), Err(KeyError::Unknown));
                }
            }
        }
    }
});

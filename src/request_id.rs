//! Request ids: 24 upper-case hex digits, the shape of OSS's `x-oss-request-id`.
//!
//! Eight digits of Unix time (so ids sort roughly by time and tell when a request came) and
//! sixteen of per-process random state hashed with a counter (so two ids never collide within a
//! process and are unpredictable across processes). No extra dependency: std's `RandomState`
//! is seeded from the OS.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A new, unique request id.
pub fn new_request_id() -> String {
    static SEED: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let random = SEED.get_or_init(RandomState::new).hash_one(n);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:08X}{random:016X}", secs as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_hex_digits_and_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 24);
            assert!(id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()));
        }
    }
}

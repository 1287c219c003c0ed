//! Where image bytes come from when a request names an object instead of carrying it:
//! `oss://bucket/key` resolved against the buckets the server is configured with.
//!
//! A bucket is a local folder (`--bucket NAME=DIR`). A key can never reach outside its folder:
//! `..` components and absolute keys are refused, and the resolved path (after following any
//! symlink) must still lie inside the folder's canonical path. Reads are blocking file I/O and run
//! on the decode workers, never on the async runtime.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::error::ErrorCode;

/// Why bytes could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source_uri must look like oss://bucket/key, got {0:?}")]
    BadUri(String),
    #[error("invalid object key {0:?}: keys may not be absolute or contain '..'")]
    BadKey(String),
    #[error("no bucket named {0:?} is configured")]
    NoSuchBucket(String),
    #[error("the object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("the object is {bytes} bytes; the limit is {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("cannot read the object: {0}")]
    Io(#[from] std::io::Error),
}

impl SourceError {
    /// The code this error is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            SourceError::BadUri(_) | SourceError::BadKey(_) => ErrorCode::InvalidArgument,
            SourceError::NoSuchBucket(_) => ErrorCode::NoSuchBucket,
            SourceError::NoSuchKey { .. } => ErrorCode::NoSuchKey,
            SourceError::TooLarge { .. } => ErrorCode::ImageTooLarge,
            SourceError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// A bucket backed by a local folder.
#[derive(Debug, Clone)]
pub struct LocalBucket {
    root: PathBuf,
}

/// The configured buckets, by name.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    buckets: BTreeMap<String, LocalBucket>,
}

impl Buckets {
    /// Parses `NAME=DIR` specs. The folders must exist.
    ///
    /// # Errors
    /// A message naming the bad spec.
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Buckets, String> {
        let mut buckets = BTreeMap::new();
        for spec in specs {
            let spec = spec.as_ref();
            let (name, dir) = spec
                .split_once('=')
                .ok_or_else(|| format!("bucket {spec:?} must be NAME=DIR"))?;
            let valid_name = (3..=63).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                return Err(format!(
                    "bucket name {name:?}: 3-63 characters of a-z, 0-9 and '-' (as OSS requires)"
                ));
            }
            let root = std::fs::canonicalize(dir)
                .map_err(|e| format!("bucket {name}: folder {dir:?}: {e}"))?;
            if !root.is_dir() {
                return Err(format!("bucket {name}: {dir:?} is not a folder"));
            }
            if buckets
                .insert(name.to_string(), LocalBucket { root })
                .is_some()
            {
                return Err(format!("bucket {name} is configured twice"));
            }
        }
        Ok(Buckets { buckets })
    }

    /// Bucket names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.buckets.keys().map(String::as_str)
    }

    /// Splits `oss://bucket/key`.
    ///
    /// # Errors
    /// [`SourceError::BadUri`].
    pub fn parse_uri(uri: &str) -> Result<(&str, &str), SourceError> {
        let rest = uri
            .strip_prefix("oss://")
            .ok_or_else(|| SourceError::BadUri(uri.to_string()))?;
        match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((bucket, key)),
            _ => Err(SourceError::BadUri(uri.to_string())),
        }
    }

    /// Opens an object: the file and its length. Blocking.
    ///
    /// # Errors
    /// [`SourceError`] for an unknown bucket or a bad or missing key.
    pub fn open(&self, bucket: &str, key: &str) -> Result<(std::fs::File, u64), SourceError> {
        let local = self
            .buckets
            .get(bucket)
            .ok_or_else(|| SourceError::NoSuchBucket(bucket.to_string()))?;
        let path = local.resolve(key)?;
        let missing = || SourceError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(missing());
        }
        Ok((file, meta.len()))
    }

    /// Reads an object, refusing more than `max_bytes`. Blocking.
    ///
    /// # Errors
    /// [`SourceError`] for an unknown bucket, a bad or missing key, or an object over the limit.
    pub fn read(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<Vec<u8>, SourceError> {
        let (file, len) = self.open(bucket, key)?;
        if len > max_bytes {
            return Err(SourceError::TooLarge {
                bytes: len,
                limit: max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // `take` guards against a file that grows while it is read.
        file.take(max_bytes + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_bytes {
            return Err(SourceError::TooLarge {
                bytes: bytes.len() as u64,
                limit: max_bytes,
            });
        }
        Ok(bytes)
    }

    /// True when `name` is a configured bucket.
    pub fn contains(&self, name: &str) -> bool {
        self.buckets.contains_key(name)
    }
}

impl LocalBucket {
    /// The file for `key`, guaranteed to be inside the bucket's folder.
    fn resolve(&self, key: &str) -> Result<PathBuf, SourceError> {
        let relative = Path::new(key);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || key.contains('\0') || key.contains('\\') {
            return Err(SourceError::BadKey(key.to_string()));
        }
        let path = self.root.join(relative);
        match std::fs::canonicalize(&path) {
            // A symlink may point anywhere: what counts is where it lands.
            Ok(real) if real.starts_with(&self.root) => Ok(real),
            Ok(_) => Err(SourceError::BadKey(key.to_string())),
            // Missing: report it as missing (the path is inside the root by construction).
            Err(_) => Ok(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labeld-src-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/photo.jpg"), b"12345").unwrap();
        dir
    }

    #[test]
    fn reads_objects_and_refuses_escapes() {
        let dir = bucket_dir("escape");
        let outside = dir.with_extension("secret");
        std::fs::write(&outside, b"secret").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, dir.join("link.jpg")).unwrap();
        let spec = format!("photos={}", dir.display());
        let buckets = Buckets::from_specs(&[spec]).unwrap();
        assert_eq!(
            buckets.read("photos", "a/photo.jpg", 100).unwrap(),
            b"12345"
        );
        for key in ["../x", "a/../../x", "/etc/passwd", "a\\..\\x"] {
            assert!(
                matches!(
                    buckets.read("photos", key, 100),
                    Err(SourceError::BadKey(_))
                ),
                "{key}"
            );
        }
        #[cfg(unix)]
        assert!(matches!(
            buckets.read("photos", "link.jpg", 100),
            Err(SourceError::BadKey(_))
        ));
        assert!(matches!(
            buckets.read("photos", "a/none.jpg", 100),
            Err(SourceError::NoSuchKey { .. })
        ));
        assert!(matches!(
            buckets.read("photos", "a", 100),
            Err(SourceError::NoSuchKey { .. })
        ));
        assert!(matches!(
            buckets.read("other", "a/photo.jpg", 100),
            Err(SourceError::NoSuchBucket(_))
        ));
        assert!(matches!(
            buckets.read("photos", "a/photo.jpg", 4),
            Err(SourceError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_file(&outside).ok();
    }

    #[test]
    fn uris_and_specs_are_checked() {
        assert_eq!(
            Buckets::parse_uri("oss://b/k/x.jpg").unwrap(),
            ("b", "k/x.jpg")
        );
        for bad in ["s3://b/k", "oss://b", "oss:///k", "oss://b/"] {
            assert!(Buckets::parse_uri(bad).is_err(), "{bad}");
        }
        assert!(Buckets::from_specs(&["nodir"]).is_err());
        assert!(Buckets::from_specs(&["UPPER=/tmp"]).is_err());
        assert!(Buckets::from_specs(&["fine=/definitely/not/here"]).is_err());
    }
}

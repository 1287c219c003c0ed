//! Where image bytes come from when a request names an object instead of carrying it:
//! `oss://bucket/key` resolved against the buckets the server is configured with.
//!
//! A bucket is a local folder (`--bucket NAME=DIR`) or an S3-compatible bucket
//! (`--bucket NAME=s3://BUCKET[/prefix]`, through `object_store`, connection from the standard
//! `AWS_*` settings). A key can never reach outside its folder or prefix: `..` components and
//! absolute keys are refused, and a local path (after following any symlink) must still lie inside
//! the folder's canonical path. Local reads are blocking file I/O on a blocking thread; S3 reads
//! are async; neither runs on the model or decode threads.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_stream::{Stream, StreamExt};

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
    #[error("the object store failed: {0}")]
    Backend(String),
    #[error("the object store did not answer within {0} s; try again later")]
    Unavailable(u64),
}

impl SourceError {
    /// The code this error is reported as.
    pub fn code(&self) -> ErrorCode {
        match self {
            SourceError::BadUri(_) | SourceError::BadKey(_) => ErrorCode::InvalidArgument,
            SourceError::NoSuchBucket(_) => ErrorCode::NoSuchBucket,
            SourceError::NoSuchKey { .. } => ErrorCode::NoSuchKey,
            SourceError::TooLarge { .. } => ErrorCode::ImageTooLarge,
            SourceError::Io(_) | SourceError::Backend(_) => ErrorCode::Internal,
            SourceError::Unavailable(_) => ErrorCode::NotReady,
        }
    }
}

/// A bucket backed by a local folder.
#[derive(Debug, Clone)]
pub struct LocalBucket {
    root: PathBuf,
}

/// A bucket backed by an S3-compatible object store, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

#[derive(Debug, Clone)]
enum Bucket {
    Local(LocalBucket),
    S3(S3Bucket),
}

/// The configured buckets, by name.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    buckets: BTreeMap<String, Bucket>,
    /// Longest wait for an S3-compatible store to answer a GET (its client would otherwise
    /// retry a dead endpoint for minutes while the request holds an admission slot).
    s3_timeout: Duration,
}

/// Default of [`Buckets::with_s3_timeout`].
pub const DEFAULT_S3_TIMEOUT: Duration = Duration::from_secs(20);

/// A byte stream of an object, for GetObject.
pub type ObjectStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

impl Buckets {
    /// Parses `NAME=DIR` specs. The folders must exist.
    ///
    /// # Errors
    /// A message naming the bad spec.
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Buckets, String> {
        Buckets::with_s3(specs, &AmazonS3Builder::new())
    }

    /// Parses `NAME=DIR` and `NAME=s3://BUCKET[/prefix]` specs; S3 buckets take their connection
    /// (endpoint, region, keys, `allow_http`) from `s3`, e.g. `AmazonS3Builder::from_env()`.
    ///
    /// # Errors
    /// A message naming the bad spec.
    pub fn with_s3<S: AsRef<str>>(specs: &[S], s3: &AmazonS3Builder) -> Result<Buckets, String> {
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
            let bucket = if let Some(location) = dir.strip_prefix("s3://") {
                let (s3_bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
                if s3_bucket.is_empty() {
                    return Err(format!("bucket {name}: {dir:?} names no S3 bucket"));
                }
                let store = s3
                    .clone()
                    .with_bucket_name(s3_bucket)
                    .build()
                    .map_err(|e| format!("bucket {name}: {dir}: {e}"))?;
                Bucket::S3(S3Bucket {
                    store: Arc::new(store),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            } else {
                let root = std::fs::canonicalize(dir)
                    .map_err(|e| format!("bucket {name}: folder {dir:?}: {e}"))?;
                if !root.is_dir() {
                    return Err(format!("bucket {name}: {dir:?} is not a folder"));
                }
                Bucket::Local(LocalBucket { root })
            };
            if buckets.insert(name.to_string(), bucket).is_some() {
                return Err(format!("bucket {name} is configured twice"));
            }
        }
        Ok(Buckets {
            buckets,
            s3_timeout: DEFAULT_S3_TIMEOUT,
        })
    }

    /// Sets how long a GET from an S3-compatible bucket may take before it fails with
    /// [`SourceError::Unavailable`] (the next request tries again: nothing is remembered).
    pub fn with_s3_timeout(mut self, timeout: Duration) -> Buckets {
        self.s3_timeout = timeout;
        self
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
        let local = match self.bucket(bucket)? {
            Bucket::Local(local) => local,
            Bucket::S3(_) => {
                return Err(SourceError::Backend(format!(
                    "bucket {bucket} is not a local folder. This is a bug."
                )))
            }
        };
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

    fn bucket(&self, name: &str) -> Result<&Bucket, SourceError> {
        self.buckets
            .get(name)
            .ok_or_else(|| SourceError::NoSuchBucket(name.to_string()))
    }

    /// Fetches an object's bytes, refusing more than `max_bytes`, from either kind of bucket.
    ///
    /// # Errors
    /// [`SourceError`] for an unknown bucket, a bad or missing key, an object over the limit, or
    /// a failing object store.
    pub async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, SourceError> {
        match self.bucket(bucket)? {
            Bucket::Local(_) => {
                let this = self.clone();
                let (bucket, key) = (bucket.to_string(), key.to_string());
                tokio::task::spawn_blocking(move || this.read(&bucket, &key, max_bytes))
                    .await
                    .map_err(|e| SourceError::Backend(e.to_string()))?
            }
            Bucket::S3(s3) => {
                let path = s3.path(key)?;
                let failed = |e| s3_error(e, bucket, key);
                let get = async {
                    // One round trip: the size arrives with the response headers, so an object
                    // over the limit is refused before its body is read.
                    let result = s3.store.get(&path).await.map_err(failed)?;
                    if result.meta.size > max_bytes {
                        return Err(SourceError::TooLarge {
                            bytes: result.meta.size,
                            limit: max_bytes,
                        });
                    }
                    result.bytes().await.map_err(failed)
                };
                let bytes = tokio::time::timeout(self.s3_timeout, get)
                    .await
                    .map_err(|_| SourceError::Unavailable(self.s3_timeout.as_secs()))??;
                if bytes.len() as u64 > max_bytes {
                    return Err(SourceError::TooLarge {
                        bytes: bytes.len() as u64,
                        limit: max_bytes,
                    });
                }
                Ok(bytes.to_vec())
            }
        }
    }

    /// Opens an object for streaming (GetObject): its length and its bytes.
    ///
    /// # Errors
    /// As [`Buckets::fetch`], without the size limit.
    pub async fn stream(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(u64, ObjectStream), SourceError> {
        match self.bucket(bucket)? {
            Bucket::Local(_) => {
                let this = self.clone();
                let (b, k) = (bucket.to_string(), key.to_string());
                let (file, len) = tokio::task::spawn_blocking(move || this.open(&b, &k))
                    .await
                    .map_err(|e| SourceError::Backend(e.to_string()))??;
                let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
                Ok((len, Box::pin(stream)))
            }
            Bucket::S3(s3) => {
                let path = s3.path(key)?;
                let result = tokio::time::timeout(self.s3_timeout, s3.store.get(&path))
                    .await
                    .map_err(|_| SourceError::Unavailable(self.s3_timeout.as_secs()))?
                    .map_err(|e| s3_error(e, bucket, key))?;
                let len = result.meta.size;
                let stream = result
                    .into_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other));
                Ok((len, Box::pin(stream)))
            }
        }
    }
}

impl S3Bucket {
    /// The object path for `key` under the prefix; `..`, `.` and empty segments are refused.
    fn path(&self, key: &str) -> Result<ObjectPath, SourceError> {
        let bad = || SourceError::BadKey(key.to_string());
        if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad());
        }
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(full).map_err(|_| bad())
    }
}

fn s3_error(error: object_store::Error, bucket: &str, key: &str) -> SourceError {
    match error {
        object_store::Error::NotFound { .. } => SourceError::NoSuchKey {
            bucket: bucket.to_string(),
            key: key.to_string(),
        },
        other => SourceError::Backend(other.to_string()),
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

    /// The S3 path of a bucket, against object_store's in-memory store (same trait, no network).
    #[tokio::test]
    async fn s3_buckets_fetch_stream_and_refuse_escapes() {
        use object_store::memory::InMemory;
        let store = Arc::new(InMemory::new());
        store
            .put(&ObjectPath::from("pre/a/cat.jpg"), b"12345".to_vec().into())
            .await
            .unwrap();
        let buckets = Buckets {
            buckets: BTreeMap::from([(
                "mem".to_string(),
                Bucket::S3(S3Bucket {
                    store,
                    prefix: "pre".into(),
                }),
            )]),
            s3_timeout: DEFAULT_S3_TIMEOUT,
        };
        assert_eq!(
            buckets.fetch("mem", "a/cat.jpg", 100).await.unwrap(),
            b"12345"
        );
        let (len, mut stream) = buckets.stream("mem", "a/cat.jpg").await.unwrap();
        assert_eq!(len, 5);
        assert_eq!(
            stream.next().await.unwrap().unwrap(),
            Bytes::from_static(b"12345")
        );
        assert!(matches!(
            buckets.fetch("mem", "a/none.jpg", 100).await,
            Err(SourceError::NoSuchKey { .. })
        ));
        assert!(matches!(
            buckets.fetch("mem", "a/cat.jpg", 4).await,
            Err(SourceError::TooLarge { .. })
        ));
        for key in [
            "../pre/a/cat.jpg",
            "a/../a/cat.jpg",
            "/a/cat.jpg",
            "a//cat.jpg",
            "./a",
        ] {
            assert!(
                matches!(
                    buckets.fetch("mem", key, 100).await,
                    Err(SourceError::BadKey(_))
                ),
                "{key}"
            );
        }
        assert!(matches!(
            buckets.fetch("none", "a", 100).await,
            Err(SourceError::NoSuchBucket(_))
        ));
    }

    #[test]
    fn s3_specs_are_parsed() {
        let s3 = AmazonS3Builder::new()
            .with_region("us-east-1")
            .with_endpoint("http://127.0.0.1:9")
            .with_allow_http(true);
        let buckets = Buckets::with_s3(&["photos=s3://bucket-a/some/prefix/"], &s3).unwrap();
        assert!(buckets.contains("photos"));
        assert!(Buckets::with_s3(&["photos=s3://"], &s3).is_err());
    }

    /// An S3 endpoint that accepts connections and never answers: the fetch fails with
    /// Unavailable (503 / UNAVAILABLE) after the timeout instead of hanging in retries.
    #[tokio::test]
    async fn a_silent_s3_endpoint_fails_within_the_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let s3 = AmazonS3Builder::new()
            .with_region("us-east-1")
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test");
        let buckets = Buckets::with_s3(&["photos=s3://silent"], &s3)
            .unwrap()
            .with_s3_timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let fetched = buckets.fetch("photos", "cat.jpg", 1 << 20).await;
        assert!(
            matches!(fetched, Err(SourceError::Unavailable(_))),
            "{fetched:?}"
        );
        let streamed = buckets.stream("photos", "cat.jpg").await.map(|_| ());
        assert!(
            matches!(streamed, Err(SourceError::Unavailable(_))),
            "{streamed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(
            SourceError::Unavailable(1).code(),
            crate::error::ErrorCode::NotReady
        );
        held.abort();
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

//! The HTTP doors (axum): the OSS-compatible `GET /{bucket}/{key}?x-oss-process=image/labels`,
//! the plain JSON `POST /v1/labels`, `/health/live` + `/health/ready`, and `/metrics`.
//!
//! The OSS door works like OSS: path style (`/bucket/key`, what the SDKs send to an IP or
//! localhost endpoint) or virtual-host style (`Host: bucket.<endpoint>`); the key is
//! percent-decoded; every request must be signed (V4 or V1, header or presigned URL); without
//! `x-oss-process` a GET returns the object itself. Errors are OSS `<Error>` XML (the JSON door
//! answers the same codes as `{"Code","Message","RequestId"}`), and every response carries
//! `x-oss-request-id`. Statuses come from [`ErrorCode::http_status`], the one HTTP table.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::api_keys::{ApiKeys, KeyError};
use super::auth::{self, AuthError, Credentials, SignedRequest};
use super::oss::{error_ec, error_xml, parse_process, ProcessError};
use crate::detect::{DetectError, DetectRequest, Detection, Detector, ImageSource, Readiness};
use crate::error::{ErrorBody, ErrorCode};
use crate::labels::{LabelOptions, LabelsResponse, DEFAULT_THRESHOLD};
use crate::observe::{self, Door, Outcome, Scrape};
use crate::request_id::new_request_id;
use crate::source::{Buckets, SourceError};
use crate::taxonomy::Language;

/// What the HTTP doors share.
#[derive(Clone)]
pub struct HttpState {
    pub detector: Detector,
    pub buckets: Buckets,
    pub credentials: Arc<Credentials>,
    /// The region V4 signatures must be scoped to.
    pub region: String,
    /// Language of label names on the OSS door (it has no language parameter).
    pub language: Language,
    pub readiness: Arc<Readiness>,
    /// Largest request body on the JSON door.
    pub max_body_bytes: usize,
    /// `/metrics`.
    pub scrape: Scrape,
    /// Keys `POST /v1/labels` must carry (none: open).
    pub api_keys: Arc<ApiKeys>,
    /// Longest wait for a `POST /v1/labels` body (against clients that trickle it).
    pub body_timeout: std::time::Duration,
}

/// The router of both HTTP doors.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(web_page))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/labels", post(json_labels))
        .fallback(oss)
        .with_state(state)
}

/// The web page (`src/api/web/index.html`), embedded so the binary serves it offline.
const WEB_PAGE: &str = include_str!("web/index.html");

/// What the page may do: its own inline script and style, photos from the files the user picks,
/// requests to this origin only; no frames, no forms, no other origin.
const WEB_PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; img-src blob: data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the page itself holds no data, so it needs no key; its calls to `/v1/labels` do.
async fn web_page() -> Response {
    let mut response = Response::new(Body::from(WEB_PAGE));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(WEB_PAGE_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The router of a metrics-only port (`--metrics-addr`): `/metrics` and nothing else.
pub fn metrics_router(scrape: Scrape) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(scrape): State<Scrape>| async move { metrics_response(&scrape) }),
        )
        .with_state(scrape)
}

async fn metrics(State(state): State<HttpState>) -> Response {
    metrics_response(&state.scrape)
}

fn metrics_response(scrape: &Scrape) -> Response {
    (
        [(header::CONTENT_TYPE, observe::CONTENT_TYPE)],
        scrape.render(),
    )
        .into_response()
}

async fn ready(State(state): State<HttpState>) -> Response {
    if state.readiness.is_serving() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Why an HTTP request failed, before or inside detection.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    ApiKey(#[from] KeyError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("invalid {name}: {reason}")]
    Argument { name: &'static str, reason: String },
    #[error("the method {0} is not supported here; use GET (OSS) or POST /v1/labels")]
    Method(Method),
    #[error("the request body did not arrive within {0} s")]
    SlowBody(u64),
}

impl HttpError {
    fn code(&self) -> ErrorCode {
        match self {
            HttpError::Detect(e) => e.code(),
            HttpError::Process(e) => e.code(),
            HttpError::Source(e) => e.code(),
            HttpError::Auth(e) => match e {
                AuthError::Anonymous | AuthError::Expired => ErrorCode::AccessDenied,
                AuthError::Malformed(_) | AuthError::InvalidRegion { .. } => {
                    ErrorCode::InvalidArgument
                }
                AuthError::InvalidAccessKeyId => ErrorCode::InvalidAccessKeyId,
                AuthError::SignatureDoesNotMatch => ErrorCode::SignatureDoesNotMatch,
                AuthError::RequestTimeTooSkewed => ErrorCode::RequestTimeTooSkewed,
            },
            HttpError::ApiKey(e) => e.code(),
            HttpError::Argument { .. } => ErrorCode::InvalidArgument,
            HttpError::Method(_) => ErrorCode::NotImplemented,
            HttpError::SlowBody(_) => ErrorCode::DeadlineExceeded,
        }
    }

    /// Client-facing text: internal errors are logged, not described.
    fn message(&self, request_id: &str) -> String {
        if self.code() == ErrorCode::Internal {
            tracing::error!(request_id, error = %self, "internal error");
            format!("internal error; quote request id {request_id} when reporting it")
        } else {
            self.to_string()
        }
    }

    fn argument(&self) -> Option<(String, String)> {
        match self {
            HttpError::Process(e @ ProcessError::Invalid { value, .. }) => {
                Some((e.argument().to_string(), value.clone()))
            }
            HttpError::Argument { name, .. } => Some((name.to_string(), String::new())),
            _ => None,
        }
    }
}

/// Headers every answer carries; 503s also say when to come back.
fn common_headers(response: &mut Response, request_id: &str, code: Option<ErrorCode>) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-oss-request-id", value);
    }
    headers.insert(header::SERVER, HeaderValue::from_static("labeld"));
    if let Some(code) = code {
        if let Ok(value) = HeaderValue::from_str(&error_ec(code)) {
            headers.insert("x-oss-ec", value);
        }
        if code.http_status() == 503 {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A response with the headers every answer carries (`code` is set for errors).
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    request_id: &str,
    code: Option<ErrorCode>,
) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    common_headers(&mut response, request_id, code);
    response
}

const JSON: &str = "application/json;charset=utf-8";

fn xml_error(error: &HttpError, message: &str, request_id: &str, host: &str) -> Response {
    let code = error.code();
    let argument = error.argument();
    let body = error_xml(
        code,
        message,
        request_id,
        host,
        argument.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
    );
    respond(
        status_of(code),
        "application/xml",
        body.into_bytes(),
        request_id,
        Some(code),
    )
}

fn json_error(error: &HttpError, message: String, request_id: &str) -> Response {
    let code = error.code();
    let body = ErrorBody {
        code: code.name(),
        message,
        request_id: request_id.to_string(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    respond(status_of(code), JSON, json, request_id, Some(code))
}

/// The IMM body of a labelled image.
fn json_labels_response(detection: Detection) -> Result<Response, HttpError> {
    let labels = LabelsResponse {
        labels: detection.labels,
        request_id: detection.request_id,
        image_properties: detection.properties,
    };
    let body = serde_json::to_vec(&labels)
        .map_err(|e| HttpError::Detect(DetectError::Internal(e.to_string())))?;
    Ok(respond(
        StatusCode::OK,
        JSON,
        body,
        &labels.request_id,
        None,
    ))
}

/// What a door produced before it became a response.
enum Answer {
    Labelled(Detection),
    /// A response that needed no model (GetObject).
    Served(Response),
}

/// Reports the answer to [`observe`] and turns it into the response; `error_response` renders
/// an error in the door's format.
fn finish(
    door: Door,
    request_id: &str,
    received: Instant,
    answer: Result<Answer, HttpError>,
    error_response: impl FnOnce(&HttpError, String) -> Response,
) -> Response {
    let elapsed = received.elapsed();
    match answer {
        Ok(Answer::Labelled(detection)) => {
            let outcome = Outcome::Labelled {
                timings: &detection.timings,
                labels: detection.labels.len(),
            };
            observe::answered(door, request_id, elapsed, outcome);
            json_labels_response(detection).unwrap_or_else(|error| {
                let message = error.message(request_id);
                error_response(&error, message)
            })
        }
        Ok(Answer::Served(response)) => {
            observe::answered(door, request_id, elapsed, Outcome::Served);
            response
        }
        Err(error) => {
            let message = error.message(request_id);
            let outcome = Outcome::Failed {
                code: error.code(),
                message: &message,
            };
            observe::answered(door, request_id, elapsed, outcome);
            error_response(&error, message)
        }
    }
}

/// Decoded query pairs in wire order. `+` means a space, as in HTML forms: oss2 sends its query
/// through `requests`, which encodes a space as `+`, and both SDKs send a real `+` as `%2B`.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// The bucket and key of an OSS request: virtual-host style when the Host's first label is a
/// configured bucket, else path style.
fn bucket_and_key(buckets: &Buckets, host: &str, path: &str) -> (Option<String>, Option<String>) {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let hostname = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let path = path.strip_prefix('/').unwrap_or(path);
    if let Some((first, rest)) = hostname.split_once('.') {
        if !rest.is_empty() && buckets.contains(first) {
            let key = (!path.is_empty()).then(|| decode(path));
            return (Some(first.to_string()), key);
        }
    }
    match path.split_once('/') {
        Some((bucket, key)) => (Some(decode(bucket)), (!key.is_empty()).then(|| decode(key))),
        None if path.is_empty() => (None, None),
        None => (Some(decode(path)), None),
    }
}

async fn oss(State(state): State<HttpState>, request: Request) -> Response {
    let received = Instant::now();
    let request_id = new_request_id();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = oss_inner(&state, request, &request_id, &host).await;
    finish(
        Door::Oss,
        &request_id,
        received,
        answer,
        |error, message| xml_error(error, &message, &request_id, &host),
    )
}

async fn oss_inner(
    state: &HttpState,
    request: Request,
    request_id: &str,
    host: &str,
) -> Result<Answer, HttpError> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::Method(method));
    }
    let uri = request.uri().clone();
    let (bucket, key) = bucket_and_key(&state.buckets, host, uri.path());
    let query = query_pairs(uri.query());
    auth::verify(
        &SignedRequest {
            method: method.as_str(),
            bucket: bucket.as_deref(),
            key: key.as_deref(),
            query: &query,
            headers: request.headers(),
        },
        &state.credentials,
        &state.region,
        SystemTime::now(),
    )?;
    let (Some(bucket), Some(key)) = (bucket, key) else {
        return Err(HttpError::Argument {
            name: "key",
            reason: "the request names no object; use GET /{bucket}/{key}".into(),
        });
    };
    if !state.buckets.contains(&bucket) {
        return Err(SourceError::NoSuchBucket(bucket).into());
    }
    let processes: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "x-oss-process")
        .map(|(_, v)| v.as_str())
        .collect();
    match processes.as_slice() {
        [] => get_object(state, &bucket, &key, request_id, method == Method::HEAD)
            .await
            .map(Answer::Served),
        [process] => {
            let process = parse_process(process)?;
            let detection = state
                .detector
                .detect(DetectRequest {
                    source: ImageSource::Object { bucket, key },
                    options: LabelOptions {
                        threshold: f32::from(process.thr) / 100.0,
                        language: state.language,
                        max_labels: None,
                        explain: false,
                        properties: false,
                    },
                    request_id: request_id.to_string(),
                    deadline: None,
                })
                .await?;
            Ok(Answer::Labelled(detection))
        }
        _ => Err(HttpError::Argument {
            name: "x-oss-process",
            reason: "x-oss-process is given more than once".into(),
        }),
    }
}

/// GetObject: the object's bytes, streamed from the bucket.
async fn get_object(
    state: &HttpState,
    bucket: &str,
    key: &str,
    request_id: &str,
    head_only: bool,
) -> Result<Response, HttpError> {
    let (len, stream) = state.buckets.stream(bucket, key).await?;
    let body = if head_only {
        Body::empty()
    } else {
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    common_headers(&mut response, request_id, None);
    Ok(response)
}

/// Query parameters of `POST /v1/labels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonParams {
    threshold: Option<String>,
    language: Option<String>,
    max_labels: Option<String>,
    explain: Option<String>,
    properties: Option<String>,
}

/// A yes/no query parameter: `true`/`false` (also `1`/`0`); anything else names the parameter.
fn flag(name: &'static str, raw: Option<&str>) -> Result<bool, HttpError> {
    match raw {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(other) => Err(HttpError::Argument {
            name,
            reason: format!("must be true or false, got {other:?}"),
        }),
    }
}

async fn json_labels(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
    params: Result<Query<JsonParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let received = Instant::now();
    let request_id = new_request_id();
    let authorization = match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| KeyError::Malformed),
    };
    let answer = match authorization.and_then(|value| state.api_keys.check(value)) {
        Ok(()) => json_inner(&state, params, body, &request_id).await,
        Err(e) => Err(e.into()),
    };
    finish(
        Door::Json,
        &request_id,
        received,
        answer,
        |error, message| json_error(error, message, &request_id),
    )
}

async fn json_inner(
    state: &HttpState,
    params: Result<Query<JsonParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
    request_id: &str,
) -> Result<Answer, HttpError> {
    let Query(params) = params.map_err(|e| HttpError::Argument {
        name: "query",
        reason: e.body_text(),
    })?;
    let threshold = match params.threshold.as_deref() {
        None => DEFAULT_THRESHOLD,
        Some(raw) => match raw.parse::<f32>() {
            Ok(t) if (0.0..=1.0).contains(&t) => t,
            _ => {
                return Err(HttpError::Argument {
                    name: "threshold",
                    reason: format!("must be a number from 0 to 1, got {raw:?}"),
                })
            }
        },
    };
    let language = match params.language.as_deref() {
        None => Language::En,
        Some(tag) => Language::from_tag(tag).ok_or_else(|| HttpError::Argument {
            name: "language",
            reason: format!("{tag:?} is not supported; use en or zh-Hans"),
        })?,
    };
    let max_labels = match params.max_labels.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<usize>().map_err(|_| HttpError::Argument {
            name: "max_labels",
            reason: format!("must be a whole number, got {raw:?}"),
        })?)
        .filter(|n| *n > 0),
    };
    let explain = flag("explain", params.explain.as_deref())?;
    let properties = flag("properties", params.properties.as_deref())?;
    let read = axum::body::to_bytes(body, state.max_body_bytes);
    let bytes: Bytes = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| HttpError::SlowBody(state.body_timeout.as_secs()))?
        .map_err(|_| {
            DetectError::Decode(crate::image::DecodeError::TooManyBytes {
                bytes: state.max_body_bytes as u64 + 1,
                limit: state.max_body_bytes as u64,
            })
        })?;
    let detection = state
        .detector
        .detect(DetectRequest {
            source: ImageSource::Bytes(bytes),
            options: LabelOptions {
                threshold,
                language,
                max_labels,
                explain,
                properties,
            },
            request_id: request_id.to_string(),
            deadline: None,
        })
        .await?;
    Ok(Answer::Labelled(detection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_virtual_host_styles() {
        let dir = std::env::temp_dir();
        let buckets = Buckets::from_specs(&[format!("photos={}", dir.display())]).unwrap();
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            bucket_and_key(&buckets, "127.0.0.1:8080", "/photos/a%2Fcat.jpg"),
            (some("photos"), some("a/cat.jpg"))
        );
        assert_eq!(
            bucket_and_key(&buckets, "localhost", "/photos/a/cat.jpg"),
            (some("photos"), some("a/cat.jpg"))
        );
        assert_eq!(
            bucket_and_key(&buckets, "photos.localhost:8080", "/a/cat.jpg"),
            (some("photos"), some("a/cat.jpg"))
        );
        assert_eq!(
            bucket_and_key(
                &buckets,
                "photos.oss-cn-hangzhou.example.com",
                "/cat%20x.jpg"
            ),
            (some("photos"), some("cat x.jpg"))
        );
        assert_eq!(
            bucket_and_key(&buckets, "127.0.0.1", "/photos"),
            (some("photos"), None)
        );
        assert_eq!(bucket_and_key(&buckets, "127.0.0.1", "/"), (None, None));
    }

    #[test]
    fn query_pairs_are_decoded_in_order() {
        let pairs = query_pairs(Some("x-oss-process=image%2Flabels%2Cthr_60&acl&a=b%2Bc+d"));
        assert_eq!(
            pairs,
            vec![
                (
                    "x-oss-process".to_string(),
                    "image/labels,thr_60".to_string()
                ),
                ("acl".to_string(), String::new()),
                ("a".to_string(), "b+c d".to_string()),
            ]
        );
    }
}

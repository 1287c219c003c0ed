//! The gRPC door: `labeld.v1.ImageLabels` (tonic).
//!
//! Parses and validates each request (threshold range, language, request id, the `grpc-timeout`
//! deadline), calls the [`Detector`], and maps errors to gRPC statuses in one table
//! ([`grpc_code`]). Every response, success or error, carries the request id in the
//! `x-request-id` metadata.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::api_keys::{ApiKeys, KeyError};
use crate::detect::{DetectError, DetectRequest, Detection, Detector, ImageSource};
use crate::error::ErrorCode;
use crate::explain::PixelBox;
use crate::labels::{LabelOptions, DEFAULT_THRESHOLD};
use crate::observe::{self, Door, Outcome};
use crate::pb;
use crate::request_id::new_request_id;
use crate::taxonomy::Language;

/// Metadata key that carries the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How much earlier than the client's `grpc-timeout` the service gives up on a request, so that
/// it answers DEADLINE_EXCEEDED itself before tonic's own timer (at the full timeout) cancels
/// the call, which would answer CANCELLED: a twentieth of the timeout, at least 2 ms and at most
/// 50 ms. A fixed 2 ms lost that race on a loaded machine, where timers fire late.
fn deadline_margin(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

/// When a call reached the service, recorded by [`mark_received`] before its message is read.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

/// Interceptor that stamps each call with its arrival time. tonic's own server timer for
/// `grpc-timeout` starts at that moment too (before the message is decoded), so a deadline
/// measured from here expires, by the margin, before tonic's timer answers CANCELLED; measured
/// from the handler's start it could expire after it when decoding a large message was slow.
///
/// # Errors
/// Never.
#[allow(clippy::result_large_err)]
pub fn mark_received(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.extensions_mut().insert(Received(Instant::now()));
    Ok(request)
}

fn received_at<T>(request: &Request<T>) -> Instant {
    request
        .extensions()
        .get::<Received>()
        .map_or_else(Instant::now, |r| r.0)
}

/// The gRPC status code of each error code: the single gRPC mapping table.
pub fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::ImageTooLarge => Code::InvalidArgument,
        ErrorCode::NoSuchKey | ErrorCode::NoSuchBucket => Code::NotFound,
        ErrorCode::Overloaded => Code::ResourceExhausted,
        ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorCode::NotReady => Code::Unavailable,
        ErrorCode::AccessDenied | ErrorCode::InvalidAccessKeyId => Code::Unauthenticated,
        ErrorCode::SignatureDoesNotMatch | ErrorCode::RequestTimeTooSkewed => {
            Code::PermissionDenied
        }
        ErrorCode::NotImplemented => Code::Unimplemented,
        ErrorCode::Internal => Code::Internal,
    }
}

/// The client-facing message: the error's own text, except for internal errors, whose details
/// are logged and not sent.
fn public_message(error: &DetectError, request_id: &str) -> String {
    match error.code() {
        ErrorCode::Internal => {
            tracing::error!(request_id, error = %error, "internal error");
            format!("internal error; quote request id {request_id} when reporting it")
        }
        _ => error.to_string(),
    }
}

/// The status of an error answer, tagged with the request id and the labeld error code.
fn status(code: ErrorCode, message: String, request_id: &str) -> Status {
    let mut status = Status::new(grpc_code(code), message);
    if let Ok(value) = MetadataValue::try_from(request_id) {
        status.metadata_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Ok(value) = MetadataValue::try_from(code.name()) {
        status.metadata_mut().insert("x-labeld-error-code", value);
    }
    status
}

/// The caller's deadline from `grpc-timeout` (`<digits><H|M|S|m|u|n>`), less a safety margin.
fn deadline_from(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    };
    now.checked_add(timeout.saturating_sub(deadline_margin(timeout)))
}

/// Validates a protobuf request into the transport-neutral one.
///
/// # Errors
/// [`DetectError::InvalidArgument`] naming the offending field.
pub fn parse_request(
    request: pb::DetectImageLabelsRequest,
    deadline: Option<Instant>,
) -> Result<DetectRequest, DetectError> {
    let invalid =
        |name: &'static str, reason: String| DetectError::InvalidArgument { name, reason };
    let request_id = if request.request_id.is_empty() {
        new_request_id()
    } else if request.request_id.len() <= 128
        && request.request_id.bytes().all(|b| b.is_ascii_graphic())
    {
        request.request_id
    } else {
        return Err(invalid(
            "request_id",
            "at most 128 printable ASCII characters without spaces".into(),
        ));
    };
    let threshold = match request.threshold {
        None => DEFAULT_THRESHOLD,
        Some(t) if (0.0..=1.0).contains(&t) => t,
        Some(t) => {
            return Err(invalid(
                "threshold",
                format!("must be from 0 to 1, got {t}"),
            ))
        }
    };
    let language = if request.language.is_empty() {
        Language::En
    } else {
        Language::from_tag(&request.language).ok_or_else(|| {
            invalid(
                "language",
                format!("{:?} is not supported; use en or zh-Hans", request.language),
            )
        })?
    };
    let source = match request.source {
        Some(pb::detect_image_labels_request::Source::Image(bytes)) => ImageSource::Bytes(bytes),
        Some(pb::detect_image_labels_request::Source::SourceUri(uri)) => ImageSource::Uri(uri),
        None => {
            return Err(invalid(
                "image",
                "the request has neither image nor source_uri".into(),
            ))
        }
    };
    Ok(DetectRequest {
        source,
        options: LabelOptions {
            threshold,
            language,
            max_labels: (request.max_labels > 0).then_some(request.max_labels as usize),
            explain: request.explain,
            properties: request.properties,
        },
        request_id,
        deadline,
    })
}

fn to_response(detection: Detection) -> pb::DetectImageLabelsResponse {
    let t = detection.timings;
    let micros = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
    pb::DetectImageLabelsResponse {
        labels: detection
            .labels
            .into_iter()
            .map(|l| pb::Label {
                label_name: l.label_name,
                label_confidence: l.label_confidence,
                label_level: i32::from(l.label_level),
                parent_label_name: l.parent_label_name,
                centric_score: l.centric_score,
                language: l.language.to_string(),
                bounding_box: l.bounding_box.map(to_box),
                heatmap: l.heatmap.map(|h| pb::Heatmap {
                    width: h.width,
                    height: h.height,
                    values: h.values,
                    region: Some(to_box(h.region)),
                }),
            })
            .collect(),
        properties: detection.properties.map(|p| pb::ImageProperties {
            width: p.width,
            height: p.height,
            brightness: p.brightness,
            sharpness: p.sharpness,
            contrast: p.contrast,
            dominant_colors: p
                .dominant_colors
                .into_iter()
                .map(|c| pb::DominantColor {
                    name: c.name.to_string(),
                    hex: c.hex,
                    red: u32::from(c.red),
                    green: u32::from(c.green),
                    blue: u32::from(c.blue),
                    fraction: c.fraction,
                })
                .collect(),
        }),
        request_id: detection.request_id,
        model: detection.model.name().to_string(),
        timings: Some(pb::StageTimings {
            decode_us: micros(t.decode),
            queue_us: micros(t.queue),
            inference_us: micros(t.inference),
            total_us: micros(t.total),
            batch_size: t.batch_size as u32,
        }),
        error: None,
    }
}

fn to_box(b: PixelBox) -> pb::BoundingBox {
    pb::BoundingBox {
        left: b.left,
        top: b.top,
        width: b.width,
        height: b.height,
    }
}

/// Reports one answer to [`observe`] (metrics and the request's log line).
fn report(
    door: Door,
    request_id: &str,
    received: Instant,
    answer: &Result<Detection, (ErrorCode, String)>,
) {
    let outcome = match answer {
        Ok(detection) => Outcome::Labelled {
            timings: &detection.timings,
            labels: detection.labels.len(),
        },
        Err((code, message)) => Outcome::Failed {
            code: *code,
            message,
        },
    };
    observe::answered(door, request_id, received.elapsed(), outcome);
}

/// Runs one request to completion, giving up at its deadline.
async fn run(detector: &Detector, request: DetectRequest) -> Result<Detection, DetectError> {
    match request.deadline {
        Some(deadline) => {
            let deadline = tokio::time::Instant::from_std(deadline);
            tokio::time::timeout_at(deadline, detector.detect(request))
                .await
                .unwrap_or(Err(DetectError::DeadlineExceeded))
        }
        None => detector.detect(request).await,
    }
}

/// The `ImageLabels` service.
pub struct ImageLabelsService {
    detector: Detector,
    info: pb::ModelInfo,
    /// Keys every call must carry (none: open).
    keys: Arc<ApiKeys>,
    /// Requests one stream may have in progress at once; reading pauses beyond it, so a fast
    /// streaming client is slowed by flow control rather than refused.
    stream_window: usize,
}

impl ImageLabelsService {
    /// The service over `detector`, answering `GetModelInfo` with `info`; calls must carry one
    /// of `keys` when there are any.
    pub fn new(detector: Detector, info: pb::ModelInfo, keys: Arc<ApiKeys>) -> Self {
        let stream_window = (info.max_batch as usize * 2).max(2);
        ImageLabelsService {
            detector,
            info,
            keys,
            stream_window,
        }
    }

    /// Checks the call's `authorization` metadata against the API keys.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), KeyError> {
        let value = match metadata.get("authorization") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| KeyError::Malformed)?),
        };
        self.keys.check(value)
    }
}

/// A refused call's status (the key error's text: never the key).
fn refused(error: KeyError, request_id: &str) -> Status {
    status(error.code(), error.to_string(), request_id)
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::DetectImageLabelsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::image_labels_server::ImageLabels for ImageLabelsService {
    async fn detect_image_labels(
        &self,
        request: Request<pb::DetectImageLabelsRequest>,
    ) -> Result<Response<pb::DetectImageLabelsResponse>, Status> {
        let received = received_at(&request);
        let deadline = deadline_from(request.metadata(), received);
        let client_id = request.get_ref().request_id.clone();
        // The caller's id when there is no parsed request to take it from.
        let fallback_id = || {
            if client_id.is_empty() {
                new_request_id()
            } else {
                client_id.clone()
            }
        };
        let (answer, request_id) = match self.authorize(request.metadata()) {
            Err(e) => (Err((e.code(), e.to_string())), fallback_id()),
            Ok(()) => {
                let (answer, request_id) = match parse_request(request.into_inner(), deadline) {
                    Ok(parsed) => {
                        let request_id = parsed.request_id.clone();
                        (run(&self.detector, parsed).await, request_id)
                    }
                    Err(e) => (Err(e), fallback_id()),
                };
                let answer = answer.map_err(|error| {
                    let message = public_message(&error, &request_id);
                    (error.code(), message)
                });
                (answer, request_id)
            }
        };
        report(Door::Grpc, &request_id, received, &answer);
        match answer {
            Ok(detection) => {
                let mut response = Response::new(to_response(detection));
                if let Ok(value) = MetadataValue::try_from(request_id.as_str()) {
                    response.metadata_mut().insert(REQUEST_ID_HEADER, value);
                }
                Ok(response)
            }
            Err((code, message)) => Err(status(code, message, &request_id)),
        }
    }

    type DetectImageLabelsStreamStream = ResponseStream;

    async fn detect_image_labels_stream(
        &self,
        request: Request<Streaming<pb::DetectImageLabelsRequest>>,
    ) -> Result<Response<Self::DetectImageLabelsStreamStream>, Status> {
        let deadline = deadline_from(request.metadata(), received_at(&request));
        if let Err(e) = self.authorize(request.metadata()) {
            let id = new_request_id();
            let answer = Err((e.code(), e.to_string()));
            report(Door::GrpcStream, &id, Instant::now(), &answer);
            return Err(refused(e, &id));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.stream_window);
        let window = Arc::new(Semaphore::new(self.stream_window));
        let detector = self.detector.clone();
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&window).acquire_owned().await else {
                    break;
                };
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let tx = tx.clone();
                let detector = detector.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let received = Instant::now();
                    let client_id = message.request_id.clone();
                    let (answer, request_id) = match parse_request(message, deadline) {
                        Ok(parsed) => {
                            let request_id = parsed.request_id.clone();
                            (run(&detector, parsed).await, request_id)
                        }
                        Err(e) => (Err(e), client_id),
                    };
                    let answer = answer.map_err(|error| {
                        let message = public_message(&error, &request_id);
                        (error.code(), message)
                    });
                    report(Door::GrpcStream, &request_id, received, &answer);
                    let response = match answer {
                        Ok(detection) => to_response(detection),
                        Err((code, message)) => pb::DetectImageLabelsResponse {
                            error: Some(pb::Error {
                                code: grpc_code(code) as i32,
                                reason: code.name().to_string(),
                                message,
                            }),
                            request_id,
                            ..Default::default()
                        },
                    };
                    let _ = tx.send(Ok(response)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_model_info(
        &self,
        request: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        self.authorize(request.metadata())
            .map_err(|e| refused(e, &new_request_id()))?;
        Ok(Response::new(self.info.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_grpc_code() {
        for code in ErrorCode::ALL {
            let grpc = grpc_code(code);
            assert_ne!(grpc, Code::Ok, "{code:?}");
            assert_ne!(grpc, Code::Unknown, "{code:?}");
        }
    }

    fn request() -> pb::DetectImageLabelsRequest {
        pb::DetectImageLabelsRequest {
            source: Some(pb::detect_image_labels_request::Source::Image(
                vec![1, 2, 3].into(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn parameters_are_validated_not_clamped() {
        let ok = parse_request(request(), None).unwrap();
        assert_eq!(ok.options.threshold, DEFAULT_THRESHOLD);
        assert_eq!(ok.request_id.len(), 24);
        for (threshold, good) in [
            (0.0, true),
            (1.0, true),
            (1.01, false),
            (-0.1, false),
            (f32::NAN, false),
        ] {
            let r = pb::DetectImageLabelsRequest {
                threshold: Some(threshold),
                ..request()
            };
            assert_eq!(parse_request(r, None).is_ok(), good, "{threshold}");
        }
        let bad_language = pb::DetectImageLabelsRequest {
            language: "fr".into(),
            ..request()
        };
        assert!(matches!(
            parse_request(bad_language, None),
            Err(DetectError::InvalidArgument {
                name: "language",
                ..
            })
        ));
        let bad_id = pb::DetectImageLabelsRequest {
            request_id: "has space".into(),
            ..request()
        };
        assert!(matches!(
            parse_request(bad_id, None),
            Err(DetectError::InvalidArgument {
                name: "request_id",
                ..
            })
        ));
        let none = pb::DetectImageLabelsRequest {
            source: None,
            ..Default::default()
        };
        assert!(matches!(
            parse_request(none, None),
            Err(DetectError::InvalidArgument { name: "image", .. })
        ));
        let zh = pb::DetectImageLabelsRequest {
            language: "zh-Hans".into(),
            max_labels: 3,
            request_id: "abc-1".into(),
            ..request()
        };
        let zh = parse_request(zh, None).unwrap();
        assert_eq!(
            (
                zh.options.language,
                zh.options.max_labels,
                zh.request_id.as_str()
            ),
            (Language::ZhHans, Some(3), "abc-1")
        );
    }

    #[test]
    fn grpc_timeout_is_parsed_with_a_margin() {
        let now = Instant::now();
        let mut m = MetadataMap::new();
        assert_eq!(deadline_from(&m, now), None);
        m.insert("grpc-timeout", "300m".parse().unwrap());
        assert_eq!(
            deadline_from(&m, now),
            Some(now + Duration::from_millis(285))
        );
        m.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(
            deadline_from(&m, now),
            Some(now + Duration::from_millis(1950))
        );
        m.insert("grpc-timeout", "20m".parse().unwrap());
        assert_eq!(
            deadline_from(&m, now),
            Some(now + Duration::from_millis(18))
        );
        m.insert("grpc-timeout", "1x".parse().unwrap());
        assert_eq!(deadline_from(&m, now), None);
    }
}

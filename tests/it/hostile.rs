//! Hostile inputs, generated here (no large binaries committed), each sent over gRPC and over the
//! JSON HTTP door of one running server: every one gets its exact expected answer (an error code
//! or labels), and a good photo is still labelled after each of them.

use labeld::pb::detect_image_labels_request::Source;
use labeld::pb::image_labels_client::ImageLabelsClient;
use labeld::pb::DetectImageLabelsRequest;

use crate::http::{http, start_with};
use crate::support::{flat_png, read_fixture};

/// CRC-32 (IEEE), as PNG chunks need.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    out
}

/// A PNG that is only a signature and an IHDR declaring `width` x `height` (8-bit RGB).
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

/// A valid small PNG with `chunk` inserted right after IHDR.
fn png_with_chunk(chunk: Vec<u8>) -> Vec<u8> {
    let png = flat_png([40, 120, 200]);
    let after_ihdr = 8 + 4 + 4 + 13 + 4;
    let mut out = png[..after_ihdr].to_vec();
    out.extend(chunk);
    out.extend_from_slice(&png[after_ihdr..]);
    out
}

/// A real JPEG with `segment` (marker + payload) inserted after SOI.
fn jpeg_with_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let jpeg = read_fixture("rocket.jpg");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// rocket.jpg with its first Huffman table's code counts made impossible (more codes of length
/// 1 than a binary tree has room for).
fn jpeg_bad_huffman() -> Vec<u8> {
    let mut jpeg = read_fixture("rocket.jpg");
    let dht = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC4])
        .expect("a DHT segment");
    // Marker (2), length (2), class/id (1), then 16 code counts.
    for count in &mut jpeg[dht + 5..dht + 5 + 16] {
        *count = 0xFF;
    }
    jpeg
}

/// An EXIF block whose first IFD points at itself, with a huge entry count.
fn exif_loop() -> Vec<u8> {
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
    exif.extend_from_slice(&0xFFFFu16.to_le_bytes());
    for _ in 0..100 {
        // Tag 0x8769 (Exif IFD pointer), LONG, 1, pointing back at offset 8.
        exif.extend_from_slice(&[0x69, 0x87, 4, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
    }
    exif
}

/// What a request must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Labels,
    Error(&'static str),
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::{Error, Labels};
    let jpeg = read_fixture("rocket.jpg");
    let png = read_fixture("coffee.png");
    let mut random = Vec::with_capacity(4096);
    let mut seed = 0x2545_F491_u32;
    for _ in 0..4096 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        random.push(seed as u8);
    }
    let mut bad_crc = flat_png([1, 2, 3]);
    let idat = bad_crc
        .windows(4)
        .position(|w| w == b"IDAT")
        .expect("an IDAT chunk");
    let len = u32::from_be_bytes(bad_crc[idat - 4..idat].try_into().unwrap()) as usize;
    bad_crc[idat + 4 + len] ^= 0xFF;
    let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![b'a'; 64 << 20], 10);
    let mut ztxt = b"Comment\0\0".to_vec();
    ztxt.extend_from_slice(&bomb);
    let mut over_size = jpeg.clone();
    over_size.resize(20 * 1024 * 1024 + 1, 0);
    vec![
        ("empty body", Vec::new(), Error("InvalidArgument")),
        ("random bytes", random, Error("InvalidArgument")),
        (
            "JPEG cut at 100 bytes",
            jpeg[..100].to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "JPEG cut in half",
            jpeg[..jpeg.len() / 2].to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "JPEG without its last 10 bytes",
            jpeg[..jpeg.len() - 10].to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "PNG cut at 60 bytes",
            png[..60].to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "PNG cut in half",
            png[..png.len() / 2].to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "PNG declaring 100000 x 100000",
            png_declaring(100_000, 100_000),
            Error("ImageTooLarge"),
        ),
        (
            "PNG declaring 20000 x 12501 (just over 250 MP)",
            png_declaring(20_000, 12_501),
            Error("ImageTooLarge"),
        ),
        (
            "PNG declaring a 30001-px side",
            png_declaring(30_001, 10),
            Error("ImageTooLarge"),
        ),
        ("20 MB + 1 byte", over_size, Error("ImageTooLarge")),
        (
            "GIF",
            b"GIF89a\x01\0\x01\0\0\0\0;".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "WebP",
            b"RIFF\x1a\0\0\0WEBPVP8 \x0e\0\0\0".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "BMP",
            b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "TIFF",
            b"II*\0\x08\0\0\0\0\0".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "SVG",
            b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "HEIC",
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec(),
            Error("InvalidArgument"),
        ),
        (
            "JPEG with a bad Huffman table",
            jpeg_bad_huffman(),
            Error("InvalidArgument"),
        ),
        ("PNG with a wrong CRC", bad_crc, Error("InvalidArgument")),
        (
            "PNG with a 64 MB zlib bomb in a zTXt chunk",
            png_with_chunk(png_chunk(b"zTXt", &ztxt)),
            Labels,
        ),
        (
            "JPEG with a 64 KB EXIF block of noise",
            jpeg_with_segment(0xE1, &[0xAB; 65_000]),
            Labels,
        ),
        (
            "JPEG with a self-referencing EXIF IFD",
            jpeg_with_segment(0xE1, &exif_loop()),
            Labels,
        ),
        ("1 x 1 PNG", read_fixture("variants/one_pixel.png"), Labels),
        ("CMYK JPEG", read_fixture("variants/cmyk.jpg"), Labels),
        (
            "progressive JPEG",
            read_fixture("variants/progressive.jpg"),
            Labels,
        ),
        ("16-bit PNG", read_fixture("variants/rgb16.png"), Labels),
        ("palette PNG", read_fixture("variants/palette.png"), Labels),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_gets_its_exact_answer_on_both_doors_and_nothing_breaks() {
    let server = start_with(labeld::api::api_keys::ApiKeys::none()).await;
    let web = server.http_addr().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = ImageLabelsClient::new(channel).max_decoding_message_size(64 << 20);
    let good = read_fixture("chelsea.png");
    let mut failures = Vec::new();
    for (name, bytes, expect) in cases() {
        // gRPC.
        let request = DetectImageLabelsRequest {
            source: Some(Source::Image(bytes.clone().into())),
            threshold: Some(0.0),
            ..Default::default()
        };
        let got = match grpc.detect_image_labels(request).await {
            Ok(answer) if !answer.get_ref().labels.is_empty() => Expect::Labels,
            Ok(_) => Expect::Error("no labels"),
            Err(status) => {
                let code = status
                    .metadata()
                    .get("x-labeld-error-code")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none");
                Expect::Error(match code {
                    "InvalidArgument" => "InvalidArgument",
                    "ImageTooLarge" => "ImageTooLarge",
                    _ => "another code",
                })
            }
        };
        if got != expect {
            failures.push(format!("gRPC, {name}: got {got:?}, want {expect:?}"));
        }
        // The JSON door.
        let reply = http(web, "POST", "/v1/labels?threshold=0", &[], &bytes).await;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let got = match (
            reply.status,
            body["Code"].as_str(),
            body["Labels"].as_array(),
        ) {
            (200, _, Some(labels)) if !labels.is_empty() => Expect::Labels,
            (400, Some("InvalidArgument"), _) => Expect::Error("InvalidArgument"),
            (400, Some("ImageTooLarge"), _) => Expect::Error("ImageTooLarge"),
            _ => Expect::Error("another answer"),
        };
        if got != expect {
            let text: String = reply.text().chars().take(300).collect();
            failures.push(format!(
                "HTTP, {name}: got {} {text}, want {expect:?}",
                reply.status
            ));
        }
        // And the server still labels a good photo on both doors.
        let request = DetectImageLabelsRequest {
            source: Some(Source::Image(good.clone().into())),
            ..Default::default()
        };
        let after = grpc.detect_image_labels(request).await;
        assert!(after.is_ok(), "after {name}: {after:?}");
        let after = http(web, "POST", "/v1/labels", &[], &good).await;
        assert_eq!(after.status, 200, "after {name}: {}", after.text());
    }
    assert!(failures.is_empty(), "{failures:#?}");
    server.shutdown();
    server.wait().await.unwrap();
}

/// The eight EXIF orientations of one photo (stored turned and mirrored, with the tag that says
/// how to undo it) get the upright photo's labels on both doors: the same names, and confidences
/// within 0.05 of orientation 1's (each variant is a separate JPEG encoding of the turned pixels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_eight_exif_orientations_get_the_upright_labels_on_both_doors() {
    let server = start_with(labeld::api::api_keys::ApiKeys::none()).await;
    let web = server.http_addr().unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.local_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = ImageLabelsClient::new(channel);
    let mut upright: Option<Vec<(String, f32)>> = None;
    for o in 1..=8 {
        let bytes = read_fixture(&format!("variants/exif_o{o}.jpg"));
        let request = DetectImageLabelsRequest {
            source: Some(Source::Image(bytes.clone().into())),
            threshold: Some(0.2),
            ..Default::default()
        };
        let over_grpc: Vec<(String, f32)> = grpc
            .detect_image_labels(request)
            .await
            .unwrap()
            .into_inner()
            .labels
            .into_iter()
            .map(|l| (l.label_name, l.label_confidence))
            .collect();
        let reply = http(web, "POST", "/v1/labels?threshold=0.2", &[], &bytes).await;
        assert_eq!(reply.status, 200, "orientation {o}: {}", reply.text());
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        let over_json: Vec<(String, f32)> = body["Labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let name = l["LabelName"].as_str().unwrap().to_string();
                (name, l["LabelConfidence"].as_f64().unwrap() as f32)
            })
            .collect();
        let reference = upright.get_or_insert_with(|| over_grpc.clone()).clone();
        assert!(reference.iter().any(|(n, _)| n == "Cat"), "{reference:?}");
        for (door, got) in [("gRPC", &over_grpc), ("JSON", &over_json)] {
            let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            let want: Vec<&str> = reference.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, want, "orientation {o} over {door}");
            for ((_, a), (_, b)) in got.iter().zip(&reference) {
                assert!(
                    (a - b).abs() < 0.05,
                    "orientation {o} over {door}: {got:?} vs {reference:?}"
                );
            }
        }
    }
    server.shutdown();
    server.wait().await.unwrap();
}

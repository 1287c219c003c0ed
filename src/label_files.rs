//! `labeld label`: many files labelled in-process, the way a media pipeline or a Kubernetes
//! Indexed Job runs it.
//!
//! ```text
//! paths → walk (sorted) → this shard's files → minus those already in --output
//!       → chunks of --batch-size: read + decode in parallel, one forward pass → answers in order
//! ```
//!
//! - **Shards** (`--shard i/n`): a file belongs to shard `fnv1a(path) % n`, so every file has
//!   exactly one shard whatever else is in the folder, and n jobs can split a bucket without
//!   talking to each other.
//! - **Resume**: with `--output FILE`, files already answered in FILE are skipped and new
//!   answers are appended; a torn last line (a killed run) is cut off first.
//! - **Formats**: `json` (IMM's body per image, for people), `jsonl` (one object per image, with
//!   `"File"`), `csv` (one row per label; failures and images without labels get one row).
//! - **Progress** on stderr when it is a terminal (rate and ETA); a summary line at the end.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::error::{ErrorBody, ErrorCode};
use crate::image::{decode_for_model, ImageProperties};
use crate::labeler::Labeler;
use crate::labels::{Label, LabelOptions, LabelsResponse};
use crate::overlay::{render_overlay, OVERLAY_SIDE};
use crate::request_id::new_request_id;

/// How answers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Per image, the IMM body `{"Labels":[...],"RequestId":"..."}` (or an error body
    /// `{"Code","Message","RequestId"}`), pretty-printed, one document after another.
    Json,
    /// One compact JSON object per line: the same bodies with `"File"` added.
    Jsonl,
    /// One row per label: `File,LabelName,LabelConfidence,LabelLevel,ParentLabelName,
    /// CentricScore,Code,Message`.
    Csv,
}

/// Which part of the files this run labels: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `i/n` with `0 <= i < n`.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not i/n (e.g. 0/4)"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("{i:?} is not a shard number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{n:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < n"));
        }
        Ok(Shard { index, count })
    }

    /// True when `path` belongs to this shard.
    pub fn owns(&self, path: &Path) -> bool {
        fnv1a(path.as_os_str().as_encoded_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

/// FNV-1a, 64 bits: stable across runs, machines and Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What to label and how.
#[derive(Debug, Clone)]
pub struct Job {
    pub paths: Vec<PathBuf>,
    pub options: LabelOptions,
    pub batch_size: usize,
    pub format: Format,
    pub shard: Option<Shard>,
    /// Append to this file (resuming) instead of writing to stdout.
    pub output: Option<PathBuf>,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Write a heatmap overlay per labelled image here (`options.explain` should be on).
    pub explain_dir: Option<PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files found under the paths (all shards).
    pub found: usize,
    /// Files of this shard already answered in the output.
    pub skipped: usize,
    pub labelled: usize,
    pub failed: usize,
    /// Heatmap overlays written (`--explain`).
    pub overlays: usize,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.labelled + self.failed;
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "labelled {}, failed {}, skipped {} (already in the output), of {} files found; {:.1} s",
            self.labelled, self.failed, self.skipped, self.found, secs
        )?;
        if done > 0 && secs > 0.0 {
            write!(f, " ({:.1} images/s)", done as f64 / secs)?;
        }
        if self.overlays > 0 {
            write!(f, "; heatmap overlays written: {}", self.overlays)?;
        }
        Ok(())
    }
}

/// Runs `job`, writing one answer per image in file order.
///
/// # Errors
/// When a folder cannot be read or the output cannot be written; a bad image is an answer
/// (an error body), not an error.
pub fn run(labeler: &Labeler, job: &Job) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let all = collect_files(&job.paths)?;
    let found = all.len();
    let mine: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| job.shard.is_none_or(|s| s.owns(p)))
        .collect();

    let (mut out, done): (Box<dyn Write>, Vec<String>) = match &job.output {
        Some(path) => {
            if job.format == Format::Json {
                anyhow::bail!("--output needs --format jsonl or csv (one record per line, so a run can resume)");
            }
            let (file, done) = open_for_resume(path, job.format)?;
            (Box::new(BufWriter::new(file)), done)
        }
        None => (
            Box::new(BufWriter::new(std::io::stdout().lock())),
            Vec::new(),
        ),
    };
    let done: std::collections::HashSet<String> = done.into_iter().collect();
    let shard_files = mine.len();
    let todo: Vec<PathBuf> = mine
        .into_iter()
        .filter(|p| !done.contains(&p.display().to_string()))
        .collect();
    let mut summary = Summary {
        found,
        skipped: shard_files - todo.len(),
        ..Summary::default()
    };
    if job.format == Format::Csv && job.output.is_none() {
        write_csv_header(&mut out)?;
    }

    if let Some(dir) = &job.explain_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut progress = Progress::new(todo.len(), job.progress && std::io::stderr().is_terminal());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for chunk in todo.chunks(job.batch_size.max(1)) {
        // Read and decode the chunk in parallel; then one forward pass for every image that decoded.
        let prepared = parallel_map(chunk, threads, |path| {
            let bytes = read_file(path, labeler.limits().max_bytes)?;
            labeler
                .prepare_with(&bytes, job.options.colour_names())
                .map_err(|e| (e.code(), e.to_string()))
        });
        let ok: Vec<_> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .map(|p| &p.input)
            .collect();
        let mut labelled = labeler.label(&ok, &job.options)?.into_iter();
        let mut answers = Vec::with_capacity(chunk.len());
        for result in prepared {
            answers.push(match result {
                Ok(p) => {
                    summary.labelled += 1;
                    let labels = labelled
                        .next()
                        .expect("one result per input. This is a bug.");
                    Ok((labels, p.properties))
                }
                Err(e) => {
                    summary.failed += 1;
                    Err(e)
                }
            });
        }
        if let Some(dir) = &job.explain_dir {
            let work: Vec<_> = chunk.iter().zip(&answers).collect();
            let written = parallel_map(&work, threads, |(path, answer)| match answer {
                Ok((labels, _)) => write_overlay(labeler, dir, path, labels),
                Err(_) => Ok(false),
            });
            for w in written {
                match w {
                    Ok(true) => summary.overlays += 1,
                    Ok(false) => {}
                    Err(e) => eprintln!("labeld: {e:#}"),
                }
            }
        }
        for (path, answer) in chunk.iter().zip(answers) {
            write_answer(&mut out, job.format, path, answer)?;
        }
        // A killed run loses at most the chunk being labelled.
        out.flush()?;
        progress.advance(chunk.len());
    }
    progress.finish();
    out.flush()?;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Where the overlay of `path` goes: its file stem and a hash of its whole path (two photos
/// named alike in different folders do not overwrite each other).
pub fn overlay_path(dir: &Path, path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy());
    let hash = fnv1a(path.as_os_str().as_encoded_bytes()) as u32;
    dir.join(format!("{stem}-{hash:08x}.png"))
}

/// Writes the heatmap overlay of the image's most confident fine label (or, without one, its
/// most confident label) to [`overlay_path`]. `Ok(false)` when there is nothing to draw.
fn write_overlay(
    labeler: &Labeler,
    dir: &Path,
    path: &Path,
    labels: &[Label],
) -> anyhow::Result<bool> {
    let chosen = labels
        .iter()
        .find(|l| l.label_level == 3)
        .or_else(|| labels.first());
    let Some(label) = chosen else {
        return Ok(false);
    };
    let Some(heatmap) = &label.heatmap else {
        return Ok(false);
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let decoded = decode_for_model(&bytes, labeler.limits(), OVERLAY_SIDE / 2)
        .with_context(|| format!("decoding {}", path.display()))?;
    let overlay = render_overlay(
        &decoded.image,
        decoded.original_width,
        heatmap,
        label.bounding_box.as_ref(),
    );
    let target = overlay_path(dir, path);
    overlay
        .save_with_format(&target, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(true)
}

/// Reads a file, refusing (without reading it all) one larger than `max_bytes`.
fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, (ErrorCode, String)> {
    let cannot = |e: std::io::Error| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::NoSuchKey
        } else {
            ErrorCode::InvalidArgument
        };
        (code, format!("cannot read {}: {e}", path.display()))
    };
    let file = File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err((
            ErrorCode::ImageTooLarge,
            format!(
                "{} is larger than the {max_bytes}-byte limit",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Opens `path` for appending and returns the files already answered in it. A last line
/// without its newline (the run before was killed mid-write) is cut off.
fn open_for_resume(path: &Path, format: Format) -> anyhow::Result<(File, Vec<String>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        file.set_len(complete as u64)?;
        file.seek(SeekFrom::End(0))?;
    }
    let text = &text[..complete];
    let mut done = Vec::new();
    match format {
        Format::Jsonl => {
            for (n, line) in text.lines().enumerate() {
                let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
                    format!("{} line {} is not a JSON object", path.display(), n + 1)
                })?;
                if let Some(f) = value.get("File").and_then(|f| f.as_str()) {
                    done.push(f.to_string());
                }
            }
        }
        Format::Csv => {
            if text.is_empty() {
                write_csv_header(&mut file)?;
            }
            for line in text.lines().skip(1) {
                if let Some(f) = csv_first_field(line) {
                    done.push(f);
                }
            }
        }
        Format::Json => {}
    }
    done.sort_unstable();
    done.dedup();
    Ok((file, done))
}

/// An answer with the file it is about, for `--format jsonl`.
#[derive(Serialize)]
struct FileLine<'a, T: Serialize> {
    #[serde(rename = "File")]
    file: String,
    #[serde(flatten)]
    body: &'a T,
}

const CSV_HEADER: &str =
    "File,LabelName,LabelConfidence,LabelLevel,ParentLabelName,CentricScore,Code,Message";

fn write_csv_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")
}

/// One image's labels and (when asked for) properties, or why it failed.
type FileAnswer = Result<(Vec<Label>, Option<ImageProperties>), (ErrorCode, String)>;

fn write_answer(
    out: &mut impl Write,
    format: Format,
    path: &Path,
    answer: FileAnswer,
) -> anyhow::Result<()> {
    let request_id = new_request_id();
    let file = path.display().to_string();
    match (format, answer) {
        (Format::Csv, Ok((labels, _))) if labels.is_empty() => {
            writeln!(out, "{},,,,,,,", csv_field(&file))?;
        }
        (Format::Csv, Ok((labels, _))) => {
            for l in labels {
                writeln!(
                    out,
                    "{},{},{},{},{},{},,",
                    csv_field(&file),
                    csv_field(&l.label_name),
                    l.label_confidence,
                    l.label_level,
                    csv_field(&l.parent_label_name),
                    l.centric_score
                )?;
            }
        }
        (Format::Csv, Err((code, message))) => {
            writeln!(
                out,
                "{},,,,,,{},{}",
                csv_field(&file),
                code.name(),
                csv_field(&message)
            )?;
        }
        (format, Ok((labels, image_properties))) => {
            let body = LabelsResponse {
                labels,
                request_id,
                image_properties,
            };
            write_json(out, format, file, &body)?;
        }
        (format, Err((code, message))) => {
            let body = ErrorBody {
                code: code.name(),
                message,
                request_id,
            };
            write_json(out, format, file, &body)?;
        }
    }
    Ok(())
}

fn write_json<T: Serialize>(
    out: &mut impl Write,
    format: Format,
    file: String,
    body: &T,
) -> anyhow::Result<()> {
    if format == Format::Json {
        writeln!(out, "{}", serde_json::to_string_pretty(body)?)?;
    } else {
        let line = FileLine { file, body };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    }
    Ok(())
}

/// RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The first field of a CSV row written by [`csv_field`].
fn csv_first_field(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut field = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => return Some(field),
                c => field.push(c),
            }
        }
        None
    } else {
        line.split(',').next().map(str::to_string)
    }
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: usize, enabled: bool) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            drawn: None,
            enabled: enabled && total > 0,
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        if !self.enabled
            || self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
                && self.done < self.total
        {
            return;
        }
        self.drawn = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        };
        let eta = if rate > 0.0 {
            format_duration((self.total - self.done) as f64 / rate)
        } else {
            "?".into()
        };
        let width = 30;
        let filled = width * self.done / self.total;
        eprint!(
            "\r[{}{}] {}/{} images  {:.1}/s  ETA {}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.done,
            self.total,
            rate,
            eta
        );
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Applies `f` to every item on up to `threads` scoped threads, keeping the order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let per_thread = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a decode thread panicked. This is a bug."))
            .collect()
    })
}

/// Files named directly are always tried; folders are walked recursively (sorted) for files with
/// an image extension.
fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files).with_context(|| format!("reading {}", path.display()))?;
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, files)?;
        } else if kind.is_file() && has_image_extension(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_files_exactly_once() {
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0; 3];
        for n in 0..300 {
            let path = PathBuf::from(format!("photos/{n:04}.jpg"));
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&path)).collect();
            assert_eq!(owners.len(), 1, "{}", path.display());
            sizes[owners[0]] += 1;
        }
        // Roughly even: each shard gets a fair part of 300 names.
        assert!(sizes.iter().all(|&s| (70..=130).contains(&s)), "{sizes:?}");
        // Stable: the same path always lands in the same shard (FNV-1a of its bytes).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn csv_fields_round_trip() {
        for s in [
            "plain.jpg",
            "a,b.jpg",
            "say \"cheese\".png",
            "line\nbreak.png",
        ] {
            let row = format!("{},Cat,0.9,2,Animal,0.5,,", csv_field(s));
            assert_eq!(csv_first_field(&row).as_deref(), Some(s));
        }
    }

    #[test]
    fn resume_cuts_a_torn_last_line_and_lists_answered_files() {
        let dir = std::env::temp_dir().join(format!("labeld-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        std::fs::write(
            &path,
            "{\"File\":\"a.png\",\"Labels\":[],\"RequestId\":\"1\"}\n{\"File\":\"b.p",
        )
        .unwrap();
        let (mut file, done) = open_for_resume(&path, Format::Jsonl).unwrap();
        assert_eq!(done, ["a.png"]);
        writeln!(file, "{{\"File\":\"b.png\"}}").unwrap();
        drop(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"File\":\"a.png\",\"Labels\":[],\"RequestId\":\"1\"}\n{\"File\":\"b.png\"}\n"
        );

        let csv = dir.join("out.csv");
        let (file, done) = open_for_resume(&csv, Format::Csv).unwrap();
        drop(file);
        assert!(done.is_empty());
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            format!("{CSV_HEADER}\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

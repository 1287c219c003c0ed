//! One MBConv block on the CPU (expand 1x1 -> depthwise kxk -> project 1x1, plus the
//! residual), computed a band of rows at a time where its activations are large, so the
//! expanded activation never leaves the core's L2 cache.
//!
//! Why: layer by layer, the early blocks are memory-bound. Lite0's second stage expands 16
//! channels to 96 over 112x112 pixels, a 4.8 MB activation per image that the expansion writes
//! to memory and the depthwise reads back; its matrix product (K = 16) then runs at 6-15
//! GFLOP/s against 110-130 for the large layers. Banded, each task takes one image's stripe of
//! output rows and walks it in bands: it expands just the input rows the band's depthwise reads
//! (keeping the rows the previous band already expanded), filters them, and projects the band
//! straight into the block's output. The first block takes the stem the same way, so the
//! stem's 112x112x32 output is never stored whole either.
//!
//! The late 7x7 blocks are the other way round: their weights (up to 2 x 0.9 MB) are what must
//! stay in cache, so they run layer by layer over all images of the pass, each layer split
//! across the threads.
//!
//! Banded tasks are (image, stripe) pairs on rayon's pool, each running the layers'
//! single-thread kernels. Stripes overlap by the depthwise's halo rows (`kernel - stride`),
//! which each stripe computes for itself; there are only as many stripes as the threads need.

use std::cell::RefCell;
use std::ops::Range;

use candle_core::Result;
use rayon::prelude::*;

use super::aligned;
use super::nhwc::{same, Band, Depthwise, Pointwise, Stem};

/// Bytes of expanded input rows one band works on: a quarter of a 2 MiB L2, leaving room for
/// the filtered band, the weights and the projection's output.
const BAND_BYTES: usize = 512 * 1024;

/// Blocks whose expanded activation is at least this large per image run banded: Lite0's
/// blocks down to 14x14x480 (376 KB), not the 7x7 ones (225-450 KB at 7x7x1152 and up), whose
/// weights (2 x 0.9 MB) no longer stayed in L2 from one image to the next when banded. Chosen
/// with `examples/forward --model lite0 --threads 2 --batches 8`, four alternating rounds on this
/// 2-core VM: 600 KB (stages 1-4 banded) 123-147 images/s, 300 KB 136-156.
const BANDED_MIN_BYTES: usize = 300 * 1024;

/// How a block runs.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// A band of rows at a time, the source's rows taking about `bytes`.
    Bands { bytes: usize },
    /// Layer by layer over whole tensors.
    Layers,
}

/// Where a block's depthwise input comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The block's input itself (a block without expansion).
    Input,
    /// A 1x1 expansion of the block's input.
    Expand(&'a Pointwise),
    /// The network's stem applied to the block's input, the NCHW images: the first block.
    Stem(&'a Stem),
}

/// The layers of one block.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub source: Source<'a>,
    pub depthwise: &'a Depthwise,
    pub project: &'a Pointwise,
    /// Whether the block's input is added to its output (stride 1, same channels).
    pub residual: bool,
}

/// Whole-tensor buffers for the blocks that run layer by layer, kept by the caller from one
/// pass to the next (see [`Block::run_into`]).
#[derive(Debug, Default)]
pub struct Layers {
    /// The source's output, the depthwise's output, the stem's image-to-columns scratch.
    buffers: [Vec<f32>; 3],
}

thread_local! {
    /// Each thread's band buffers, kept from one task to the next.
    static BANDS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Block<'_> {
    /// The depthwise's input shape (NHWC) for a block input of shape `dims`.
    fn source_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        match self.source {
            Source::Input => Ok(dims),
            Source::Expand(expand) => expand.out_dims(dims),
            Source::Stem(stem) => stem.out_dims(dims),
        }
    }

    /// The block's output shape for an input of shape `dims` (NHWC; NCHW for a stem source).
    pub fn out_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        self.project
            .out_dims(self.depthwise.out_dims(self.source_dims(dims)?)?)
    }

    /// Writes the block's output for `input` (`dims`) into `output`, banded or layer by layer
    /// (see the module's documentation); `layers` is the layer-by-layer path's scratch.
    pub fn run_into(
        &self,
        input: &[f32],
        dims: [usize; 4],
        output: &mut [f32],
        layers: &mut Layers,
    ) -> Result<[usize; 4]> {
        let out_dims = self.out_dims(dims)?;
        let [n, _, _, _] = dims;
        let [_, oh, ow, c_out] = out_dims;
        let per_image = dims[1..].iter().product::<usize>();
        if input.len() < n * per_image || output.len() < n * oh * ow * c_out {
            candle_core::bail!("block: buffers shorter than the shapes");
        }
        if self.residual && (matches!(self.source, Source::Stem(_)) || dims != [n, oh, ow, c_out]) {
            candle_core::bail!("block: a residual needs an NHWC input of the output's shape");
        }
        let [_, sh, sw, c_mid] = self.source_dims(dims)?;
        let mode = if sh * sw * c_mid * 4 >= BANDED_MIN_BYTES {
            Mode::Bands { bytes: BAND_BYTES }
        } else {
            Mode::Layers
        };
        self.run_as(mode, &input[..n * per_image], dims, output, layers)?;
        Ok(out_dims)
    }

    fn run_as(
        &self,
        mode: Mode,
        input: &[f32],
        dims: [usize; 4],
        output: &mut [f32],
        layers: &mut Layers,
    ) -> Result<()> {
        match mode {
            Mode::Bands { bytes } => self.banded(bytes, input, dims, output),
            Mode::Layers => self.layer_by_layer(input, dims, output, layers),
        }
    }

    fn layer_by_layer(
        &self,
        input: &[f32],
        dims: [usize; 4],
        output: &mut [f32],
        layers: &mut Layers,
    ) -> Result<()> {
        let [expanded, filtered, columns] = &mut layers.buffers;
        let d = self.source_dims(dims)?;
        let dw_input: &[f32] = match self.source {
            Source::Input => input,
            Source::Expand(expand) => {
                expand.run_into(
                    input,
                    dims,
                    None,
                    aligned::grown(expanded, d.iter().product()),
                )?;
                aligned::aligned(expanded)
            }
            Source::Stem(stem) => {
                stem.run_into(
                    input,
                    dims,
                    columns,
                    aligned::grown(expanded, d.iter().product()),
                )?;
                aligned::aligned(expanded)
            }
        };
        let out = self.depthwise.out_dims(d)?;
        let filtered = aligned::grown(filtered, out.iter().product());
        self.depthwise.run_into(dw_input, d, filtered)?;
        let residual = self
            .residual
            .then_some(&input[..dims.iter().product::<usize>()]);
        self.project.run_into(filtered, out, residual, output)?;
        Ok(())
    }

    fn banded(
        &self,
        band_bytes: usize,
        input: &[f32],
        dims: [usize; 4],
        output: &mut [f32],
    ) -> Result<()> {
        let [n, oh, ow, c_out] = self.out_dims(dims)?;
        let stripes = stripes_per_image(n, rayon::current_num_threads(), oh);
        // One task per (image, stripe), each owning its rows of the output.
        let mut tasks = Vec::with_capacity(n * stripes);
        for (image, mut rest) in output[..n * oh * ow * c_out]
            .chunks_mut(oh * ow * c_out)
            .enumerate()
        {
            let mut first = 0;
            for stripe in 0..stripes {
                let last = oh * (stripe + 1) / stripes;
                let (mine, tail) =
                    std::mem::take(&mut rest).split_at_mut((last - first) * ow * c_out);
                tasks.push((image, first..last, mine));
                rest = tail;
                first = last;
            }
        }
        let per_image = input.len() / n;
        tasks.into_par_iter().try_for_each(|(image, oys, out)| {
            let x = &input[image * per_image..][..per_image];
            BANDS.with_borrow_mut(|scratch| self.stripe(band_bytes, x, dims, oys, out, scratch))
        })
    }

    /// Output rows `oys` of one image (`x`, of shape `dims` without the batch) into `out`, band
    /// by band.
    fn stripe(
        &self,
        band_bytes: usize,
        x: &[f32],
        dims: [usize; 4],
        oys: Range<usize>,
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let dw = self.depthwise;
        let (k, s, c_mid) = (dw.kernel, dw.stride, dw.channels);
        let [_, h, w, _] = self.source_dims(dims)?;
        let (_, pad_top) = same(h, k, s);
        let (ow, _) = same(w, k, s);
        let c_out = self.project.c_out;
        let row_len = w * c_mid;
        let band = ((band_bytes / (row_len * 4).max(1)).max(k) - k) / s + 1;
        let max_rows = (band - 1) * s + k;
        let (source_len, columns_len) = match self.source {
            Source::Input => (0, 0),
            Source::Expand(_) => (max_rows * row_len, 0),
            Source::Stem(stem) => (max_rows * row_len, max_rows * w * stem.columns_per_pixel()),
        };
        let [rows_buffer, filtered, columns] =
            aligned::parts(scratch, [source_len, band * ow * c_mid, columns_len]);
        // Source rows [have.0, have.1) sit at the start of `rows_buffer`.
        let mut have = (0, 0);
        let mut oy = oys.start;
        while oy < oys.end {
            let oy_end = (oy + band).min(oys.end);
            // The source rows [lo, hi) that output rows [oy, oy_end) read, inside the image.
            let lo = (oy * s).saturating_sub(pad_top);
            let hi = ((oy_end - 1) * s + k).saturating_sub(pad_top).min(h);
            let rows = if let Source::Input = self.source {
                &x[lo * row_len..hi * row_len]
            } else {
                // Keep the rows the previous band computed that this one reads too.
                let start = if have.0 <= lo && lo < have.1 {
                    rows_buffer
                        .copy_within((lo - have.0) * row_len..(have.1 - have.0) * row_len, 0);
                    have.1
                } else {
                    lo
                };
                if start < hi {
                    let dst = &mut rows_buffer[(start - lo) * row_len..(hi - lo) * row_len];
                    match self.source {
                        Source::Expand(expand) => {
                            let c_in = expand.c_in;
                            let src = &x[start * w * c_in..hi * w * c_in];
                            expand.run_serial(src, (hi - start) * w, None, dst)?;
                        }
                        Source::Stem(stem) => {
                            let [_, _, ih, iw] = dims;
                            stem.rows_into(x, (ih, iw), start..hi, columns, dst)?;
                        }
                        Source::Input => {}
                    }
                }
                have = (lo, hi);
                &rows_buffer[..(hi - lo) * row_len]
            };
            let band_rows = Band {
                rows,
                h: hi - lo,
                top: lo,
                w,
            };
            let filtered = &mut filtered[..(oy_end - oy) * ow * c_mid];
            dw.rows_into(&band_rows, h, oy..oy_end, filtered)?;
            // Stride 1 and the input's shape when there is a residual: output row `oy` adds
            // input row `oy`.
            let residual = self
                .residual
                .then(|| &x[oy * ow * c_out..oy_end * ow * c_out]);
            let first = (oy - oys.start) * ow * c_out;
            self.project.run_serial(
                filtered,
                (oy_end - oy) * ow,
                residual,
                &mut out[first..first + (oy_end - oy) * ow * c_out],
            )?;
            oy = oy_end;
        }
        Ok(())
    }
}

/// Stripes per image: enough for every thread to have work, and a total that divides evenly
/// among the threads where that takes at most a few more (3 images on 2 threads: 2 stripes
/// each, not 1 and an idle thread for a third of the time). Never more than the rows.
fn stripes_per_image(images: usize, threads: usize, rows: usize) -> usize {
    let least = threads.div_ceil(images.max(1));
    (least..least + threads)
        .find(|s| (images * s).is_multiple_of(threads))
        .unwrap_or(least)
        .clamp(1, rows.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: &mut u32) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (*seed >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn pointwise(c_in: usize, c_out: usize, relu6: bool, seed: &mut u32) -> Pointwise {
        Pointwise::new(
            random(c_in * c_out, seed),
            random(c_out, seed),
            c_in,
            c_out,
            relu6,
        )
    }

    fn depthwise(channels: usize, kernel: usize, stride: usize, seed: &mut u32) -> Depthwise {
        Depthwise {
            weight: random(kernel * kernel * channels, seed),
            bias: random(channels, seed),
            channels,
            kernel,
            stride,
            relu6: true,
            allow_avx512: true,
        }
    }

    /// Banded, with bands from one row to the whole image and one or several images (so one or
    /// several stripes each), gives what layer by layer gives: every source, both strides,
    /// both kernel sizes, with and without the residual, odd sizes.
    #[test]
    fn bands_compute_what_layer_by_layer_computes() {
        let mut seed = 7;
        let stem = Stem::new(
            random(9 * 3 * 16, &mut seed),
            random(16, &mut seed),
            3,
            16,
            3,
            2,
        );
        let (expand, expand_back) = (
            pointwise(8, 24, true, &mut seed),
            pointwise(24, 8, false, &mut seed),
        );
        let (dw16, dw24_k5_s2, dw24, dw8) = (
            depthwise(16, 3, 1, &mut seed),
            depthwise(24, 5, 2, &mut seed),
            depthwise(24, 3, 1, &mut seed),
            depthwise(8, 3, 1, &mut seed),
        );
        let (to_8, to_12, same_8) = (
            pointwise(16, 8, false, &mut seed),
            pointwise(24, 12, false, &mut seed),
            pointwise(8, 8, false, &mut seed),
        );
        let cases = [
            (
                Block {
                    source: Source::Stem(&stem),
                    depthwise: &dw16,
                    project: &to_8,
                    residual: false,
                },
                [3, 37, 29],
            ),
            (
                Block {
                    source: Source::Expand(&expand),
                    depthwise: &dw24_k5_s2,
                    project: &to_12,
                    residual: false,
                },
                [23, 19, 8],
            ),
            (
                Block {
                    source: Source::Expand(&expand),
                    depthwise: &dw24,
                    project: &expand_back,
                    residual: true,
                },
                [17, 13, 8],
            ),
            (
                Block {
                    source: Source::Input,
                    depthwise: &dw8,
                    project: &same_8,
                    residual: true,
                },
                [11, 9, 8],
            ),
        ];
        for (block, [a, b, c]) in cases {
            for n in [1, 3] {
                let dims = [n, a, b, c];
                let input = random(dims.iter().product(), &mut seed);
                let out_len = block.out_dims(dims).unwrap().iter().product();
                let mut want = vec![f32::NAN; out_len];
                let mut layers = Layers::default();
                block
                    .run_as(Mode::Layers, &input, dims, &mut want, &mut layers)
                    .unwrap();
                assert!(want.iter().all(|v| v.is_finite()));
                for bytes in [1, 4096, 1 << 30] {
                    let mut got = vec![f32::NAN; out_len];
                    block
                        .run_as(Mode::Bands { bytes }, &input, dims, &mut got, &mut layers)
                        .unwrap();
                    let worst = want
                        .iter()
                        .zip(&got)
                        .map(|(w, g)| (w - g).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < 1e-5,
                        "{dims:?} {:?} band {bytes}: {worst}",
                        block.source
                    );
                }
            }
        }
    }

    #[test]
    fn stripes_keep_every_thread_busy_and_divide_evenly() {
        assert_eq!(stripes_per_image(4, 2, 112), 1);
        assert_eq!(stripes_per_image(1, 2, 112), 2);
        assert_eq!(stripes_per_image(3, 2, 112), 2);
        assert_eq!(stripes_per_image(1, 1, 7), 1);
        assert_eq!(stripes_per_image(1, 8, 3), 3);
        assert_eq!(stripes_per_image(5, 4, 56), 4);
    }
}

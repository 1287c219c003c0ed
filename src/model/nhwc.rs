//! EfficientNet-Lite's layers as candle CPU ops on channels-last (NHWC) tensors.
//!
//! Why channels-last: a 1x1 ("pointwise") convolution, 90 % of the network's arithmetic, is then
//! a plain matrix product `[pixels, C_in] x [C_in, C_out]` on the tensor as it lies in memory: no
//! im2col, no transposes. A depthwise convolution reads each tap as a run of contiguous channels,
//! which vectorises. So the CPU path keeps activations NHWC from the stem to the head, and each
//! layer is one op with its folded-BatchNorm bias, ReLU6 and (for a block's projection) the
//! residual add fused into the pass that produces its output, while the output tile is still in
//! cache. GPU devices keep candle's own NCHW ops.
//!
//! Weights are rearranged once at load: pointwise `[C_in][C_out]`, depthwise `[tap][C]`, stem
//! `[tap][C_in][C_out]`. Padding is TensorFlow's "SAME" (extra row/column at the bottom/right);
//! out-of-image taps are skipped, never materialised.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// TF "SAME" geometry for one axis: `(output size, padding before)`.
pub fn same(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let pad = ((out - 1) * stride + kernel).saturating_sub(size);
    (out, pad / 2)
}

/// A layer's output buffer (only the per-layer ops allocate one; the network reuses its own).
fn output_buffer(len: usize) -> Vec<f32> {
    vec![0f32; len]
}

fn dims4(shape: &Shape) -> Result<[usize; 4]> {
    let (a, b, c, d) = shape.dims4()?;
    Ok([a, b, c, d])
}

fn check_len(what: &str, slice: &[f32], want: usize) -> Result<()> {
    if slice.len() < want {
        candle_core::bail!("{what}: {} values, need {want}", slice.len());
    }
    Ok(())
}

fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported on the CPU");
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input not contiguous")))?;
    Ok(&data[start..end])
}

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, x: f32, w: f32) -> f32 {
    if FMA {
        x.mul_add(w, acc)
    } else {
        acc + x * w
    }
}

#[inline(always)]
fn relu6(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

/// True when the CPU can run the FMA copies of the loops.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ---- pointwise (1x1) -----------------------------------------------------------------------

/// A 1x1 convolution with folded bias and optional ReLU6: `[P, C_in] x [C_in, C_out] + b`. As
/// a [`CustomOp2`] the second input is added before the output is written (a block's residual).
#[derive(Debug, Clone)]
pub struct Pointwise {
    /// `c_in * c_out`, row `ci` holds the weights from input channel `ci` to every output.
    /// Empty when the AVX-512 kernel has its own packed copy.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub relu6: bool,
    /// The same weights packed for the AVX-512 kernel, on CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    pub avx512: Option<super::pointwise512::Packed>,
}

impl Pointwise {
    /// A pointwise layer from `[c_in][c_out]` weights, on the AVX-512 kernel where the CPU has
    /// it (which then keeps the only copy of the weights).
    pub fn new(weight: Vec<f32>, bias: Vec<f32>, c_in: usize, c_out: usize, relu6: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::pointwise512::available() {
            return Pointwise {
                avx512: Some(super::pointwise512::Packed::new(
                    &weight, &bias, c_in, c_out,
                )),
                weight: Vec::new(),
                bias,
                c_in,
                c_out,
                relu6,
            };
        }
        Self::portable(weight, bias, c_in, c_out, relu6)
    }

    /// The same layer on the portable kernel (the `gemm` crate) only.
    pub fn portable(
        weight: Vec<f32>,
        bias: Vec<f32>,
        c_in: usize,
        c_out: usize,
        relu6: bool,
    ) -> Self {
        Pointwise {
            #[cfg(target_arch = "x86_64")]
            avx512: None,
            weight,
            bias,
            c_in,
            c_out,
            relu6,
        }
    }

    /// Rows per tile: an output tile of about 64 KiB stays in L2 while its bias, residual and
    /// ReLU6 are applied; at least 32 rows so that packing the weights (once per tile, by the
    /// GEMM) stays small against the tile's arithmetic.
    fn tile_rows(&self) -> usize {
        (16_384 / self.c_out).clamp(32, 1024)
    }

    /// The output shape for an input of shape `dims` (NHWC).
    pub fn out_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        let [n, h, w, c] = dims;
        if c != self.c_in {
            candle_core::bail!(
                "pointwise: {c} input channels, weights expect {}",
                self.c_in
            );
        }
        Ok([n, h, w, self.c_out])
    }

    /// Writes the layer's output for `input` (`dims`, NHWC) into `output` (plus `residual`).
    pub fn run_into(
        &self,
        input: &[f32],
        dims: [usize; 4],
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<[usize; 4]> {
        let out_dims = self.out_dims(dims)?;
        let pixels = dims[0] * dims[1] * dims[2];
        let output = self.checked(input, pixels, residual, output)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.avx512 {
            packed.run(input, residual, output, pixels, self.relu6);
            return Ok(out_dims);
        }
        let rows = self.tile_rows();
        output
            .par_chunks_mut(rows * self.c_out)
            .enumerate()
            .for_each(|(tile, out)| self.portable_rows(input, residual, tile * rows, out));
        Ok(out_dims)
    }

    /// `output` cut to `pixels` rows, once every buffer is known to hold them.
    fn checked<'o>(
        &self,
        input: &[f32],
        pixels: usize,
        residual: Option<&[f32]>,
        output: &'o mut [f32],
    ) -> Result<&'o mut [f32]> {
        check_len("pointwise input", input, pixels * self.c_in)?;
        check_len("pointwise output", output, pixels * self.c_out)?;
        if let Some(r) = residual {
            check_len("pointwise residual", r, pixels * self.c_out)?;
        }
        Ok(&mut output[..pixels * self.c_out])
    }

    /// Writes `act(input x W + bias [+ residual])` for the rows of `out`, starting at pixel
    /// `first`, with the portable kernel (the `gemm` crate) on the calling thread.
    fn portable_rows(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        first: usize,
        out: &mut [f32],
    ) {
        let m = out.len() / self.c_out;
        for (r, row) in out.chunks_exact_mut(self.c_out).enumerate() {
            row.copy_from_slice(&self.bias);
            if let Some(res) = residual {
                let res = &res[(first + r) * self.c_out..][..self.c_out];
                row.iter_mut().zip(res).for_each(|(o, x)| *o += x);
            }
        }
        let lhs = &input[first * self.c_in..(first + m) * self.c_in];
        // SAFETY: `out` is `m x c_out`, `lhs` is `m x c_in`, `weight` is `c_in x c_out`,
        // all row-major with the strides given; the slices are live and disjoint.
        unsafe {
            gemm::gemm(
                m,
                self.c_out,
                self.c_in,
                out.as_mut_ptr(),
                1,
                self.c_out as isize,
                true,
                lhs.as_ptr(),
                1,
                self.c_in as isize,
                self.weight.as_ptr(),
                1,
                self.c_out as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        if self.relu6 {
            out.iter_mut().for_each(|v| *v = relu6(*v));
        }
    }

    /// The same as [`Pointwise::run_into`] for `pixels` rows, on the calling thread only: for
    /// callers that already split the work across threads (see [`super::block`]).
    pub fn run_serial(
        &self,
        input: &[f32],
        pixels: usize,
        residual: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<()> {
        let output = self.checked(input, pixels, residual, output)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.avx512 {
            packed.run_serial(input, residual, output, pixels, self.relu6);
            return Ok(());
        }
        self.portable_rows(input, residual, 0, output);
        Ok(())
    }

    fn run(
        &self,
        input: &[f32],
        shape: &Shape,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(shape)?;
        let out_dims = self.out_dims(dims)?;
        let mut output = output_buffer(out_dims.iter().product());
        self.run_into(input, dims, residual, &mut output)?;
        Ok((CpuStorage::F32(output), Shape::from(out_dims.to_vec())))
    }
}

impl CustomOp1 for Pointwise {
    fn name(&self) -> &'static str {
        "nhwc-pointwise"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(storage, layout, "pointwise")?;
        self.run(input, layout.shape(), None)
    }
}

impl CustomOp2 for Pointwise {
    fn name(&self) -> &'static str {
        "nhwc-pointwise-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(s1, l1, "pointwise")?;
        let residual = f32_input(s2, l2, "pointwise residual")?;
        let (n, h, w, _) = l1.shape().dims4()?;
        if l2.shape().dims() != [n, h, w, self.c_out] {
            candle_core::bail!("pointwise: residual shape {:?}", l2.shape());
        }
        self.run(input, l1.shape(), Some(residual))
    }
}

// ---- depthwise -----------------------------------------------------------------------------

/// A depthwise kxk convolution (one filter per channel) with folded bias and optional ReLU6.
#[derive(Debug, Clone)]
pub struct Depthwise {
    /// `kernel * kernel * channels`: tap `ky * kernel + kx`, then channel.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub relu6: bool,
    /// Use the AVX-512 kernel when the CPU has it (tests turn it off to check the other one).
    pub allow_avx512: bool,
}

/// Channels handled together: two AVX registers of accumulators.
const LANES: usize = 16;

struct DepthwiseRow<'a> {
    op: &'a Depthwise,
    input: &'a [f32],
    h: usize,
    w: usize,
    pad_top: usize,
    pad_left: usize,
}

impl DepthwiseRow<'_> {
    /// Output row `oy` of image `image` into `out` (`ow * channels`).
    #[inline(always)]
    fn compute<const FMA: bool>(&self, image: usize, oy: usize, out: &mut [f32]) {
        let op = self.op;
        let (k, s, c) = (op.kernel, op.stride, op.channels);
        let y0 = (oy * s) as isize - self.pad_top as isize;
        let ky_lo = (-y0).max(0) as usize;
        let ky_hi = k.min((self.h as isize - y0).max(0) as usize);
        let plane = &self.input[image * self.h * self.w * c..][..self.h * self.w * c];
        for (ox, px) in out.chunks_exact_mut(c).enumerate() {
            let x0 = (ox * s) as isize - self.pad_left as isize;
            let kx_lo = (-x0).max(0) as usize;
            let kx_hi = k.min((self.w as isize - x0).max(0) as usize);
            let mut c0 = 0;
            while c0 + LANES <= c {
                let mut acc = [0f32; LANES];
                acc.copy_from_slice(&op.bias[c0..c0 + LANES]);
                for ky in ky_lo..ky_hi {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in kx_lo..kx_hi {
                        let ix = (x0 + kx as isize) as usize;
                        let src = &plane[(iy * self.w + ix) * c + c0..][..LANES];
                        let tap = &op.weight[(ky * k + kx) * c + c0..][..LANES];
                        for l in 0..LANES {
                            acc[l] = madd::<FMA>(acc[l], src[l], tap[l]);
                        }
                    }
                }
                let dst = &mut px[c0..c0 + LANES];
                for l in 0..LANES {
                    dst[l] = if op.relu6 { relu6(acc[l]) } else { acc[l] };
                }
                c0 += LANES;
            }
            for ch in c0..c {
                let mut acc = op.bias[ch];
                for ky in ky_lo..ky_hi {
                    let iy = (y0 + ky as isize) as usize;
                    for kx in kx_lo..kx_hi {
                        let ix = (x0 + kx as isize) as usize;
                        acc = madd::<FMA>(
                            acc,
                            plane[(iy * self.w + ix) * c + ch],
                            op.weight[(ky * k + kx) * c + ch],
                        );
                    }
                }
                px[ch] = if op.relu6 { relu6(acc) } else { acc };
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn compute_fma(&self, image: usize, oy: usize, out: &mut [f32]) {
        self.compute::<true>(image, oy, out);
    }
}

impl CustomOp1 for Depthwise {
    fn name(&self) -> &'static str {
        "nhwc-depthwise"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(storage, layout, "depthwise")?;
        let dims = dims4(layout.shape())?;
        let out_dims = self.out_dims(dims)?;
        let mut output = output_buffer(out_dims.iter().product());
        self.run_into(input, dims, &mut output)?;
        Ok((CpuStorage::F32(output), Shape::from(out_dims.to_vec())))
    }
}

impl Depthwise {
    /// The output shape for an input of shape `dims` (NHWC).
    pub fn out_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        let [n, h, w, c] = dims;
        if c != self.channels {
            candle_core::bail!("depthwise: {c} channels, weights expect {}", self.channels);
        }
        let (oh, _) = same(h, self.kernel, self.stride);
        let (ow, _) = same(w, self.kernel, self.stride);
        Ok([n, oh, ow, c])
    }

    /// Writes the layer's output for `input` (`dims`, NHWC) into `output`.
    pub fn run_into(
        &self,
        input: &[f32],
        dims: [usize; 4],
        output: &mut [f32],
    ) -> Result<[usize; 4]> {
        let out_dims = self.out_dims(dims)?;
        let [n, h, w, c] = dims;
        let [_, oh, ow, _] = out_dims;
        check_len("depthwise input", input, n * h * w * c)?;
        check_len("depthwise output", output, n * oh * ow * c)?;
        let output = &mut output[..n * oh * ow * c];
        let (_, pad_top) = same(h, self.kernel, self.stride);
        let (_, pad_left) = same(w, self.kernel, self.stride);
        let kernel = self.kernel_for_this_cpu();
        // Tasks of up to two output rows of one image (see `row`).
        output
            .par_chunks_mut(oh * ow * c)
            .zip(input.par_chunks(h * w * c))
            .for_each(|(image_out, plane)| {
                let band = Band {
                    rows: plane,
                    h,
                    top: 0,
                    w,
                };
                image_out
                    .par_chunks_mut(ROWS_AT_ONCE * ow * c)
                    .enumerate()
                    .for_each(|(pair, out)| {
                        let oys = rows_at_once(pair * ROWS_AT_ONCE, oh);
                        self.row(kernel, &band, (pad_top, pad_left), ow, oys, out);
                    });
            });
        Ok(out_dims)
    }

    /// Output rows `oys` of one image (`image_h` rows of `band.w` pixels) into `out`
    /// (`oys.len()` rows), on the calling thread: for callers that already split the work
    /// across threads (see [`super::block`]). `band` must hold every input row in the image
    /// that those outputs read.
    pub fn rows_into(
        &self,
        band: &Band<'_>,
        image_h: usize,
        oys: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        let c = self.channels;
        let (_, pad_top) = same(image_h, self.kernel, self.stride);
        let (ow, pad_left) = same(band.w, self.kernel, self.stride);
        check_len("depthwise band", band.rows, band.h * band.w * c)?;
        check_len("depthwise output", out, oys.len() * ow * c)?;
        let kernel = self.kernel_for_this_cpu();
        let end = oys.end;
        for (first, out) in oys
            .step_by(ROWS_AT_ONCE)
            .zip(out.chunks_mut(ROWS_AT_ONCE * ow * c))
        {
            self.row(
                kernel,
                band,
                (pad_top, pad_left),
                ow,
                rows_at_once(first, end),
                out,
            );
        }
        Ok(())
    }

    /// Which inner loop this CPU runs.
    fn kernel_for_this_cpu(&self) -> DepthwiseKernel {
        #[cfg(target_arch = "x86_64")]
        if self.allow_avx512
            && super::pointwise512::available()
            && super::depthwise512::supports(self.kernel, self.stride)
        {
            return DepthwiseKernel::Avx512;
        }
        if has_fma() {
            DepthwiseKernel::Fma
        } else {
            DepthwiseKernel::Portable
        }
    }

    /// Output rows `oys` (of the whole image; at most [`ROWS_AT_ONCE`]) from `band`, into `out`
    /// (`oys.len() * ow * channels`). The AVX-512 kernel computes them together, sharing the
    /// input rows they both read; the others one after the other.
    fn row(
        &self,
        kernel: DepthwiseKernel,
        band: &Band<'_>,
        (pad_top, pad_left): (usize, usize),
        ow: usize,
        oys: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        debug_assert!(oys.len() <= ROWS_AT_ONCE && out.len() >= oys.len() * ow * self.channels);
        // Row `oy` reads image rows from `oy * stride - pad_top`; in the band that is
        // `band.top` rows further up, as if the padding were that much larger.
        let pad_top = pad_top + band.top;
        match kernel {
            #[cfg(target_arch = "x86_64")]
            DepthwiseKernel::Avx512 => {
                let g = super::depthwise512::Geometry {
                    h: band.h,
                    w: band.w,
                    channels: self.channels,
                    stride: self.stride,
                    pad_top,
                    pad_left,
                    ow,
                };
                let (wt, b) = (&self.weight, &self.bias);
                // SAFETY: AVX-512F is present and the shape is supported
                // (`kernel_for_this_cpu`); `band.rows` and `out` have the sizes `row` needs
                // (checked by the callers).
                unsafe {
                    super::depthwise512::rows_for(
                        self.kernel,
                        &g,
                        band.rows,
                        wt,
                        b,
                        self.relu6,
                        oys.start,
                        oys.len(),
                        out,
                    );
                }
            }
            DepthwiseKernel::Fma | DepthwiseKernel::Portable => {
                let row = DepthwiseRow {
                    op: self,
                    input: band.rows,
                    h: band.h,
                    w: band.w,
                    pad_top,
                    pad_left,
                };
                let row_len = ow * self.channels;
                for (oy, out) in oys.zip(out.chunks_exact_mut(row_len)) {
                    #[cfg(target_arch = "x86_64")]
                    if kernel == DepthwiseKernel::Fma {
                        // SAFETY: the CPU has AVX2 and FMA (checked by `has_fma`).
                        unsafe { row.compute_fma(0, oy, out) };
                        continue;
                    }
                    row.compute::<false>(0, oy, out);
                }
            }
        }
    }
}

/// Output rows a depthwise task computes at once (the AVX-512 kernel's pairs).
const ROWS_AT_ONCE: usize = 2;

/// The output rows of the task that starts at row `first`: [`ROWS_AT_ONCE`] of them, fewer at
/// the `end` of the rows asked for.
fn rows_at_once(first: usize, end: usize) -> std::ops::Range<usize> {
    first..(first + ROWS_AT_ONCE).min(end)
}

/// Consecutive rows of one channels-last image: rows `top..top + h`, each `w` pixels.
#[derive(Debug, Clone, Copy)]
pub struct Band<'a> {
    pub rows: &'a [f32],
    pub h: usize,
    pub top: usize,
    pub w: usize,
}

/// The depthwise inner loops, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepthwiseKernel {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    Fma,
    Portable,
}

// ---- stem ----------------------------------------------------------------------------------

/// The first convolution (kxk, stride 2, 3 input channels) with folded bias and ReLU6. Its input
/// is the NCHW image batch as preprocessing produces it; its output is NHWC.
#[derive(Debug, Clone)]
pub struct Stem {
    /// `kernel * kernel * c_in * c_out`: tap, input channel, then output channel.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    /// The weights as a `[c_in][ky][kx][c_out]` matrix for the AVX-512 kernel, which runs the
    /// stem as an image-to-columns copy plus one matrix product. (Input channel first, so the
    /// copy moves each tap row's `k` neighbouring values of one image plane at once.)
    #[cfg(target_arch = "x86_64")]
    pub avx512: Option<super::pointwise512::Packed>,
}

impl Stem {
    /// A stem from `[tap][c_in][c_out]` weights.
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> Self {
        Stem {
            #[cfg(target_arch = "x86_64")]
            avx512: super::pointwise512::available().then(|| {
                let taps = kernel * kernel;
                let mut by_channel = vec![0f32; weight.len()];
                for t in 0..taps {
                    for ci in 0..c_in {
                        let from = (t * c_in + ci) * c_out;
                        by_channel[(ci * taps + t) * c_out..][..c_out]
                            .copy_from_slice(&weight[from..from + c_out]);
                    }
                }
                super::pointwise512::Packed::new(&by_channel, &bias, taps * c_in, c_out)
            }),
            weight,
            bias,
            c_in,
            c_out,
            kernel,
            stride,
        }
    }

    /// The image-to-columns copy of output row `oy`: for each output pixel its `c_in * k * k`
    /// input values (`[c_in][ky][kx]`, zero outside the image) into `cols` (`ow` patches).
    fn columns_row(
        &self,
        plane: &[f32],
        (h, w): (usize, usize),
        (pad_top, pad_left): (usize, usize),
        oy: usize,
        cols: &mut [f32],
    ) {
        let (k, s) = (self.kernel, self.stride);
        let depth = k * k * self.c_in;
        for ci in 0..self.c_in {
            for ky in 0..k {
                let at = (ci * k + ky) * k;
                let iy = (oy * s + ky) as isize - pad_top as isize;
                let line = (iy >= 0 && (iy as usize) < h)
                    .then(|| &plane[(ci * h + iy as usize) * w..][..w]);
                for (ox, patch) in cols.chunks_exact_mut(depth).enumerate() {
                    let dst = &mut patch[at..at + k];
                    let Some(line) = line else {
                        dst.fill(0.0);
                        continue;
                    };
                    let x0 = (ox * s) as isize - pad_left as isize;
                    if x0 >= 0 && x0 as usize + k <= w {
                        let src = &line[x0 as usize..x0 as usize + k];
                        // A 3-wide kernel (every EfficientNet-Lite stem) copies as three
                        // moves; a slice copy of a run-time length is a `memcpy` call per
                        // patch row (~2.5 % of a Lite0 forward).
                        if let (Ok(d3), Ok(s3)) = (
                            <&mut [f32; 3]>::try_from(&mut *dst),
                            <&[f32; 3]>::try_from(src),
                        ) {
                            *d3 = *s3;
                        } else {
                            dst.copy_from_slice(src);
                        }
                    } else {
                        for (kx, d) in dst.iter_mut().enumerate() {
                            let ix = x0 + kx as isize;
                            *d = if ix >= 0 && (ix as usize) < w {
                                line[ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn row<const FMA: bool>(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        pads: (usize, usize),
        oy: usize,
        out: &mut [f32],
    ) {
        let (k, s, ci_n, co_n) = (self.kernel, self.stride, self.c_in, self.c_out);
        let y0 = (oy * s) as isize - pads.0 as isize;
        for (ox, px) in out.chunks_exact_mut(co_n).enumerate() {
            let x0 = (ox * s) as isize - pads.1 as isize;
            px.copy_from_slice(&self.bias);
            for ky in 0..k {
                let iy = y0 + ky as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..k {
                    let ix = x0 + kx as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    for ci in 0..ci_n {
                        let x = input[(ci * h + iy as usize) * w + ix as usize];
                        let taps = &self.weight[((ky * k + kx) * ci_n + ci) * co_n..][..co_n];
                        for (o, &t) in px.iter_mut().zip(taps) {
                            *o = madd::<FMA>(*o, x, t);
                        }
                    }
                }
            }
            px.iter_mut().for_each(|v| *v = relu6(*v));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn row_fma(
        &self,
        input: &[f32],
        h: usize,
        w: usize,
        pads: (usize, usize),
        oy: usize,
        out: &mut [f32],
    ) {
        self.row::<true>(input, h, w, pads, oy, out);
    }
}

impl CustomOp1 for Stem {
    fn name(&self) -> &'static str {
        "nhwc-stem"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(storage, layout, "stem")?;
        let dims = dims4(layout.shape())?;
        let out_dims = self.out_dims(dims)?;
        let mut output = output_buffer(out_dims.iter().product());
        self.run_into(input, dims, &mut Vec::new(), &mut output)?;
        Ok((CpuStorage::F32(output), Shape::from(out_dims.to_vec())))
    }
}

impl Stem {
    /// The output shape (NHWC) for an input of shape `dims` (NCHW).
    pub fn out_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = dims;
        if c != self.c_in {
            candle_core::bail!("stem: {c} input channels, weights expect {}", self.c_in);
        }
        let (oh, _) = same(h, self.kernel, self.stride);
        let (ow, _) = same(w, self.kernel, self.stride);
        Ok([n, oh, ow, self.c_out])
    }

    /// Scratch values per output pixel that [`Stem::rows_into`] needs for its image-to-columns
    /// copy (none on the portable kernel, which reads the image directly).
    pub fn columns_per_pixel(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.avx512.is_some() {
            return self.kernel * self.kernel * self.c_in;
        }
        0
    }

    /// Output rows `oys` of one image (`plane`: NCHW, `c_in * h * w`) into `out`, on the calling
    /// thread: for callers that already split the work across threads (see [`super::block`]).
    /// `columns` is scratch of `oys.len() * ow * columns_per_pixel()` values.
    pub fn rows_into(
        &self,
        plane: &[f32],
        (h, w): (usize, usize),
        oys: std::ops::Range<usize>,
        columns: &mut [f32],
        out: &mut [f32],
    ) -> Result<()> {
        let (_, pad_top) = same(h, self.kernel, self.stride);
        let (ow, pad_left) = same(w, self.kernel, self.stride);
        let pixels = oys.len() * ow;
        check_len("stem input", plane, self.c_in * h * w)?;
        check_len("stem output", out, pixels * self.c_out)?;
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.avx512 {
            let depth = self.kernel * self.kernel * self.c_in;
            check_len("stem columns", columns, pixels * depth)?;
            for (oy, cols) in oys.zip(columns.chunks_exact_mut(ow * depth)) {
                self.columns_row(plane, (h, w), (pad_top, pad_left), oy, cols);
            }
            packed.run_serial(columns, None, out, pixels, true);
            return Ok(());
        }
        let _ = columns;
        let fma = has_fma();
        for (oy, out) in oys.zip(out.chunks_exact_mut(ow * self.c_out)) {
            self.portable_row(fma, plane, (h, w), (pad_top, pad_left), oy, out);
        }
        Ok(())
    }

    /// Output row `oy` read straight from the image, with FMA where `fma` (from [`has_fma`]).
    fn portable_row(
        &self,
        fma: bool,
        plane: &[f32],
        (h, w): (usize, usize),
        pads: (usize, usize),
        oy: usize,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if fma {
            // SAFETY: the CPU has AVX2 and FMA (checked by `has_fma`).
            unsafe { self.row_fma(plane, h, w, pads, oy, out) };
            return;
        }
        let _ = fma;
        self.row::<false>(plane, h, w, pads, oy, out);
    }

    /// Writes the stem's output (NHWC) for `input` (`dims`, NCHW) into `output`; `columns` is
    /// scratch space for the image-to-columns copy, grown as needed and kept by the caller.
    pub fn run_into(
        &self,
        input: &[f32],
        dims: [usize; 4],
        columns: &mut Vec<f32>,
        output: &mut [f32],
    ) -> Result<[usize; 4]> {
        let out_dims = self.out_dims(dims)?;
        let [n, c, h, w] = dims;
        let [_, oh, ow, _] = out_dims;
        check_len("stem input", input, n * c * h * w)?;
        check_len("stem output", output, n * oh * ow * self.c_out)?;
        let output = &mut output[..n * oh * ow * self.c_out];
        let (_, pad_top) = same(h, self.kernel, self.stride);
        let (_, pad_left) = same(w, self.kernel, self.stride);
        let fma = has_fma();
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = &self.avx512 {
            let depth = self.kernel * self.kernel * c;
            let len = n * oh * ow * depth;
            if columns.len() < len {
                *columns = output_buffer(len);
            }
            let columns = &mut columns[..len];
            columns
                .par_chunks_mut(ow * depth)
                .enumerate()
                .for_each(|(r, cols)| {
                    let (image, oy) = (r / oh, r % oh);
                    let plane = &input[image * c * h * w..][..c * h * w];
                    self.columns_row(plane, (h, w), (pad_top, pad_left), oy, cols);
                });
            packed.run(columns, None, output, n * oh * ow, true);
            return Ok(out_dims);
        }
        output
            .par_chunks_mut(ow * self.c_out)
            .enumerate()
            .for_each(|(r, out)| {
                let (image, oy) = (r / oh, r % oh);
                let plane = &input[image * c * h * w..][..c * h * w];
                self.portable_row(fma, plane, (h, w), (pad_top, pad_left), oy, out);
            });
        Ok(out_dims)
    }
}

// ---- global average pooling ----------------------------------------------------------------

/// The mean of every channel over the image: `[N, H, W, C]` to `[N, C]` (candle's own mean over
/// non-trailing dimensions walks the tensor with strided reads on one thread).
#[derive(Debug, Clone, Copy)]
pub struct GlobalAvgPool;

impl CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "nhwc-global-avg-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(storage, layout, "global average pool")?;
        let (n, h, w, c) = layout.shape().dims4()?;
        check_len("global average pool input", input, n * h * w * c)?;
        let mut output = vec![0f32; n * c];
        for (image, pooled) in output.chunks_exact_mut(c).enumerate() {
            average_pool(&input[image * h * w * c..][..h * w * c], pooled);
        }
        Ok((CpuStorage::F32(output), Shape::from((n, c))))
    }
}

/// The mean over the pixels of one channels-last image (`pixels * pooled.len()` values).
pub fn average_pool(image: &[f32], pooled: &mut [f32]) {
    let c = pooled.len();
    pooled.fill(0.0);
    if c == 0 {
        return;
    }
    let pixels = image.len() / c;
    for pixel in image.chunks_exact(c) {
        pooled.iter_mut().zip(pixel).for_each(|(p, x)| *p += x);
    }
    let scale = 1.0 / pixels.max(1) as f32;
    pooled.iter_mut().for_each(|p| *p *= scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// candle's reference: SAME pad + conv2d (NCHW) + bias + optional clamp.
    fn reference(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        groups: usize,
        relu: bool,
    ) -> Tensor {
        let (_, _, h, wd) = x.dims4().unwrap();
        let k = w.dim(2).unwrap();
        let pad = |size: usize| {
            let out = size.div_ceil(stride);
            ((out - 1) * stride + k).saturating_sub(size)
        };
        let (ph, pw) = (pad(h), pad(wd));
        let x = x
            .pad_with_zeros(2, ph / 2, ph - ph / 2)
            .unwrap()
            .pad_with_zeros(3, pw / 2, pw - pw / 2)
            .unwrap();
        let c_out = w.dim(0).unwrap();
        let y = x
            .conv2d(w, 0, stride, 1, groups)
            .unwrap()
            .broadcast_add(&b.reshape((c_out, 1, 1)).unwrap())
            .unwrap();
        if relu {
            y.clamp(0f32, 6f32).unwrap()
        } else {
            y
        }
    }

    fn nhwc(x: &Tensor) -> Tensor {
        x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn depthwise_matches_candles_grouped_convolution() {
        let dev = Device::Cpu;
        // Odd sizes and a channel count that is not a multiple of the lane width; the wider
        // images have pixel groups wholly inside the image as well as edge groups.
        for (c, size, k, stride) in [
            (19, 9, 3, 1),
            (40, 10, 5, 2),
            (16, 7, 3, 2),
            (33, 8, 5, 1),
            (24, 23, 3, 1),
            (20, 21, 5, 1),
            (17, 26, 3, 2),
            (48, 19, 5, 2),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, c, size, size), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c, &dev).unwrap();
            let want = nhwc(&reference(&x, &w, &b, stride, c, true));
            let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut weight = vec![0f32; k * k * c];
            for ch in 0..c {
                for t in 0..k * k {
                    weight[t * c + ch] = wv[ch * k * k + t];
                }
            }
            for allow_avx512 in [true, false] {
                let op = Depthwise {
                    weight: weight.clone(),
                    bias: b.to_vec1().unwrap(),
                    channels: c,
                    kernel: k,
                    stride,
                    relu6: true,
                    allow_avx512,
                };
                let got = nhwc(&x).apply_op1_no_bwd(&op).unwrap();
                assert_eq!(got.dims(), want.dims());
                let diff = max_diff(&got, &want);
                assert!(
                    diff < 1e-4,
                    "c {c} size {size} k {k} s {stride} avx512 {allow_avx512}"
                );
            }
        }
    }

    #[test]
    fn pointwise_matches_a_1x1_convolution_with_and_without_residual() {
        let dev = Device::Cpu;
        for (c_in, c_out, size, relu) in
            [(24, 144, 9, true), (144, 24, 9, false), (5, 1000, 3, true)]
        {
            let x = Tensor::randn(0f32, 1.0, (3, c_in, size, size), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.2, (c_out, c_in, 1, 1), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
            let want = nhwc(&reference(&x, &w, &b, 1, 1, relu));
            let weight = w.reshape((c_out, c_in)).unwrap().t().unwrap();
            let weight = weight
                .contiguous()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let bias: Vec<f32> = b.to_vec1().unwrap();
            // Both kernels: AVX-512 (where the CPU has it) and the portable GEMM.
            for op in [
                Pointwise::new(weight.clone(), bias.clone(), c_in, c_out, relu),
                Pointwise::portable(weight.clone(), bias.clone(), c_in, c_out, relu),
            ] {
                let got = nhwc(&x).apply_op1_no_bwd(&op).unwrap();
                assert!(max_diff(&got, &want) < 1e-4, "{c_in}->{c_out}");
                let r = Tensor::randn(0f32, 1.0, want.dims(), &dev).unwrap();
                let got = nhwc(&x).apply_op2_no_bwd(&r, &op).unwrap();
                if !relu {
                    let sum = (&want + &r).unwrap();
                    assert!(max_diff(&got, &sum) < 1e-4, "{c_in}->{c_out} + residual");
                }
            }
        }
    }

    #[test]
    fn global_average_pool_is_the_mean_over_pixels() {
        let x = Tensor::randn(0f32, 1.0, (2, 7, 5, 33), &Device::Cpu).unwrap();
        let want = x.mean((1, 2)).unwrap();
        let got = x.apply_op1_no_bwd(&GlobalAvgPool).unwrap();
        assert!(max_diff(&got, &want) < 1e-5);
    }

    #[test]
    fn stem_matches_a_strided_convolution() {
        let dev = Device::Cpu;
        for size in [224, 15, 16] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, size, size), &dev).unwrap();
            let w = Tensor::randn(0f32, 0.5, (32, 3, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, 32, &dev).unwrap();
            let want = nhwc(&reference(&x, &w, &b, 2, 1, true));
            let wv = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut weight = vec![0f32; 9 * 3 * 32];
            for co in 0..32 {
                for ci in 0..3 {
                    for t in 0..9 {
                        weight[(t * 3 + ci) * 32 + co] = wv[(co * 3 + ci) * 9 + t];
                    }
                }
            }
            let mut op = Stem::new(weight, b.to_vec1().unwrap(), 3, 32, 3, 2);
            for _ in 0..2 {
                let got = x.apply_op1_no_bwd(&op).unwrap();
                assert_eq!(got.dims(), want.dims());
                assert!(max_diff(&got, &want) < 1e-4, "size {size}");
                #[cfg(target_arch = "x86_64")]
                {
                    op.avx512 = None;
                }
            }
        }
    }
}

//! The pointwise (1x1) convolution on CPUs with AVX-512: `out = act(in x W + bias [+ residual])`
//! computed in registers and written once.
//!
//! The `gemm` crate (what candle uses) runs AVX2 kernels on stable Rust, half the width this
//! CPU family has, and cannot fuse a bias, a residual or ReLU6 into its output. Here the weights
//! are packed at load into panels of 16 output channels (`[panel][c_in][16]`, zero-padded), and a
//! micro-kernel computes `MR` pixels x 32 channels (or x 16 for the last panel) with `MR * 2`
//! accumulator registers, streaming one weight row per input channel and broadcasting each
//! pixel's input value. The epilogue adds the bias (and the residual), clamps, and stores with a
//! mask where the channel count is not a multiple of 16.
//!
//! Work is split into (pixel block, panel range) tasks on rayon's pool, so a layer with few
//! pixels (the head at batch 1: 49 pixels) still uses every thread.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Output channels per panel: one 512-bit register of f32.
pub const PANEL: usize = 16;
/// Pixels per micro-kernel call: 12 x 2 accumulators + 2 weights + 1 broadcast = 27 of the 32
/// vector registers.
const MR: usize = 12;
/// Input channels per trip of the micro-kernel's loop.
const K_UNROLL: usize = 4;
/// Pixels per task: a few micro-kernel rows, so the input block stays in L1 across panels.
const BLOCK_ROWS: usize = MR * 4;

/// True when this CPU runs the AVX-512 path.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Weights packed for the micro-kernel.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `panels * c_in * PANEL`.
    weight: Vec<f32>,
    /// `panels * PANEL` (zero-padded).
    bias: Vec<f32>,
    c_in: usize,
    c_out: usize,
    panels: usize,
}

impl Packed {
    /// Packs `weight` (`[c_in][c_out]`, row-major) and `bias` (`c_out`).
    pub fn new(weight: &[f32], bias: &[f32], c_in: usize, c_out: usize) -> Packed {
        let panels = c_out.div_ceil(PANEL);
        let mut packed = vec![0f32; panels * c_in * PANEL];
        for ci in 0..c_in {
            for co in 0..c_out {
                let (p, lane) = (co / PANEL, co % PANEL);
                packed[(p * c_in + ci) * PANEL + lane] = weight[ci * c_out + co];
            }
        }
        let mut padded_bias = vec![0f32; panels * PANEL];
        padded_bias[..c_out].copy_from_slice(bias);
        Packed {
            weight: packed,
            bias: padded_bias,
            c_in,
            c_out,
            panels,
        }
    }

    /// What `run` and `run_serial` need before they touch memory: every slice holds `pixels`
    /// rows, and the CPU has AVX-512F.
    fn check(&self, input: &[f32], residual: Option<&[f32]>, out: &[f32], pixels: usize) {
        assert!(input.len() >= pixels * self.c_in);
        assert!(out.len() >= pixels * self.c_out);
        if let Some(r) = residual {
            assert!(r.len() >= pixels * self.c_out);
        }
        assert!(available(), "AVX-512F is required");
    }

    /// `out[p, :] = act(input[p, :] x W + bias + residual[p, :])` for `pixels` rows.
    ///
    /// # Panics
    /// When the slices are shorter than `pixels` rows, or (debug) the CPU lacks AVX-512F.
    pub fn run(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
        pixels: usize,
        relu6: bool,
    ) {
        self.check(input, residual, out, pixels);
        let row_blocks = pixels.div_ceil(BLOCK_ROWS);
        // Enough tasks for every thread: split the channels too when there are few pixels.
        let threads = rayon::current_num_threads();
        let panel_groups = if row_blocks >= 4 * threads {
            1
        } else {
            (4 * threads)
                .div_ceil(row_blocks)
                .min(self.panels.div_ceil(2))
        };
        let panels_per_group = self.panels.div_ceil(panel_groups).next_multiple_of(2);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let res_ptr = residual.map(|r| SendConstPtr(r.as_ptr()));
        (0..row_blocks * panel_groups)
            .into_par_iter()
            .for_each(|task| {
                let (block, group) = (task / panel_groups, task % panel_groups);
                let first_row = block * BLOCK_ROWS;
                let rows = BLOCK_ROWS.min(pixels - first_row);
                let first_panel = group * panels_per_group;
                let end_panel = (first_panel + panels_per_group).min(self.panels);
                if first_panel >= end_panel {
                    return;
                }
                // SAFETY: AVX-512F is present (`check`); every task writes a disjoint
                // rectangle (its rows x its panels) of `out`, whose bounds were checked above.
                unsafe {
                    self.block(
                        input.as_ptr().add(first_row * self.c_in),
                        res_ptr.map(|r| r.get().add(first_row * self.c_out)),
                        out_ptr.get().add(first_row * self.c_out),
                        rows,
                        first_panel..end_panel,
                        relu6,
                    );
                }
            });
    }

    /// The same product on the calling thread only: for callers that already split the work
    /// across threads (a banded block computes a few rows of one image per task).
    ///
    /// # Panics
    /// As [`Packed::run`].
    pub fn run_serial(
        &self,
        input: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
        pixels: usize,
        relu6: bool,
    ) {
        self.check(input, residual, out, pixels);
        // SAFETY: AVX-512F is present and the slices hold `pixels` rows (`check`).
        unsafe {
            self.block(
                input.as_ptr(),
                residual.map(<[f32]>::as_ptr),
                out.as_mut_ptr(),
                pixels,
                0..self.panels,
                relu6,
            );
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn block(
        &self,
        a: *const f32,
        residual: Option<*const f32>,
        c: *mut f32,
        rows: usize,
        panels: std::ops::Range<usize>,
        relu6: bool,
    ) {
        let mut r = 0;
        while r < rows {
            let mr = MR.min(rows - r);
            let a = a.add(r * self.c_in);
            let res = residual.map(|p| p.add(r * self.c_out));
            let c = c.add(r * self.c_out);
            let mut p = panels.start;
            while p < panels.end {
                let two = p + 1 < panels.end;
                let args = Tile {
                    k: self.c_in,
                    a,
                    lda: self.c_in,
                    w: self.weight.as_ptr().add(p * self.c_in * PANEL),
                    bias: self.bias.as_ptr().add(p * PANEL),
                    residual: res.map(|q| q.add(p * PANEL)),
                    c: c.add(p * PANEL),
                    ldc: self.c_out,
                    channels: self.c_out - p * PANEL,
                    relu6,
                };
                match (mr, two) {
                    (12, true) => tile::<12, 2>(&args),
                    (12, false) => tile::<12, 1>(&args),
                    (m, true) => small::<2>(&args, m),
                    (m, false) => small::<1>(&args, m),
                }
                p += if two { 2 } else { 1 };
            }
            r += mr;
        }
    }
}

/// A pointer tasks share (captured whole, through `get`, so the closure is `Send`).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl SendConstPtr {
    fn get(self) -> *const f32 {
        self.0
    }
}
// SAFETY: tasks write disjoint parts of the buffer (see `Packed::run`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[derive(Clone, Copy)]
struct SendConstPtr(*const f32);
// SAFETY: read-only.
unsafe impl Send for SendConstPtr {}
unsafe impl Sync for SendConstPtr {}

/// One micro-kernel call's operands.
struct Tile {
    k: usize,
    a: *const f32,
    lda: usize,
    /// The first panel's packed weights; the second (if any) follows at `k * PANEL`.
    w: *const f32,
    bias: *const f32,
    residual: Option<*const f32>,
    c: *mut f32,
    ldc: usize,
    /// Output channels from this tile's first channel to the end of the row (masks the tail).
    channels: usize,
    relu6: bool,
}

/// Rows 1..=11: the same kernel, dispatched on the row count so each copy is fully unrolled.
#[target_feature(enable = "avx512f")]
unsafe fn small<const NB: usize>(t: &Tile, m: usize) {
    match m {
        1 => tile::<1, NB>(t),
        2 => tile::<2, NB>(t),
        3 => tile::<3, NB>(t),
        4 => tile::<4, NB>(t),
        5 => tile::<5, NB>(t),
        6 => tile::<6, NB>(t),
        7 => tile::<7, NB>(t),
        8 => tile::<8, NB>(t),
        9 => tile::<9, NB>(t),
        10 => tile::<10, NB>(t),
        _ => tile::<11, NB>(t),
    }
}

/// `M` pixels x `NB` panels of 16 channels.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const M: usize, const NB: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); NB]; M];
    // One input channel: NB weight rows, then each pixel's value broadcast against them.
    let step = |acc: &mut [[__m512; NB]; M], kk: usize| {
        let mut w = [_mm512_setzero_ps(); NB];
        for (b, wb) in w.iter_mut().enumerate() {
            *wb = _mm512_loadu_ps(t.w.add((b * t.k + kk) * PANEL));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*t.a.add(r * t.lda + kk));
            for b in 0..NB {
                acc_r[b] = _mm512_fmadd_ps(x, w[b], acc_r[b]);
            }
        }
    };
    // Four channels per trip: the pixels' addresses are computed once for the four (constant
    // displacements after that), which keeps the integer work off the two FMA ports.
    let mut kk = 0;
    while kk + K_UNROLL <= t.k {
        for u in 0..K_UNROLL {
            step(&mut acc, kk + u);
        }
        kk += K_UNROLL;
    }
    while kk < t.k {
        step(&mut acc, kk);
        kk += 1;
    }
    let mut mask = [0xFFFF as __mmask16; NB];
    let mut bias = [_mm512_setzero_ps(); NB];
    for b in 0..NB {
        let lanes = t.channels.saturating_sub(b * PANEL).min(PANEL);
        if lanes < PANEL {
            mask[b] = (1u16 << lanes) - 1;
        }
        bias[b] = _mm512_loadu_ps(t.bias.add(b * PANEL));
    }
    // One fully unrolled store loop per (residual, ReLU6) case: with the branches inside it,
    // LLVM kept the accumulators in a stack array (zeroed by a `memset` call per tile) to index
    // them from a rolled loop.
    match (t.residual, t.relu6) {
        (None, false) => epilogue::<M, NB, false, false>(t, &acc, &mask, &bias, std::ptr::null()),
        (None, true) => epilogue::<M, NB, false, true>(t, &acc, &mask, &bias, std::ptr::null()),
        (Some(res), false) => epilogue::<M, NB, true, false>(t, &acc, &mask, &bias, res),
        (Some(res), true) => epilogue::<M, NB, true, true>(t, &acc, &mask, &bias, res),
    }
}

/// `c = act(acc + bias [+ residual])` for one tile, stored with each panel's channel mask.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn epilogue<const M: usize, const NB: usize, const RES: bool, const RELU6: bool>(
    t: &Tile,
    acc: &[[__m512; NB]; M],
    mask: &[__mmask16; NB],
    bias: &[__m512; NB],
    residual: *const f32,
) {
    let zero = _mm512_setzero_ps();
    let six = _mm512_set1_ps(6.0);
    for (r, acc_r) in acc.iter().enumerate() {
        for b in 0..NB {
            let mut v = _mm512_add_ps(acc_r[b], bias[b]);
            if RES {
                v = _mm512_add_ps(
                    v,
                    _mm512_maskz_loadu_ps(mask[b], residual.add(r * t.ldc + b * PANEL)),
                );
            }
            if RELU6 {
                v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
            }
            _mm512_mask_storeu_ps(t.c.add(r * t.ldc + b * PANEL), mask[b], v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        res: Option<&[f32]>,
        p: usize,
        ci: usize,
        co: usize,
        relu: bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; p * co];
        for i in 0..p {
            for o in 0..co {
                let mut s = b[o] as f64;
                for k in 0..ci {
                    s += x[i * ci + k] as f64 * w[k * co + o] as f64;
                }
                if let Some(r) = res {
                    s += r[i * co + o] as f64;
                }
                out[i * co + o] = if relu {
                    s.clamp(0.0, 6.0) as f32
                } else {
                    s as f32
                };
            }
        }
        out
    }

    #[test]
    fn matches_a_plain_matrix_product_for_every_shape_class() {
        if !available() {
            eprintln!("no AVX-512F here: nothing to test");
            return;
        }
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        // Channel counts with 8-wide tails (24, 40, 88), odd panels, rows not a multiple of 12.
        for (p, ci, co, relu, with_res) in [
            (49, 320, 1280, true, false),
            (100, 24, 144, true, false),
            (37, 144, 24, false, true),
            (5, 40, 88, false, true),
            (130, 16, 40, true, false),
            (1, 8, 16, true, false),
        ] {
            let x: Vec<f32> = (0..p * ci).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..ci * co).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..co).map(|_| rnd()).collect();
            let r: Vec<f32> = (0..p * co).map(|_| rnd()).collect();
            let res = with_res.then_some(r.as_slice());
            let want = reference(&x, &w, &b, res, p, ci, co, relu);
            let mut got = vec![f32::NAN; p * co];
            Packed::new(&w, &b, ci, co).run(&x, res, &mut got, p, relu);
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{p}x{ci}->{co}: {worst}");
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    #[test]
    #[ignore]
    fn pointwise_speed() {
        let shapes = [
            (112 * 112, 16, 96),
            (56 * 56, 24, 144),
            (56 * 56, 144, 24),
            (28 * 28, 40, 240),
            (28 * 28, 240, 40),
            (14 * 14, 80, 480),
            (14 * 14, 480, 80),
            (14 * 14, 672, 112),
            (7 * 7, 192, 1152),
            (7 * 7, 1152, 192),
            (7 * 7, 320, 1280),
        ];
        for (p, ci, co) in shapes {
            let p = p * 8;
            let x = vec![0.5f32; p * ci];
            let w = vec![0.01f32; ci * co];
            let b = vec![0.0f32; co];
            let mut out = vec![0f32; p * co];
            let packed = Packed::new(&w, &b, ci, co);
            let t = std::time::Instant::now();
            let reps = (2e9 / (2.0 * (p * ci * co) as f64)).ceil() as usize;
            for _ in 0..reps {
                packed.run(&x, None, &mut out, p, true);
            }
            let secs = t.elapsed().as_secs_f64();
            let gflops = 2.0 * (p * ci * co * reps) as f64 / secs / 1e9;
            println!("{p:7} x {ci:5} -> {co:5}: {gflops:6.1} GFLOP/s");
        }
    }
}

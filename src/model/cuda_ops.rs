//! Launches labeld's own CUDA kernels (`cuda/kernels.cu`, compiled to PTX by build.rs) for the
//! channels-last ops of [`super::channels_last`]. Every kernel there is named
//! `{op}_{f32|f16|bf16}` and takes its inputs, its output, its number of threads (u64: one per
//! output value, except for the kernels [`launch_threads`] runs, which compute several each),
//! then its `i32` parameters, in that order.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    sys, CudaContext, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorageSlice, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, Layout, Result, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
const MODULE: &str = "labeld_kernels";

/// Runs kernel `{op}_{dtype}` over `total` output values on contiguous `inputs` of one dtype
/// (f32, f16 or bf16; the first input's decides) and returns its output.
pub fn launch(
    op: &str,
    inputs: &[(&CudaStorage, &Layout)],
    total: usize,
    params: &[usize],
) -> Result<CudaStorage> {
    let grid = Grid {
        threads: total,
        block: 1024,
    };
    launch_grid(op, inputs, total, grid, params)
}

/// [`launch`] for a kernel that computes several outputs a thread: `total` outputs, `threads`
/// threads (the kernel's count), in blocks of 256. Such a kernel holds more in registers
/// (depthwise_row: a 5 x 5 filter's taps and four sums), and a block of 1024 threads of it asks
/// for more registers than a multiprocessor has (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, seen on
/// an H100 in f32).
pub fn launch_threads(
    op: &str,
    inputs: &[(&CudaStorage, &Layout)],
    total: usize,
    threads: usize,
    params: &[usize],
) -> Result<CudaStorage> {
    let grid = Grid {
        threads,
        block: 256,
    };
    launch_grid(op, inputs, total, grid, params)
}

/// How many threads a kernel runs, in blocks of how many.
#[derive(Debug, Clone, Copy)]
struct Grid {
    threads: usize,
    block: u32,
}

fn launch_grid(
    op: &str,
    inputs: &[(&CudaStorage, &Layout)],
    total: usize,
    grid: Grid,
    params: &[usize],
) -> Result<CudaStorage> {
    let Some((first, _)) = inputs.first() else {
        candle_core::bail!("{op}: no inputs");
    };
    match first.slice {
        CudaStorageSlice::F32(_) => launch_as::<f32>(op, "f32", inputs, total, grid, params),
        CudaStorageSlice::F16(_) => launch_as::<half::f16>(op, "f16", inputs, total, grid, params),
        CudaStorageSlice::BF16(_) => {
            launch_as::<half::bf16>(op, "bf16", inputs, total, grid, params)
        }
        _ => candle_core::bail!("{op}: f32, f16 or bf16 inputs"),
    }
}

fn launch_as<T: CudaDType + DeviceRepr>(
    op: &str,
    suffix: &str,
    inputs: &[(&CudaStorage, &Layout)],
    total: usize,
    grid: Grid,
    params: &[usize],
) -> Result<CudaStorage> {
    // The kernels index in 32 bits (see kernels.cu); a batch would need thousands of images to
    // reach this.
    if total > 1 << 31 {
        candle_core::bail!("{op}: {total} outputs, more than the kernels index (2^31)");
    }
    let params = params
        .iter()
        .map(|&p| i32::try_from(p))
        .collect::<std::result::Result<Vec<i32>, _>>()
        .map_err(|_| candle_core::Error::Msg(format!("{op}: a size past i32")))?;
    let dev = inputs[0].0.device.clone();
    let mut views = Vec::with_capacity(inputs.len());
    for (storage, layout) in inputs {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{op}: inputs must be contiguous");
        };
        // Errors when this input's dtype differs from the first one's.
        views.push(storage.as_cuda_slice::<T>()?.slice(start..end));
    }
    let func = dev.get_or_load_custom_func(&format!("{op}_{suffix}"), MODULE, PTX)?;
    // SAFETY: the kernel writes every one of the `total` values before anything reads them.
    let out = unsafe { dev.alloc::<T>(total)? };
    let mut b = func.builder();
    for view in &views {
        b.arg(view);
    }
    let threads = grid.threads as u64;
    b.arg(&out).arg(&threads);
    for param in &params {
        b.arg(param);
    }
    let cfg = LaunchConfig {
        grid_dim: ((grid.threads as u32).div_ceil(grid.block).max(1), 1, 1),
        block_dim: (grid.block, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches the kernel's signature (inputs, output, count, i32
    // parameters), and the callers checked the inputs' shapes against the parameters.
    unsafe { b.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Keeps the memory a pass frees in the device's default pool instead of handing it back to the
/// driver at every synchronisation (the pool's release threshold is 0 by default). A forward
/// pass allocates each layer's output afresh and candle synchronises when the results are copied
/// back, so without this every pass maps its whole working set again. The pool then holds the
/// largest pass's working set, as PyTorch's caching allocator does.
pub fn keep_freed_memory(device: &candle_core::CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::result;
    let context = device.cuda_stream().context().clone();
    context.bind_to_thread().w()?;
    let mut threshold = u64::MAX;
    // SAFETY: the device comes from a live context; the attribute takes a u64 (cuuint64_t).
    unsafe {
        let pool = result::device::get_default_mem_pool(context.cu_device()).w()?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&raw mut threshold).cast(),
        )
        .w()?;
    }
    Ok(())
}

/// Page-locked host buffers for a batch's upload and for the results' download, grown to the
/// largest batch and reused. From pageable memory the driver stages every transfer through its
/// own small pinned buffers; PyTorch's figures in BENCHMARKS.md come from pinned memory, and so
/// do these now. The upload buffer is write-combined (the CPU only writes it); the download one
/// is not (the CPU reads it, and reads of write-combined memory are uncached). The upload holds
/// the images' 8-bit levels, a quarter of the bytes of floats; the GPU normalises them.
#[derive(Debug, Default)]
pub struct PinnedBuffers {
    upload: Option<PinnedHostSlice<u8>>,
    download: Option<PinnedHostSlice<f32>>,
}

/// `buffer`, reallocated with `flags` when shorter than `len`.
fn pinned<'a, T: DeviceRepr>(
    buffer: &'a mut Option<PinnedHostSlice<T>>,
    context: &Arc<CudaContext>,
    len: usize,
    flags: u32,
) -> Result<&'a mut PinnedHostSlice<T>> {
    if buffer.as_ref().is_none_or(|b| b.len() < len) {
        // The old buffer is freed before the larger one is allocated.
        *buffer = None;
        // SAFETY: the contents are written (upload) or copied into (download) before any read.
        *buffer = Some(unsafe { context.alloc_pinned_with_flags::<T>(len, flags) }.w()?);
    }
    buffer
        .as_mut()
        .ok_or_else(|| candle_core::Error::Msg("pinned buffer".into()))
}

impl PinnedBuffers {
    /// The images (each one image's 8-bit levels, all the same length) as one u8 tensor of
    /// `shape` on `device`, copied through the pinned upload buffer.
    pub fn upload(
        &mut self,
        device: &candle_core::CudaDevice,
        images: &[&[u8]],
        shape: candle_core::Shape,
    ) -> Result<Tensor> {
        let len = shape.elem_count();
        let stream = device.cuda_stream();
        let host = pinned(
            &mut self.upload,
            stream.context(),
            len,
            sys::CU_MEMHOSTALLOC_WRITECOMBINED,
        )?;
        // No copy from this buffer is still running: each upload waits for its own (below).
        let staged = &mut host.as_mut_slice().w()?[..len];
        let mut at = 0;
        for image in images {
            let Some(slot) = staged.get_mut(at..at + image.len()) else {
                candle_core::bail!("upload: {len} values for {shape:?}, the images hold more");
            };
            slot.copy_from_slice(image);
            at += image.len();
        }
        if at != len {
            candle_core::bail!("upload: {at} values for {shape:?}");
        }
        // SAFETY: all `len` values are written by the copy before anything reads them.
        let mut dst = unsafe { stream.alloc::<u8>(len) }.w()?;
        // A `[u8]` view of the pinned memory copies just `len` values (the driver sees that the
        // pages are pinned). The copy is asynchronous: wait for it, so that no later upload
        // (another model worker's, say) can overwrite the buffer while it is being read.
        stream.memcpy_htod(&*staged, &mut dst).w()?;
        stream.synchronize().w()?;
        let storage = CudaStorage::wrap_cuda_slice(dst, device.clone());
        Ok(Tensor::from_storage(
            Storage::Cuda(storage),
            shape,
            BackpropOp::none(),
            false,
        ))
    }

    /// A contiguous f32 tensor's values, copied through the pinned download buffer.
    pub fn download(&mut self, tensor: &Tensor) -> Result<&[f32]> {
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            candle_core::bail!("download: not a CUDA tensor");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("download: not contiguous");
        };
        let src = cuda.as_cuda_slice::<f32>()?.slice(start..end);
        let stream = cuda.device.cuda_stream();
        let len = end - start;
        let host = pinned(&mut self.download, stream.context(), len, 0)?;
        // Exactly `len` values: the driver copies as many bytes as the host slice holds, and a
        // buffer grown for a larger batch would read past the tensor (CUDA_ERROR_INVALID_VALUE,
        // seen on the H100 when a batch of 8 followed one of 32).
        let dst = &mut host.as_mut_slice().w()?[..len];
        stream.memcpy_dtoh(&src, dst).w()?;
        stream.synchronize().w()?;
        Ok(dst)
    }
}

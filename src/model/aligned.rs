//! f32 buffers handed out from a 64-byte boundary. With row lengths that are multiples of 16
//! channels, every 512-bit store of the kernels then fills exactly one cache line instead of
//! straddling two.

/// f32 values per 64-byte cache line.
const LINE: usize = 16;

fn aligned_start(buffer: &[f32]) -> usize {
    (LINE - (buffer.as_ptr() as usize % 64) / 4) % LINE
}

/// The first `len` values of `buffer` from a 64-byte boundary, growing it as needed.
pub fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len + LINE {
        buffer.resize(len + LINE, 0.0);
    }
    let start = aligned_start(buffer);
    &mut buffer[start..start + len]
}

/// What [`grown`] last handed out (the buffer has not been grown since).
pub fn aligned(buffer: &[f32]) -> &[f32] {
    &buffer[aligned_start(buffer).min(buffer.len())..]
}

/// `N` consecutive slices of `buffer` (grown as needed) of the lengths given, each starting on
/// a 64-byte boundary.
pub fn parts<const N: usize>(buffer: &mut Vec<f32>, lens: [usize; N]) -> [&mut [f32]; N] {
    let need = lens.iter().map(|l| l.next_multiple_of(LINE)).sum::<usize>();
    let mut rest = grown(buffer, need);
    let mut parts: [&mut [f32]; N] = std::array::from_fn(|_| Default::default());
    for (part, len) in parts.iter_mut().zip(lens) {
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len.next_multiple_of(LINE));
        *part = &mut mine[..len];
        rest = tail;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_start_on_cache_lines_and_do_not_overlap() {
        let mut buffer = Vec::new();
        let [a, b, c] = parts(&mut buffer, [5, 0, 33]);
        assert_eq!((a.len(), b.len(), c.len()), (5, 0, 33));
        for part in [&*a, &*c] {
            assert_eq!(part.as_ptr() as usize % 64, 0);
        }
        assert!(a.as_ptr_range().end <= c.as_ptr());
    }
}

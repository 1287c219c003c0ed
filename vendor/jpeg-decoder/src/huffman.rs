use alloc::borrow::ToOwned;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::OnceCell;
use core::iter;
use std::io::BufRead;
use crate::read_u8;
use crate::error::{Error, Result};
use crate::marker::Marker;
use crate::parser::ScanInfo;

// labeld: 10 bits instead of 8 (two more bits cover most codes with their magnitude bits in a
// 12-MP photo: 34.5 -> 30.7 ms of CPU a photo, 9 bits 33.7, 11 bits 30.6).
const LUT_BITS: u8 = 10;
/// The lookup width of the crates.io release, whose behaviour on damaged data labeld's copy keeps.
const UPSTREAM_LUT_BITS: u8 = 8;

#[derive(Debug)]
pub struct HuffmanDecoder {
    bits: u64,
    num_bits: u8,
    marker: Option<Marker>,
}

impl HuffmanDecoder {
    pub fn new() -> HuffmanDecoder {
        HuffmanDecoder {
            bits: 0,
            num_bits: 0,
            marker: None,
        }
    }

    // Section F.2.2.3
    // Figure F.16
    pub fn decode<R: BufRead>(&mut self, reader: &mut R, table: &HuffmanTable) -> Result<u8> {
        if self.num_bits < 16 {
            self.read_bits(reader)?;
        }

        // labeld: the lookup `decode_sequential_block` and `skip_steps` share.
        match table_lookup(table, self.bits) {
            Some((value, size)) => {
                self.consume_bits(size);
                Ok(value)
            }
            None => Err(Error::Format("failed to decode huffman code".to_owned())),
        }
    }

    pub fn decode_fast_ac<R: BufRead>(&mut self, reader: &mut R, table: &HuffmanTable) -> Result<Option<(i16, u8)>> {
        if let Some(ref ac_lut) = table.ac_lut {
            if self.num_bits < LUT_BITS {
                self.read_bits(reader)?;
            }

            let (value, run_size) = ac_lut[self.peek_bits(LUT_BITS) as usize];

            // labeld: only what the crates.io release's 8-bit table holds, so that its callers
            // (progressive scans) decode damaged data as it does (see `decode_sequential_block`).
            if run_size != 0 && run_size & 0x0f <= UPSTREAM_LUT_BITS {
                let run = run_size >> 4;
                let size = run_size & 0x0f;

                self.consume_bits(size);
                return Ok(Some((value, run)));
            }
        }

        Ok(None)
    }

    /// labeld: one block of a sequential scan (spectral selection 0..64, no successive
    /// approximation), decoded with the same rules as `decoder::decode_block` but with the bit
    /// buffer in locals, so that it stays in registers between symbols instead of going through
    /// memory for every code: that round trip was most of a 12-MP photo's decode. `unzigzag`
    /// places the coefficients; with `dc_only` (a 1/8-scale decode, whose IDCT reads the DC
    /// term alone) the AC terms are read past without being stored.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_sequential_block<R: BufRead>(
        &mut self,
        reader: &mut R,
        coefficients: &mut [i16; 64],
        unzigzag: &[u8; 64],
        dc_table: &HuffmanTable,
        ac_table: &HuffmanTable,
        eob_run: &mut u16,
        dc_predictor: &mut i16,
        dc_only: bool,
    ) -> Result<()> {
        // Section F.2.2.1, Figure F.12 (once a block: the decoder's own code is as fast here)
        let value = self.decode(reader, dc_table)?;
        let diff = match value {
            0 => 0,
            1..=11 => self.receive_extend(reader, value)?,
            _ => return Err(Error::Format("invalid DC difference magnitude category".to_owned())),
        };
        *dc_predictor = dc_predictor.wrapping_add(diff);
        coefficients[0] = *dc_predictor;

        if *eob_run > 0 {
            *eob_run -= 1;
            return Ok(());
        }
        let ac_lut = match ac_table.ac_lut {
            Some(ref lut) => lut,
            None => return Err(Error::Format("AC coefficients decoded with a DC table".to_owned())),
        };
        let skip_lut = dc_only.then(|| ac_table.skip_lut.get_or_init(|| skip_steps(ac_table)));

        // Section F.1.2.2.1
        let mut bits = self.bits;
        let mut num_bits = self.num_bits;
        let mut index = 1usize;
        while index < 64 {
            self.refill(reader, &mut bits, &mut num_bits)?;

            if let Some(steps) = skip_lut {
                let step = steps[(bits >> (64 - SKIP_BITS)) as usize];
                // Only when every symbol stays inside the block (an end of block read at
                // position 64 or later would not be read at all): else one at a time below.
                let reach = index + usize::from(step.advance) + usize::from(step.end_of_block);
                if step.bits != 0 && reach <= 64 {
                    bits <<= step.bits;
                    num_bits -= step.bits;
                    index += usize::from(step.advance);
                    if step.end_of_block {
                        break;
                    }
                    continue;
                }
            }

            let peek = (bits >> (64 - LUT_BITS)) as usize;

            let (value, run_size) = ac_lut[peek];
            if run_size != 0 {
                let size = run_size & 0x0f;
                index += usize::from(run_size >> 4);
                if index >= 64 {
                    // A run past the block's end: damaged data. Consume what the crates.io
                    // release does, so that both decode the same garbage (vendor/jpeg-decoder/
                    // check): its 8-bit table takes the magnitude bits with the code, its slow
                    // path (codes and magnitudes over 8 bits) leaves them.
                    let consumed = if size <= UPSTREAM_LUT_BITS { size } else { ac_table.lut[peek].1 };
                    bits <<= consumed;
                    num_bits -= consumed;
                    break;
                }
                bits <<= size;
                num_bits -= size;
                if !dc_only {
                    coefficients[usize::from(unzigzag[index])] = value;
                }
                index += 1;
                continue;
            }

            let (symbol, code_size) = match table_lookup(ac_table, bits) {
                Some(found) => found,
                None => return Err(Error::Format("failed to decode huffman code".to_owned())),
            };
            bits <<= code_size;
            num_bits -= code_size;
            let r = symbol >> 4;
            let s = symbol & 0x0f;
            if s == 0 {
                if r == 15 {
                    // Run length of 16 zero coefficients.
                    index += 16;
                    continue;
                }
                self.bits = bits;
                self.num_bits = num_bits;
                *eob_run = (1 << r) - 1;
                if r > 0 {
                    *eob_run += self.get_bits(reader, r)?;
                }
                return Ok(());
            }
            index += usize::from(r);
            if index >= 64 {
                break;
            }
            let magnitude = (bits >> (64 - s)) as u16;
            bits <<= s;
            num_bits -= s;
            if !dc_only {
                coefficients[usize::from(unzigzag[index])] = extend(magnitude, s);
            }
            index += 1;
        }
        self.bits = bits;
        self.num_bits = num_bits;
        Ok(())
    }

    /// labeld: at least 32 bits in `bits` (a copy of the decoder's, `num_bits` of them valid),
    /// enough for any code (at most 16 bits) with its magnitude bits (at most 15).
    #[inline(always)]
    fn refill<R: BufRead>(&mut self, reader: &mut R, bits: &mut u64, num_bits: &mut u8) -> Result<()> {
        if *num_bits < 32
            && (self.marker.is_some() || !refill_whole_bytes(reader, bits, num_bits)?)
        {
            self.bits = *bits;
            self.num_bits = *num_bits;
            self.read_bits(reader)?;
            *bits = self.bits;
            *num_bits = self.num_bits;
        }
        Ok(())
    }

    #[inline]
    pub fn get_bits<R: BufRead>(&mut self, reader: &mut R, count: u8) -> Result<u16> {
        if self.num_bits < count {
            self.read_bits(reader)?;
        }

        let bits = self.peek_bits(count);
        self.consume_bits(count);

        Ok(bits)
    }

    #[inline]
    pub fn receive_extend<R: BufRead>(&mut self, reader: &mut R, count: u8) -> Result<i16> {
        let value = self.get_bits(reader, count)?;
        Ok(extend(value, count))
    }

    pub fn reset(&mut self) {
        self.bits = 0;
        self.num_bits = 0;
    }

    pub fn take_marker<R: BufRead>(&mut self, reader: &mut R) -> Result<Option<Marker>> {
        self.read_bits(reader).map(|_| self.marker.take())
    }

    #[inline]
    fn peek_bits(&mut self, count: u8) -> u16 {
        debug_assert!(count <= 16);
        debug_assert!(self.num_bits >= count);

        ((self.bits >> (64 - count)) & ((1 << count) - 1)) as u16
    }

    #[inline]
    fn consume_bits(&mut self, count: u8) {
        debug_assert!(self.num_bits >= count);

        self.bits <<= count as usize;
        self.num_bits -= count;
    }

    fn read_bits<R: BufRead>(&mut self, reader: &mut R) -> Result<()> {
        // labeld: the common case, no marker and no 0xFF among the next bytes, takes every whole
        // byte that fits into `bits` from the reader's buffer at once instead of one `read_u8`
        // each (the byte-at-a-time loop below was ~12 % of a 12-MP photo's decode, most of the
        // rest the Huffman decoding it feeds).
        if self.marker.is_none()
            && self.num_bits <= 56
            && refill_whole_bytes(reader, &mut self.bits, &mut self.num_bits)?
        {
            return Ok(());
        }
        while self.num_bits <= 56 {
            // Fill with zero bits if we have reached the end.
            let byte = match self.marker {
                Some(_) => 0,
                None => read_u8(reader)?,
            };

            if byte == 0xFF {
                let mut next_byte = read_u8(reader)?;

                // Check for byte stuffing.
                if next_byte != 0x00 {
                    // We seem to have reached the end of entropy-coded data and encountered a
                    // marker. Since we can't put data back into the reader, we have to continue
                    // reading to identify the marker so we can pass it on.

                    // Section B.1.1.2
                    // "Any marker may optionally be preceded by any number of fill bytes, which are bytes assigned code X’FF’."
                    while next_byte == 0xFF {
                        next_byte = read_u8(reader)?;
                    }

                    match next_byte {
                        0x00 => return Err(Error::Format("FF 00 found where marker was expected".to_owned())),
                        _    => self.marker = Some(Marker::from_u8(next_byte).unwrap()),
                    }

                    continue;
                }
            }

            self.bits |= (byte as u64) << (56 - self.num_bits);
            self.num_bits += 8;
        }

        Ok(())
    }
}

/// labeld: tops `bits` (MSB first, `num_bits` valid, at most 56) up with every whole byte that
/// fits, straight from the reader's buffer, when none of them is 0xFF (byte stuffing or a
/// marker, which `HuffmanDecoder::read_bits` handles a byte at a time) and at least 8 bytes are
/// buffered. `false`: nothing was taken.
#[inline(always)]
fn refill_whole_bytes<R: BufRead>(reader: &mut R, bits: &mut u64, num_bits: &mut u8) -> Result<bool> {
    let next = match reader.fill_buf()?.first_chunk::<8>() {
        Some(next) => u64::from_be_bytes(*next),
        None => return Ok(false),
    };
    debug_assert!(*num_bits <= 56);
    let count = (64 - *num_bits) / 8;
    let taken = if count == 8 { next } else { next & !(u64::MAX >> (8 * count)) };
    // A zero byte in !taken is an 0xFF byte in taken (the untaken bytes are 0x00 there).
    let inverted = !taken;
    if inverted.wrapping_sub(0x0101_0101_0101_0101) & taken & 0x8080_8080_8080_8080 != 0 {
        return Ok(false);
    }
    *bits |= taken >> *num_bits;
    *num_bits += 8 * count;
    reader.consume(usize::from(count));
    Ok(true)
}

/// labeld: the symbol whose code starts `bits` (MSB first, at least 16 valid bits) and the
/// code's length (Section F.2.2.3, Figure F.16): the table for codes of up to `LUT_BITS`, then
/// the longest code of each length. `None`: no code fits (or a damaged table points past its
/// values, where the release's `decode` indexed out of bounds).
#[inline]
fn table_lookup(table: &HuffmanTable, bits: u64) -> Option<(u8, u8)> {
    let (value, size) = table.lut[(bits >> (64 - LUT_BITS)) as usize];
    if size > 0 {
        return Some((value, size));
    }
    let bits = (bits >> 48) as u16;
    for i in LUT_BITS..16 {
        let code = (bits >> (15 - i)) as i32;
        if code <= table.maxcode[i as usize] {
            let index = (code + table.delta[i as usize]) as usize;
            return table.values.get(index).map(|&value| (value, i + 1));
        }
    }
    None
}

// Section F.2.2.1
// Figure F.12
fn extend(value: u16, count: u8) -> i16 {
    let vt = 1 << (count as u16 - 1);

    if value < vt {
        value as i16 + (-1 << count as i16) + 1
    } else {
        value as i16
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HuffmanTableClass {
    DC,
    AC,
}

pub struct HuffmanTable {
    values: Vec<u8>,
    delta: [i32; 16],
    maxcode: [i32; 16],

    lut: [(u8, u8); 1 << LUT_BITS],
    ac_lut: Option<[(i16, u8); 1 << LUT_BITS]>,
    /// labeld: for AC tables, see `SkipStep`; built the first time a 1/8-scale decode needs it.
    skip_lut: OnceCell<Vec<SkipStep>>,
}

/// labeld: the next bits of an AC table's coefficients, indexed by `SKIP_BITS` of the stream, as
/// whole symbols (codes with their magnitude bits) read past at once: what a 1/8-scale decode,
/// which needs no AC value, does with most of a block. `bits == 0`: none fits, decode one
/// symbol the usual way.
#[derive(Clone, Copy, Default)]
struct SkipStep {
    /// Stream bits the symbols take (at most `SKIP_BITS`).
    bits: u8,
    /// Coefficient positions they move the block on (each value symbol its run plus one,
    /// each ZRL 16).
    advance: u8,
    /// The last of them is an end of block.
    end_of_block: bool,
}

// 14 bits, two tables of 48 KB (the most a 12-MP photo's 1/8-scale decode gained from, measured
// at 10-16 bits: 21.4, 20.7, 19.6, 17.4, 16.8, 18.0, 20.0 ms of CPU a photo; the tables take
// ~0.15 ms of that to build).
const SKIP_BITS: u8 = 14;

/// labeld: the `SkipStep` of each `SKIP_BITS`-bit pattern of `table` (an AC table).
fn skip_steps(table: &HuffmanTable) -> Vec<SkipStep> {
    let mut steps = vec![SkipStep::default(); 1 << SKIP_BITS];
    for (pattern, step) in steps.iter_mut().enumerate() {
        // The pattern at the top of a stream word, then zeros (never taken: every symbol below
        // must end within the pattern).
        let word = (pattern as u64) << (64 - SKIP_BITS);
        while step.advance < 64 {
            let (symbol, code_size) = match table_lookup(table, word << step.bits) {
                Some(found) => found,
                None => break,
            };
            let (run, size) = (symbol >> 4, symbol & 0x0f);
            let end = step.bits + code_size + size;
            if end > SKIP_BITS || (size == 0 && run != 0 && run != 15) {
                // Past the pattern, or an end-of-band run (progressive scans only).
                break;
            }
            step.bits = end;
            if symbol == 0x00 {
                step.end_of_block = true;
                break;
            }
            step.advance += if size == 0 { 16 } else { run + 1 };
        }
    }
    steps
}

impl HuffmanTable {
    pub fn new(bits: &[u8; 16], values: &[u8], class: HuffmanTableClass) -> Result<HuffmanTable> {
        let (huffcode, huffsize) = derive_huffman_codes(bits)?;

        // Section F.2.2.3
        // Figure F.15
        // delta[i] is set to VALPTR(I) - MINCODE(I)
        let mut delta = [0i32; 16];
        let mut maxcode = [-1i32; 16];
        let mut j = 0;

        for i in 0 .. 16 {
            if bits[i] != 0 {
                delta[i] = j as i32 - huffcode[j] as i32;
                j += bits[i] as usize;
                maxcode[i] = huffcode[j - 1] as i32;
            }
        }

        // Build a lookup table for faster decoding.
        let mut lut = [(0u8, 0u8); 1 << LUT_BITS];

        for (i, &size) in huffsize.iter().enumerate().filter(|&(_, &size)| size <= LUT_BITS) {
            let bits_remaining = LUT_BITS - size;
            let start = (huffcode[i] << bits_remaining) as usize;

            let val = (values[i], size);
            for b in &mut lut[start..][..1 << bits_remaining] {
                *b = val;
            }
        }

        // Build a lookup table for small AC coefficients which both decodes the value and does the
        // equivalent of receive_extend.
        let ac_lut = match class {
            HuffmanTableClass::DC => None,
            HuffmanTableClass::AC => {
                let mut table = [(0i16, 0u8); 1 << LUT_BITS];

                for (i, &(value, size)) in lut.iter().enumerate() {
                    let run_length = value >> 4;
                    let magnitude_category = value & 0x0f;

                    if magnitude_category > 0 && size + magnitude_category <= LUT_BITS {
                        let unextended_ac_value = (((i << size) & ((1 << LUT_BITS) - 1)) >> (LUT_BITS - magnitude_category)) as u16;
                        let ac_value = extend(unextended_ac_value, magnitude_category);

                        table[i] = (ac_value, (run_length << 4) | (size + magnitude_category));
                    }
                }

                Some(table)
            },
        };

        Ok(HuffmanTable {
            values: values.to_vec(),
            delta,
            maxcode,
            lut,
            ac_lut,
            skip_lut: OnceCell::new(),
        })
    }
}

// Section C.2
fn derive_huffman_codes(bits: &[u8; 16]) -> Result<(Vec<u16>, Vec<u8>)> {
    // Figure C.1
    let huffsize = bits.iter()
                       .enumerate()
                       .fold(Vec::new(), |mut acc, (i, &value)| {
                           acc.extend(iter::repeat((i + 1) as u8).take(value as usize));
                           acc
                       });

    // Figure C.2
    let mut huffcode = vec![0u16; huffsize.len()];
    let mut code_size = huffsize[0];
    let mut code = 0u32;

    for (i, &size) in huffsize.iter().enumerate() {
        while code_size < size {
            code <<= 1;
            code_size += 1;
        }

        if code >= (1u32 << size) {
            return Err(Error::Format("bad huffman code length".to_owned()));
        }

        huffcode[i] = code as u16;
        code += 1;
    }

    Ok((huffcode, huffsize))
}

// https://www.loc.gov/preservation/digital/formats/fdd/fdd000063.shtml
// "Avery Lee, writing in the rec.video.desktop newsgroup in 2001, commented that "MJPEG, or at
//  least the MJPEG in AVIs having the MJPG fourcc, is restricted JPEG with a fixed -- and
//  *omitted* -- Huffman table. The JPEG must be YCbCr colorspace, it must be 4:2:2, and it must
//  use basic Huffman encoding, not arithmetic or progressive.... You can indeed extract the
//  MJPEG frames and decode them with a regular JPEG decoder, but you have to prepend the DHT
//  segment to them, or else the decoder won't have any idea how to decompress the data.
//  The exact table necessary is given in the OpenDML spec.""
pub fn fill_default_mjpeg_tables(scan: &ScanInfo,
                                 dc_huffman_tables: &mut[Option<HuffmanTable>],
                                 ac_huffman_tables: &mut[Option<HuffmanTable>]) {
    // Section K.3.3

    if dc_huffman_tables[0].is_none() && scan.dc_table_indices.iter().any(|&i| i == 0) {
        // Table K.3
        dc_huffman_tables[0] = Some(HuffmanTable::new(
            &[0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B], HuffmanTableClass::DC).unwrap());
    }
    if dc_huffman_tables[1].is_none() && scan.dc_table_indices.iter().any(|&i| i == 1) {
        // Table K.4
        dc_huffman_tables[1] = Some(HuffmanTable::new(
            &[0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00],
            &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B], HuffmanTableClass::DC).unwrap());
    }
    if ac_huffman_tables[0].is_none() && scan.ac_table_indices.iter().any(|&i| i == 0) {
        // Table K.5
        ac_huffman_tables[0] = Some(HuffmanTable::new(
            &[0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D],
            &[0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
              0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
              0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
              0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
              0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
              0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
              0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
              0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
              0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
              0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
              0xF9, 0xFA
            ], HuffmanTableClass::AC).unwrap());
    }
    if ac_huffman_tables[1].is_none() && scan.ac_table_indices.iter().any(|&i| i == 1) {
        // Table K.6
        ac_huffman_tables[1] = Some(HuffmanTable::new(
            &[0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77],
            &[0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
              0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
              0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
              0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
              0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
              0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
              0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
              0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
              0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
              0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
              0xF9, 0xFA
            ], HuffmanTableClass::AC).unwrap());
    }
}

//! Dequantization of the ggml block formats.

use super::*;

// Each `block_*` function decodes one block and mirrors the matching
// `dequantize_row_*` of ggml-quants.c, including the order of the f32
// operations, so that results are bit-identical to ggml and gguf-py.

/// Applies `decode` to each block of `bytes` and the matching slice of `out`.
/// The caller has checked that `bytes` holds exactly the blocks of `out`.
pub(super) fn for_each_block<const BYTES: usize, const N: usize>(
    bytes: &[u8],
    out: &mut [f32],
    decode: impl Fn(&[u8; BYTES], &mut [f32; N]),
) {
    for (block, y) in bytes.chunks_exact(BYTES).zip(out.chunks_exact_mut(N)) {
        // Both conversions succeed because chunks_exact yields exact sizes.
        if let (Ok(block), Ok(y)) = (block.try_into(), y.try_into()) {
            decode(block, y);
        }
    }
}

pub(super) fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Converts f16 values in chunks so that half's vectorized slice conversion
/// does the work. Copying each chunk into a buffer avoids casting the data to
/// `&[f16]`, which could be misaligned when `general.alignment` is 1.
pub(super) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    const CHUNK: usize = 64;
    let mut buf = [f16::ZERO; CHUNK];
    for (src, dst) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
        let buf = &mut buf[..dst.len()];
        for (h, b) in buf.iter_mut().zip(src.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        buf.convert_to_f32_slice(dst);
    }
}

/// Q4_0: f16 scale `d`, then 16 bytes of 4-bit quants. The low nibbles are
/// elements 0..16 and the high nibbles elements 16..32. Each value is
/// (q - 8) * d.
pub(super) fn block_q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: f16 scale `d` and minimum `m`, then nibbles as in Q4_0. Each value
/// is q * d + m.
pub(super) fn block_q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// Q5_0: f16 `d`, a u32 whose bit i is the fifth bit of element i, then
/// nibbles as in Q4_0. Each value is (q - 16) * d.
pub(super) fn block_q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = (((qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

/// Q5_1: f16 `d` and `m`, the fifth bits as in Q5_0, then nibbles. Each value
/// is q * d + m.
pub(super) fn block_q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = (((qh >> j) & 1) << 4) as u8;
        let h1 = (((qh >> (j + 16)) & 1) << 4) as u8;
        y[j] = ((qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

/// Q8_0: f16 `d`, then 32 signed bytes. Each value is q * d.
pub(super) fn block_q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (x, &q) in y.iter_mut().zip(&b[2..34]) {
        *x = q as i8 as f32 * d;
    }
}

/// Q2_K: 16 bytes of 4-bit scale (low) and min (high) pairs, 64 bytes of
/// 2-bit quants, then f16 `d` and `dmin`. Each 128-element half reads its 32
/// quant bytes four times, at bit shifts 0, 2, 4 and 6. Every 16 elements
/// take the next scale byte, and each value is d * scale * q - dmin * min.
pub(super) fn block_q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let scales = &b[0..16];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    let mut out = 0;
    let mut is = 0;
    for half in 0..2 {
        let q = &b[16 + 32 * half..16 + 32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                for &byte in &q[16 * part..16 * part + 16] {
                    y[out] = dl * ((byte >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// Unpacks the sixteen 6-bit Q3_K scales: the low 4 bits come from the
/// nibbles of bytes 0..8 (low nibbles first), the high 2 bits from bytes
/// 8..12 at shifts 0, 2, 4 and 6. Scales are stored with an offset of 32.
pub(super) fn q3_k_scales(packed: &[u8]) -> [i32; 16] {
    let mut scales = [0i32; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *s = (low | (high << 4)) as i32 - 32;
    }
    scales
}

/// Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit quants, 12 bytes of
/// packed 6-bit scales, then f16 `d`. The quants are laid out as in Q2_K.
/// Element e takes bit e / 32 of mask byte e % 32, and a clear bit subtracts
/// 4 from its quant. Each value is d * (scale - 32) * q.
pub(super) fn block_q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let hmask = &b[0..32];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut out = 0;
    let mut is = 0;
    let mut mask = 1u8;
    for half in 0..2 {
        let q = &b[32 + 32 * half..32 + 32 * half + 32];
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                for l in 16 * part..16 * part + 16 {
                    let low = ((q[l] >> shift) & 3) as i32;
                    let high = if hmask[l] & mask != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            mask <<= 1;
        }
    }
}

/// Returns the 6-bit scale and min of sub-block `j` (0..8) from the 12
/// packed bytes shared by Q4_K and Q5_K (`get_scale_min_k4` in ggml).
pub(super) fn k4_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: f16 `d` and `dmin`, 12 bytes of packed 6-bit scales and mins, then
/// 128 bytes of nibbles. Each 64-element group reads 32 bytes, low nibbles
/// first, with its own two scale/min pairs. Each value is
/// d * scale * q - dmin * min.
pub(super) fn block_q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for group in 0..4 {
        let q = &b[16 + 32 * group..16 + 32 * group + 32];
        let (sc1, m1) = k4_scale_min(2 * group, scales);
        let (sc2, m2) = k4_scale_min(2 * group + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let y = &mut y[64 * group..64 * group + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0F) as f32 - min1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// Q5_K: Q4_K with 32 bytes of fifth bits before the nibbles. Element e
/// takes bit e / 32 of byte e % 32 of those.
pub(super) fn block_q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    for group in 0..4 {
        let ql = &b[48 + 32 * group..48 + 32 * group + 32];
        let (sc1, m1) = k4_scale_min(2 * group, scales);
        let (sc2, m2) = k4_scale_min(2 * group + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (bit1, bit2) = (2 * group, 2 * group + 1);
        let y = &mut y[64 * group..64 * group + 64];
        for l in 0..32 {
            let h1 = ((qh[l] >> bit1) & 1) << 4;
            let h2 = ((qh[l] >> bit2) & 1) << 4;
            y[l] = d1 * ((ql[l] & 0x0F) | h1) as f32 - min1;
            y[l + 32] = d2 * ((ql[l] >> 4) | h2) as f32 - min2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed
/// 8-bit scales (one per 16 elements), then f16 `d`. Each 128-element half
/// uses 64 low bytes and 32 high bytes. Its element l + 32k (l < 32, k < 4)
/// takes the low nibble (k < 2) or high nibble (k >= 2) of low byte
/// l + 32 (k % 2), and bits 2k and 2k + 1 of high byte l. Each value is
/// d * scale * (q - 32).
pub(super) fn block_q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn type_ids_round_trip() {
        for id in 0..64 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
        assert_eq!(GgmlType::from_id(12), GgmlType::Q4_K);
        assert_eq!(GgmlType::from_id(30), GgmlType::BF16);
        assert_eq!(GgmlType::Q4_K.name(), "Q4_K");
        assert_eq!(GgmlType::from_id(16).name(), "IQ2_XXS");
        assert_eq!(GgmlType::from_id(39).name(), "MXFP4");
        assert_eq!(GgmlType::from_id(99).name(), "type 99");
    }

    #[test]
    fn value_accessors_convert_integers() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I32(7).as_u64(), Some(7));
        assert_eq!(Value::U64(u64::MAX).as_i64(), None);
        assert_eq!(Value::U8(3).as_f64(), Some(3.0));
        assert_eq!(Value::F32(0.5).as_f64(), Some(0.5));
        assert_eq!(Value::F32(0.5).as_i64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::String("a".into()).as_str(), Some("a"));
    }

    #[test]
    fn q4_0_low_nibbles_first() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        for j in 0..16 {
            b[2 + j] = j as u8 | ((15 - j as u8) << 4);
        }
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5, "element {j}");
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5, "element {}", j + 16);
        }
    }

    #[test]
    fn q5_1_fifth_bit_per_element() {
        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(-2.0));
        // Fifth bit set for elements 1 and 17 only.
        b[4..8].copy_from_slice(&((1u32 << 1) | (1 << 17)).to_le_bytes());
        b[8 + 1] = 0x33;
        let y = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        assert_eq!(y[0], -2.0);
        assert_eq!(y[1], 16.0 + 3.0 - 2.0);
        assert_eq!(y[16], -2.0);
        assert_eq!(y[17], 16.0 + 3.0 - 2.0);
        assert_eq!(y[18], -2.0);
    }

    #[test]
    fn q8_0_signed_quants() {
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&f16_bytes(0.25));
        b[2] = (-128i8) as u8;
        b[33] = 127;
        let y = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!(y[0], -32.0);
        assert_eq!(y[1], 0.0);
        assert_eq!(y[31], 31.75);
    }

    #[test]
    fn k4_scales_unpack_high_bits() {
        // Sub-block 5: scale = low nibble of byte 9 | top bits of byte 1,
        // min = high nibble of byte 9 | top bits of byte 5.
        let mut q = [0u8; 12];
        q[1] = 0b1100_0000;
        q[5] = 0b0100_0000;
        q[9] = 0xA3;
        assert_eq!(k4_scale_min(5, &q), (0x33, 0x1A));
        q[0] = 0xFF;
        q[4] = 0x80 | 5;
        assert_eq!(k4_scale_min(0, &q), (63, 5));
    }

    #[test]
    fn q3_k_scales_unpack_offset() {
        let mut packed = [0u8; 12];
        packed[0] = 0x21; // scale 0 low = 1, scale 8 low = 2
        packed[8] = 0b0000_0011 | (0b10 << 4); // scale 0 high = 3, scale 8 high = 2
        let scales = q3_k_scales(&packed);
        assert_eq!(scales[0], (1 | (3 << 4)) - 32);
        assert_eq!(scales[8], (2 | (2 << 4)) - 32);
        assert_eq!(scales[1], -32);
    }

    #[test]
    fn q6_k_element_order() {
        let mut b = [0u8; 210];
        b[208..210].copy_from_slice(&f16_bytes(1.0));
        for s in &mut b[192..208] {
            *s = 1;
        }
        // Low byte 32 contains element 32 (low nibble) and element 96 (high).
        b[32] = 0x21;
        // High byte 0 contains the high bits of elements 0, 32, 64 and 96.
        b[128] = 0b11_00_01_00;
        let y = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        assert_eq!(y[0], -32.0);
        assert_eq!(y[32], (1 + 16 - 32) as f32);
        assert_eq!(y[64], -32.0);
        assert_eq!(y[96], (2 + 48 - 32) as f32);
    }

    #[test]
    fn dequantize_rejects_bad_lengths() {
        let err = dequantize(GgmlType::Q4_0, &[0u8; 18], 16).unwrap_err();
        assert!(
            err.to_string().contains("multiple of the block size 32"),
            "{err}"
        );
        let err = dequantize(GgmlType::Q4_0, &[0u8; 35], 64).unwrap_err();
        assert!(err.to_string().contains("need 36 bytes"), "{err}");
        let err = dequantize(GgmlType::from_id(20), &[0u8; 18], 32).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("IQ4_NL"), "{err}");
    }
}

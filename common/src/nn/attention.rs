//! Scaled dot-product attention for multi-head, multi-query and grouped-query
//! attention, with a KV cache and causal, banded or custom masks.
//!
//! Models own their projections (their names differ between checkpoints) and
//! call [`scaled_dot_product_attention`] on the projected heads. With `h`
//! query heads and `g` KV heads, query head `i` reads KV head `i / (h / g)`:
//! `g = h` is multi-head attention, `g = 1` multi-query attention (Shazeer,
//! 2019) and anything between grouped-query attention (Ainslie et al., 2023).

use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// The set of keys each query may attend to.
#[derive(Debug)]
pub enum Mask {
    /// Every query attends to every key.
    None,
    /// Query `i` attends to keys at or before its own position. Queries are
    /// the last `seq` positions of the `kv_seq` keys, so this also holds when
    /// the keys include a KV cache.
    Causal,
    /// Causal, and only the `window` most recent positions including the
    /// query's own (the locally banded attention of sparse transformers).
    Banded { window: i64 },
    /// A boolean tensor broadcastable to `(batch, heads, seq, kv_seq)`, true
    /// where attention is allowed.
    Custom(Tensor),
}

impl Mask {
    /// Builds the boolean mask for `seq` queries over `kv_seq` keys, or None
    /// when no masking is needed.
    fn to_tensor(&self, seq: i64, kv_seq: i64, device: Device) -> Option<Tensor> {
        let window = match self {
            Mask::None => return None,
            Mask::Custom(mask) => return Some(mask.shallow_clone()),
            Mask::Causal => None,
            Mask::Banded { window } => Some(*window),
        };
        let offset = kv_seq - seq;
        let query_pos = Tensor::arange_start(offset, kv_seq, (Kind::Int64, device)).unsqueeze(1);
        let key_pos = Tensor::arange(kv_seq, (Kind::Int64, device)).unsqueeze(0);
        let mut allowed = key_pos.le_tensor(&query_pos);
        if let Some(window) = window {
            allowed = allowed.logical_and(&key_pos.gt_tensor(&(&query_pos - window)));
        }
        Some(allowed)
    }
}

/// Keys and values of the positions already processed by one attention layer.
#[derive(Debug, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
    window: Option<i64>,
}

impl KvCache {
    /// Creates an empty cache that keeps every position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty cache that keeps only the `window` most recent positions, for
    /// a banded layer that never reads older ones.
    pub fn with_window(window: i64) -> Self {
        Self {
            kv: None,
            window: Some(window),
        }
    }

    /// Returns the number of cached positions.
    pub fn len(&self) -> i64 {
        self.kv.as_ref().map_or(0, |(k, _)| k.size()[2])
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.kv.is_none()
    }

    /// Returns the memory of the cached keys and values in bytes.
    pub fn bytes(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, v)| {
            (k.numel() + v.numel()) * k.kind().elt_size_in_bytes()
        })
    }

    /// Appends keys and values of shape `(batch, kv_heads, seq, head_dim)` and
    /// returns all cached keys and values including them.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match &self.kv {
            None => (k.shallow_clone(), v.shallow_clone()),
            Some((ck, cv)) => (Tensor::f_cat(&[ck, k], 2)?, Tensor::f_cat(&[cv, v], 2)?),
        };
        let stored = match self.window {
            Some(w) if k.size()[2] > w => {
                let len = k.size()[2];
                (k.narrow(2, len - w, w), v.narrow(2, len - w, w))
            }
            _ => (k.shallow_clone(), v.shallow_clone()),
        };
        self.kv = Some(stored);
        Ok((k, v))
    }
}

/// Computes `softmax(scale * q k^T + mask) v` per head, where `scale` is
/// `1 / sqrt(head_dim)` when None (GPT-Neo, for one, uses 1).
///
/// # Shapes
/// - `q`: `(batch, heads, seq, head_dim)`
/// - `k`, `v`: `(batch, kv_heads, kv_seq, head_dim)`, `heads` a multiple of
///   `kv_heads`
/// - returns `(batch, heads, seq, head_dim)`
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Mask,
    scale: Option<f64>,
) -> Result<Tensor> {
    let (q_size, k_size) = (q.size(), k.size());
    if q.dim() != 4 || k.dim() != 4 || v.size() != k_size {
        return Err(Error::InvalidInput(format!(
            "attention expects q (batch, heads, seq, head_dim) and k, v \
             (batch, kv_heads, kv_seq, head_dim) of equal shape; got q {q_size:?}, \
             k {k_size:?}, v {:?}",
            v.size()
        )));
    }
    let (heads, kv_heads) = (q_size[1], k_size[1]);
    if heads % kv_heads != 0 || q_size[3] != k_size[3] || q_size[0] != k_size[0] {
        return Err(Error::InvalidInput(format!(
            "attention: {heads} query heads cannot share {kv_heads} KV heads, or \
             q {q_size:?} and k {k_size:?} differ in batch or head_dim"
        )));
    }
    let (seq, kv_seq) = (q_size[2], k_size[2]);
    // Without a cache the causal mask is the kernel's own, which skips the
    // masked half of the scores instead of computing and discarding it.
    let is_causal = matches!(mask, Mask::Causal) && seq == kv_seq;
    let allowed = if is_causal {
        None
    } else {
        mask.to_tensor(seq, kv_seq, q.device())
    };
    // The fused kernel takes the mask in the query's dtype as an additive bias
    // or as booleans; booleans keep -inf handling inside the kernel.
    let out = Tensor::f_scaled_dot_product_attention(
        q,
        k,
        v,
        allowed.as_ref(),
        0.0,
        is_causal,
        scale,
        heads != kv_heads,
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Double, Device::Cpu))
    }

    /// Attention written out with explicit loops over heads, the definition.
    fn naive(q: &Tensor, k: &Tensor, v: &Tensor, allowed: Option<&Tensor>) -> Tensor {
        let group = q.size()[1] / k.size()[1];
        let mut heads = Vec::new();
        for h in 0..q.size()[1] {
            let (qh, kh, vh) = (
                q.select(1, h),
                k.select(1, h / group),
                v.select(1, h / group),
            );
            let mut scores = qh.matmul(&kh.transpose(-2, -1)) / (q.size()[3] as f64).sqrt();
            if let Some(allowed) = allowed {
                scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
            }
            heads.push(scores.softmax(-1, Kind::Double).matmul(&vh));
        }
        Tensor::stack(&heads, 1)
    }

    #[test]
    fn grouped_query_reads_right_kv_head() {
        tch::manual_seed(2);
        let (q, k, v) = (
            randn(&[2, 8, 5, 4]),
            randn(&[2, 2, 5, 4]),
            randn(&[2, 2, 5, 4]),
        );
        let out = scaled_dot_product_attention(&q, &k, &v, &Mask::Causal, None).unwrap();
        let allowed = Mask::Causal.to_tensor(5, 5, Device::Cpu);
        let expected = naive(&q, &k, &v, allowed.as_ref());
        assert!(out.allclose(&expected, 1e-10, 1e-10, false));
    }

    #[test]
    fn grouped_equals_multi_head_with_copied_kv() {
        tch::manual_seed(3);
        let (q, k, v) = (
            randn(&[1, 6, 4, 8]),
            randn(&[1, 3, 4, 8]),
            randn(&[1, 3, 4, 8]),
        );
        let gqa = scaled_dot_product_attention(&q, &k, &v, &Mask::Causal, None).unwrap();
        let k_mha = k.repeat_interleave_self_int(2, 1, None);
        let v_mha = v.repeat_interleave_self_int(2, 1, None);
        let mha = scaled_dot_product_attention(&q, &k_mha, &v_mha, &Mask::Causal, None).unwrap();
        assert!(gqa.allclose(&mha, 1e-10, 1e-10, false));
    }

    #[test]
    fn causal_mask_with_cache_offset() {
        let mask = Mask::Causal.to_tensor(2, 5, Device::Cpu).unwrap();
        let rows: Vec<Vec<bool>> = Vec::try_from(mask).unwrap();
        assert_eq!(rows[0], [true, true, true, true, false]);
        assert_eq!(rows[1], [true, true, true, true, true]);
    }

    #[test]
    fn banded_mask_keeps_window() {
        let mask = Mask::Banded { window: 2 }
            .to_tensor(4, 4, Device::Cpu)
            .unwrap();
        let rows: Vec<Vec<bool>> = Vec::try_from(mask).unwrap();
        assert_eq!(rows[3], [false, false, true, true]);
        assert_eq!(rows[0], [true, false, false, false]);
    }

    #[test]
    fn windowed_cache_keeps_recent_positions() {
        let mut cache = KvCache::with_window(3);
        for step in 0..5 {
            let k = Tensor::full([1, 1, 1, 2], step as f64, (Kind::Float, Device::Cpu));
            let (all_k, _) = cache.append(&k, &k).unwrap();
            assert_eq!(all_k.size()[2], (step + 1).min(4));
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn mismatched_heads_is_error() {
        let (q, k) = (randn(&[1, 3, 2, 4]), randn(&[1, 2, 2, 4]));
        let err = scaled_dot_product_attention(&q, &k, &k, &Mask::None, None).unwrap_err();
        assert!(err.to_string().contains("3 query heads"), "{err}");
    }
}

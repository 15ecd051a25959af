//! The pixel map and the logit-Laplace likelihood.
//!
//! A pixel value `x` in `[0, 1]` is mapped to `(1 - 2 eps) x + eps`, inside
//! `(eps, 1 - eps)`, so that its logit is bounded. The decoder gives each
//! pixel a location `mu` and a log-scale `ln b`. The pixel's density is the
//! logit-Laplace distribution (Ramesh et al., 2021, "Zero-Shot
//! Text-to-Image Generation", section A.3). It is a Laplace distribution on
//! `logit(x)`, carried to `(0, 1)` by the change of variables `y = logit(x)`,
//! whose derivative is `1 / (x (1 - x))`:
//!
//! ```text
//! f(x | mu, b) = 1 / (2 b x (1 - x)) * exp(-|logit(x) - mu| / b)
//! ```

use tch::Tensor;

/// Margin `eps` of the pixel map, which keeps mapped pixels inside
/// `(eps, 1 - eps)`.
pub const LOGIT_LAPLACE_EPS: f64 = 0.1;

/// Maps pixel values in `[0, 1]` into `(eps, 1 - eps)`.
pub fn map_pixels(x: &Tensor) -> Tensor {
    x * (1.0 - 2.0 * LOGIT_LAPLACE_EPS) + LOGIT_LAPLACE_EPS
}

/// Inverts [`map_pixels`] and clamps the result to `[0, 1]`.
pub fn unmap_pixels(x: &Tensor) -> Tensor {
    ((x - LOGIT_LAPLACE_EPS) / (1.0 - 2.0 * LOGIT_LAPLACE_EPS)).clamp(0.0, 1.0)
}

/// Returns the log-density of pixels `x` in `(0, 1)` under the logit-Laplace
/// distribution with location `mu` and log-scale `log_b`, element-wise:
/// `-|logit(x) - mu| / b - ln(2 b) - ln x - ln(1 - x)`.
pub fn logit_laplace_log_prob(x: &Tensor, mu: &Tensor, log_b: &Tensor) -> Tensor {
    let log_x = x.log();
    let log_1mx = (-x).log1p();
    let logit = &log_x - &log_1mx;
    -(logit - mu).abs() * (-log_b).exp() - log_b - std::f64::consts::LN_2 - log_x - log_1mx
}

/// Splits the decoder's output `(batch, 2 C, h, w)` into the location and
/// the log-scale, each `(batch, C, h, w)`.
pub fn split_stats(stats: &Tensor) -> (Tensor, Tensor) {
    let channels = stats.size()[1] / 2;
    (
        stats.narrow(1, 0, channels),
        stats.narrow(1, channels, channels),
    )
}

/// Returns the image that the decoder's output describes, `unmap(sigmoid(mu))`
/// in `[0, 1]`, as `(batch, C, h, w)`.
pub fn reconstruct(stats: &Tensor) -> Tensor {
    unmap_pixels(&split_stats(stats).0.sigmoid())
}

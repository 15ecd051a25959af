//! The shape of the encoder and decoder.

use common::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The shape of OpenAI's dVAE encoder and decoder, with the field names of
/// the `dall_e` package's `Encoder` and `Decoder` attributes.
///
/// Group `g` (from 1) of the encoder has `n_hid * 2^(g-1)` channels, and
/// every group except the last is followed by a 2x2 max-pool. The decoder
/// mirrors this with nearest-neighbour up-sampling. An image of `H x W` pixels
/// therefore gives a grid of `H / f x W / f` codes with `f = 2^(group_count - 1)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Number of groups of residual blocks. OpenAI's model has 4 (8x
    /// down-sampling).
    #[serde(default = "default_group_count")]
    pub group_count: i64,
    /// Channels of the first group. Each later group doubles them.
    pub n_hid: i64,
    /// Residual blocks in each group.
    pub n_blk_per_group: i64,
    /// Channels of the images the encoder reads.
    pub input_channels: i64,
    /// Channels of the images the decoder writes. Its output has twice as
    /// many, a location and a log-scale per channel.
    pub output_channels: i64,
    /// Codes in the vocabulary.
    pub vocab_size: i64,
    /// Channels of the decoder's 1x1 input convolution.
    pub n_init: i64,
    /// Side in pixels of the square images the model was trained on, to
    /// which other images are resized and cropped. It is not an attribute of
    /// `dall_e`'s modules, and OpenAI's model was trained at 256.
    #[serde(default = "default_image_size")]
    pub image_size: i64,
}

fn default_image_size() -> i64 {
    256
}

fn default_group_count() -> i64 {
    4
}

/// Maximum `image_size` accepted, in pixels.
const MAX_IMAGE_SIZE: i64 = 4096;

/// Maximum `group_count` accepted, which gives 2^9 = 512x down-sampling.
const MAX_GROUPS: i64 = 10;

impl Config {
    /// Returns the shape of DALL-E's dVAE: 256 x 256 RGB images to 32 x 32
    /// codes out of 8192.
    pub fn openai() -> Self {
        Self {
            group_count: 4,
            n_hid: 256,
            n_blk_per_group: 2,
            input_channels: 3,
            output_channels: 3,
            vocab_size: 8192,
            n_init: 128,
            image_size: 256,
        }
    }

    /// Returns a small shape for MNIST's 28 x 28 digits: 3 groups, so 7 x 7
    /// codes out of 512.
    pub fn mnist() -> Self {
        Self {
            group_count: 3,
            n_hid: 32,
            n_blk_per_group: 1,
            input_channels: 1,
            output_channels: 1,
            vocab_size: 512,
            n_init: 64,
            image_size: 28,
        }
    }

    /// The names [`Config::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &["openai", "mnist"];

    /// Returns the preset called `name`: `openai` or `mnist`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "openai" => Ok(Self::openai()),
            "mnist" => Ok(Self::mnist()),
            _ => Err(Error::InvalidInput(format!(
                "unknown dVAE preset {name:?}: use openai or mnist"
            ))),
        }
    }

    /// Writes the configuration as a `config.json` at `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| {
            Error::InvalidInput(format!("failed to serialize the dVAE config: {e}"))
        })?;
        common::checkpoint::write_atomic(path, format!("{json}\n").as_bytes())
    }

    /// Reads and validates a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, "dVAE config", e.to_string()))?;
        config
            .validate()
            .map_err(|e| Error::format(path, "dVAE config", e.to_string()))?;
        Ok(config)
    }

    /// Checks that the shape can be built. The error names the first invalid
    /// value.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::InvalidInput(message));
        for (name, value) in [
            ("n_hid", self.n_hid),
            ("n_blk_per_group", self.n_blk_per_group),
            ("input_channels", self.input_channels),
            ("output_channels", self.output_channels),
            ("vocab_size", self.vocab_size),
            ("n_init", self.n_init),
            ("image_size", self.image_size),
        ] {
            if value < 1 {
                return bad(format!("{name} must be at least 1, got {value}"));
            }
        }
        if !(1..=MAX_GROUPS).contains(&self.group_count) {
            return bad(format!(
                "group_count must be between 1 and {MAX_GROUPS}, got {}",
                self.group_count
            ));
        }
        if self.n_hid % 4 != 0 {
            return bad(format!(
                "n_hid must be a multiple of 4 (each block narrows to a quarter), got {}",
                self.n_hid
            ));
        }
        let f = self.downsample_factor();
        if self.image_size % f != 0 || self.image_size > MAX_IMAGE_SIZE {
            return bad(format!(
                "image_size must be a multiple of the down-sampling factor {f}, at most \
                 {MAX_IMAGE_SIZE}, got {}",
                self.image_size
            ));
        }
        if self.num_parameters() > MAX_PARAMETERS {
            return bad(format!(
                "the shape has {} parameters, more than the maximum of {MAX_PARAMETERS}: \
                 reduce n_hid, n_blk_per_group or vocab_size",
                self.num_parameters()
            ));
        }
        Ok(())
    }

    /// Returns the factor from image side to code-grid side,
    /// `2^(group_count - 1)`.
    pub fn downsample_factor(&self) -> i64 {
        1 << (self.group_count - 1).clamp(0, MAX_GROUPS)
    }

    /// Returns the channels of encoder group `group` (from 1).
    pub(crate) fn encoder_width(&self, group: i64) -> i64 {
        self.n_hid
            .saturating_mul(1 << (group - 1).clamp(0, MAX_GROUPS))
    }

    /// Returns the channels of decoder group `group` (from 1).
    pub(crate) fn decoder_width(&self, group: i64) -> i64 {
        self.encoder_width(self.group_count - group + 1)
    }

    /// Lists the encoder's convolutions, from the pixels to the logits over
    /// the codes. Group `g` (from 1) runs at `image_size / 2^(g-1)` pixels
    /// square, and the logits at the code grid.
    fn encoder_convs(&self) -> Vec<ConvShape> {
        let mut convs = vec![ConvShape::new(
            self.input_channels,
            self.n_hid,
            7,
            self.image_size,
        )];
        for group in 1..=self.group_count {
            let width = self.encoder_width(group);
            let side = self.image_size >> (group - 1).clamp(0, MAX_GROUPS);
            for block in 0..self.n_blk_per_group {
                let n_in = if block == 0 {
                    self.encoder_width((group - 1).max(1))
                } else {
                    width
                };
                push_block(&mut convs, n_in, width, [3, 3, 3, 1], side);
            }
        }
        let grid = self.image_size / self.downsample_factor();
        let width = self.encoder_width(self.group_count);
        convs.push(ConvShape::new(width, self.vocab_size, 1, grid));
        convs
    }

    /// Lists the decoder's convolutions, from the code grid to the
    /// logit-Laplace parameters of the pixels. Group `g` (from 1) runs at
    /// `2^(g-1)` times the grid's side.
    fn decoder_convs(&self) -> Vec<ConvShape> {
        let grid = self.image_size / self.downsample_factor();
        let mut convs = vec![ConvShape::new(self.vocab_size, self.n_init, 1, grid)];
        for group in 1..=self.group_count {
            let width = self.decoder_width(group);
            let side = grid.saturating_mul(1 << (group - 1).clamp(0, MAX_GROUPS));
            for block in 0..self.n_blk_per_group {
                let n_in = match (group, block) {
                    (1, 0) => self.n_init,
                    (_, 0) => self.decoder_width(group - 1),
                    _ => width,
                };
                push_block(&mut convs, n_in, width, [1, 3, 3, 3], side);
            }
        }
        let output_width = self.output_channels.saturating_mul(2);
        convs.push(ConvShape::new(self.n_hid, output_width, 1, self.image_size));
        convs
    }

    /// Returns the number of parameters of the encoder, computed in closed
    /// form.
    pub fn encoder_parameters(&self) -> u64 {
        parameters(&self.encoder_convs())
    }

    /// Returns the number of parameters of the decoder, computed in closed
    /// form.
    pub fn decoder_parameters(&self) -> u64 {
        parameters(&self.decoder_convs())
    }

    /// Returns the number of parameters of the encoder and the decoder
    /// together.
    pub fn num_parameters(&self) -> u64 {
        self.encoder_parameters()
            .saturating_add(self.decoder_parameters())
    }

    /// Counts the forward FLOPs of the encoder on one image of `image_size`
    /// pixels square, from the pixels to the logits over the codes: 2 FLOPs
    /// per multiply-add of each convolution, summed over its output pixels.
    /// Group `g` (from 1) runs at `image_size / 2^(g-1)` pixels square.
    /// Biases, ReLUs, max-pooling and the residual additions are not counted.
    /// Saturates at `u64::MAX`.
    pub fn encoder_flops(&self) -> u64 {
        flops(&self.encoder_convs())
    }

    /// Counts the forward FLOPs of the decoder on the code grid of one image,
    /// `image_size / downsample_factor()` codes square, to the logit-Laplace
    /// parameters of its pixels. The decoder reads a distribution over the
    /// codes at each position (one-hot for hard codes), so its 1 x 1 input
    /// convolution costs `vocab_size * n_init` multiply-adds per position.
    /// Group `g` (from 1) runs at `2^(g-1)` times the grid's side. Counted
    /// as in [`Config::encoder_flops`].
    pub fn decoder_flops(&self) -> u64 {
        flops(&self.decoder_convs())
    }

    /// Counts the forward FLOPs of one image through its codes and back:
    /// [`Config::encoder_flops`] plus [`Config::decoder_flops`].
    pub fn forward_flops(&self) -> u64 {
        self.encoder_flops().saturating_add(self.decoder_flops())
    }
}

/// A convolution with bias and "same" padding: its channels, kernel side and
/// output side in pixels.
struct ConvShape {
    n_in: u64,
    n_out: u64,
    kernel: u64,
    side: u64,
}

impl ConvShape {
    fn new(n_in: i64, n_out: i64, kernel: i64, side: i64) -> Self {
        let [n_in, n_out, kernel, side] = [n_in, n_out, kernel, side].map(|x| x.max(0) as u64);
        Self {
            n_in,
            n_out,
            kernel,
            side,
        }
    }

    /// Returns the weights and the bias.
    fn parameters(&self) -> u64 {
        self.n_out
            .saturating_mul(self.n_in)
            .saturating_mul(self.kernel.saturating_mul(self.kernel))
            .saturating_add(self.n_out)
    }

    /// Returns the multiply-adds over the output pixels.
    fn macs(&self) -> u64 {
        [self.n_out, self.kernel, self.kernel, self.side, self.side]
            .iter()
            .fold(self.n_in, |product, &x| product.saturating_mul(x))
    }
}

/// Appends the convolutions of one residual block from `n_in` to `width`
/// channels: a 1x1 shortcut where the width changes (the identity
/// otherwise), then four convolutions with the given kernel sides through
/// `width / 4` hidden channels.
fn push_block(convs: &mut Vec<ConvShape>, n_in: i64, width: i64, kernels: [i64; 4], side: i64) {
    if n_in != width {
        convs.push(ConvShape::new(n_in, width, 1, side));
    }
    let hid = width / 4;
    let channels = [n_in, hid, hid, hid, width];
    for (i, kernel) in kernels.into_iter().enumerate() {
        convs.push(ConvShape::new(channels[i], channels[i + 1], kernel, side));
    }
}

/// Sums the parameters of `convs`, saturating at `u64::MAX`.
fn parameters(convs: &[ConvShape]) -> u64 {
    convs
        .iter()
        .fold(0, |total, conv| total.saturating_add(conv.parameters()))
}

/// Sums the FLOPs of `convs`, 2 per multiply-add, saturating at `u64::MAX`.
fn flops(convs: &[ConvShape]) -> u64 {
    convs
        .iter()
        .fold(0u64, |total, conv| total.saturating_add(conv.macs()))
        .saturating_mul(2)
}

/// Maximum number of parameters of a shape (ten billion). It is far above any
/// dVAE and keeps a mistyped config from allocating an absurd amount of memory.
const MAX_PARAMETERS: u64 = 10_000_000_000;

//! OpenAI's dVAE encoder and decoder, with the tensor names of its
//! checkpoints.

use crate::Config;
use common::{Error, Result};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// A convolution with "same" padding, named `w` and `b` as in `dall_e`.
#[derive(Debug)]
struct Conv2d {
    w: Tensor,
    b: Tensor,
    padding: i64,
}

impl Conv2d {
    /// Creates a `kw x kw` convolution with weights drawn from N(0, 1 / fan-in)
    /// and a zero bias, as in `dall_e`.
    fn new(p: nn::Path, n_in: i64, n_out: i64, kw: i64) -> Self {
        let stdev = 1.0 / ((n_in * kw * kw) as f64).sqrt();
        Self {
            w: p.var(
                "w",
                &[n_out, n_in, kw, kw],
                Init::Randn { mean: 0.0, stdev },
            ),
            b: p.var("b", &[n_out], Init::Const(0.0)),
            padding: (kw - 1) / 2,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let pad = [self.padding, self.padding];
        x.conv2d(&self.w, Some(&self.b), [1, 1], pad, [1, 1], 1)
    }
}

/// A residual block that computes `shortcut(x) + post_gain * res_path(x)`.
///
/// `res_path` is four ReLU-convolution pairs through a quarter of the output
/// width. `post_gain = 1 / n_layers^2` keeps a deep stack near the identity at
/// initialisation.
#[derive(Debug)]
struct Block {
    /// A 1x1 convolution where the width changes, or `None` for the identity.
    id_path: Option<Conv2d>,
    res_path: [Conv2d; 4],
    post_gain: f64,
}

impl Block {
    /// Creates a block whose four convolutions have the kernel sizes
    /// `kernels`: 3, 3, 3, 1 in the encoder and 1, 3, 3, 3 in the decoder.
    fn new(p: nn::Path, n_in: i64, n_out: i64, n_layers: i64, kernels: [i64; 4]) -> Self {
        let hid = n_out / 4;
        let res = &p / "res_path";
        let widths = [(n_in, hid), (hid, hid), (hid, hid), (hid, n_out)];
        let res_path = std::array::from_fn(|i| {
            let (a, b) = widths[i];
            Conv2d::new(&res / format!("conv_{}", i + 1), a, b, kernels[i])
        });
        Self {
            id_path: (n_in != n_out).then(|| Conv2d::new(&p / "id_path", n_in, n_out, 1)),
            res_path,
            post_gain: 1.0 / (n_layers * n_layers) as f64,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.res_path[0].forward(&x.relu());
        for conv in &self.res_path[1..] {
            // The convolution keeps its input, not its output, for the
            // backward pass, so the ReLU may overwrite the output.
            h = conv.forward(&h.relu_());
        }
        // Scaling and adding in place saves two allocations of the block's
        // output size. Neither the convolution (which keeps its input) nor
        // the scaling or the addition keeps `h` for the backward pass.
        h *= self.post_gain;
        match &self.id_path {
            Some(conv) => h += conv.forward(x),
            None => h += x,
        }
        h
    }
}

/// A group of blocks, followed by resampling by 2 in each direction (max-pool
/// in the encoder, nearest-neighbour up-sampling in the decoder) or by nothing.
#[derive(Debug)]
struct Group {
    blocks: Vec<Block>,
    resample: Resample,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Resample {
    None,
    MaxPool,
    Upsample,
}

impl Group {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for block in &self.blocks {
            h = block.forward(&h);
        }
        match self.resample {
            Resample::None => h,
            Resample::MaxPool => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            Resample::Upsample => {
                let size = h.size();
                h.upsample_nearest2d([size[2] * 2, size[3] * 2], None, None)
            }
        }
    }
}

/// The form that the encoder and the decoder share: an input convolution,
/// the groups of blocks, then a ReLU and a 1x1 output convolution, all
/// under `blocks`.
#[derive(Debug)]
struct Stack {
    input: Conv2d,
    groups: Vec<Group>,
    output: Conv2d,
}

/// The sizes that tell the encoder's stack from the decoder's.
struct StackShape<W: Fn(i64) -> i64> {
    /// Input channels, output channels and kernel size of the input
    /// convolution.
    input: (i64, i64, i64),
    /// Channels of group `g` (from 1).
    width: W,
    /// Kernel sizes of the four convolutions of each block.
    kernels: [i64; 4],
    /// Resampling after every group but the last.
    resample: Resample,
    /// Channels of the output convolution.
    output: i64,
}

impl Stack {
    fn new<W: Fn(i64) -> i64>(p: &nn::Path, config: &Config, shape: StackShape<W>) -> Self {
        let blocks = p / "blocks";
        let (n_in, n_first, kw) = shape.input;
        let width = &shape.width;
        let n_layers = config.group_count * config.n_blk_per_group;
        let groups = (1..=config.group_count)
            .map(|g| {
                let p = &blocks / format!("group_{g}");
                let out = width(g);
                let blocks = (0..config.n_blk_per_group)
                    .map(|i| {
                        let n_in = match (g, i) {
                            (1, 0) => n_first,
                            (_, 0) => width(g - 1),
                            _ => out,
                        };
                        let name = format!("block_{}", i + 1);
                        Block::new(&p / name, n_in, out, n_layers, shape.kernels)
                    })
                    .collect();
                let resample = if g < config.group_count {
                    shape.resample
                } else {
                    Resample::None
                };
                Group { blocks, resample }
            })
            .collect();
        let last = width(config.group_count);
        Self {
            input: Conv2d::new(&blocks / "input", n_in, n_first, kw),
            groups,
            output: Conv2d::new(&blocks / "output" / "conv", last, shape.output, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self.input.forward(&x.to_kind(self.input.w.kind()));
        for group in &self.groups {
            x = group.forward(&x);
        }
        // `x` is the output of the last block, which nothing else reads, so
        // the ReLU may overwrite it.
        self.output.forward(&x.relu_())
    }
}

/// Checks that `x` is a float batch `(batch, channels, height, width)` with
/// the given channels, and returns its height and width.
fn check_batch(x: &Tensor, what: &str, channels: i64) -> Result<(i64, i64)> {
    let size = x.size();
    if size.len() != 4 || size[1] != channels {
        return Err(Error::InvalidInput(format!(
            "{what} must have shape (batch, {channels}, height, width), got {size:?}"
        )));
    }
    if !x.is_floating_point() {
        return Err(Error::InvalidInput(format!(
            "{what} must be floating point, got {:?}",
            x.kind()
        )));
    }
    Ok((size[2], size[3]))
}

/// The dVAE encoder, which maps images in `(eps, 1 - eps)` (see
/// [`crate::map_pixels`]) to logits over the codes at each grid position.
#[derive(Debug)]
pub struct Encoder {
    stack: Stack,
    config: Config,
}

impl Encoder {
    /// Creates the encoder's variables under `p` (`blocks.input.w`, ...),
    /// initialised as in `dall_e`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let shape = StackShape {
            input: (config.input_channels, config.n_hid, 7),
            width: |g| config.encoder_width(g),
            kernels: [3, 3, 3, 1],
            resample: Resample::MaxPool,
            output: config.vocab_size,
        };
        Ok(Self {
            stack: Stack::new(p, config, shape),
            config: config.clone(),
        })
    }

    /// Returns the logits `(batch, vocab_size, height / f, width / f)` of
    /// images `(batch, input_channels, height, width)` whose sides are
    /// multiples of the down-sampling factor `f`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let (h, w) = check_batch(images, "the encoder's input", self.config.input_channels)?;
        let f = self.config.downsample_factor();
        if h < f || w < f || h % f != 0 || w % f != 0 {
            return Err(Error::InvalidInput(format!(
                "invalid image size {h} x {w}: both sides must be positive multiples of {f}"
            )));
        }
        Ok(self.stack.forward(images))
    }

    /// Returns the most likely code at each position, `(batch, h, w)` of
    /// `i64`.
    pub fn codes(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.forward(images)?.argmax(1, false))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The dVAE decoder, which maps a distribution over codes at each grid
/// position (one-hot or relaxed) to the logit-Laplace parameters of each pixel.
#[derive(Debug)]
pub struct Decoder {
    stack: Stack,
    config: Config,
}

impl Decoder {
    /// Creates the decoder's variables under `p` (`blocks.input.w`, ...),
    /// initialised as in `dall_e`.
    pub fn new(p: &nn::Path, config: &Config) -> Result<Self> {
        config.validate()?;
        let shape = StackShape {
            input: (config.vocab_size, config.n_init, 1),
            width: |g| config.decoder_width(g),
            kernels: [1, 3, 3, 3],
            resample: Resample::Upsample,
            output: 2 * config.output_channels,
        };
        Ok(Self {
            stack: Stack::new(p, config, shape),
            config: config.clone(),
        })
    }

    /// Returns `(batch, 2 * output_channels, h * f, w * f)` from code
    /// distributions `(batch, vocab_size, h, w)`. The first `output_channels`
    /// channels are the logit-Laplace locations and the rest their log-scales
    /// (see [`crate::reconstruct`]).
    pub fn forward(&self, codes: &Tensor) -> Result<Tensor> {
        check_batch(codes, "the decoder's input", self.config.vocab_size)?;
        Ok(self.stack.forward(codes))
    }

    /// Decodes a grid of code indices `(batch, h, w)` to images in `[0, 1]`,
    /// `(batch, output_channels, h * f, w * f)`.
    pub fn decode_codes(&self, codes: &Tensor) -> Result<Tensor> {
        let one_hot = one_hot_codes(codes, self.config.vocab_size)?;
        Ok(crate::reconstruct(&self.forward(&one_hot)?))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Converts code indices `(batch, h, w)` into one-hot distributions
/// `(batch, vocab_size, h, w)` in `f32`, after checking that every index is
/// in `[0, vocab_size)`.
pub fn one_hot_codes(codes: &Tensor, vocab_size: i64) -> Result<Tensor> {
    let size = codes.size();
    if size.len() != 3 {
        return Err(Error::InvalidInput(format!(
            "codes must have shape (batch, height, width), got {size:?}"
        )));
    }
    if codes.is_floating_point() || codes.kind() == Kind::Bool {
        return Err(Error::InvalidInput(format!(
            "codes must be integers, got {:?}",
            codes.kind()
        )));
    }
    if codes.numel() > 0 {
        let (min, max) = (codes.min().int64_value(&[]), codes.max().int64_value(&[]));
        if min < 0 || max >= vocab_size {
            let bad = if min < 0 { min } else { max };
            return Err(Error::InvalidInput(format!(
                "code {bad} is outside the vocabulary [0, {vocab_size})"
            )));
        }
    }
    let one_hot = codes.to_kind(Kind::Int64).f_one_hot(vocab_size)?;
    Ok(one_hot.permute([0, 3, 1, 2]).to_kind(Kind::Float))
}

//! A small convolutional classifier of MNIST digits that scores the samples
//! of a diffusion model trained on MNIST: a sample counts as a digit when the
//! classifier gives one digit a probability above a threshold.
//!
//! The network is a small convolutional network in the style of LeNet (LeCun
//! et al., 1998, "Gradient-Based Learning Applied to Document Recognition"):
//! three 3 x 3 convolutions, each followed by ReLU and 2 x 2 max pooling,
//! then two linear layers. It is trained here from scratch and is not meant
//! to match any published implementation. It reads `(n, 1, 32, 32)` images
//! in `[0, 1]` (0 background, 1 ink): MNIST's 28 x 28 digits padded by
//! [`pad_to_32`], as the diffusion model's training data is.
//!
//! # Non-digits
//!
//! A ten-way softmax has no output for "none of these", because its
//! probabilities sum to 1 over the digits, and such networks are often
//! confident on inputs far from their training data. A score of generated
//! samples would then count noise or a smudge as a digit. So the network has
//! an eleventh class, "not a digit", trained on synthetic negatives drawn
//! afresh at every step. They are Gaussian and uniform noise, constant
//! images (blank, all ink, grey), smooth or hard-edged blobs, random pen
//! strokes, and two digits of different classes overlaid. The softmax runs over all eleven
//! classes and [`DigitClassifier::probabilities`] returns the ten digit
//! columns. The confidence of a digit is therefore its probability among all
//! eleven classes, and an image that the network takes for a non-digit has a
//! low confidence for every digit (its row sums to well below 1).

use common::checkpoint::{self, LoadOptions};
use common::mnist::{Digits, SIDE as MNIST_SIDE};
use common::train::{step_rng, AdamW, TrainOptions};
use common::{Error, Result};
use rand::rngs::StdRng;
use rand::Rng;
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

/// Side of the classifier's square input images, in pixels: MNIST's 28 plus
/// a border of 2 on each side.
pub const SIDE: i64 = 32;

/// How far pixel values may lie outside `[0, 1]` before an input is
/// rejected. Values within it are clamped, so unclamped model outputs pass,
/// but images in `[-1, 1]` do not.
pub const RANGE_TOLERANCE: f64 = 0.1;

/// Zeros added on each side of a 28 x 28 digit.
const PADDING: i64 = (SIDE - MNIST_SIDE) / 2;
/// Number of digit classes. The network's last output, at this index, is
/// "not a digit".
const DIGITS: i64 = 10;
const NOT_A_DIGIT: i64 = DIGITS;
const PIXELS: usize = (SIDE * SIDE) as usize;

/// Real digits in each training batch.
const BATCH_DIGITS: usize = 112;
/// Synthetic non-digits in each training batch.
const BATCH_NEGATIVES: usize = 16;
/// Images per forward pass in [`DigitClassifier::probabilities`].
const INFERENCE_BATCH: i64 = 512;

/// Ranges of the random affine augmentation of training digits.
const MAX_ROTATION_DEGREES: f64 = 10.0;
const MAX_SCALE_CHANGE: f64 = 0.1;
const MAX_SHIFT_PIXELS: f64 = 2.0;
/// Probability that a training digit is only shifted by whole pixels, which
/// copies it exactly, instead of being resampled.
const EXACT_SHIFT_PROBABILITY: f64 = 0.5;

/// Pads MNIST digits from 28 x 28 to 32 x 32 with a border of 2 zero
/// (background) pixels on each side.
///
/// Takes `(n, 28, 28)` or `(n, 1, 28, 28)` and returns `(n, 1, 32, 32)` of
/// the same kind.
pub fn pad_to_32(images: &Tensor) -> Result<Tensor> {
    let size = images.size();
    let n = match size.as_slice() {
        [n, MNIST_SIDE, MNIST_SIDE] | [n, 1, MNIST_SIDE, MNIST_SIDE] => *n,
        _ => {
            return Err(Error::InvalidInput(format!(
                "cannot pad images of shape {size:?}: expected (n, 28, 28) or (n, 1, 28, 28)"
            )))
        }
    };
    Ok(images
        .f_reshape([n, 1, MNIST_SIDE, MNIST_SIDE])?
        .f_constant_pad_nd([PADDING; 4])?)
}

/// The result of [`DigitClassifier::score`]: how many images the classifier
/// takes for a digit with a probability above the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// Images whose most probable digit has a probability above the
    /// threshold.
    pub confident: i64,
    /// Images scored.
    pub total: i64,
    /// The confident images, counted by their predicted digit.
    pub per_digit: [i64; 10],
}

impl Score {
    /// Returns the fraction of images classified confidently, or 0 when no
    /// image was scored.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.confident as f64 / self.total as f64
        }
    }
}

/// A small CNN that classifies 32 x 32 digits and gives non-digits a low
/// confidence (see the module documentation).
#[derive(Debug)]
pub struct DigitClassifier {
    vs: VarStore,
    network: Network,
}

impl DigitClassifier {
    /// Trains a classifier on the CPU for `steps` steps of 128 images: 112
    /// digits of `digits` and 16 synthetic non-digits.
    ///
    /// `digits` are 28 x 28 in `[0, 1]`, as [`common::mnist::load`] returns
    /// them, and must include every digit. Each training digit is shifted by
    /// up to 2 pixels, so that the classifier also recognises digits that
    /// are not centred as MNIST's are. Half of them are shifted by whole
    /// pixels only, which copies them exactly. The other half are also
    /// rotated (up to 10 degrees) and scaled (up to 10%) with bilinear
    /// interpolation, which blurs them slightly. The mix keeps the network
    /// from taking resampling blur as a mark of a digit: trained on
    /// resampled digits alone, it put many crisp held-out digits in the
    /// "not a digit" class.
    ///
    /// AdamW runs with a learning rate of 5e-3 after a warm-up of 5% of the
    /// steps, decaying to 1e-4 along a cosine. The result depends on the
    /// data, `steps`, `seed` and, through the order of floating-point sums,
    /// libtorch's thread count. This function seeds libtorch's global
    /// generator with `seed` for the initial weights and draws every batch
    /// from [`step_rng`].
    pub fn train(digits: &Digits, steps: u64, seed: u64) -> Result<Self> {
        if steps == 0 {
            return Err(Error::InvalidInput(
                "0 training steps: train for at least 1 step".into(),
            ));
        }
        let data = TrainingData::new(digits)?;
        tch::manual_seed(seed as i64);
        let mut vs = VarStore::new(Device::Cpu);
        let network = Network::new(vs.root());
        let options = TrainOptions {
            steps,
            learning_rate: 5e-3,
            min_learning_rate: 1e-4,
            warmup_steps: (steps / 20).max(1),
            weight_decay: 0.01,
            ..Default::default()
        };
        let mut optimizer = AdamW::new(&vs, &options)?;
        for step in 0..steps {
            let mut rng = step_rng(seed, step);
            let (images, targets) = data.batch(&mut rng)?;
            let loss = network.logits(&images)?.f_cross_entropy_loss::<Tensor>(
                &targets,
                None,
                Reduction::Mean,
                -100,
                0.0,
            )?;
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(Error::InvalidInput(format!(
                    "training failed: the loss became {value} at step {step}"
                )));
            }
            optimizer.zero_grad();
            loss.f_backward()?;
            optimizer.clip_grad_norm(options.grad_clip)?;
            optimizer.step(options.learning_rate_at(step))?;
        }
        vs.freeze();
        Ok(Self { vs, network })
    }

    /// Returns the `(n, 10)` probabilities of the ten digits for `(n, 1, 32,
    /// 32)` images in `[0, 1]`, on the device of `images`.
    ///
    /// The probabilities come from a softmax over eleven classes, the last
    /// of which is "not a digit" and is left out, so each row sums to 1 minus
    /// the probability that the image is not a digit. Images must be
    /// floating-point and finite, with values in `[0, 1]` give or take
    /// [`RANGE_TOLERANCE`].
    pub fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        let inputs = checked_images(images, self.vs.device())?;
        let n = inputs.size()[0];
        let _guard = tch::no_grad_guard();
        let mut parts = Vec::new();
        for start in (0..n).step_by(INFERENCE_BATCH as usize) {
            let chunk = inputs.f_narrow(0, start, INFERENCE_BATCH.min(n - start))?;
            let probabilities = self.network.logits(&chunk)?.f_softmax(1, Kind::Float)?;
            parts.push(probabilities.f_narrow(1, 0, DIGITS)?);
        }
        let probabilities = if parts.is_empty() {
            Tensor::f_zeros([0, DIGITS], (Kind::Float, self.vs.device()))?
        } else {
            Tensor::f_cat(&parts, 0)?
        };
        Ok(probabilities.f_to_device(images.device())?)
    }

    /// Counts the images whose most probable digit has a probability above
    /// `threshold` (in `[0, 1]`), in total and per digit.
    ///
    /// Takes images as [`DigitClassifier::probabilities`] does.
    pub fn score(&self, images: &Tensor, threshold: f64) -> Result<Score> {
        let predictions = self.confident_digits(images, threshold)?;
        let mut score = Score {
            confident: 0,
            total: predictions.len() as i64,
            per_digit: [0; 10],
        };
        for digit in predictions.into_iter().flatten() {
            score.confident += 1;
            score.per_digit[digit as usize] += 1;
        }
        Ok(score)
    }

    /// Returns, for each image, the digit it shows if the classifier gives
    /// that digit a probability above `threshold`, and `None` otherwise.
    pub fn confident_digits(&self, images: &Tensor, threshold: f64) -> Result<Vec<Option<i64>>> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::InvalidInput(format!(
                "confidence threshold {threshold} is invalid: it must be in [0, 1]"
            )));
        }
        let probabilities = self.probabilities(images)?.f_to_device(Device::Cpu)?;
        let (confidences, predictions) = probabilities.f_max_dim(1, false)?;
        let confidences = Vec::<f32>::try_from(&confidences)?;
        let predictions = Vec::<i64>::try_from(&predictions)?;
        Ok(confidences
            .iter()
            .zip(&predictions)
            .map(|(&confidence, &digit)| {
                (f64::from(confidence) > threshold && (0..10).contains(&digit)).then_some(digit)
            })
            .collect())
    }

    /// Writes the weights to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoint::save(path, &tensors, None)
    }

    /// Reads a classifier written by [`DigitClassifier::save`] onto the CPU.
    pub fn load(path: &Path) -> Result<Self> {
        let mut vs = VarStore::new(Device::Cpu);
        let network = Network::new(vs.root());
        checkpoint::load_into(&mut vs, &[path.to_path_buf()], &LoadOptions::default())?;
        vs.freeze();
        Ok(Self { vs, network })
    }
}

/// Checks that `images` are `(n, 1, 32, 32)` finite floating-point pixels in
/// `[0, 1]` (within [`RANGE_TOLERANCE`]), and returns them as `f32` on
/// `device`, clamped to `[0, 1]`.
fn checked_images(images: &Tensor, device: Device) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 || size[1..] != [1, SIDE, SIDE] {
        let hint = match size.as_slice() {
            [_, MNIST_SIDE, MNIST_SIDE] | [_, 1, MNIST_SIDE, MNIST_SIDE] => {
                ": pad 28 x 28 digits with pad_to_32"
            }
            _ => "",
        };
        return Err(Error::InvalidInput(format!(
            "images have shape {size:?}, but the classifier takes (n, 1, 32, 32){hint}"
        )));
    }

    let kind = images.f_kind()?;
    if !matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    ) {
        return Err(Error::InvalidInput(format!(
            "images have kind {kind:?}, but the classifier takes floating-point pixels in \
             [0, 1]: convert 8-bit images to float and divide by 255"
        )));
    }

    let images = images.f_to_device(device)?.f_to_kind(Kind::Float)?;
    if size[0] == 0 {
        return Ok(images);
    }

    let all_finite = images.f_isfinite()?.f_all()?.f_int64_value(&[])? != 0;
    if !all_finite {
        return Err(Error::InvalidInput(
            "images contain NaN or infinite values: check the model that produced them".into(),
        ));
    }

    let min = images.f_min()?.f_double_value(&[])?;
    let max = images.f_max()?.f_double_value(&[])?;
    if min < -RANGE_TOLERANCE || max > 1.0 + RANGE_TOLERANCE {
        return Err(Error::InvalidInput(format!(
            "pixel values range from {min} to {max}, but the classifier takes values in \
             [0, 1] (0 background, 1 ink): map images in [-1, 1] to it with (x + 1) / 2"
        )));
    }
    Ok(images.f_clamp(0.0, 1.0)?)
}

/// The layers of the classifier.
#[derive(Debug)]
struct Network {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    conv3: nn::Conv2D,
    hidden: nn::Linear,
    output: nn::Linear,
}

impl Network {
    fn new(root: nn::Path) -> Self {
        let same = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Self {
            conv1: nn::conv2d(&root / "conv1", 1, 16, 3, same),
            conv2: nn::conv2d(&root / "conv2", 16, 32, 3, same),
            conv3: nn::conv2d(&root / "conv3", 32, 64, 3, same),
            // Three poolings take 32 x 32 to 4 x 4.
            hidden: nn::linear(&root / "hidden", 64 * 4 * 4, 128, Default::default()),
            output: nn::linear(&root / "output", 128, DIGITS + 1, Default::default()),
        }
    }

    /// Returns the `(n, 11)` logits of `(n, 1, 32, 32)` images.
    fn logits(&self, images: &Tensor) -> Result<Tensor> {
        let mut xs = images.shallow_clone();
        for conv in [&self.conv1, &self.conv2, &self.conv3] {
            xs = conv
                .forward(&xs)
                .f_relu()?
                .f_max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)?;
        }
        let hidden = self.hidden.forward(&xs.f_flatten(1, -1)?).f_relu()?;
        Ok(self.output.forward(&hidden))
    }
}

/// Padded training digits, with their labels and the indices of each class.
struct TrainingData {
    images: Tensor,
    labels: Vec<i64>,
    by_class: Vec<Vec<i64>>,
}

impl TrainingData {
    fn new(digits: &Digits) -> Result<Self> {
        let images = checked_images(&pad_to_32(&digits.images)?, Device::Cpu)?;
        let n = images.size()[0];
        let labels = digits.labels.f_to_kind(Kind::Int64)?.f_flatten(0, -1)?;
        let labels = Vec::<i64>::try_from(&labels)?;
        if labels.len() as i64 != n {
            return Err(Error::InvalidInput(format!(
                "invalid training digits: {n} images but {} labels",
                labels.len()
            )));
        }
        let mut by_class = vec![Vec::new(); DIGITS as usize];
        for (index, &label) in labels.iter().enumerate() {
            let class = usize::try_from(label)
                .ok()
                .and_then(|class| by_class.get_mut(class));
            match class {
                Some(indices) => indices.push(index as i64),
                None => {
                    return Err(Error::InvalidInput(format!(
                        "training label {label} at index {index} is not a digit from 0 to 9"
                    )))
                }
            }
        }
        if let Some(missing) = by_class.iter().position(|indices| indices.is_empty()) {
            return Err(Error::InvalidInput(format!(
                "the training digits contain no {missing}: the classifier needs examples of \
                 every digit"
            )));
        }
        Ok(Self {
            images,
            labels,
            by_class,
        })
    }

    /// Draws a batch of augmented digits and synthetic non-digits, with
    /// their classes.
    fn batch(&self, rng: &mut StdRng) -> Result<(Tensor, Tensor)> {
        let mut indices = Vec::with_capacity(BATCH_DIGITS + 2 * BATCH_NEGATIVES);
        let mut targets = Vec::with_capacity(BATCH_DIGITS + BATCH_NEGATIVES);
        for _ in 0..BATCH_DIGITS {
            let index = rng.random_range(0..self.labels.len());
            indices.push(index as i64);
            targets.push(self.labels[index]);
        }
        let negatives: Vec<Negative> = (0..BATCH_NEGATIVES)
            .map(|_| Negative::ALL[rng.random_range(0..Negative::ALL.len())])
            .collect();
        // The two digits of each overlay, one after the other.
        let overlays = negatives
            .iter()
            .filter(|&&kind| kind == Negative::Overlay)
            .count();
        for _ in 0..overlays {
            let first = rng.random_range(0..DIGITS);
            let second = (first + rng.random_range(1..DIGITS)) % DIGITS;
            for class in [first, second] {
                let members = &self.by_class[class as usize];
                indices.push(members[rng.random_range(0..members.len())]);
            }
        }
        let selected = self
            .images
            .f_index_select(0, &Tensor::from_slice(&indices))?;
        let augmented = random_affine(&selected, rng)?;
        let digits = augmented.f_narrow(0, 0, BATCH_DIGITS as i64)?;
        let overlaid = augmented
            .f_narrow(0, BATCH_DIGITS as i64, 2 * overlays as i64)?
            .f_view([overlays as i64, 2, 1, SIDE, SIDE])?
            .f_amax([1], false)?;

        let mut pixels = vec![0f32; (BATCH_NEGATIVES - overlays) * PIXELS];
        let drawn = negatives.iter().filter(|&&kind| kind != Negative::Overlay);
        for (&kind, image) in drawn.zip(pixels.chunks_exact_mut(PIXELS)) {
            kind.draw(rng, image);
        }
        let drawn = Tensor::from_slice(&pixels).f_view([-1, 1, SIDE, SIDE])?;

        targets.extend(std::iter::repeat_n(NOT_A_DIGIT, BATCH_NEGATIVES));
        let images = Tensor::f_cat(&[digits, overlaid, drawn], 0)?;
        Ok((images, Tensor::from_slice(&targets)))
    }
}

/// Shifts each image by a random amount, filling with background. Half the
/// images are shifted by whole pixels only, and the rest are also rotated
/// and scaled, with bilinear interpolation.
fn random_affine(images: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
    let n = images.size()[0];
    // The sampling grid spans [-1, 1], so one pixel is 2 / SIDE.
    let pixel = 2.0 / SIDE as f64;
    let mut theta = Vec::with_capacity(6 * n as usize);
    for _ in 0..n {
        let shift_x = rng.random_range(-MAX_SHIFT_PIXELS..=MAX_SHIFT_PIXELS);
        let shift_y = rng.random_range(-MAX_SHIFT_PIXELS..=MAX_SHIFT_PIXELS);
        let (angle, scale, shift_x, shift_y) = if rng.random_bool(EXACT_SHIFT_PROBABILITY) {
            // Whole-pixel shifts sample at pixel centres, which copies the
            // pixels exactly.
            (0.0, 1.0, shift_x.round(), shift_y.round())
        } else {
            let degrees = rng.random_range(-MAX_ROTATION_DEGREES..=MAX_ROTATION_DEGREES);
            let scale = 1.0 + rng.random_range(-MAX_SCALE_CHANGE..=MAX_SCALE_CHANGE);
            (degrees.to_radians(), scale, shift_x, shift_y)
        };
        let (sin, cos) = f64::sin_cos(angle);
        // Theta maps output coordinates to input coordinates.
        theta.extend([
            cos / scale,
            -sin / scale,
            shift_x * pixel,
            sin / scale,
            cos / scale,
            shift_y * pixel,
        ]);
    }
    let theta = Tensor::from_slice(&theta)
        .f_to_kind(Kind::Float)?
        .f_view([n, 2, 3])?;
    let grid = Tensor::f_affine_grid_generator(&theta, [n, 1, SIDE, SIDE], false)?;
    // Interpolation mode 0 is bilinear and padding mode 0 fills with zeros.
    Ok(images.f_grid_sampler(&grid, 0, 0, false)?)
}

/// The kinds of synthetic non-digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Negative {
    GaussianNoise,
    UniformNoise,
    Constant,
    Blobs,
    Strokes,
    /// Two digits of different classes, as the pixel-wise maximum of both.
    Overlay,
}

impl Negative {
    /// The kinds drawn for training, with equal probability per entry.
    /// Overlays are listed twice because they are the closest to real
    /// digits and the hardest to learn.
    const ALL: [Negative; 7] = [
        Negative::GaussianNoise,
        Negative::UniformNoise,
        Negative::Constant,
        Negative::Blobs,
        Negative::Strokes,
        Negative::Overlay,
        Negative::Overlay,
    ];

    /// Draws one 32 x 32 image of this kind into `image` (zeros on entry),
    /// row by row. Overlays are made from digits by [`TrainingData::batch`],
    /// so they leave `image` blank.
    fn draw(self, rng: &mut StdRng, image: &mut [f32]) {
        match self {
            Negative::GaussianNoise => {
                let mean = rng.random_range(0.0..1.0);
                let std = rng.random_range(0.1..1.0);
                for pixel in image.iter_mut() {
                    *pixel = (mean + std * standard_normal(rng)).clamp(0.0, 1.0);
                }
            }
            Negative::UniformNoise if rng.random_bool(0.5) => {
                let low = rng.random_range(0.0..0.5);
                let high = rng.random_range(0.5..1.0);
                for pixel in image.iter_mut() {
                    *pixel = rng.random_range(low..high);
                }
            }
            Negative::UniformNoise => {
                // Sparse ink: salt noise on a blank background.
                let density = rng.random_range(0.02..0.3);
                for pixel in image.iter_mut() {
                    if rng.random_bool(density) {
                        *pixel = rng.random_range(0.3..1.0);
                    }
                }
            }
            Negative::Constant => {
                let value = match rng.random_range(0..3) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.random_range(0.0..1.0),
                };
                image.fill(value);
            }
            Negative::Blobs => draw_blobs(rng, image),
            Negative::Strokes => draw_strokes(rng, image),
            Negative::Overlay => {}
        }
    }
}

/// Draws one to four Gaussian bumps, soft or with hard edges.
fn draw_blobs(rng: &mut StdRng, image: &mut [f32]) {
    let count = rng.random_range(1..=4);
    // Centre row and column, standard deviation and height of each bump.
    let blobs: Vec<[f32; 4]> = (0..count)
        .map(|_| {
            [
                rng.random_range(4.0..28.0),
                rng.random_range(4.0..28.0),
                rng.random_range(1.5..7.0),
                rng.random_range(0.5..1.5),
            ]
        })
        .collect();
    let hard = rng.random_bool(0.5);
    for (index, pixel) in image.iter_mut().enumerate() {
        let (y, x) = (
            (index / SIDE as usize) as f32,
            (index % SIDE as usize) as f32,
        );
        let value: f32 = blobs
            .iter()
            .map(|&[cy, cx, sigma, height]| {
                let distance2 = (y - cy).powi(2) + (x - cx).powi(2);
                height * (-distance2 / (2.0 * sigma * sigma)).exp()
            })
            .sum();
        *pixel = if hard {
            f32::from(u8::from(value > 0.5))
        } else {
            value.min(1.0)
        };
    }
}

/// Draws a random polyline of four to eight vertices with an anti-aliased
/// pen of random width.
fn draw_strokes(rng: &mut StdRng, image: &mut [f32]) {
    let vertices: Vec<(f32, f32)> = (0..rng.random_range(4..=8))
        .map(|_| (rng.random_range(4.0..28.0), rng.random_range(4.0..28.0)))
        .collect();
    let half_width = rng.random_range(0.6..1.6);
    for (index, pixel) in image.iter_mut().enumerate() {
        let point = (
            (index / SIDE as usize) as f32,
            (index % SIDE as usize) as f32,
        );
        let distance = vertices
            .windows(2)
            .map(|segment| distance_to_segment(point, segment[0], segment[1]))
            .fold(f32::INFINITY, f32::min);
        *pixel = (half_width + 0.5 - distance).clamp(0.0, 1.0);
    }
}

/// Returns the distance from `point` to the segment from `a` to `b`.
fn distance_to_segment(point: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dy, dx) = (b.0 - a.0, b.1 - a.1);
    let length2 = dy * dy + dx * dx;
    let t = if length2 > 0.0 {
        (((point.0 - a.0) * dy + (point.1 - a.1) * dx) / length2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    ((point.0 - a.0 - t * dy).powi(2) + (point.1 - a.1 - t * dx).powi(2)).sqrt()
}

/// Draws a sample of the standard normal distribution (Box-Muller).
fn standard_normal(rng: &mut StdRng) -> f32 {
    // 1 - u is in (0, 1], so its logarithm is finite.
    let u: f32 = 1.0 - rng.random::<f32>();
    let v: f32 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

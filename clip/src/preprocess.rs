//! CLIP's image preprocessing, as OpenAI's `clip.clip._transform(n_px)`
//! (openai-clip 1.0.1 on torchvision 0.28 and Pillow 13) does it:
//!
//! 1. `Resize(n_px, interpolation=BICUBIC)`: the shorter side becomes
//!    `n_px` and the longer `int(n_px * long / short)`, with Pillow's
//!    antialiased bicubic filter.
//! 2. `CenterCrop(n_px)`, whose offsets `round((side - n_px) / 2)` round
//!    halves to even.
//! 3. `convert("RGB")`, after the resize: palette and 1-bit images were
//!    resized with nearest-neighbour sampling, images with alpha with
//!    premultiplied alpha, and the alpha is then dropped.
//! 4. `ToTensor` and `Normalize(CLIP_MEAN, CLIP_STD)` in `f32`.
//!
//! Steps 1 to 3 give the same bytes as Pillow (see
//! [`common::image::pillow_resize_rgb`]). Only the cropped pixels are
//! computed, so a 1 x 16000 image needs memory for its crop, not for its
//! 224 x 3584000 resized image.

use common::image::{pillow_resize_rgb, read_with_pillow_mode, PillowMode, MAX_SIDE};
use common::{Error, Result};
use image::math::Rect;
use image::{DynamicImage, RgbImage};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Per-channel (RGB) mean of the pixel values in `[0, 1]` that CLIP was
/// trained with.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];

/// Per-channel (RGB) standard deviation of the pixel values in `[0, 1]`
/// that CLIP was trained with.
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The image transform of CLIP: resize, centre crop, RGB and normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// The side of the square output in pixels (224 for most OpenAI models,
    /// 336 for ViT-L/14@336px).
    pub image_size: i64,
    /// The per-channel mean subtracted from the pixels in `[0, 1]`.
    pub mean: [f64; 3],
    /// The per-channel standard deviation the pixels are divided by after
    /// subtracting the mean.
    pub std: [f64; 3],
}

impl Preprocess {
    /// Returns OpenAI's transform for `image_size` x `image_size` inputs.
    pub fn clip(image_size: i64) -> Self {
        Self {
            image_size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Transforms an image into a `(3, image_size, image_size)` `f32` tensor.
    ///
    /// The pixel type of `image` decides the mode in which Pillow would
    /// have opened the file ([`PillowMode::of`]). A palette image decoded by
    /// the `image` crate has lost its palette, so this resamples it with the
    /// bicubic filter where Pillow samples the nearest pixel: use
    /// [`Preprocess::file`] or [`Preprocess::image_with_mode`] for those.
    pub fn image(&self, image: &DynamicImage) -> Result<Tensor> {
        self.image_with_mode(image, PillowMode::of(image))
    }

    /// Transforms an image that Pillow would open in `mode` into a
    /// `(3, image_size, image_size)` `f32` tensor.
    pub fn image_with_mode(&self, image: &DynamicImage, mode: PillowMode) -> Result<Tensor> {
        let pixels = self.pixels(image, mode)?;
        self.normalize(&pixels)
    }

    /// Reads an image file in any format that [`common::image::read`]
    /// accepts and transforms it into a `(3, image_size, image_size)` `f32`
    /// tensor.
    ///
    /// The file's header decides the Pillow mode, so palette PNG and GIF
    /// files are resampled as Pillow does ([`PillowMode::from_header`]).
    /// JPEG files decode with the `image` crate's decoder, whose pixels can
    /// differ from libjpeg-turbo's (Pillow's) by a few levels.
    ///
    /// NOTE: Pillow resizes a CMYK JPEG in CMYK and converts it to RGB
    /// afterwards, while the `image` crate converts it when decoding. No test
    /// covers such files, and their pixels may differ more.
    pub fn file(&self, path: &Path) -> Result<Tensor> {
        self.check_image_size()?;
        let (image, mode) = read_with_pillow_mode(path)?;
        self.image_with_mode(&image, mode)
    }

    /// Reads and transforms the images at `paths` into a batch
    /// `(paths.len(), 3, image_size, image_size)`. An empty list gives an
    /// empty batch.
    pub fn files(&self, paths: &[PathBuf]) -> Result<Tensor> {
        self.check_image_size()?;
        if paths.is_empty() {
            let n = self.image_size;
            return Ok(Tensor::f_zeros(
                [0, 3, n, n],
                (Kind::Float, tch::Device::Cpu),
            )?);
        }
        let images = paths
            .iter()
            .map(|path| self.file(path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::f_stack(&images, 0)?)
    }

    /// Resizes and centre-crops `image`, which Pillow would open in `mode`,
    /// into the 8-bit RGB pixels that `ToTensor` receives in the reference.
    pub fn pixels(&self, image: &DynamicImage, mode: PillowMode) -> Result<RgbImage> {
        self.check_image_size()?;
        let side = self.image_size as u32;
        let (width, height) = self.resized_size(image.width(), image.height())?;
        // torchvision's `int(round(x))`: Python rounds halves to even.
        let offset = |length: u32| (f64::from(length - side) / 2.0).round_ties_even() as u32;
        let window = Rect {
            x: offset(width),
            y: offset(height),
            width: side,
            height: side,
        };
        pillow_resize_rgb(image, mode, width, height, window)
    }

    /// Returns the size `(width, height)` to which `Resize(image_size)`
    /// scales a `width x height` image. The shorter side becomes
    /// `image_size` and the longer `int(image_size * long / short)`,
    /// truncated as in torchvision.
    pub fn resized_size(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        self.check_image_size()?;
        if width == 0 || height == 0 {
            return Err(Error::InvalidInput(format!(
                "cannot preprocess an empty image ({width} x {height} pixels)"
            )));
        }
        let side = self.image_size as u32;
        let (short, long) = (width.min(height), width.max(height));
        // The product is exact in f64 (below 2^53), and IEEE division rounds
        // as Python's true division of integers does.
        let scaled = (f64::from(side) * f64::from(long) / f64::from(short)) as u64;
        let long = u32::try_from(scaled).map_err(|_| {
            Error::InvalidInput(format!(
                "a {width} x {height} image scaled to a shorter side of {side} pixels would \
                 have a longer side of {scaled} pixels, too many to index: crop it first"
            ))
        })?;
        Ok(if width <= height {
            (side, long)
        } else {
            (long, side)
        })
    }

    /// `ToTensor` and `Normalize` in `f32`, with the operations of
    /// torchvision's: `x / 255`, then `(x - mean) / std`.
    fn normalize(&self, pixels: &RgbImage) -> Result<Tensor> {
        let mean = self.mean.map(|m| m as f32);
        let std = self.std.map(|s| s as f32);
        if std.iter().any(|&s| s == 0.0 || !s.is_finite()) || mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "invalid normalisation: mean {:?} and std {:?} must be finite and std non-zero",
                self.mean, self.std
            )));
        }
        let area = pixels.width() as usize * pixels.height() as usize;
        let mut planes = vec![0f32; 3 * area];
        for (i, pixel) in pixels.pixels().enumerate() {
            for channel in 0..3 {
                let value = f32::from(pixel[channel]) / 255.0;
                planes[channel * area + i] = (value - mean[channel]) / std[channel];
            }
        }
        let (height, width) = (i64::from(pixels.height()), i64::from(pixels.width()));
        Ok(Tensor::f_from_slice(&planes)?.f_view([3, height, width])?)
    }

    fn check_image_size(&self) -> Result<()> {
        if !(1..=i64::from(MAX_SIDE)).contains(&self.image_size) {
            return Err(Error::InvalidInput(format!(
                "invalid image size {}: the preprocessed side must be between 1 and {MAX_SIDE} \
                 pixels (224 for most CLIP models)",
                self.image_size
            )));
        }
        Ok(())
    }
}

//! Reading images into tensors and writing tensors as images.
//!
//! A tensor contains one image as `(channels, height, width)` in `f32`, with
//! values in `[0, 1]`, or a batch as `(batch, channels, height, width)`.

use crate::checkpoint::write_atomic;
use crate::{Error, Result};
use image::imageops::FilterType;
use image::math::Rect;
use image::{
    DynamicImage, GenericImageView, ImageBuffer, ImageFormat, ImageReader, Limits, Pixel, RgbImage,
};
use std::borrow::Cow;
use std::io::{Cursor, Read};
use std::ops::{Deref, Range};
use std::path::Path;
use tch::{Kind, Tensor};

/// Maximum side in pixels that [`read`] accepts.
pub const MAX_SIDE: u32 = 16_384;

/// Maximum memory in bytes that an image decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Reads an image in any format the `image` crate decodes (PNG, JPEG, GIF,
/// BMP, TIFF, WebP), whatever its pixel type (grayscale, RGBA, 16-bit,
/// palette).
///
/// Memory stays bounded, because an image wider or taller than [`MAX_SIDE`],
/// or one whose decoding would take more than [`MAX_DECODE_BYTES`], is an error.
pub fn read(path: &Path) -> Result<DynamicImage> {
    let bad = |message: String| Error::format(path, "image", message);
    let mut reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(bad(
            "not an image in a known format (PNG, JPEG, GIF, BMP, TIFF or WebP)".into(),
        ));
    }
    // The header gives the size before any pixel is decoded.
    let (width, height) = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(format!(
            "the image is {width} x {height} pixels, larger than the maximum of {MAX_SIDE} \
             pixels a side: scale it down first"
        )));
    }

    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| bad(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(bad(format!(
            "the image is {} x {} pixels, so it is empty",
            image.width(),
            image.height()
        )));
    }
    Ok(image)
}

/// Crops the centre of `image` to the aspect ratio of `width x height`, then
/// resizes it to exactly that with bicubic filtering.
///
/// The result equals scaling the shorter side to fit and cropping the centre,
/// up to filtering at the crop's edges. Cropping first keeps memory bounded
/// for images of extreme aspect ratios.
pub fn resize_and_crop(image: &DynamicImage, width: u32, height: u32) -> DynamicImage {
    if image.width() == width && image.height() == height {
        return image.clone();
    }
    let (w, h) = (u64::from(image.width()), u64::from(image.height()));
    // The largest centred region with the target's aspect ratio.
    let (crop_w, crop_h) = if w * u64::from(height) > h * u64::from(width) {
        ((h * u64::from(width) / u64::from(height)).max(1), h)
    } else {
        (w, (w * u64::from(height) / u64::from(width)).max(1))
    };
    let left = ((w - crop_w) / 2) as u32;
    let top = ((h - crop_h) / 2) as u32;
    image
        .crop_imm(left, top, crop_w as u32, crop_h as u32)
        .resize_exact(width, height, FilterType::CatmullRom)
}

/// Converts `image` to a tensor `(channels, height, width)` in `[0, 1]`, with
/// luminance for 1 channel and RGB for 3. Alpha is dropped.
pub fn to_tensor(image: &DynamicImage, channels: i64) -> Result<Tensor> {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let data = match channels {
        1 => image.to_luma32f().into_raw(),
        3 => image.to_rgb32f().into_raw(),
        _ => {
            return Err(Error::InvalidInput(format!(
                "invalid channel count {channels}: images convert to 1 (gray) or 3 (RGB) \
                 channels"
            )))
        }
    };
    Ok(Tensor::f_from_slice(&data)?
        .f_view([h, w, channels])?
        .permute([2, 0, 1])
        .contiguous())
}

/// Converts a tensor `(channels, height, width)` with 1 or 3 channels and
/// values in `[0, 1]` (others are clamped) to an 8-bit image.
pub fn from_tensor(tensor: &Tensor) -> Result<DynamicImage> {
    let size = tensor.size();
    if size.len() != 3 || !(size[0] == 1 || size[0] == 3) || size[1] < 1 || size[2] < 1 {
        return Err(Error::InvalidInput(format!(
            "invalid image tensor shape {size:?}: expected (1 or 3, height, width)"
        )));
    }
    let (channels, h, w) = (size[0], size[1] as u32, size[2] as u32);
    let bytes = tensor
        .f_to_kind(Kind::Float)?
        .clamp(0.0, 1.0)
        .multiply_scalar(255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0])
        .contiguous();
    let len = bytes.numel();
    let mut data = vec![0u8; len];
    bytes.f_copy_data(&mut data, len)?;
    let image = if channels == 1 {
        image::GrayImage::from_raw(w, h, data).map(DynamicImage::ImageLuma8)
    } else {
        image::RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| Error::InvalidInput("internal error: wrong image buffer size".into()))
}

/// Writes a tensor `(channels, height, width)` as an image whose format
/// follows the file extension (`.png`, `.jpg`, ...). The file appears whole
/// or not at all.
pub fn save(path: &Path, tensor: &Tensor) -> Result<()> {
    let format = output_format(path)?;
    let bytes = encode(path, from_tensor(tensor)?, format)?;
    write_atomic(path, &bytes)
}

/// Checks, before any work, that [`save`] can write a gray or RGB image to
/// `path`: a known extension whose format this build encodes, and an
/// existing parent directory.
pub fn check_output(path: &Path) -> Result<()> {
    let format = output_format(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{}: the directory {} does not exist: create it first",
            path.display(),
            parent.display()
        )));
    }
    for image in [
        DynamicImage::ImageLuma8(image::GrayImage::new(1, 1)),
        DynamicImage::ImageRgb8(image::RgbImage::new(1, 1)),
    ] {
        encode(path, image, format)?;
    }
    Ok(())
}

fn output_format(path: &Path) -> Result<ImageFormat> {
    ImageFormat::from_path(path).map_err(|_| {
        Error::InvalidInput(format!(
            "{}: missing or unknown image extension (use one such as .png)",
            path.display()
        ))
    })
}

/// Encodes `image` in `format`; `path` names the file in errors.
fn encode(path: &Path, mut image: DynamicImage, format: ImageFormat) -> Result<Vec<u8>> {
    // GIF stores colour only, so gray images are written as RGBA there.
    if format == ImageFormat::Gif {
        image = DynamicImage::ImageRgba8(image.to_rgba8());
    }
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).map_err(|e| {
        Error::InvalidInput(format!(
            "{}: {e}: write PNG, JPEG, BMP, GIF, TIFF or WebP instead",
            path.display()
        ))
    })?;
    Ok(bytes.into_inner())
}

/// Tiles a batch `(n, channels, height, width)` into one image with
/// `columns` images per row and `padding` pixels of zeros between them.
pub fn grid(batch: &Tensor, columns: i64, padding: i64) -> Result<Tensor> {
    let size = batch.size();
    if size.len() != 4 || size[0] < 1 || columns < 1 || padding < 0 {
        return Err(Error::InvalidInput(format!(
            "invalid grid input: got shape {size:?}, {columns} columns and padding \
             {padding}, expected (n, channels, height, width) with n >= 1, columns >= 1 and \
             padding >= 0"
        )));
    }
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let columns = columns.min(n);
    let rows = (n + columns - 1) / columns;
    let canvas = Tensor::f_zeros(
        [
            c,
            rows * (h + padding) + padding,
            columns * (w + padding) + padding,
        ],
        (Kind::Float, batch.device()),
    )?;
    for i in 0..n {
        let (row, col) = (i / columns, i % columns);
        canvas
            .narrow(1, padding + row * (h + padding), h)
            .narrow(2, padding + col * (w + padding), w)
            .copy_(&batch.get(i).to_kind(Kind::Float));
    }
    Ok(canvas)
}

/// Pillow's image modes (`Image.mode`), which decide how `Image.resize`
/// filters an image and how `convert("RGB")` maps its pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PillowMode {
    /// `"1"`: one bit per pixel, resized with nearest-neighbour sampling.
    Bilevel,
    /// `"L"`: 8-bit luminance.
    L,
    /// `"I;16"`: 16-bit luminance. `convert("RGB")` clips values above 255
    /// to 255 instead of scaling them.
    I16,
    /// `"P"`: palette indices, resized with nearest-neighbour sampling.
    P,
    /// `"LA"`: 8-bit luminance and alpha, resized with premultiplied alpha.
    La,
    /// `"RGB"`: 8-bit colour.
    Rgb,
    /// `"RGBA"`: 8-bit colour and alpha, resized with premultiplied alpha.
    Rgba,
}

impl PillowMode {
    /// Returns the mode in which Pillow 13 opens a file stored with the
    /// pixel type of `image`, for files without a palette.
    ///
    /// Pillow keeps the 16-bit luminance of a file ([`PillowMode::I16`]) but
    /// keeps only the high byte of other 16-bit samples.
    pub fn of(image: &DynamicImage) -> Self {
        match image {
            DynamicImage::ImageLuma8(_) => Self::L,
            DynamicImage::ImageLuma16(_) => Self::I16,
            // Pillow opens 16-bit grey with alpha as "RGBA" with three equal
            // channels, which resizes and converts to the same pixels.
            DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => Self::La,
            DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgb32F(_) => Self::Rgb,
            _ => Self::Rgba,
        }
    }

    /// Returns the mode in which Pillow 13 opens the PNG or GIF file that
    /// starts with `header`, or `None` for other formats.
    ///
    /// This matters where the `image` crate decodes differently: it expands
    /// palettes and 1-bit pixels, and turns a PNG `tRNS` chunk into an alpha
    /// channel, where Pillow keeps an `"RGB"` or `"L"` image and ignores the
    /// chunk in `convert("RGB")`. The first 781 bytes of a file suffice.
    ///
    /// NOTE: other palette files (BMP, TIFF) get the mode of their decoded
    /// pixels, so they are filtered bicubically where Pillow samples the
    /// nearest pixel.
    pub fn from_header(header: &[u8]) -> Option<Self> {
        const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
        if header.starts_with(PNG_SIGNATURE) && header.get(12..16) == Some(b"IHDR") {
            let (bit_depth, color_type) = (*header.get(24)?, *header.get(25)?);
            return match (color_type, bit_depth) {
                (0, 1) => Some(Self::Bilevel),
                (0, 16) => Some(Self::I16),
                (0, _) => Some(Self::L),
                (2, _) => Some(Self::Rgb),
                (3, _) => Some(Self::P),
                (4, _) => Some(Self::La),
                (6, _) => Some(Self::Rgba),
                _ => None,
            };
        }
        if header.starts_with(b"GIF87a") || header.starts_with(b"GIF89a") {
            // Pillow opens a GIF whose global palette is the grey ramp
            // (entry i is (i, i, i)) as "L", and any other as "P".
            // NOTE: a local palette of the first frame, which Pillow would
            // use instead, is not read.
            let flags = *header.get(10)?;
            if flags & 0x80 != 0 {
                let entries = 2usize << (flags & 7);
                if let Some(palette) = header.get(13..13 + 3 * entries) {
                    let grey_ramp = palette
                        .chunks_exact(3)
                        .enumerate()
                        .all(|(i, rgb)| rgb.iter().all(|&v| usize::from(v) == i));
                    if grey_ramp {
                        return Some(Self::L);
                    }
                }
            }
            return Some(Self::P);
        }
        None
    }
}

/// Reads an image with [`read`], together with the mode in which Pillow 13
/// opens the file (see [`PillowMode::from_header`] and [`PillowMode::of`]).
pub fn read_with_pillow_mode(path: &Path) -> Result<(DynamicImage, PillowMode)> {
    let image = read(path)?;
    let mut header = Vec::with_capacity(781);
    std::fs::File::open(path)
        .and_then(|file| file.take(781).read_to_end(&mut header))
        .map_err(|e| Error::io(path, e))?;
    let mode = PillowMode::from_header(&header).unwrap_or_else(|| PillowMode::of(&image));
    Ok((image, mode))
}

/// Resizes `image` to `width x height` and returns the `window` of the
/// result in RGB, bit for bit as Pillow 13's
/// `im.resize((width, height), Image.BICUBIC).crop(window).convert("RGB")`
/// does for an image `im` of the given `mode`.
///
/// As in Pillow, "P" and "1" images are resampled with nearest-neighbour
/// sampling ([`resize_nearest`]), "LA" and "RGBA" images with premultiplied
/// alpha, and an image that already has the requested size is only cropped
/// and converted. Only the pixels that `window` depends on are filtered, so
/// memory stays bounded by those source pixels (copied where the mode needs
/// a conversion), one intermediate pass and the window, however large the
/// resized image would be.
pub fn pillow_resize_rgb(
    image: &DynamicImage,
    mode: PillowMode,
    width: u32,
    height: u32,
    window: Rect,
) -> Result<RgbImage> {
    let (in_width, in_height) = (image.width(), image.height());
    if in_width == 0 || in_height == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize an empty image ({in_width} x {in_height} pixels)"
        )));
    }
    check_window(width, height, window)?;
    let (columns, rows) = ranges(window);

    let rgb = if (in_width, in_height) == (width, height) {
        let ys: Vec<_> = rows.map(Some).collect();
        let xs: Vec<_> = columns.map(Some).collect();
        sample_rgb(image, mode, &ys, &xs)
    } else if matches!(mode, PillowMode::P | PillowMode::Bilevel) {
        let ys = nearest_positions(in_height, height, rows);
        let xs = nearest_positions(in_width, width, columns);
        sample_rgb(image, mode, &ys, &xs)
    } else {
        let plan = Plan::new((in_width, in_height), (width, height), window);
        bicubic_rgb(image, mode, &plan)
    };
    let data = rgb.into_iter().flatten().collect();
    RgbImage::from_raw(window.width, window.height, data)
        .ok_or_else(|| Error::InvalidInput("internal error: wrong image buffer size".into()))
}

/// Converts the pixels at the source rows `ys` and columns `xs` of `image`
/// to RGB as Pillow converts an unresized image in `mode`, with black where
/// a position is `None`.
fn sample_rgb(
    image: &DynamicImage,
    mode: PillowMode,
    ys: &[Option<usize>],
    xs: &[Option<usize>],
) -> Vec<[u8; 3]> {
    let mut rgb = Vec::with_capacity(ys.len() * xs.len());
    for &y in ys {
        for &x in xs {
            rgb.push(match (x, y) {
                (Some(x), Some(y)) => unresized_rgb(image, mode, x as u32, y as u32),
                _ => [0; 3],
            });
        }
    }
    rgb
}

/// Runs `plan` over `image`, with the sample layout and the conversion to
/// RGB of a bicubic resize in Pillow's `mode`.
fn bicubic_rgb(image: &DynamicImage, mode: PillowMode, plan: &Plan) -> Vec<[u8; 3]> {
    // Pillow never filters "1" and "P" images bicubically. They share the
    // arms of the modes with the same samples.
    match mode {
        PillowMode::I16 => {
            let plane = match image {
                DynamicImage::ImageLuma16(buffer) => Plane::borrow(buffer),
                _ => plan.copy_source(1, |x, y, out| out[0] = luma16(image, x, y)),
            };
            let samples = plan.run(&plane);
            samples.into_iter().map(|v| [v.min(255) as u8; 3]).collect()
        }
        PillowMode::Bilevel | PillowMode::L => {
            let plane = match image {
                DynamicImage::ImageLuma8(buffer) => Plane::borrow(buffer),
                _ => plan.copy_source(1, |x, y, out| out[0] = pixel8(image, x, y)[0]),
            };
            let samples = plan.run(&plane);
            samples.into_iter().map(|v| [v; 3]).collect()
        }
        PillowMode::P | PillowMode::Rgb => {
            let plane = match image {
                DynamicImage::ImageRgb8(buffer) => Plane::borrow(buffer),
                _ => plan.copy_source(3, |x, y, out| {
                    out.copy_from_slice(&pixel8(image, x, y)[..3]);
                }),
            };
            let samples = plan.run(&plane);
            let pixels = samples.chunks_exact(3);
            pixels.map(|p| [p[0], p[1], p[2]]).collect()
        }
        PillowMode::La => {
            let plane = plan.copy_source(2, |x, y, out| {
                let [l, _, _, a] = pixel8(image, x, y);
                out.copy_from_slice(&[mul_div_255(l, a), a]);
            });
            let samples = plan.run(&plane);
            let pixels = samples.chunks_exact(2);
            pixels.map(|p| [unpremultiply(p[0], p[1]); 3]).collect()
        }
        PillowMode::Rgba => {
            let plane = plan.copy_source(4, |x, y, out| {
                let [r, g, b, a] = pixel8(image, x, y);
                out.copy_from_slice(&[mul_div_255(r, a), mul_div_255(g, a), mul_div_255(b, a), a]);
            });
            let samples = plan.run(&plane);
            let pixels = samples.chunks_exact(4);
            pixels
                .map(|p| [p[0], p[1], p[2]].map(|v| unpremultiply(v, p[3])))
                .collect()
        }
    }
}

/// Resizes interleaved 8-bit pixels to `width x height` and returns the
/// `window` of the result, bit for bit as Pillow 13's `ImagingResample`
/// with `Image.BICUBIC` and no box.
///
/// This is the core of Pillow's `Image.resize`:
///
/// - a separable bicubic filter (`a = -0.5`) whose support widens by the
///   reduction factor when downsampling, so that it antialiases;
/// - weights normalised to sum to one, then rounded to 22-bit fixed point;
/// - the horizontal pass first, unless the height shrinks by more than twice
///   as many pixels as the width;
/// - rounding and clipping to 8 bits after each pass.
///
/// Every channel is filtered alike. `Image.resize` premultiplies the alpha
/// of "LA" and "RGBA" images before it calls this, and so does
/// [`pillow_resize_rgb`].
pub fn resize_bicubic<P, C>(
    image: &ImageBuffer<P, C>,
    width: u32,
    height: u32,
    window: Rect,
) -> Result<ImageBuffer<P, Vec<u8>>>
where
    P: Pixel<Subpixel = u8>,
    C: Deref<Target = [u8]>,
{
    resize_buffer(image, width, height, window)
}

/// Resizes 16-bit pixels as [`resize_bicubic`] does 8-bit ones, with
/// Pillow's 16-bit arithmetic: weights in double precision, and rounding
/// half away from zero and clipping to `0..=65535` after each pass. Pillow
/// uses it for its 16-bit luminance modes such as "I;16".
pub fn resize_bicubic_u16<P, C>(
    image: &ImageBuffer<P, C>,
    width: u32,
    height: u32,
    window: Rect,
) -> Result<ImageBuffer<P, Vec<u16>>>
where
    P: Pixel<Subpixel = u16>,
    C: Deref<Target = [u16]>,
{
    resize_buffer(image, width, height, window)
}

/// Resizes `image` to `width x height` with nearest-neighbour sampling and
/// returns the `window` of the result, pixel for pixel as Pillow 13's
/// `Image.resize` with `Image.NEAREST` (`ImagingScaleAffine`). Pillow uses
/// it for every "P" and "1" image, whatever filter the caller asks for.
pub fn resize_nearest<P, C>(
    image: &ImageBuffer<P, C>,
    width: u32,
    height: u32,
    window: Rect,
) -> Result<ImageBuffer<P, Vec<P::Subpixel>>>
where
    P: Pixel,
    C: Deref<Target = [P::Subpixel]>,
{
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::InvalidInput("cannot resize an empty image".into()));
    }
    check_window(width, height, window)?;
    let (columns, rows) = ranges(window);
    let xs = nearest_positions(image.width(), width, columns);
    let ys = nearest_positions(image.height(), height, rows);
    let mut output = ImageBuffer::new(window.width, window.height);
    for (row, &y) in ys.iter().enumerate() {
        for (column, &x) in xs.iter().enumerate() {
            if let (Some(x), Some(y)) = (x, y) {
                let pixel = *image.get_pixel(x as u32, y as u32);
                output.put_pixel(column as u32, row as u32, pixel);
            }
        }
    }
    Ok(output)
}

fn resize_buffer<P, C, T>(
    image: &ImageBuffer<P, C>,
    width: u32,
    height: u32,
    window: Rect,
) -> Result<ImageBuffer<P, Vec<T>>>
where
    P: Pixel<Subpixel = T>,
    C: Deref<Target = [T]>,
    T: Sample,
{
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::InvalidInput("cannot resize an empty image".into()));
    }
    check_window(width, height, window)?;
    let plan = Plan::new(image.dimensions(), (width, height), window);
    let samples = plan.run(&Plane::borrow(image));
    ImageBuffer::from_raw(window.width, window.height, samples)
        .ok_or_else(|| Error::InvalidInput("internal error: wrong image buffer size".into()))
}

fn check_window(width: u32, height: u32, window: Rect) -> Result<()> {
    let inside = u64::from(window.x) + u64::from(window.width) <= u64::from(width)
        && u64::from(window.y) + u64::from(window.height) <= u64::from(height);
    if width == 0 || height == 0 || window.width == 0 || window.height == 0 || !inside {
        return Err(Error::InvalidInput(format!(
            "invalid resize to {width} x {height} pixels with window {window:?}: both sizes \
             must be at least 1 and the window non-empty and inside the resized image"
        )));
    }
    Ok(())
}

fn ranges(window: Rect) -> (Range<usize>, Range<usize>) {
    let (x, y) = (window.x as usize, window.y as usize);
    (x..x + window.width as usize, y..y + window.height as usize)
}

/// Returns the 8-bit samples of a pixel as Pillow 13 stores them:
/// (luminance or red, green, blue, alpha). Pillow keeps the high byte of
/// 16-bit samples, where the `image` crate would round.
fn pixel8(image: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
    let high = |v: u16| (v >> 8) as u8;
    match image {
        DynamicImage::ImageLuma8(b) => {
            let [l] = b.get_pixel(x, y).0;
            [l, l, l, 255]
        }
        DynamicImage::ImageLumaA8(b) => {
            let [l, a] = b.get_pixel(x, y).0;
            [l, l, l, a]
        }
        DynamicImage::ImageRgb8(b) => {
            let [r, g, b] = b.get_pixel(x, y).0;
            [r, g, b, 255]
        }
        DynamicImage::ImageRgba8(b) => b.get_pixel(x, y).0,
        DynamicImage::ImageLuma16(b) => {
            let l = high(b.get_pixel(x, y).0[0]);
            [l, l, l, 255]
        }
        DynamicImage::ImageLumaA16(b) => {
            let [l, a] = b.get_pixel(x, y).0.map(high);
            [l, l, l, a]
        }
        DynamicImage::ImageRgb16(b) => {
            let [r, g, b] = b.get_pixel(x, y).0.map(high);
            [r, g, b, 255]
        }
        DynamicImage::ImageRgba16(b) => b.get_pixel(x, y).0.map(high),
        // Pillow does not open floating-point colour images, so the
        // `image` crate's conversion is used instead.
        _ => image.get_pixel(x, y).0,
    }
}

/// Returns the 16-bit luminance of a pixel, as Pillow stores an "I;16"
/// image.
fn luma16(image: &DynamicImage, x: u32, y: u32) -> u16 {
    match image {
        DynamicImage::ImageLuma16(b) => b.get_pixel(x, y).0[0],
        DynamicImage::ImageLumaA16(b) => b.get_pixel(x, y).0[0],
        _ => u16::from(pixel8(image, x, y)[0]),
    }
}

/// Converts a pixel of an image in `mode` as Pillow's `convert("RGB")`
/// does, which drops alpha, repeats luminance and clips 16-bit luminance to
/// 255.
fn unresized_rgb(image: &DynamicImage, mode: PillowMode, x: u32, y: u32) -> [u8; 3] {
    match mode {
        PillowMode::I16 => [luma16(image, x, y).min(255) as u8; 3],
        PillowMode::Bilevel | PillowMode::L | PillowMode::La => [pixel8(image, x, y)[0]; 3],
        PillowMode::P | PillowMode::Rgb | PillowMode::Rgba => {
            let [r, g, b, _] = pixel8(image, x, y);
            [r, g, b]
        }
    }
}

/// `a * b / 255` rounded, in Pillow's integer arithmetic (`MULDIV255`).
fn mul_div_255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Undoes premultiplied alpha as Pillow's "RGBa" to "RGBA" conversion does.
fn unpremultiply(value: u8, alpha: u8) -> u8 {
    if alpha == 0 || alpha == 255 {
        value
    } else {
        (255 * u32::from(value) / u32::from(alpha)).min(255) as u8
    }
}

/// Returns the source indices of the outputs `outputs` of a
/// nearest-neighbour resize from `in_size` to `out_size` samples, with
/// `None` where the source falls outside the image.
///
/// Pillow steps the source position by adding the scale once per output,
/// so the position is accumulated the same way for the rounding to agree.
fn nearest_positions(in_size: u32, out_size: u32, outputs: Range<usize>) -> Vec<Option<usize>> {
    // Pillow keeps the box in single precision, then divides in double.
    let scale = f64::from(in_size as f32) / f64::from(out_size);
    let mut position = scale * 0.5;
    let mut positions = Vec::with_capacity(outputs.len());
    for index in 0..outputs.end {
        if index >= outputs.start {
            // Truncation, with every negative position mapping outside.
            let source = if position < 0.0 { -1 } else { position as i64 };
            let inside = (0..i64::from(in_size)).contains(&source);
            positions.push(inside.then_some(source as usize));
        }
        position += scale;
    }
    positions
}

/// Fraction bits of the fixed-point weights of Pillow's 8-bit resampling:
/// 32 bits less 8 for the sample and 2 for the overshoot of the negative
/// lobes of the filter.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic convolution kernel with `a = -0.5`, which is zero from
/// 2 on.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The bicubic weights of the outputs `outputs` of a resize from `in_size`
/// to `out_size` samples, computed as Pillow's `precompute_coeffs` does.
struct Coefficients {
    outputs: Range<usize>,
    /// The first input sample of each output.
    starts: Vec<usize>,
    /// The number of input samples of each output.
    lens: Vec<usize>,
    /// The weights of each output, `stride` apart.
    weights: Vec<f64>,
    stride: usize,
}

impl Coefficients {
    fn bicubic(in_size: u32, out_size: u32, outputs: Range<usize>) -> Self {
        // Pillow keeps the box in single precision, then divides in double.
        let scale = f64::from(in_size as f32) / f64::from(out_size);
        let filter_scale = scale.max(1.0);
        let support = 2.0 * filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let inverse_scale = 1.0 / filter_scale;
        let mut starts = Vec::with_capacity(outputs.len());
        let mut lens = Vec::with_capacity(outputs.len());
        let mut weights = vec![0.0; outputs.len() * stride];
        for (i, output) in outputs.clone().enumerate() {
            let center = (output as f64 + 0.5) * scale;
            // Pillow rounds by truncating toward zero after adding 0.5.
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let len = (end - first).max(0) as usize;
            let row = &mut weights[i * stride..i * stride + len];
            let mut sum = 0.0;
            for (j, weight) in row.iter_mut().enumerate() {
                *weight = bicubic(((first + j as i64) as f64 - center + 0.5) * inverse_scale);
                sum += *weight;
            }
            if sum != 0.0 {
                row.iter_mut().for_each(|w| *w /= sum);
            }
            starts.push(first as usize);
            lens.push(len);
        }
        Self {
            outputs,
            starts,
            lens,
            weights,
            stride,
        }
    }

    /// Returns the range of input samples that the outputs depend on.
    fn inputs(&self) -> Range<usize> {
        let start = self.starts.iter().copied().min().unwrap_or(0);
        let end = (self.starts.iter().zip(&self.lens))
            .map(|(s, l)| s + l)
            .max()
            .unwrap_or(0);
        start..end.max(start)
    }

    fn weights<T: Sample>(&self) -> Vec<T::Weight> {
        self.weights.iter().map(|&k| T::weight(k)).collect()
    }

    /// Returns the weights of the `i`-th output from `weights`, which are
    /// laid out as the `weights` field.
    fn of_output<'w, W>(&self, weights: &'w [W], i: usize) -> &'w [W] {
        let start = i * self.stride;
        &weights[start..start + self.lens[i]]
    }
}

/// A sample type of Pillow's resampling, with its weight type and its
/// rounding.
trait Sample: Copy + Default + 'static {
    type Weight: Copy;
    /// Converts a normalised filter coefficient to a weight, 22-bit fixed
    /// point for 8-bit samples.
    fn weight(coefficient: f64) -> Self::Weight;
    /// Returns the sum of `samples[first + i * step] * weights[i]`, rounded
    /// and clipped as Pillow does.
    fn convolve(samples: &[Self], first: usize, step: usize, weights: &[Self::Weight]) -> Self;
}

impl Sample for u8 {
    type Weight = i32;

    fn weight(coefficient: f64) -> i32 {
        let scaled = coefficient * f64::from(1u32 << PRECISION_BITS);
        if coefficient < 0.0 {
            (scaled - 0.5) as i32
        } else {
            (scaled + 0.5) as i32
        }
    }

    fn convolve(samples: &[u8], first: usize, step: usize, weights: &[i32]) -> u8 {
        // Pillow sums in `int`. The wrapping operations give its result on
        // two's-complement machines, without Rust's overflow checks.
        let mut sum: i32 = 1 << (PRECISION_BITS - 1);
        for (i, &weight) in weights.iter().enumerate() {
            let sample = i32::from(samples[first + i * step]);
            sum = sum.wrapping_add(sample.wrapping_mul(weight));
        }
        (sum >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

impl Sample for u16 {
    type Weight = f64;

    fn weight(coefficient: f64) -> f64 {
        coefficient
    }

    fn convolve(samples: &[u16], first: usize, step: usize, weights: &[f64]) -> u16 {
        let mut sum = 0.0;
        for (i, &weight) in weights.iter().enumerate() {
            sum += f64::from(samples[first + i * step]) * weight;
        }
        let rounded = if sum >= 0.0 { sum + 0.5 } else { sum - 0.5 } as i64;
        rounded.clamp(0, 65535) as u16
    }
}

/// Interleaved samples of the pixels in `columns` x `rows` of a larger
/// image, row by row.
struct Plane<'a, T: Clone> {
    samples: Cow<'a, [T]>,
    columns: Range<usize>,
    rows: Range<usize>,
    channels: usize,
}

impl<'a, T: Clone> Plane<'a, T> {
    fn borrow<P, C>(image: &'a ImageBuffer<P, C>) -> Self
    where
        P: Pixel<Subpixel = T>,
        C: Deref<Target = [T]>,
    {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let channels = usize::from(P::CHANNEL_COUNT);
        Self {
            samples: Cow::Borrowed(&image.as_raw()[..width * height * channels]),
            columns: 0..width,
            rows: 0..height,
            channels,
        }
    }

    fn index(&self, x: usize, y: usize) -> usize {
        ((y - self.rows.start) * self.columns.len() + x - self.columns.start) * self.channels
    }

    fn crop(&self, columns: Range<usize>, rows: Range<usize>) -> Plane<'static, T> {
        let mut samples = Vec::with_capacity(columns.len() * rows.len() * self.channels);
        for y in rows.clone() {
            let start = self.index(columns.start, y);
            samples.extend_from_slice(&self.samples[start..start + columns.len() * self.channels]);
        }
        Plane {
            samples: Cow::Owned(samples),
            columns,
            rows,
            channels: self.channels,
        }
    }
}

/// Runs the horizontal pass of Pillow's resampling over `rows` of `source`.
fn horizontal_pass<T: Sample>(
    source: &Plane<T>,
    rows: Range<usize>,
    coefficients: &Coefficients,
) -> Plane<'static, T> {
    let weights = coefficients.weights::<T>();
    let channels = source.channels;
    let mut samples = Vec::with_capacity(rows.len() * coefficients.outputs.len() * channels);
    for y in rows.clone() {
        for (i, &start) in coefficients.starts.iter().enumerate() {
            let row = coefficients.of_output(&weights, i);
            let first = source.index(start, y);
            for channel in 0..channels {
                samples.push(T::convolve(&source.samples, first + channel, channels, row));
            }
        }
    }
    Plane {
        samples: Cow::Owned(samples),
        columns: coefficients.outputs.clone(),
        rows,
        channels,
    }
}

/// Runs the vertical pass of Pillow's resampling over `columns` of
/// `source`.
fn vertical_pass<T: Sample>(
    source: &Plane<T>,
    columns: Range<usize>,
    coefficients: &Coefficients,
) -> Plane<'static, T> {
    let weights = coefficients.weights::<T>();
    let channels = source.channels;
    let step = source.columns.len() * channels;
    let mut samples = Vec::with_capacity(columns.len() * coefficients.outputs.len() * channels);
    for (i, &start) in coefficients.starts.iter().enumerate() {
        let row = coefficients.of_output(&weights, i);
        for x in columns.clone() {
            let first = source.index(x, start);
            for channel in 0..channels {
                samples.push(T::convolve(&source.samples, first + channel, step, row));
            }
        }
    }
    Plane {
        samples: Cow::Owned(samples),
        columns,
        rows: coefficients.outputs.clone(),
        channels,
    }
}

/// The passes of Pillow's resampling that compute one window of a resized
/// image.
struct Plan {
    /// `None` where the width does not change, as Pillow skips the pass.
    horizontal: Option<Coefficients>,
    vertical: Option<Coefficients>,
    horizontal_first: bool,
    columns: Range<usize>,
    rows: Range<usize>,
}

impl Plan {
    fn new(in_size: (u32, u32), out_size: (u32, u32), window: Rect) -> Self {
        let (columns, rows) = ranges(window);
        let horizontal = (in_size.0 != out_size.0)
            .then(|| Coefficients::bicubic(in_size.0, out_size.0, columns.clone()));
        let vertical = (in_size.1 != out_size.1)
            .then(|| Coefficients::bicubic(in_size.1, out_size.1, rows.clone()));
        // Pillow filters vertically first when the height shrinks by more
        // than twice as many pixels as the width, which changes the
        // intermediate rounding and so the result.
        let shrink_x = i64::from(in_size.0) - i64::from(out_size.0);
        let shrink_y = i64::from(in_size.1) - i64::from(out_size.1);
        let horizontal_first = !(shrink_y > 0 && shrink_y > shrink_x * 2);
        Self {
            horizontal,
            vertical,
            horizontal_first,
            columns,
            rows,
        }
    }

    /// Returns the source columns and rows that the window depends on.
    fn source(&self) -> (Range<usize>, Range<usize>) {
        let columns = (self.horizontal.as_ref()).map_or(self.columns.clone(), |c| c.inputs());
        let rows = (self.vertical.as_ref()).map_or(self.rows.clone(), |c| c.inputs());
        (columns, rows)
    }

    /// Copies the source pixels that the window depends on, with `channels`
    /// samples that `pixel(x, y, samples)` writes for each.
    fn copy_source<T: Sample>(
        &self,
        channels: usize,
        pixel: impl Fn(u32, u32, &mut [T]),
    ) -> Plane<'static, T> {
        let (columns, rows) = self.source();
        let mut samples = vec![T::default(); columns.len() * rows.len() * channels];
        let positions = (rows.clone()).flat_map(|y| columns.clone().map(move |x| (x, y)));
        for ((x, y), chunk) in positions.zip(samples.chunks_exact_mut(channels)) {
            pixel(x as u32, y as u32, chunk);
        }
        Plane {
            samples: Cow::Owned(samples),
            columns,
            rows,
            channels,
        }
    }

    /// Runs the passes over `source`, which must contain the pixels of
    /// [`Plan::source`], and returns the window's samples.
    fn run<T: Sample>(&self, source: &Plane<T>) -> Vec<T> {
        let (columns, rows) = self.source();
        let output = if self.horizontal_first {
            let temporary = match &self.horizontal {
                Some(c) => horizontal_pass(source, rows, c),
                None => source.crop(columns, rows),
            };
            match &self.vertical {
                Some(c) => vertical_pass(&temporary, self.columns.clone(), c),
                None => temporary,
            }
        } else {
            let temporary = match &self.vertical {
                Some(c) => vertical_pass(source, columns, c),
                None => source.crop(columns, rows),
            };
            match &self.horizontal {
                Some(c) => horizontal_pass(&temporary, self.rows.clone(), c),
                None => temporary,
            }
        };
        output.samples.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, LumaA, Rgb, Rgba};

    // The inputs and expected outputs are Pillow 13.0.0's `Image.resize`,
    // printed by reference/clip_preprocess.py. Shapes are (height, width,
    // channels); sizes and windows are (width, height).

    fn full(width: u32, height: u32) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    fn bicubic<P: Pixel<Subpixel = u8>>(
        input: &[u8],
        input_size: (u32, u32),
        size: (u32, u32),
        window: Rect,
    ) -> Vec<u8> {
        let image = ImageBuffer::<P, _>::from_raw(input_size.0, input_size.1, input.to_vec());
        resize_bicubic(&image.unwrap(), size.0, size.1, window)
            .unwrap()
            .into_raw()
    }

    #[test]
    fn bicubic_gray_downscale() {
        let input = [
            255, 228, 34, 121, 243, 189, 6, 131, 102, 168, 82, 193, 187, 150, 81, 243, 205, 24,
            236, 8,
        ];
        let expected = [171, 99, 162, 167, 145, 107];
        let output = bicubic::<Luma<u8>>(&input, (5, 4), (3, 2), full(3, 2));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_gray_upscale() {
        let input = [246, 164, 231, 36, 210, 111];
        let expected = [
            255, 255, 202, 159, 189, 234, 250, 239, 226, 192, 167, 187, 217, 228, 137, 146, 168,
            187, 183, 173, 169, 34, 65, 144, 207, 179, 129, 110, 0, 35, 134, 215, 177, 112, 88,
        ];
        let output = bicubic::<Luma<u8>>(&input, (3, 2), (7, 5), full(7, 5));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_rgb() {
        let input = [
            174, 176, 218, 242, 169, 114, 205, 63, 160, 47, 212, 79, 72, 112, 120, 222, 69, 31, 95,
            108, 36, 109, 238, 69, 51, 81, 228, 211, 202, 58, 202, 65, 76, 70, 193, 104, 42, 250,
            209, 164, 2, 44, 178, 140, 98, 2, 243, 21, 50, 29, 14, 7, 53, 50,
        ];
        let expected = [
            209, 179, 192, 222, 106, 133, 44, 171, 104, 174, 75, 61, 167, 171, 127, 161, 126, 151,
            115, 157, 96, 155, 107, 76, 101, 159, 41, 79, 150, 168, 203, 139, 77, 116, 143, 94, 86,
            157, 106, 131, 118, 106, 96, 159, 41, 53, 76, 58, 84, 157, 158, 175, 94, 63, 15, 174,
            19, 16, 27, 33,
        ];
        let output = bicubic::<Rgb<u8>>(&input, (6, 3), (4, 5), full(4, 5));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_two_channels() {
        // Pillow's "La" mode, which `Image.resize` filters as it is.
        let input = [
            46, 60, 230, 192, 164, 156, 127, 214, 154, 194, 195, 137, 72, 153, 74, 209, 58, 76,
            105, 84, 10, 213, 226, 115, 168, 118, 214, 201, 69, 25, 185, 31, 36, 45, 158, 77, 46,
            12, 218, 31, 12, 112, 24, 116, 11, 130, 22, 250, 129, 142,
        ];
        let expected = [
            132, 119, 148, 181, 127, 178, 126, 164, 120, 162, 99, 87, 115, 88, 149, 83, 145, 48,
            38, 90, 23, 133, 97, 155,
        ];
        let output = bicubic::<LumaA<u8>>(&input, (5, 5), (3, 4), full(3, 4));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_four_channels() {
        // Pillow's "CMYK" mode, which `Image.resize` filters as it is.
        let input = [
            93, 181, 32, 98, 165, 105, 50, 103, 85, 37, 100, 231, 132, 164, 21, 52, 236, 253, 147,
            128, 146, 247, 38, 67, 243, 22, 19, 5, 49, 230, 23, 192, 69, 151, 224, 15, 77, 222,
            200, 71, 118, 252, 140, 127, 199, 121, 53, 124, 77, 166, 239, 29, 215, 151, 17, 251, 0,
            53, 197, 191, 116, 42, 47, 246,
        ];
        let expected = [
            136, 209, 57, 113, 152, 183, 45, 99, 162, 122, 42, 103, 137, 24, 72, 163, 114, 101, 47,
            131, 101, 198, 17, 85, 160, 202, 193, 73, 128, 228, 162, 67, 114, 232, 116, 59, 183,
            153, 82, 51, 160, 157, 52, 110, 120, 183, 36, 166, 58, 155, 251, 7, 127, 164, 153, 109,
            163, 162, 77, 215, 35, 125, 182, 185, 78, 80, 123, 196, 153, 51, 41, 214,
        ];
        let output = bicubic::<Rgba<u8>>(&input, (4, 4), (6, 3), full(6, 3));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_vertical_pass_first() {
        // The height shrinks by 15 pixels and the width by 1, so Pillow
        // filters the columns first.
        let input = [
            222, 35, 148, 23, 100, 213, 139, 185, 10, 161, 11, 75, 220, 215, 141, 138, 185, 71,
            200, 236, 137, 87, 226, 70, 25, 242, 210, 185, 115, 125, 32, 41, 2, 80, 148, 82, 41, 8,
            77, 248, 46, 89, 206, 107, 33, 18, 29, 132, 216, 252, 255, 74, 104, 94, 169, 29, 68,
            143, 178, 108, 77, 6, 157, 159, 161, 29, 162, 116, 95, 180, 212, 198, 214, 208, 227,
            92, 202, 200, 237, 156,
        ];
        let expected = [
            141, 134, 119, 112, 154, 142, 55, 101, 129, 102, 141, 119, 149, 177, 164,
        ];
        let plan = Plan::new((4, 20), (3, 5), full(3, 5));
        assert!(!plan.horizontal_first);
        let output = bicubic::<Luma<u8>>(&input, (4, 20), (3, 5), full(3, 5));
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_window_of_upscale() {
        let input = [
            179, 140, 213, 197, 186, 5, 212, 234, 199, 98, 100, 109, 62, 194, 34, 10, 213, 109,
            241, 183, 62, 160, 81, 135, 227, 165, 65, 223, 82, 9, 151, 117, 3, 114, 58, 94, 91, 36,
            246, 15, 33, 60, 9, 117, 56, 21, 46, 164, 122, 103, 35, 197, 76, 37, 70, 218, 42, 3, 0,
            55, 137, 251, 202,
        ];
        // Pillow's result cropped to the box (3, 2, 8, 6).
        let expected = [
            90, 70, 144, 140, 52, 67, 152, 110, 92, 146, 15, 156, 140, 76, 52, 87, 102, 101, 60, 13,
        ];
        let window = Rect {
            x: 3,
            y: 2,
            width: 5,
            height: 4,
        };
        let output = bicubic::<Luma<u8>>(&input, (9, 7), (12, 10), window);
        assert_eq!(output, expected);
    }

    #[test]
    fn bicubic_sixteen_bits() {
        let input = [
            52719, 17045, 22586, 55042, 38114, 33390, 44150, 33481, 64286, 49350, 3547, 9694,
            35721, 53715, 4523, 44779, 49774, 51583, 57235, 12557,
        ];
        let expected = [
            36691, 26285, 45533, 38125, 32501, 50433, 38215, 42628, 56645, 18407, 39450, 41544,
            5643, 36704, 25621, 32734, 48490, 28684, 49946, 55675, 31744,
        ];
        let image = ImageBuffer::<Luma<u16>, _>::from_raw(5, 4, input.to_vec()).unwrap();
        let output = resize_bicubic_u16(&image, 3, 7, full(3, 7)).unwrap();
        assert_eq!(output.into_raw(), expected);
    }

    #[test]
    fn nearest_downscale_and_upscale() {
        let input = [
            158, 224, 38, 142, 215, 188, 103, 205, 45, 185, 165, 91, 213, 154, 250, 48, 100, 200,
            191, 122, 224, 161, 224, 20, 89, 225, 81, 56, 173, 39, 240, 218, 55, 154, 233,
        ];
        let expected = [224, 142, 188, 45, 165, 213, 224, 89, 81, 39, 218, 154];
        let image = ImageBuffer::<Luma<u8>, _>::from_raw(7, 5, input.to_vec()).unwrap();
        let output = resize_nearest(&image, 3, 4, full(3, 4)).unwrap();
        assert_eq!(output.into_raw(), expected);

        let input = [64, 19, 125, 220, 142, 13];
        let expected = [
            64, 64, 64, 19, 19, 125, 125, 125, 64, 64, 64, 19, 19, 125, 125, 125, 220, 220, 220,
            142, 142, 13, 13, 13, 220, 220, 220, 142, 142, 13, 13, 13, 220, 220, 220, 142, 142, 13,
            13, 13,
        ];
        let image = ImageBuffer::<Luma<u8>, _>::from_raw(3, 2, input.to_vec()).unwrap();
        let output = resize_nearest(&image, 8, 5, full(8, 5)).unwrap();
        assert_eq!(output.into_raw(), expected);
    }

    #[test]
    fn windows_outside_the_image_are_rejected() {
        let image = image::GrayImage::new(4, 4);
        let outside = Rect {
            x: 2,
            y: 0,
            width: 3,
            height: 1,
        };
        let empty = full(0, 2);
        for window in [outside, empty] {
            assert!(matches!(
                resize_bicubic(&image, 4, 3, window),
                Err(Error::InvalidInput(_))
            ));
            assert!(matches!(
                resize_nearest(&image, 4, 3, window),
                Err(Error::InvalidInput(_))
            ));
        }
        assert!(resize_bicubic(&image, 0, 3, full(1, 1)).is_err());
        assert!(resize_bicubic(&image::GrayImage::new(0, 3), 4, 3, full(1, 1)).is_err());
    }

    #[test]
    fn same_size_keeps_alpha_colours() {
        // Pillow's `resize` returns a copy when the size does not change, so
        // the colour under a faint alpha survives without premultiplying.
        let pixels = vec![200, 100, 50, 1, 10, 20, 30, 0];
        let image = DynamicImage::ImageRgba8(image::RgbaImage::from_raw(2, 1, pixels).unwrap());
        let rgb = pillow_resize_rgb(&image, PillowMode::Rgba, 2, 1, full(2, 1)).unwrap();
        assert_eq!(rgb.into_raw(), [200, 100, 50, 10, 20, 30]);
    }

    #[test]
    fn pillow_mode_from_png_header() {
        let header = |bit_depth: u8, color_type: u8| {
            let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
            bytes.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 4, bit_depth, color_type, 0, 0, 0]);
            bytes
        };
        let cases = [
            (1, 0, PillowMode::Bilevel),
            (4, 0, PillowMode::L),
            (8, 0, PillowMode::L),
            (16, 0, PillowMode::I16),
            (8, 2, PillowMode::Rgb),
            (16, 2, PillowMode::Rgb),
            (4, 3, PillowMode::P),
            (8, 4, PillowMode::La),
            (16, 6, PillowMode::Rgba),
        ];
        for (bit_depth, color_type, mode) in cases {
            let found = PillowMode::from_header(&header(bit_depth, color_type));
            assert_eq!(
                found,
                Some(mode),
                "bit depth {bit_depth}, colour type {color_type}"
            );
        }
        assert_eq!(PillowMode::from_header(b"\xff\xd8\xff\xe0"), None);
    }

    #[test]
    fn pillow_mode_from_gif_header() {
        // Pillow 13 opens this 4 x 1 GIF, whose 4-entry palette is the grey
        // ramp, as "L", and the same file with another palette as "P".
        let mut gif = vec![
            71, 73, 70, 56, 55, 97, 4, 0, 1, 0, 129, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3,
        ];
        assert_eq!(PillowMode::from_header(&gif), Some(PillowMode::L));
        gif[16] = 9;
        assert_eq!(PillowMode::from_header(&gif), Some(PillowMode::P));
    }

    #[test]
    fn output_checks_reject_bad_paths_before_work() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.png", "a.jpg", "a.bmp", "a.gif", "a.tiff", "a.webp"] {
            check_output(&dir.path().join(name)).unwrap();
        }
        for (path, expected) in [
            (dir.path().join("a.unknownext"), "unknown image extension"),
            (dir.path().join("a"), "unknown image extension"),
            (dir.path().join("missing/a.png"), "does not exist"),
        ] {
            let error = check_output(&path).unwrap_err().to_string();
            assert!(error.contains(expected), "{}: {error}", path.display());
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}

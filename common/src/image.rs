//! Reading images into tensors and writing tensors as images.
//!
//! A tensor contains one image as `(channels, height, width)` in `f32`, with
//! values in `[0, 1]`, or a batch as `(batch, channels, height, width)`.

use crate::checkpoint::write_atomic;
use crate::{Error, Result};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use std::io::Cursor;
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
    let format = ImageFormat::from_path(path).map_err(|_| {
        Error::InvalidInput(format!(
            "{}: missing or unknown image extension (use one such as .png)",
            path.display()
        ))
    })?;
    let mut image = from_tensor(tensor)?;
    // GIF stores colour only, so gray images are written as RGBA there.
    if format == ImageFormat::Gif {
        image = DynamicImage::ImageRgba8(image.to_rgba8());
    }
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, format)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
    write_atomic(path, bytes.get_ref())
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

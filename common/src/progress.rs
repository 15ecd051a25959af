//! Progress bars on `indicatif`, drawn on standard error.
//!
//! Bars are hidden when standard error is not a terminal, so logs and CI
//! output stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// Creates a bar over `len` items, with a message and an ETA.
pub fn bar(len: u64, message: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta} {prefix}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(message.to_string())
}

/// Creates a bar over `len` bytes.
pub fn bytes_bar(len: u64, message: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_message(message.to_string())
}

/// Creates a bar over `len` items that draws nothing, for callers that
/// report progress only on request.
pub fn hidden_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::hidden();
    bar.set_length(len);
    bar
}

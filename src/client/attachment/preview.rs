//! Pictures for the chat screen: a received image decoded and scaled down to the size the
//! screen asks for, without ever holding more than a bounded amount of memory.
//!
//! Owns the limits a hostile file meets (compressed bytes read, pixels declared, bytes
//! allocated). Takes any reader (the attach helper's decrypting reader over a Ready file), so
//! no plaintext copy is written. Must not draw anything or know which terminal protocol shows
//! the result; that is the TUI's.

use std::io::{Cursor, Read};

use image::{ImageReader, Limits, RgbaImage};

/// Pictures whose header declares more pixels than this are not decoded: 50 megapixels is a
/// 200 MiB canvas, more than any photo a phone takes and well short of what would exhaust
/// memory.
pub const MAX_PIXELS: u64 = 50_000_000;

/// A picture file larger than this is not read for a preview (it shows as a file line).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The most the decoder may allocate: the largest canvas allowed, plus room for its work.
const MAX_ALLOC: u64 = MAX_PIXELS * 4 + 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("the picture could not be read: {0}")]
    Read(#[from] std::io::Error),
    #[error("the picture is over {} MiB; save it (s) and open it with another program", MAX_FILE_BYTES / (1024 * 1024))]
    TooLarge,
    #[error("the picture declares {width}×{height} pixels, more than the {} million shown here; save it (s) to look at it", MAX_PIXELS / 1_000_000)]
    TooManyPixels { width: u32, height: u32 },
    #[error("not a picture sotto can show (PNG, JPEG, GIF, WebP, BMP): {0}")]
    Format(#[from] image::ImageError),
}

/// Reads the whole (compressed) file, refusing one over `MAX_FILE_BYTES`: the decoders
/// need to seek, a decrypting reader cannot.
fn read_bounded(reader: impl Read) -> Result<Vec<u8>, PreviewError> {
    let mut bytes = Vec::new();
    reader.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(PreviewError::TooLarge);
    }
    Ok(bytes)
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, PreviewError> {
    let mut r = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    r.limits(limits);
    Ok(r)
}

/// Checks the declared size against `MAX_PIXELS` from the header alone.
fn checked_dimensions(bytes: &[u8]) -> Result<(u32, u32), PreviewError> {
    let (width, height) = reader(bytes)?.into_dimensions()?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PreviewError::TooManyPixels { width, height });
    }
    Ok((width, height))
}

/// The picture's size in pixels, from its header only (for the one-line placeholder shown
/// when `images = false`).
pub fn dimensions(reader: impl Read) -> Result<(u32, u32), PreviewError> {
    checked_dimensions(&read_bounded(reader)?)
}

/// Decodes the picture in `reader` and scales it down, keeping its proportions, to fit in
/// `max_w` × `max_h` pixels (a smaller one keeps its size). Refuses a file whose header
/// declares more than `MAX_PIXELS` before decoding anything.
pub fn decode(reader: impl Read, max_w: u32, max_h: u32) -> Result<RgbaImage, PreviewError> {
    let bytes = read_bounded(reader)?;
    scaled(&bytes, max_w, max_h)
}

/// What `Command::Preview` asks for, from one read of the file: the picture's size in pixels
/// and, unless both bounds are 0 (the size alone), the picture scaled to fit them.
pub fn preview(
    reader: impl Read,
    max_w: u32,
    max_h: u32,
) -> Result<(u32, u32, Option<RgbaImage>), PreviewError> {
    let bytes = read_bounded(reader)?;
    let (width, height) = checked_dimensions(&bytes)?;
    if max_w == 0 && max_h == 0 {
        return Ok((width, height, None));
    }
    Ok((width, height, Some(scaled(&bytes, max_w, max_h)?)))
}

fn scaled(bytes: &[u8], max_w: u32, max_h: u32) -> Result<RgbaImage, PreviewError> {
    let (width, height) = checked_dimensions(bytes)?;
    let image = self::reader(bytes)?.decode()?;
    let (max_w, max_h) = (max_w.max(1), max_h.max(1));
    let image = if width > max_w || height > max_h {
        image.thumbnail(max_w, max_h)
    } else {
        image
    };
    Ok(image.into_rgba8())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        });
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_picture_is_scaled_to_fit_keeping_its_proportions() {
        let img = decode(Cursor::new(png(400, 200)), 100, 100).unwrap();
        assert_eq!(img.dimensions(), (100, 50));
        // A smaller one keeps its size.
        let img = decode(Cursor::new(png(30, 20)), 100, 100).unwrap();
        assert_eq!(img.dimensions(), (30, 20));
        assert_eq!(dimensions(Cursor::new(png(640, 480))).unwrap(), (640, 480));
    }

    // A 1×1 picture and a 40000×40000 header (with the memory it makes the decoder hold):
    // tests/preview_bounds.rs.

    #[test]
    fn garbage_and_oversized_files_are_refused_with_a_sentence() {
        let e = decode(Cursor::new(b"not a picture".to_vec()), 80, 40).unwrap_err();
        assert!(matches!(e, PreviewError::Format(_)), "{e:?}");
        let big = std::io::repeat(0).take(MAX_FILE_BYTES + 10);
        assert!(matches!(decode(big, 80, 40), Err(PreviewError::TooLarge)));
    }
}

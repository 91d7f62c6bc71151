//! A picture of a digit (PNG or JPEG, any size, e.g. a photo of paper) turned into a 28x28
//! input the way MNIST was made: light ink on black, cropped to the ink, the longer side scaled
//! to 20 pixels, centred by centre of mass in a 28x28 field. Fashion-MNIST was made another
//! way (the longer side fills all 28 pixels, centred by its bounding box), and pictures for a
//! Fashion-MNIST model are prepared that way.

use std::fs::{self, File};
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Limits, Luma};

use crate::data::{DatasetKind, IMAGE_PIXELS, IMAGE_SIDE};

/// How a dataset placed its objects in the 28x28 field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Longest side of the object, in pixels.
    pub side: u32,
    /// Centre of mass on the field's centre (MNIST) rather than the bounding box's centre.
    pub by_mass: bool,
}

impl Layout {
    /// MNIST: a 20-pixel box centred by centre of mass.
    pub const MNIST: Layout = Layout {
        side: 20,
        by_mass: true,
    };
    /// Fashion-MNIST: the longer side fills the field, centred.
    pub const FASHION_MNIST: Layout = Layout {
        side: IMAGE_SIDE as u32,
        by_mass: false,
    };

    /// The layout of a dataset's images.
    pub fn of(kind: DatasetKind) -> Self {
        match kind {
            DatasetKind::Mnist => Self::MNIST,
            DatasetKind::FashionMnist => Self::FASHION_MNIST,
        }
    }
}

/// Largest image file read. A 16-megapixel photo is a few MB as JPEG and rarely over 32 MiB as
/// PNG; the file is read into memory whole (the JPEG decoder would do so anyway).
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// Longest side accepted, in pixels.
pub const MAX_SIDE: u32 = 1 << 14;
/// Most pixels accepted: 4096x4096, so a 12-megapixel phone photo fits. Decoding holds at most
/// 8 bytes a pixel (16-bit RGBA), which bounds what any file, however small, can make us
/// allocate (see [`load`]).
pub const MAX_PIXELS: u64 = 1 << 24;

/// Why a picture could not be used.
#[derive(thiserror::Error, Debug)]
pub enum ImageInputError {
    /// The file could not be read or decoded.
    #[error("{}: cannot read the image (PNG or JPEG expected): {error}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said (a field, not a `source`: the message already includes it).
        error: image::ImageError,
    },
    /// The file could not be opened or read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// A directory, FIFO, device or socket: reading it could block or never end.
    #[error("{}: not a regular file ({kind}); give a PNG or JPEG file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file, or the image it declares, is past the limits.
    #[error(
        "{}: image too large: {what}; at most {MAX_FILE_BYTES} bytes, {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels (4096x4096) in all are accepted",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What is too large, as measured or as the decoder said.
        what: String,
    },
    /// Nothing stands out from the background.
    #[error("{}: no ink found: the image is blank or has no contrast", .0.display())]
    NoInk(PathBuf),
}

/// Reads `path` (PNG or JPEG, EXIF orientation applied) and prepares it as `layout` says.
///
/// Memory is bounded whatever the file: the file is at most [`MAX_FILE_BYTES`] and the image
/// at most [`MAX_PIXELS`], checked from its header before the pixels are allocated. Peak use is
/// the file (twice for JPEG, whose decoder copies it) plus the decoded image (at most 8 bytes
/// a pixel) while decoding, then the decoded image with its grey version (3 more bytes a
/// pixel): under 12 bytes a pixel plus 64 MiB, about 260 MiB at the limits.
pub fn load(path: &Path, layout: Layout) -> Result<[u8; IMAGE_PIXELS], ImageInputError> {
    let gray = read_gray(path)?;
    preprocess(&gray, layout).ok_or_else(|| ImageInputError::NoInk(path.to_owned()))
}

/// A picture for a model of `rows x cols` images other than the 28x28 digit layout: grey
/// levels, the whole picture scaled to the model's size by area averaging (the data's own
/// conventions, such as light ink on dark, are the picture's to follow).
pub fn load_resized(path: &Path, rows: usize, cols: usize) -> Result<Vec<u8>, ImageInputError> {
    let gray = read_gray(path)?;
    let side = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(area_average(&gray, side(cols), side(rows)).into_raw())
}

/// The decoder limits: sides and the decoder's own allocations (the largest image it may
/// legitimately hold, 16-bit RGBA at [`MAX_PIXELS`]).
fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(8 * MAX_PIXELS);
    limits
}

/// `path` decoded to grey levels (transparency as white paper), orientation applied.
pub fn read_gray(path: &Path) -> Result<GrayImage, ImageInputError> {
    let bytes = read_bounded(path)?;
    let error = |source: image::ImageError| match source {
        image::ImageError::Limits(e) => ImageInputError::TooLarge {
            path: path.to_owned(),
            what: e.to_string(),
        },
        error => ImageInputError::Decode {
            path: path.to_owned(),
            error,
        },
    };
    let mut reader = ImageReader::new(Cursor::new(&bytes[..]));
    // The content decides; the extension only when the content is not recognised.
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| error(image::ImageError::IoError(e)))?;
    reader.limits(limits());
    let mut decoder = reader.into_decoder().map_err(error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageInputError::TooLarge {
            path: path.to_owned(),
            what: format!("{width}x{height} pixels"),
        });
    }
    // Phone photos are often stored sideways with an orientation tag.
    let orientation = decoder.orientation().map_err(error)?;
    let picture = DynamicImage::from_decoder(decoder).map_err(error)?;
    drop(bytes);
    // Turning the grey image rather than the decoded one: the same pixels (greying is per
    // pixel), with a copy of 1 byte a pixel instead of up to 8.
    let mut gray = DynamicImage::ImageLuma8(flatten_on_white(&picture));
    drop(picture);
    gray.apply_orientation(orientation);
    Ok(gray.into_luma8())
}

/// The whole file, refused unless it is a regular file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, ImageInputError> {
    let io = |error: io::Error| ImageInputError::Read {
        path: path.to_owned(),
        error,
    };
    let regular = |meta: &fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            Err(ImageInputError::NotAFile {
                path: path.to_owned(),
                kind: file_kind(&meta.file_type()),
            })
        }
    };
    // Checked before opening too: opening a FIFO blocks until someone writes to it.
    regular(&fs::metadata(path).map_err(io)?)?;
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    regular(&meta)?;
    let too_large = |len: u64| ImageInputError::TooLarge {
        path: path.to_owned(),
        what: format!("the file is {len} bytes"),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops one byte past the limit.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for messages.
pub fn file_kind(kind: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// Grey levels, with transparent areas shown as white paper (ink drawn on a transparent canvas
/// would otherwise vanish into black).
pub fn flatten_on_white(picture: &DynamicImage) -> GrayImage {
    let la = picture.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [l, a] = la.get_pixel(x, y).0;
        let (l, a) = (u32::from(l), u32::from(a));
        Luma([((l * a + 255 * (255 - a) + 127) / 255) as u8])
    })
}

/// The recipe on a grey image of any size; `None` when no ink stands out.
pub fn preprocess(gray: &GrayImage, layout: Layout) -> Option<[u8; IMAGE_PIXELS]> {
    let ink = ink_image(gray)?;
    let (x0, y0, x1, y1) = ink_bounds(&ink)?;
    let cropped = imageops::crop_imm(&ink, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let object = fit_box(&cropped, layout.side.clamp(1, IMAGE_SIDE as u32));
    Some(place(&object, layout.by_mass))
}

/// Ink as bright on a zero background, stretched to the full range.
fn ink_image(gray: &GrayImage) -> Option<GrayImage> {
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return None;
    }
    let mut border: Vec<u8> = gray
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p.0[0])
        .collect();
    let mean = border.iter().map(|&v| f64::from(v)).sum::<f64>() / border.len() as f64;
    // A light border means dark ink on paper: MNIST has light ink on black.
    let invert = mean > 127.5;
    let level = |v: u8| if invert { 255 - v } else { v };
    border.iter_mut().for_each(|v| *v = level(*v));
    // The median ignores ink that touches the border of a tight crop.
    border.sort_unstable();
    let background = f32::from(border[border.len() / 2]);
    let peak = gray
        .pixels()
        .map(|p| f32::from(level(p.0[0])))
        .fold(0.0, f32::max);
    let contrast = peak - background;
    if contrast < 32.0 {
        return None;
    }
    // Paper texture and sensor noise sit in the lowest quarter of the contrast; dropping it
    // leaves a clean zero background like MNIST's.
    let floor = background + 0.25 * contrast;
    let scale = 255.0 / (peak - floor);
    Some(GrayImage::from_fn(w, h, |x, y| {
        let v = f32::from(level(gray.get_pixel(x, y).0[0]));
        Luma([((v - floor) * scale).clamp(0.0, 255.0).round() as u8])
    }))
}

/// Inclusive bounding box (x0, y0, x1, y1) of the pixels brighter than a third of the range.
fn ink_bounds(ink: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    let mut bounds: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in ink.enumerate_pixels() {
        if p.0[0] >= 85 {
            bounds = Some(match bounds {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            });
        }
    }
    bounds
}

/// Scales so the longer side is `side` pixels, keeping the aspect ratio: area averaging when
/// shrinking (every source pixel counts, as a camera would), a triangle filter when enlarging.
fn fit_box(image: &GrayImage, side: u32) -> GrayImage {
    let (w, h) = image.dimensions();
    let long = w.max(h);
    let scaled = |n: u32| {
        ((u64::from(n) * u64::from(side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32
    };
    let (nw, nh) = (scaled(w), scaled(h));
    if long > side {
        area_average(image, nw, nh)
    } else {
        imageops::resize(image, nw, nh, FilterType::Triangle)
    }
}

/// Each output pixel is the mean of the source area it covers, partial pixels weighted by
/// their overlap.
pub fn area_average(image: &GrayImage, width: u32, height: u32) -> GrayImage {
    let (w, h) = image.dimensions();
    let weights = |from: u32, to: u32| -> Vec<Vec<(u32, f64)>> {
        let ratio = f64::from(from) / f64::from(to);
        (0..to)
            .map(|i| {
                let (start, end) = (f64::from(i) * ratio, f64::from(i + 1) * ratio);
                let first = start.floor() as u32;
                let last = (end.ceil() as u32).min(from);
                (first..last)
                    .map(|s| {
                        let overlap = end.min(f64::from(s + 1)) - start.max(f64::from(s));
                        (s, overlap / ratio)
                    })
                    .filter(|&(_, wgt)| wgt > 0.0)
                    .collect()
            })
            .collect()
    };
    let (wx, wy) = (weights(w, width), weights(h, height));
    GrayImage::from_fn(width, height, |x, y| {
        let mut sum = 0.0;
        for &(sy, ky) in &wy[y as usize] {
            for &(sx, kx) in &wx[x as usize] {
                sum += f64::from(image.get_pixel(sx, sy).0[0]) * kx * ky;
            }
        }
        Luma([sum.round().clamp(0.0, 255.0) as u8])
    })
}

/// Pastes `digit` into a 28x28 field so its centre of mass (or its middle) lands on the
/// field's centre, kept whole: the offset is clamped so no ink falls off the edge.
fn place(digit: &GrayImage, by_mass: bool) -> [u8; IMAGE_PIXELS] {
    let (w, h) = digit.dimensions();
    let (mut mass, mut mx, mut my) = (0.0, 0.0, 0.0);
    for (x, y, p) in digit.enumerate_pixels() {
        let v = f64::from(p.0[0]);
        mass += v;
        mx += v * (f64::from(x) + 0.5);
        my += v * (f64::from(y) + 0.5);
    }
    let (cx, cy) = if by_mass && mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (f64::from(w) / 2.0, f64::from(h) / 2.0)
    };
    let half = IMAGE_SIDE as f64 / 2.0;
    let place = |centre: f64, size: u32| -> usize {
        let max = IMAGE_SIDE.saturating_sub(size as usize) as f64;
        (half - centre).round().clamp(0.0, max) as usize
    };
    let (ox, oy) = (place(cx, w), place(cy, h));
    let mut out = [0u8; IMAGE_PIXELS];
    for (x, y, p) in digit.enumerate_pixels() {
        let (tx, ty) = (ox + x as usize, oy + y as usize);
        if tx < IMAGE_SIDE && ty < IMAGE_SIDE {
            out[ty * IMAGE_SIDE + tx] = p.0[0];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark "L" on light paper, far off-centre in a wide canvas, with some paper texture.
    fn paper_digit() -> GrayImage {
        GrayImage::from_fn(300, 180, |x, y| {
            let texture = ((x * 7 + y * 13) % 17) as u8;
            let stem = (40..52).contains(&x) && (20..140).contains(&y);
            let foot = (40..110).contains(&x) && (128..140).contains(&y);
            Luma([if stem || foot {
                30 + texture
            } else {
                215 + texture
            }])
        })
    }

    fn centre_of_mass(pixels: &[u8; IMAGE_PIXELS]) -> (f64, f64) {
        let (mut m, mut x, mut y) = (0.0, 0.0, 0.0);
        for (i, &v) in pixels.iter().enumerate() {
            let v = f64::from(v);
            m += v;
            x += v * ((i % IMAGE_SIDE) as f64 + 0.5);
            y += v * ((i / IMAGE_SIDE) as f64 + 0.5);
        }
        (x / m, y / m)
    }

    fn ink_extent(pixels: &[u8; IMAGE_PIXELS]) -> (usize, usize) {
        let on: Vec<usize> = (0..IMAGE_PIXELS).filter(|&i| pixels[i] > 0).collect();
        let cols = on.iter().map(|i| i % IMAGE_SIDE);
        let rows = on.iter().map(|i| i / IMAGE_SIDE);
        (
            cols.clone().max().unwrap() - cols.min().unwrap() + 1,
            rows.clone().max().unwrap() - rows.min().unwrap() + 1,
        )
    }

    #[test]
    fn a_photo_like_digit_becomes_an_mnist_like_one() {
        let out = preprocess(&paper_digit(), Layout::MNIST).unwrap();
        let (cx, cy) = centre_of_mass(&out);
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "{cx} {cy}"
        );
        // 70x120 of ink: 20 px tall, 70/120 of that wide (anti-aliased edges may add one).
        let (w, h) = ink_extent(&out);
        assert_eq!(h, 20);
        assert!((12..=13).contains(&w), "{w}");
        // Light ink on black; the paper texture is gone.
        assert_eq!(out[0], 0);
        assert!(*out.iter().max().unwrap() > 200);
        let background = out.iter().filter(|&&v| v == 0).count();
        assert!(background > IMAGE_PIXELS / 2);
    }

    #[test]
    fn fashion_pictures_fill_the_field_centred_by_their_box() {
        let out = preprocess(&paper_digit(), Layout::FASHION_MNIST).unwrap();
        let (w, h) = ink_extent(&out);
        assert_eq!(h, 28);
        assert!((16..=18).contains(&w), "{w}");
        // The L is heavier on its left, but its box is what is centred.
        let cols: Vec<usize> = (0..IMAGE_PIXELS)
            .filter(|&i| out[i] > 0)
            .map(|i| i % IMAGE_SIDE)
            .collect();
        let (left, right) = (*cols.iter().min().unwrap(), *cols.iter().max().unwrap());
        assert!(
            (left as i32 - (27 - right) as i32).abs() <= 1,
            "{left} {right}"
        );
        assert_eq!(Layout::of(DatasetKind::FashionMnist), Layout::FASHION_MNIST);
        assert_eq!(Layout::of(DatasetKind::Mnist), Layout::MNIST);
    }

    #[test]
    fn light_on_dark_is_not_inverted() {
        let dark = GrayImage::from_fn(50, 50, |x, y| {
            Luma([if (20..30).contains(&x) && (10..40).contains(&y) {
                240
            } else {
                10
            }])
        });
        let out = preprocess(&dark, Layout::MNIST).unwrap();
        assert_eq!(out[0], 0);
        assert_eq!(out[14 * IMAGE_SIDE + 14], 255);
    }

    #[test]
    fn blank_images_have_no_ink() {
        assert!(preprocess(&GrayImage::from_pixel(40, 30, Luma([200])), Layout::MNIST).is_none());
        assert!(preprocess(&GrayImage::new(0, 0), Layout::MNIST).is_none());
    }

    #[test]
    fn small_drawings_are_enlarged_to_the_box() {
        let tiny = GrayImage::from_fn(12, 12, |x, y| {
            Luma([if (3..7).contains(&x) && (2..10).contains(&y) {
                0
            } else {
                255
            }])
        });
        let (w, h) = ink_extent(&preprocess(&tiny, Layout::MNIST).unwrap());
        assert!((20..=21).contains(&h), "{h}");
        assert!((10..=12).contains(&w), "{w}");
    }

    #[test]
    fn area_averaging_keeps_the_mean() {
        let image = GrayImage::from_fn(97, 61, |x, y| Luma([((x * 31 + y * 17) % 256) as u8]));
        let small = area_average(&image, 20, 13);
        let mean = |g: &GrayImage| {
            g.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / f64::from(g.width() * g.height())
        };
        assert!((mean(&image) - mean(&small)).abs() < 1.0);
        let flat = area_average(&GrayImage::from_pixel(33, 33, Luma([77])), 20, 20);
        assert!(flat.pixels().all(|p| p.0[0] == 77));
    }

    #[test]
    fn files_load_as_png_and_jpeg_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let picture = DynamicImage::ImageLuma8(paper_digit());
        let png = dir.path().join("d.png");
        let jpg = dir.path().join("d.jpg");
        picture.save(&png).unwrap();
        picture.to_rgb8().save(&jpg).unwrap();
        let from_png = load(&png, Layout::MNIST).unwrap();
        let from_jpg = load(&jpg, Layout::MNIST).unwrap();
        let differ = from_png
            .iter()
            .zip(&from_jpg)
            .filter(|(a, b)| a.abs_diff(**b) > 64)
            .count();
        assert!(differ < 20, "{differ} pixels differ");

        // Black ink on a transparent canvas counts as ink on white paper.
        let transparent = image::RgbaImage::from_fn(40, 40, |x, _| {
            image::Rgba(if (15..25).contains(&x) {
                [0, 0, 0, 255]
            } else {
                [0, 0, 0, 0]
            })
        });
        let alpha = dir.path().join("alpha.png");
        transparent.save(&alpha).unwrap();
        assert_eq!(
            load(&alpha, Layout::MNIST).unwrap()[14 * IMAGE_SIDE + 14],
            255
        );

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        let blank = dir.path().join("blank.png");
        GrayImage::from_pixel(10, 10, Luma([255]))
            .save(&blank)
            .unwrap();
        let missing = dir.path().join("missing.png");
        for (path, reason) in [
            (&text, "cannot read"),
            (&blank, "no ink"),
            (&missing, "No such file"),
        ] {
            let e = load(path, Layout::MNIST).unwrap_err().to_string();
            assert!(
                e.contains(path.to_str().unwrap()) && e.contains(reason),
                "{e}"
            );
        }
    }
}

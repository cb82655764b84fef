//! Thumbnails: which size serves a request, and making one from an image without letting a
//! hostile file take the process down.
//!
//! The server makes thumbnails only in a few standard sizes and serves the nearest one that
//! is at least as large as what was asked for, so the cache holds at most a handful per
//! image whatever clients request. Decoding runs under [`image::Limits`] (largest width and
//! height, most memory allocated), which rejects decompression bombs from their headers
//! before any pixel buffer is allocated.
//!
//! Animated thumbnails are made frame by frame: each decoded frame is scaled or cropped and
//! encoded before the next is decoded, so memory holds one frame and the encoded output.
//! An [`AnimationLimits`] budget caps the frames and the pixels processed over the whole
//! animation; an animation past it gets a still thumbnail instead.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::imageops::FilterType;
use image::metadata::LoopCount;
use image::{
    AnimationDecoder, DynamicImage, Frame, Frames, ImageDecoder, ImageError, ImageFormat,
    ImageReader, Limits,
};

/// How a thumbnail fits the requested box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThumbnailMethod {
    /// Fill the box exactly, cutting off what does not fit.
    Crop,
    /// Fit inside the box, keeping the aspect ratio.
    Scale,
}

impl ThumbnailMethod {
    /// The spec's name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// A thumbnail size: a box and a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThumbnailSize {
    /// Width of the box in pixels.
    pub width: u32,
    /// Height of the box in pixels.
    pub height: u32,
    /// How the image fits the box.
    pub method: ThumbnailMethod,
}

const fn size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
    ThumbnailSize {
        width,
        height,
        method,
    }
}

/// The sizes thumbnails are made in, smallest first.
pub const STANDARD_SIZES: [ThumbnailSize; 5] = [
    size(32, 32, ThumbnailMethod::Crop),
    size(96, 96, ThumbnailMethod::Crop),
    size(320, 240, ThumbnailMethod::Scale),
    size(640, 480, ThumbnailMethod::Scale),
    size(800, 600, ThumbnailMethod::Scale),
];

/// The standard size that serves a request for `width` x `height` with `method`: the
/// smallest size of that method covering the request; failing that the smallest size of any
/// method covering it; failing that (a request larger than every size) the largest size.
pub fn choose_size(width: u32, height: u32, method: ThumbnailMethod) -> ThumbnailSize {
    let covers =
        |candidate: &&ThumbnailSize| candidate.width >= width && candidate.height >= height;
    let area =
        |candidate: &&ThumbnailSize| u64::from(candidate.width) * u64::from(candidate.height);
    STANDARD_SIZES
        .iter()
        .filter(covers)
        .filter(|candidate| candidate.method == method)
        .min_by_key(area)
        .or_else(|| STANDARD_SIZES.iter().filter(covers).min_by_key(area))
        .or_else(|| STANDARD_SIZES.iter().max_by_key(area))
        .copied()
        .unwrap_or(STANDARD_SIZES[0])
}

/// How much work one image decode may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height in pixels.
    pub max_dimension: u32,
    /// Most bytes the decoder may allocate.
    pub max_alloc_bytes: u64,
}

impl DecodeLimits {
    fn image_limits(self) -> Limits {
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_dimension);
        limits.max_image_height = Some(self.max_dimension);
        limits.max_alloc = Some(self.max_alloc_bytes);
        limits
    }
}

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbnailError {
    /// The content is not an image this server decodes, or it is damaged. 400 `M_UNKNOWN`.
    #[error("cannot generate a thumbnail for this content: {0}")]
    NotAnImage(String),
    /// The image is larger than the decode limits allow. 413 `M_TOO_LARGE`.
    #[error("the image is too large to thumbnail: {0}")]
    TooLarge(String),
    /// Encoding the thumbnail failed. 500.
    #[error("cannot encode the thumbnail: {0}")]
    Encode(String),
}

fn decode_error(error: ImageError) -> ThumbnailError {
    match error {
        ImageError::Limits(limit) => ThumbnailError::TooLarge(limit.to_string()),
        other => ThumbnailError::NotAnImage(other.to_string()),
    }
}

/// A generated thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// The encoded image.
    pub content: Vec<u8>,
    /// Its MIME type (`image/png` or `image/jpeg`; `image/gif` for an animated one).
    pub content_type: &'static str,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
}

/// Makes a thumbnail of `content` in `size`. CPU-heavy: run it on a blocking thread.
///
/// Scaling never enlarges an image that already fits the box; cropping always yields
/// exactly the box. The thumbnail is a JPEG when the source is a JPEG, a PNG otherwise (to
/// keep transparency).
pub fn generate(
    content: &[u8],
    size: ThumbnailSize,
    limits: DecodeLimits,
) -> Result<Generated, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(content))
        .with_guessed_format()
        .map_err(|error| ThumbnailError::NotAnImage(error.to_string()))?;
    let format = reader
        .format()
        .ok_or_else(|| ThumbnailError::NotAnImage("unknown image format".to_owned()))?;
    reader.limits(limits.image_limits());
    let image = reader.decode().map_err(decode_error)?;
    let thumbnail = fit(image, size);
    let (encoded_as, content_type, thumbnail) = if format == ImageFormat::Jpeg {
        (
            ImageFormat::Jpeg,
            "image/jpeg",
            DynamicImage::ImageRgb8(thumbnail.to_rgb8()),
        )
    } else {
        (ImageFormat::Png, "image/png", thumbnail)
    };
    let mut out = Cursor::new(Vec::new());
    thumbnail
        .write_to(&mut out, encoded_as)
        .map_err(|error| ThumbnailError::Encode(error.to_string()))?;
    Ok(Generated {
        content: out.into_inner(),
        content_type,
        width: thumbnail.width(),
        height: thumbnail.height(),
    })
}

/// `image` scaled or cropped to `size`: scaling never enlarges an image that already fits the
/// box; cropping always yields exactly the box.
fn fit(image: DynamicImage, size: ThumbnailSize) -> DynamicImage {
    match size.method {
        ThumbnailMethod::Crop => {
            image.resize_to_fill(size.width, size.height, FilterType::Triangle)
        }
        ThumbnailMethod::Scale if image.width() <= size.width && image.height() <= size.height => {
            image
        }
        ThumbnailMethod::Scale => image.resize(size.width, size.height, FilterType::Triangle),
    }
}

/// How much of an animation one animated thumbnail may process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnimationLimits {
    /// Most frames an animation may have.
    pub max_frames: u32,
    /// Most pixels processed over all frames: each frame counts its decoded canvas and its
    /// thumbnail, which bounds both the decoding and the encoding work.
    pub max_pixels: u64,
}

/// What became of a request for an animated thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnimatedThumbnail {
    /// The animated thumbnail.
    Animated(Generated),
    /// The content is not an animation (a still image, or a single frame): a still
    /// thumbnail serves it.
    NotAnimated,
    /// The animation is past the [`AnimationLimits`] (the reason says which): a still
    /// thumbnail serves it.
    OverBudget(String),
}

/// How hard the GIF encoder works at choosing each frame's palette, from 1 (best colours,
/// slowest) to 30. Thumbnails are small and made on request: favour speed.
const GIF_ENCODER_SPEED: i32 = 10;

/// The running count of what an animated thumbnail has processed.
struct Spent {
    limits: AnimationLimits,
    frames: u32,
    pixels: u64,
}

impl Spent {
    /// Counts one more frame; the reason it is refused past the frame limit.
    fn frame(&mut self) -> Result<(), String> {
        self.frames = self.frames.saturating_add(1);
        if self.frames > self.limits.max_frames {
            return Err(format!("more than {} frames", self.limits.max_frames));
        }
        Ok(())
    }

    /// Counts `count` more pixels processed; the reason they are refused past the pixel
    /// limit.
    fn pixels(&mut self, count: u64) -> Result<(), String> {
        self.pixels = self.pixels.saturating_add(count);
        if self.pixels > self.limits.max_pixels {
            return Err(format!(
                "more than {} pixels to process",
                self.limits.max_pixels
            ));
        }
        Ok(())
    }
}

fn pixels(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height)
}

/// The frames of `content` when it is an animation this server decodes (GIF, animated PNG,
/// animated WebP), with its loop count; `None` for anything else. The decoder runs under
/// `limits`, and each frame is decoded only when the iterator is advanced.
fn animation_frames(
    content: &[u8],
    limits: DecodeLimits,
) -> Result<Option<(Frames<'_>, LoopCount)>, ThumbnailError> {
    let Ok(format) = image::guess_format(content) else {
        return Ok(None);
    };
    let cursor = Cursor::new(content);
    let (frames, loops, (width, height)) = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(cursor).map_err(decode_error)?;
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_error)?;
            let dimensions = decoder.dimensions();
            let loops = decoder.loop_count();
            (decoder.into_frames(), loops, dimensions)
        }
        ImageFormat::Png => {
            let mut decoder = PngDecoder::new(cursor).map_err(decode_error)?;
            if !decoder.is_apng().map_err(decode_error)? {
                return Ok(None);
            }
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_error)?;
            let dimensions = decoder.dimensions();
            let decoder = decoder.apng().map_err(decode_error)?;
            let loops = decoder.loop_count();
            (decoder.into_frames(), loops, dimensions)
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(cursor).map_err(decode_error)?;
            if !decoder.has_animation() {
                return Ok(None);
            }
            decoder
                .set_limits(limits.image_limits())
                .map_err(decode_error)?;
            let dimensions = decoder.dimensions();
            let loops = decoder.loop_count();
            (decoder.into_frames(), loops, dimensions)
        }
        _ => return Ok(None),
    };
    // Every frame is a whole RGBA canvas: the allocation limit bounds one of them, whatever
    // the decoder itself checks.
    if pixels(width, height).saturating_mul(4) > limits.max_alloc_bytes {
        return Err(ThumbnailError::TooLarge(format!(
            "a {width}x{height} animation frame takes more than {} bytes",
            limits.max_alloc_bytes
        )));
    }
    Ok(Some((frames, loops)))
}

/// Makes an animated thumbnail of `content` in `size`: every frame scaled or cropped as
/// [`generate`] does a still image, with its delay and the loop count kept. CPU-heavy: run
/// it on a blocking thread.
///
/// The thumbnail is an animated GIF: the image library encodes animations only as GIF, so
/// animated PNG and WebP sources get GIF thumbnails too. Frames are decoded and encoded
/// one at a time; the first frame past `budget` stops the work.
pub fn generate_animated(
    content: &[u8],
    size: ThumbnailSize,
    limits: DecodeLimits,
    budget: AnimationLimits,
) -> Result<AnimatedThumbnail, ThumbnailError> {
    let Some((mut frames, loops)) = animation_frames(content, limits)? else {
        return Ok(AnimatedThumbnail::NotAnimated);
    };
    let Some(first) = frames.next() else {
        return Ok(AnimatedThumbnail::NotAnimated);
    };
    let first = first.map_err(decode_error)?;
    let Some(second) = frames.next() else {
        return Ok(AnimatedThumbnail::NotAnimated);
    };
    let mut spent = Spent {
        limits: budget,
        frames: 0,
        pixels: 0,
    };
    let mut out = Vec::new();
    let mut dimensions = (0, 0);
    {
        let mut encoder = GifEncoder::new_with_speed(&mut out, GIF_ENCODER_SPEED);
        let repeat = match loops {
            LoopCount::Infinite => Repeat::Infinite,
            LoopCount::Finite(count) => {
                // GIF counts repetitions after the first play, up to u16::MAX.
                Repeat::Finite(u16::try_from(count.get() - 1).unwrap_or(u16::MAX))
            }
        };
        encoder.set_repeat(repeat).map_err(encode_error)?;
        for frame in [Ok(first), second].into_iter().chain(frames) {
            let frame = frame.map_err(decode_error)?;
            let delay = frame.delay();
            let canvas = frame.into_buffer();
            // Checked before each step's work, so the work done is what the budget allows.
            let checked = spent
                .frame()
                .and_then(|()| spent.pixels(pixels(canvas.width(), canvas.height())));
            if let Err(reason) = checked {
                return Ok(AnimatedThumbnail::OverBudget(reason));
            }
            let thumbnail = fit(DynamicImage::ImageRgba8(canvas), size).into_rgba8();
            let (width, height) = thumbnail.dimensions();
            if let Err(reason) = spent.pixels(pixels(width, height)) {
                return Ok(AnimatedThumbnail::OverBudget(reason));
            }
            dimensions = (width, height);
            encoder
                .encode_frame(Frame::from_parts(thumbnail, 0, 0, delay))
                .map_err(encode_error)?;
        }
    }
    Ok(AnimatedThumbnail::Animated(Generated {
        content: out,
        content_type: "image/gif",
        width: dimensions.0,
        height: dimensions.1,
    }))
}

fn encode_error(error: ImageError) -> ThumbnailError {
    ThumbnailError::Encode(error.to_string())
}

/// The width and height `content` declares, read from its header alone; `None` for content
/// that is not an image this server decodes, or one past the dimension limit.
pub fn dimensions(content: &[u8], limits: DecodeLimits) -> Option<(u32, u32)> {
    let (width, height) = ImageReader::new(Cursor::new(content))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()?;
    (width <= limits.max_dimension && height <= limits.max_dimension).then_some((width, height))
}

/// Whether `content` is an animated image (a GIF with more than one frame, an animated PNG
/// or an animated WebP). Decodes at most two GIF frames, under `limits`; anything that fails
/// to decode is not animated.
pub fn is_animated(content: &[u8], limits: DecodeLimits) -> bool {
    let Ok(format) = image::guess_format(content) else {
        return false;
    };
    match format {
        ImageFormat::Gif => {
            let Ok(mut decoder) = GifDecoder::new(Cursor::new(content)) else {
                return false;
            };
            if decoder.set_limits(limits.image_limits()).is_err() {
                return false;
            }
            decoder.into_frames().take(2).filter(Result::is_ok).count() == 2
        }
        ImageFormat::Png => PngDecoder::new(Cursor::new(content))
            .and_then(|decoder| decoder.is_apng())
            .unwrap_or(false),
        ImageFormat::WebP => WebPDecoder::new(Cursor::new(content))
            .map(|decoder| decoder.has_animation())
            .unwrap_or(false),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use image::{Delay, Rgba, RgbaImage};

    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_dimension: 4096,
        max_alloc_bytes: 64 * 1024 * 1024,
    };

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbaImage::from_pixel(width, height, Rgba([200, 10, 10, 255]));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// An animated GIF of `frames` frames of `width` x `height`, each a different colour and
    /// shown for 70 ms, looping forever.
    fn gif(width: u32, height: u32, frames: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = GifEncoder::new_with_speed(&mut out, 30);
            encoder.set_repeat(Repeat::Infinite).unwrap();
            for index in 0..frames {
                let shade = u8::try_from(index % 256).unwrap();
                let image = RgbaImage::from_pixel(width, height, Rgba([shade, 90, 200, 255]));
                let delay = Delay::from_numer_denom_ms(70, 1);
                encoder
                    .encode_frame(Frame::from_parts(image, 0, 0, delay))
                    .unwrap();
            }
        }
        out
    }

    /// The frames of an animated GIF, decoded.
    fn gif_frames(content: &[u8]) -> Vec<Frame> {
        GifDecoder::new(Cursor::new(content))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap()
    }

    const BUDGET: AnimationLimits = AnimationLimits {
        max_frames: 100,
        max_pixels: 10_000_000,
    };

    fn animated(content: &[u8], size: ThumbnailSize, budget: AnimationLimits) -> Generated {
        match generate_animated(content, size, LIMITS, budget).unwrap() {
            AnimatedThumbnail::Animated(generated) => generated,
            other => panic!("no animated thumbnail: {other:?}"),
        }
    }

    #[test]
    fn animated_crop_keeps_every_frame_and_its_delay() {
        let source = gif(120, 60, 5);
        let thumbnail = animated(&source, size(32, 32, ThumbnailMethod::Crop), BUDGET);
        assert_eq!(thumbnail.content_type, "image/gif");
        assert_eq!((thumbnail.width, thumbnail.height), (32, 32));
        let frames = gif_frames(&thumbnail.content);
        assert_eq!(frames.len(), 5);
        for frame in &frames {
            assert_eq!(frame.buffer().dimensions(), (32, 32));
            assert_eq!(frame.delay().numer_denom_ms(), (70, 1));
        }
        // The frames stay distinct: the first is darker in red than the last.
        let first = frames[0].buffer().get_pixel(16, 16)[0];
        let last = frames[4].buffer().get_pixel(16, 16)[0];
        assert!(first < last, "{first} vs {last}");
        assert!(matches!(
            GifDecoder::new(Cursor::new(&thumbnail.content))
                .unwrap()
                .loop_count(),
            LoopCount::Infinite
        ));
    }

    #[test]
    fn animated_scale_keeps_the_aspect_ratio_and_never_enlarges() {
        let wide = animated(
            &gif(1000, 500, 3),
            size(320, 240, ThumbnailMethod::Scale),
            BUDGET,
        );
        assert_eq!((wide.width, wide.height), (320, 160));
        let frames = gif_frames(&wide.content);
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|f| f.buffer().dimensions() == (320, 160)));

        let small = animated(
            &gif(20, 10, 2),
            size(320, 240, ThumbnailMethod::Scale),
            BUDGET,
        );
        assert_eq!((small.width, small.height), (20, 10));
        assert_eq!(gif_frames(&small.content).len(), 2);
    }

    #[test]
    fn stills_are_not_animated() {
        let crop = size(32, 32, ThumbnailMethod::Crop);
        assert_eq!(
            generate_animated(&png(64, 64), crop, LIMITS, BUDGET).unwrap(),
            AnimatedThumbnail::NotAnimated
        );
        assert_eq!(
            generate_animated(&gif(64, 64, 1), crop, LIMITS, BUDGET).unwrap(),
            AnimatedThumbnail::NotAnimated
        );
        assert!(generate_animated(b"GIF89a garbage", crop, LIMITS, BUDGET).is_err());
    }

    #[test]
    fn the_frame_budget_stops_long_animations() {
        let crop = size(32, 32, ThumbnailMethod::Crop);
        let budget = AnimationLimits {
            max_frames: 4,
            ..BUDGET
        };
        // Exactly at the limit is fine; one frame more is not.
        let four = animated(&gif(8, 8, 4), crop, budget);
        assert_eq!(gif_frames(&four.content).len(), 4);
        let outcome = generate_animated(&gif(8, 8, 5), crop, LIMITS, budget).unwrap();
        assert_eq!(
            outcome,
            AnimatedThumbnail::OverBudget("more than 4 frames".to_owned())
        );

        // A hostile animation of many tiny frames stops at the default budget's frame count.
        let many = gif(1, 1, 2000);
        let outcome = generate_animated(&many, crop, LIMITS, BUDGET).unwrap();
        assert!(
            matches!(&outcome, AnimatedThumbnail::OverBudget(reason) if reason.contains("frames")),
            "{outcome:?}"
        );
    }

    #[test]
    fn the_pixel_budget_counts_decoded_and_written_pixels() {
        let crop = size(32, 32, ThumbnailMethod::Crop);
        // Each 100x100 frame counts 10 000 decoded and 1 024 written pixels.
        let per_frame = 10_000 + 1_024;
        let budget = AnimationLimits {
            max_frames: 100,
            max_pixels: 3 * per_frame,
        };
        let three = animated(&gif(100, 100, 3), crop, budget);
        assert_eq!(gif_frames(&three.content).len(), 3);
        let outcome = generate_animated(&gif(100, 100, 4), crop, LIMITS, budget).unwrap();
        assert!(
            matches!(&outcome, AnimatedThumbnail::OverBudget(reason) if reason.contains("pixels")),
            "{outcome:?}"
        );
    }

    #[test]
    fn animation_frames_past_the_allocation_limit_are_refused() {
        let tight = DecodeLimits {
            max_dimension: 4096,
            max_alloc_bytes: 64 * 64 * 4 - 1,
        };
        let outcome = generate_animated(
            &gif(64, 64, 2),
            size(32, 32, ThumbnailMethod::Crop),
            tight,
            BUDGET,
        );
        assert!(
            matches!(outcome, Err(ThumbnailError::TooLarge(_))),
            "{outcome:?}"
        );
    }

    #[test]
    fn standard_sizes_serve_themselves() {
        for standard in STANDARD_SIZES {
            assert_eq!(
                choose_size(standard.width, standard.height, standard.method),
                standard
            );
        }
    }

    #[test]
    fn other_requests_get_the_nearest_larger_size() {
        use ThumbnailMethod::{Crop, Scale};
        assert_eq!(choose_size(1, 1, Crop), size(32, 32, Crop));
        assert_eq!(choose_size(33, 10, Crop), size(96, 96, Crop));
        assert_eq!(choose_size(50, 50, Scale), size(320, 240, Scale));
        assert_eq!(choose_size(321, 100, Scale), size(640, 480, Scale));
        // No crop size covers 200x200: the smallest covering size of any method.
        assert_eq!(choose_size(200, 200, Crop), size(320, 240, Scale));
        // Larger than everything: the largest there is.
        assert_eq!(choose_size(4000, 4000, Scale), size(800, 600, Scale));
        assert_eq!(choose_size(4000, 10, Crop), size(800, 600, Scale));
    }

    #[test]
    fn crop_fills_the_box_and_scale_keeps_the_aspect_ratio() {
        let source = png(1000, 500);
        let crop = generate(&source, size(96, 96, ThumbnailMethod::Crop), LIMITS).unwrap();
        assert_eq!((crop.width, crop.height), (96, 96));
        assert_eq!(crop.content_type, "image/png");
        let decoded = image::load_from_memory(&crop.content).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (96, 96));

        let scale = generate(&source, size(320, 240, ThumbnailMethod::Scale), LIMITS).unwrap();
        assert_eq!((scale.width, scale.height), (320, 160));
    }

    #[test]
    fn scaling_never_enlarges() {
        let small = generate(&png(20, 10), size(320, 240, ThumbnailMethod::Scale), LIMITS).unwrap();
        assert_eq!((small.width, small.height), (20, 10));
    }

    #[test]
    fn garbage_and_oversized_images_are_errors() {
        let garbage = generate(
            b"not an image at all",
            size(32, 32, ThumbnailMethod::Crop),
            LIMITS,
        );
        assert!(
            matches!(garbage, Err(ThumbnailError::NotAnImage(_))),
            "{garbage:?}"
        );

        let big = png(5000, 1);
        let refused = generate(&big, size(32, 32, ThumbnailMethod::Crop), LIMITS);
        assert!(
            matches!(refused, Err(ThumbnailError::TooLarge(_))),
            "{refused:?}"
        );

        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        let truncated = generate(&truncated, size(32, 32, ThumbnailMethod::Crop), LIMITS);
        assert!(truncated.is_err());
    }

    #[test]
    fn dimensions_come_from_the_header() {
        assert_eq!(dimensions(&png(7, 3), LIMITS), Some((7, 3)));
        assert_eq!(dimensions(&png(5000, 1), LIMITS), None);
        assert_eq!(dimensions(b"nope", LIMITS), None);
    }

    #[test]
    fn a_still_png_is_not_animated() {
        assert!(!is_animated(&png(4, 4), LIMITS));
        assert!(!is_animated(b"GIF89a garbage", LIMITS));
    }
}

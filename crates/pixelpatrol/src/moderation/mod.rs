//! Moderation: analysis, rules and decisions.
//!
//! Every submitted item gets a durable job (written with the item). The
//! [`Moderator`] leases jobs, runs every analyzer that applies concurrently
//! (each with a timeout), decides with the site's rule group, and commits the
//! decision, the media row and `media.moderated` together with the job's
//! removal. Manual review goes through [`record_decision`] and always wins
//! over the automatic decision.

pub mod analyzer;
pub mod external;
pub mod image;
pub mod nsfw;
pub mod rules;
pub mod templates;
pub mod text;

use std::sync::Arc;
use std::time::Duration;

use pixelpatrol_webhooks::{AiResults, EventType, MediaModerated, Reviewer};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Deliverer;
use crate::model::{
    Actor, AuditEntry, DecideOutcome, DecisionRecord, LeaseToken, Media, ModerationJob, NewEvent,
    RuleGroup, RuleGroupId, Site, SiteId, Timestamp,
};
use crate::store::{MediaStore, ModerationStore};
use crate::util::Heartbeat;
use analyzer::{AnalysisInput, Analyzer, Label};
use rules::RuleOutcome;

/// Every built-in analyzer's rule templates, in the order the API lists
/// them. An analyzer is registered here and in [`Moderator::new`]; its
/// templates live in its own file.
pub fn all_templates() -> impl Iterator<Item = &'static templates::RuleTemplate> {
    [image::TEMPLATES, text::TEMPLATES].into_iter().flatten()
}

/// A job taken this many times without finishing (the server stopped or
/// crashed during its analysis each time) is decided without another try:
/// flagged for a person.
const MAX_ANALYSIS_ATTEMPTS: i64 = 3;

pub use crate::model::moderation::{DecidedBy, Verdict};

/// The `media.moderated` event for `decision` about `media`, with the
/// labels and rule outcomes it was made from.
fn moderated_event(
    deliverer: &Deliverer,
    media: &Media,
    decision: &DecisionRecord,
    (labels, applied_rules): (&[Label], &[RuleOutcome]),
) -> anyhow::Result<NewEvent> {
    let now = decision.moderated_at;
    NewEvent::new(
        EventType::MediaModerated,
        &media.site_id,
        media.id.as_str(),
        MediaModerated {
            media_id: media.id.to_string(),
            site_id: media.site_id.to_string(),
            status: decision.status.as_str().into(),
            ai_results: AiResults {
                labels: labels
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?,
            },
            applied_rules: applied_rules
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?,
            moderated_at: now.rfc3339(),
            app_media_id: media.app_media_id.clone(),
            decided_by: Some(decision.decided_by.as_str().into()),
            note: decision.note.clone(),
            reviewer: decision.reviewer.as_ref().map(|actor| Reviewer {
                user_id: actor.user_id.to_string(),
                email: actor.email.clone(),
            }),
        },
        now,
        deliverer.first_attempt_at(now),
    )
}

/// What the audit log says of a review: the API and the dashboard record
/// the same.
pub fn review_detail(media: &Media, verdict: Verdict, note: Option<&str>) -> serde_json::Value {
    serde_json::json!({"status": verdict.as_str(), "note": note, "was": media.status.as_str()})
}

/// Stores a person's decision about `media` and emits `media.moderated`,
/// atomically, with its `audit` entry. The event carries the labels and rule outcomes of the last
/// analysis, if any. `None`: the item is gone.
pub async fn record_decision(
    store: &dyn MediaStore,
    deliverer: &Deliverer,
    media: &Media,
    verdict: Verdict,
    note: Option<&str>,
    reviewer: Option<&Actor>,
    audit: Option<&AuditEntry>,
) -> anyhow::Result<Option<Media>> {
    let decision = DecisionRecord {
        status: verdict,
        decided_by: DecidedBy::Person,
        note: note.map(str::to_string),
        reviewer: reviewer.cloned(),
        moderated_at: Timestamp::now(),
        analysis: None,
    };
    let event = moderated_event(
        deliverer,
        media,
        &decision,
        (&media.ai_results.labels, &media.applied_rules),
    )?;
    match store
        .decide_media(&media.id, &decision, &event, None, audit)
        .await?
    {
        DecideOutcome::Decided(media) => {
            deliverer.wake();
            Ok(Some(*media))
        }
        _ => Ok(None),
    }
}

/// The site's default rule group, made from the templates if the site has
/// none (sites created before rule groups existed).
pub async fn default_group(
    store: &dyn ModerationStore,
    site_id: &SiteId,
) -> anyhow::Result<RuleGroup> {
    if let Some(group) = store.default_rule_group(site_id).await? {
        return Ok(group);
    }
    let group = template_group(site_id, true);
    match store.create_rule_group(&group, None).await {
        Ok(()) => Ok(group),
        // Another worker made it first: use theirs.
        Err(error) => store.default_rule_group(site_id).await?.ok_or(error),
    }
}

/// A group holding one rule per template.
pub fn template_group(site_id: &SiteId, is_default: bool) -> RuleGroup {
    let now = Timestamp::now();
    RuleGroup {
        id: RuleGroupId::generate(),
        site_id: site_id.clone(),
        name: "Recommended".into(),
        description: Some(
            "Built from the templates: explicit content, violence, hate speech, self-harm, drugs, spam, low-resolution and blurry images."
                .into(),
        ),
        is_default,
        rules: rules::template_rules(),
        created_at: now,
        updated_at: now,
    }
}

/// Runs the analyzers and the rules, and the worker loop that drives them.
pub struct Moderator {
    store: Arc<dyn ModerationStore>,
    deliverer: Arc<Deliverer>,
    analyzers: Vec<Arc<dyn Analyzer>>,
    /// Also one of `analyzers`; kept by type for the queue's previews.
    image: Arc<image::ImageAnalyzer>,
    nsfw: Arc<nsfw::NsfwClassifier>,
    analyzer_timeout: Duration,
    lease: Duration,
    concurrency: usize,
    poll_interval: Duration,
    wake: Notify,
    /// When the worker loop last ran.
    heartbeat: Heartbeat,
}

impl Moderator {
    pub fn new(
        store: Arc<dyn ModerationStore>,
        deliverer: Arc<Deliverer>,
        config: &Config,
    ) -> anyhow::Result<Arc<Self>> {
        let nsfw = Arc::new(nsfw::NsfwClassifier::new(
            &config.model_dir,
            config.inference_threads,
        ));
        let text = text::TextAnalyzer::new().map_err(anyhow::Error::msg)?;
        let image = Arc::new(image::ImageAnalyzer::new(
            nsfw.clone(),
            config.fetch_timeout,
            config.max_image_pixels,
            config.dev,
            config.inference_threads,
        )?);
        let global_external = config.external_analyzer_url.clone().map(|url| {
            (
                url,
                config.external_analyzer_secret.clone().unwrap_or_default(),
            )
        });
        let external =
            external::ExternalAnalyzer::new(global_external, config.analyzer_timeout, config.dev)?;
        Ok(Arc::new(Moderator {
            store,
            deliverer,
            analyzers: vec![Arc::new(text), image.clone(), Arc::new(external)],
            image,
            nsfw,
            analyzer_timeout: config.analyzer_timeout,
            // Every analyzer runs within its timeout; the margin covers
            // reading the rules and committing the decision.
            lease: config.analyzer_timeout + config.analyzer_timeout.min(Duration::from_secs(10)),
            concurrency: config.moderation_concurrency.max(1),
            poll_interval: config.poll_interval.max(Duration::from_millis(100)),
            wake: Notify::new(),
            heartbeat: Heartbeat::default(),
        }))
    }

    /// A small PNG of an item's image, for the moderation queue.
    pub async fn thumbnail(&self, url: &str) -> Result<Vec<u8>, analyzer::AnalyzerError> {
        self.image.thumbnail(url).await
    }

    pub fn nsfw(&self) -> &nsfw::NsfwClassifier {
        &self.nsfw
    }

    /// Whether the worker loop ran recently.
    pub fn worker_alive(&self, now: Timestamp) -> bool {
        self.heartbeat.alive(now, self.poll_interval)
    }

    /// New work is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs every analyzer that applies to `input` at once and merges their
    /// labels. A failure or timeout becomes an `analyzer_failed` label.
    pub async fn analyze(&self, input: AnalysisInput) -> Vec<Label> {
        let input = Arc::new(input);
        let mut running = JoinSet::new();
        for (index, analyzer) in self.analyzers.iter().enumerate() {
            if !analyzer.applies_to(&input) {
                continue;
            }
            let analyzer = analyzer.clone();
            let input = input.clone();
            let timeout = self.analyzer_timeout;
            running.spawn(async move {
                let name = analyzer.name();
                let labels = match tokio::time::timeout(timeout, analyzer.analyze(&input)).await {
                    Ok(Ok(labels)) => Ok(labels),
                    Ok(Err(error)) => Err(Label::analyzer_failed(name, error.to_string())),
                    Err(_) => Err(Label::analyzer_failed(
                        name,
                        format!("timed out after {}", humantime::format_duration(timeout)),
                    )),
                };
                (index, name, labels)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok(result) => results.push(result),
                Err(error) => results.push((
                    usize::MAX,
                    "analyzer",
                    Err(Label::analyzer_failed(
                        "analyzer",
                        format!("analyzer crashed: {error}"),
                    )),
                )),
            }
        }
        // Report in analyzer order, whatever finished first.
        results.sort_by_key(|(index, _, _)| *index);
        let external_succeeded = results
            .iter()
            .any(|(_, name, labels)| *name == external::ANALYZER && labels.is_ok());
        let mut merged = Vec::new();
        for (_, _, labels) in results {
            match labels {
                Ok(labels) => merged.extend(labels),
                Err(failure) => merged.push(failure),
            }
        }
        if external_succeeded {
            // Formats the built-in analyzers cannot read are the external
            // analyzer's to judge.
            merged.retain(|label| label.name != "unsupported_format");
        }
        merged
    }

    /// Leases due jobs (as many as there is room for) and processes them
    /// all; returns how many it took. The worker loop is built on it, and
    /// tests can drive it directly.
    pub async fn try_execute_batch(self: &Arc<Self>, room: usize) -> anyhow::Result<usize> {
        let jobs = self.claim(room).await?;
        let count = jobs.len();
        let mut running = JoinSet::new();
        for job in jobs {
            let moderator = self.clone();
            running.spawn(async move { moderator.process(job).await });
        }
        while running.join_next().await.is_some() {}
        Ok(count)
    }

    async fn claim(&self, room: usize) -> anyhow::Result<Vec<ModerationJob>> {
        if room == 0 {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        self.store
            .claim_moderation_jobs(&LeaseToken::generate(), now, now + self.lease, room as i64)
            .await
    }

    /// Analyses and decides one job. Errors are logged; the job's lease then
    /// runs out and it is tried again.
    async fn process(&self, job: ModerationJob) {
        let media_id = job.media.id.clone();
        if let Err(error) = self.try_process(job).await {
            tracing::error!(%media_id, error = ?error, "moderation failed; it will be retried");
        }
    }

    async fn try_process(&self, job: ModerationJob) -> anyhow::Result<()> {
        let media = &job.media;
        let Some(site) = self.store.get_site(&media.site_id).await? else {
            return Ok(());
        };
        let labels = if job.attempts > MAX_ANALYSIS_ATTEMPTS {
            vec![Label::analyzer_failed(
                "moderation",
                format!(
                    "analysis did not finish in {MAX_ANALYSIS_ATTEMPTS} attempts (the server stopped during it)"
                ),
            )]
        } else {
            self.analyze(analysis_input(media, &site)).await
        };
        let group = match &media.rule_group_id {
            Some(id) => match self.store.get_rule_group(&site.id, id).await? {
                Some(group) => group,
                // The chosen group was deleted since: the default applies.
                None => default_group(self.store.as_ref(), &site.id).await?,
            },
            None => default_group(self.store.as_ref(), &site.id).await?,
        };
        let decision = rules::decide(
            &group.rules,
            site.confidence_threshold,
            &labels,
            media.body.as_deref(),
        );
        let now = Timestamp::now();
        let processing_ms = now.ms_since(job.requested_at).max(0);
        let mut record = DecisionRecord {
            status: decision.verdict,
            decided_by: DecidedBy::Automatic,
            note: None,
            reviewer: None,
            moderated_at: now,
            analysis: None,
        };
        let event = moderated_event(
            &self.deliverer,
            media,
            &record,
            (&labels, &decision.applied_rules),
        )?;
        record.analysis = Some((labels, decision.applied_rules, processing_ms));
        match self
            .store
            .decide_media(&media.id, &record, &event, Some(&job), None)
            .await?
        {
            DecideOutcome::Decided(_) => {
                metrics::histogram!("pixelpatrol_moderation_processing_seconds")
                    .record(processing_ms as f64 / 1000.0);
                metrics::counter!("pixelpatrol_moderation_decisions_total", "status" => decision.verdict.as_str())
                    .increment(1);
                tracing::info!(
                    media_id = %media.id,
                    status = decision.verdict.as_str(),
                    processing_ms,
                    "moderated"
                );
                self.deliverer.wake();
            }
            DecideOutcome::ManuallyReviewed => {
                tracing::info!(
                    media_id = %media.id,
                    "reviewed by a person meanwhile; automatic result dropped"
                );
            }
            DecideOutcome::LeaseLost => {
                tracing::warn!(media_id = %media.id, "moderation lease lost; result dropped");
            }
            DecideOutcome::NotFound => {}
        }
        Ok(())
    }

    /// The worker loop: keeps up to `concurrency` jobs in progress until
    /// shutdown. Jobs still running at shutdown are dropped; their leases run
    /// out and another worker (or the next start) takes them again.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            self.heartbeat.beat();
            while running.try_join_next().is_some() {}
            let room = self.concurrency.saturating_sub(running.len());
            let jobs = match self.claim(room).await {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::error!(error = ?error, "claiming moderation jobs failed");
                    Vec::new()
                }
            };
            let idle = jobs.is_empty();
            for job in jobs {
                let moderator = self.clone();
                running.spawn(async move { moderator.process(job).await });
            }
            if !idle && running.len() < self.concurrency {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        running.shutdown().await;
    }
}

fn analysis_input(media: &Media, site: &Site) -> AnalysisInput {
    AnalysisInput {
        media_id: media.id.clone(),
        site_id: media.site_id.clone(),
        content_type: media.content_type.clone(),
        content_url: media.content_url.clone(),
        body: media.body.clone(),
        metadata: media.metadata.clone(),
        site_external_analyzer: site.external_analyzer_url.clone().map(|url| {
            (
                url,
                site.external_analyzer_secret.clone().unwrap_or_default(),
            )
        }),
    }
}

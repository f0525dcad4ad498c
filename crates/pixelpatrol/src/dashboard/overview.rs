//! A site's overview, at the top of its page: submissions and decisions per
//! day, what waits for a person, deliveries and their failure rate, and the
//! slowest endpoints (those for the roles that see webhooks).

use maud::{Markup, PreEscaped, html};

use crate::api::AppState;
use crate::model::{Endpoint, HealthFigures, MediaStatus, Site, Timestamp};

const DAY_MS: i64 = 86_400_000;
const DAYS: i64 = 14;

/// How many of the site's items are in `status`, from
/// [`crate::store::MediaStore::media_status_counts`].
pub fn count_of(counts: &[(MediaStatus, i64)], status: MediaStatus) -> i64 {
    counts
        .iter()
        .find(|(each, _)| *each == status)
        .map_or(0, |(_, count)| *count)
}

/// Submissions (grey) and decisions (blue) per day, the last 14 days.
fn per_day_chart(days: &[(Timestamp, i64, i64)], now: Timestamp) -> Markup {
    let today = now.millis() / DAY_MS;
    let mut buckets = [(0_i64, 0_i64); DAYS as usize];
    for (start, submitted, decided) in days {
        let age = today - start.millis() / DAY_MS;
        if (0..DAYS).contains(&age) {
            buckets[(DAYS - 1 - age) as usize] = (*submitted, *decided);
        }
    }
    let busiest = buckets
        .iter()
        .map(|(a, b)| (*a).max(*b))
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height) = (480.0, 110.0);
    let slot = width / DAYS as f64;
    let mut bars = String::new();
    for (index, (submitted, decided)) in buckets.iter().enumerate() {
        let x = index as f64 * slot + 3.0;
        let scale = |count: i64| count as f64 / busiest as f64 * (height - 10.0);
        let day = Timestamp::from_millis((today - (DAYS - 1 - index as i64)) * DAY_MS);
        bars.push_str(&format!(
            "<g><title>{}: {submitted} submitted, {decided} decided</title>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#c8cfdb\"/>\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2f5bea\"/></g>",
            day.rfc3339().get(..10).unwrap_or(""),
            height - scale(*submitted),
            slot / 2.0 - 3.0,
            scale(*submitted),
            x + slot / 2.0 - 3.0,
            height - scale(*decided),
            slot / 2.0 - 3.0,
            scale(*decided),
        ));
    }
    let submitted: i64 = buckets.iter().map(|(a, _)| a).sum();
    let decided: i64 = buckets.iter().map(|(_, b)| b).sum();
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {width} {}", height + 16.0)) role="img"
                aria-label=(format!("Submissions and decisions per day over the last {DAYS} days: {submitted} submitted, {decided} decided")) {
                (PreEscaped(bars))
                line x1="0" y1=(height) x2=(width) y2=(height) stroke="#dfe3ea" {}
                text x="0" y=(height + 13.0) font-size="11" fill="#5d6677" { (DAYS) " days ago" }
                text x=(width) y=(height + 13.0) font-size="11" fill="#5d6677" text-anchor="end" { "today" }
            }
            figcaption { "Per day: submitted (grey) and decided (blue). " (submitted) " submitted, " (decided) " decided in " (DAYS) " days." }
        }
    }
}

/// The overview, from the site's status counts and (for those who see
/// webhooks) its endpoints with their health, which the site page reads once
/// for this and its other sections.
pub async fn section(
    state: &AppState,
    site: &Site,
    counts: &[(MediaStatus, i64)],
    endpoints: Option<&[(Endpoint, HealthFigures)]>,
) -> anyhow::Result<Markup> {
    let now = Timestamp::now();
    let count = |status: MediaStatus| count_of(counts, status);
    let days = state
        .store
        .media_per_day(
            &site.id,
            now.plus_ms(-(DAYS - 1) * DAY_MS - now.millis() % DAY_MS),
        )
        .await?;
    let mut deliveries = None;
    if let Some(endpoints) = endpoints {
        let mut attempts = 0;
        let mut successes = 0;
        let mut slowest = Vec::new();
        for (endpoint, figures) in endpoints {
            attempts += figures.last_day.attempts;
            successes += figures.last_day.successes;
            if let Some(p95) = figures.last_day.p95_response_ms {
                slowest.push((p95, endpoint.url.clone()));
            }
        }
        slowest.sort_by_key(|(p95, _)| std::cmp::Reverse(*p95));
        slowest.truncate(3);
        deliveries = Some((attempts, successes, slowest));
    }
    Ok(html! {
        section aria-labelledby="overview" {
            h2 #overview { "Overview" }
            div.tiles {
                div.tile { p.number { (count(MediaStatus::Flagged)) } p { "flagged, waiting for a person" } }
                div.tile { p.number { (count(MediaStatus::Pending)) } p { "waiting for analysis" } }
                div.tile { p.number { (count(MediaStatus::Approved)) } p { "approved" } }
                div.tile { p.number { (count(MediaStatus::Rejected)) } p { "rejected" } }
                @if let Some((attempts, successes, _)) = &deliveries {
                    div.tile {
                        p.number { (attempts) }
                        p { "delivery attempts in 24 h"
                            @if *attempts > 0 { ", " (format!("{:.1}%", (attempts - successes) as f64 / *attempts as f64 * 100.0)) " failed" } }
                    }
                }
            }
            (per_day_chart(&days, now))
            @if let Some((_, _, slowest)) = &deliveries {
                @if !slowest.is_empty() {
                    h3 { "Slowest endpoints (p95, 24 h)" }
                    ol.slowest { @for (p95, url) in slowest { li { code { (url) } " — " (p95) " ms" } } }
                }
            }
        }
    })
}

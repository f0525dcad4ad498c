//! An endpoint's health on its page: success rates, response times, queue,
//! failures, the reason it was disabled, and deliveries and failures per
//! hour over the last 24 hours as a chart drawn on the server (inline SVG:
//! no script, no chart library).

use maud::{Markup, PreEscaped, html};

use super::layout::when;
use crate::api::AppState;
use crate::model::{Endpoint, Timestamp, WindowFigures};

const HOUR_MS: i64 = 3_600_000;

fn rate(window: &WindowFigures) -> String {
    match window.success_rate {
        Some(rate) => format!("{:.1}%", rate * 100.0),
        None => "no attempts".into(),
    }
}

fn timing(window: &WindowFigures) -> String {
    match (window.avg_response_ms, window.p95_response_ms) {
        (Some(average), Some(p95)) => format!("{average:.0} ms average, {p95} ms p95"),
        _ => "—".into(),
    }
}

/// 24 bars, one per hour (the current one last): attempts in grey, the
/// failed part of each in red. Heights are relative to the busiest hour.
fn chart(hours: &[(Timestamp, i64, i64)], now: Timestamp) -> Markup {
    let current = now.millis() / HOUR_MS;
    let mut buckets = [(0_i64, 0_i64); 24];
    for (start, attempts, failures) in hours {
        let age = current - start.millis() / HOUR_MS;
        if (0..24).contains(&age) {
            buckets[23 - age as usize] = (*attempts, *failures);
        }
    }
    let busiest = buckets
        .iter()
        .map(|(attempts, _)| *attempts)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (480.0, 120.0, 16.0);
    let total: i64 = buckets.iter().map(|(attempts, _)| attempts).sum();
    let failed: i64 = buckets.iter().map(|(_, failures)| failures).sum();
    let mut bars = String::new();
    for (index, (attempts, failures)) in buckets.iter().enumerate() {
        let x = index as f64 * (width / 24.0) + 2.0;
        let all = *attempts as f64 / busiest as f64 * (height - 10.0);
        let bad = *failures as f64 / busiest as f64 * (height - 10.0);
        let hour_label = if index == 23 {
            "this hour".to_string()
        } else {
            format!("{} h ago", 23 - index)
        };
        bars.push_str(&format!(
            "<g><title>{hour_label}: {attempts} attempts, {failures} failed</title>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{all:.1}\" fill=\"#c8cfdb\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{bad:.1}\" fill=\"#b42318\"/></g>",
            height - all,
            height - bad,
        ));
    }
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {width} {}", height + 16.0)) role="img"
                aria-label=(format!("Attempts per hour over the last 24 hours: {total} in all, {failed} failed")) {
                (PreEscaped(bars))
                line x1="0" y1=(height) x2=(width) y2=(height) stroke="#dfe3ea" {}
                text x="0" y=(height + 13.0) font-size="11" fill="#5d6677" { "24 h ago" }
                text x=(width) y=(height + 13.0) font-size="11" fill="#5d6677" text-anchor="end" { "now · busiest hour " (busiest) }
            }
            figcaption { "Attempts per hour, last 24 hours (red: failed). " (total) " attempts, " (failed) " failed." }
        }
    }
}

/// The health section of an endpoint's page.
pub async fn section(
    state: &AppState,
    endpoint: &Endpoint,
    csrf: &str,
    base: &str,
) -> anyhow::Result<Markup> {
    let now = Timestamp::now();
    let figures = state.store.endpoint_health(&endpoint.id, now).await?;
    let hours = state
        .store
        .attempts_per_hour(&endpoint.id, now.plus_ms(-24 * HOUR_MS))
        .await?;
    Ok(html! {
        section aria-labelledby="health" {
            h2 #health { "Health" }
            @if !endpoint.active {
                div.outcome.bad role="status" {
                    p { strong { "Disabled" }
                        @if let Some(reason) = &endpoint.disabled_reason { ": " (reason) }
                        @if let Some(at) = endpoint.disabled_at { " (" (when(at)) ")" } }
                    p { "Its pending deliveries wait; re-enabling sends them, in order." }
                    form method="post" action=(format!("{base}/enable")) {
                        input type="hidden" name="csrf" value=(csrf);
                        button.primary type="submit" { "Re-enable" }
                    }
                }
            }
            dl.facts {
                dt { "Success rate" } dd { (rate(&figures.last_hour)) " last hour · " (rate(&figures.last_day)) " last 24 h" }
                dt { "Response time" } dd { (timing(&figures.last_day)) " (24 h)" }
                dt { "Queue" } dd { (figures.pending) " pending, " (figures.in_flight) " in flight"
                    @if let Some(oldest) = figures.oldest_pending_at { ", oldest from " (when(oldest)) } }
                dt { "Consecutive failures" } dd { (endpoint.health.consecutive_failures) }
            }
            (chart(&hours, now))
        }
    })
}

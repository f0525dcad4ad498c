//! Load: closed-loop (as fast as answers come) and open-loop (a fixed rate).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::*;

/// The result of submitting load.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed: Duration,
    /// (site index, media id) of every accepted submission, when kept.
    pub media: Vec<(usize, String)>,
    /// Accepted submissions per site.
    pub per_site: Vec<u64>,
}

/// Submits `total` items as fast as the server accepts them from
/// `concurrency` clients, spread over the sites.
pub async fn closed_loop(
    api: &Api,
    sites: &[Site],
    total: u64,
    concurrency: usize,
    keep_ids: bool,
) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let api = api.clone();
        let sites = sites.to_vec();
        let next = next.clone();
        let rejected = rejected.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut per_site = vec![0u64; sites.len()];
            loop {
                let sequence = next.fetch_add(1, Ordering::Relaxed);
                if sequence >= total {
                    break;
                }
                let site_index = sequence as usize % sites.len();
                match api.submit(&sites[site_index], sequence).await {
                    Ok(Some(id)) => {
                        per_site[site_index] += 1;
                        if keep_ids {
                            accepted.push((site_index, id));
                        }
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            (per_site, accepted)
        }));
    }
    let mut load = Load {
        per_site: vec![0; sites.len()],
        ..Load::default()
    };
    for task in tasks {
        if let Ok((per_site, ids)) = task.await {
            for (total, count) in load.per_site.iter_mut().zip(per_site) {
                *total += count;
            }
            load.media.extend(ids);
        }
    }
    load.accepted = load.per_site.iter().sum();
    load.elapsed = started.elapsed();
    load.rejected = rejected.load(Ordering::Relaxed);
    load
}

/// Submits at a steady `rate` per second for `duration` (open loop: a slow
/// answer does not slow the arrivals).
pub async fn open_loop(api: &Api, sites: &[Site], rate: u64, duration: Duration) -> Load {
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let accepted: Arc<Vec<AtomicU64>> = Arc::new(sites.iter().map(|_| AtomicU64::new(0)).collect());
    let rejected = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for sequence in 0..total {
        ticker.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let api = api.clone();
        let site_index = sequence as usize % sites.len();
        let site = sites[site_index].clone();
        let accepted = accepted.clone();
        let rejected = rejected.clone();
        tasks.spawn(async move {
            match api.submit(&site, sequence).await {
                Ok(Some(_)) => accepted[site_index].fetch_add(1, Ordering::Relaxed),
                _ => rejected.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let per_site: Vec<u64> = accepted
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    Load {
        accepted: per_site.iter().sum(),
        rejected: rejected.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        media: Vec::new(),
        per_site,
    }
}

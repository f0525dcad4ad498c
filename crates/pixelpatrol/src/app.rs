//! Wiring: opens the store, starts the workers and serves the API.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, auth};
use crate::config::Config;
use crate::delivery::{Deliverer, Worker};
use crate::moderation::{self, Moderator};
use crate::store::{self, DynStore};

/// Runs the server on `listener` until `shutdown` is cancelled, then stops
/// taking requests, lets the worker finish or release its attempts, and
/// returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = store::connect(&config.database_url, config.db_max_connections).await?;
    let (admin_token_hash, generated) =
        auth::admin_token_hash(&store, config.admin_token.as_deref()).await?;
    if let Some(token) = generated {
        // Shown once: only its hash is stored.
        println!(
            "\nGenerated the admin token (shown only now, store it safely):\n\n    {token}\n\n\
             Set PIXELPATROL_ADMIN_TOKEN to choose your own.\n"
        );
    }
    if config.dev {
        tracing::warn!("--dev: plain http and private-network webhook targets are allowed");
    }

    if config.runs_worker() {
        // Workers own the alert endpoint; an API-only process leaves it be.
        configure_alerts(&store, &config).await?;
    }
    let deliverer = Deliverer::new(store.clone(), &config)?;
    // Other processes on the database hear of what this one commits, and
    // this one's worker of theirs.
    tokio::spawn(deliverer.clone().announce_work(shutdown.clone()));
    if config.runs_worker() {
        tokio::spawn(deliverer.clone().listen_for_work(shutdown.clone()));
    }
    let worker = config.runs_worker().then(|| {
        let worker = Worker::new(deliverer.clone(), &config);
        tokio::spawn(worker.run(shutdown.clone()))
    });
    let moderator = Moderator::new(store.clone(), deliverer.clone(), &config)?;
    let moderation = (config.runs_worker() && config.auto_moderation).then(|| {
        tokio::spawn(prepare_model(config.clone()));
        tokio::spawn(moderator.clone().run(shutdown.clone()))
    });

    let state = AppState {
        store: store.clone(),
        config: Arc::new(config),
        deliverer,
        moderator,
        admin_token_hash: admin_token_hash.into(),
    };
    tracing::info!(
        address = %listener.local_addr()?,
        backend = store.backend(),
        role = ?state.config.role,
        "pixelpatrol listening"
    );
    tokio::spawn(api::ops::metrics_upkeep(shutdown.clone()));
    tokio::spawn(crate::dashboard::session::purge_expired(
        store.clone(),
        shutdown.clone(),
    ));
    let routes = api::router(state, crate::dashboard::router());
    // The client's address: sign-in back-off counts failures per address.
    let served = axum::serve(
        listener,
        routes.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await;
    // Whatever ended the server, stop the worker too.
    shutdown.cancel();
    if let Some(worker) = worker {
        worker.await?;
    }
    if let Some(moderation) = moderation {
        moderation.await?;
    }
    served?;
    Ok(())
}

/// Points the operator's alert endpoint at `PIXELPATROL_ALERT_WEBHOOK_URL`
/// (or turns it off when unset).
async fn configure_alerts(store: &DynStore, config: &Config) -> anyhow::Result<()> {
    let target = match (&config.alert_webhook_url, &config.alert_webhook_secret) {
        (Some(url), Some(secret)) => {
            let url = api::validate::endpoint_url("alert_webhook_url", url, config.dev)
                .map_err(|error| anyhow::anyhow!("PIXELPATROL_ALERT_WEBHOOK_URL: {error}"))?;
            anyhow::ensure!(
                secret.chars().count() >= 16,
                "PIXELPATROL_ALERT_WEBHOOK_SECRET must be at least 16 characters"
            );
            Some((url, secret.clone()))
        }
        (Some(_), None) => anyhow::bail!(
            "PIXELPATROL_ALERT_WEBHOOK_URL is set without PIXELPATROL_ALERT_WEBHOOK_SECRET, which signs the alerts"
        ),
        (None, _) => None,
    };
    store
        .configure_alert_endpoint(
            target
                .as_ref()
                .map(|(url, secret)| (url.as_str(), secret.as_str())),
            crate::model::Timestamp::now(),
        )
        .await
}

/// Makes sure the NSFW model is in place, installing it when allowed, and
/// says loudly when it is not: images are then flagged `unanalyzed`.
async fn prepare_model(config: Config) {
    let dir = config.model_dir.clone();
    let ready = if config.model_install {
        let install_dir = dir.clone();
        match tokio::task::spawn_blocking(move || moderation::nsfw::install(&install_dir, None))
            .await
        {
            Ok(Ok(path)) => {
                tracing::info!(model = %path.display(), "NSFW image model ready");
                Ok(())
            }
            Ok(Err(error)) => Err(format!("{error:#}")),
            Err(error) => Err(error.to_string()),
        }
    } else if moderation::nsfw::is_installed(&dir) {
        Ok(())
    } else {
        Err("not installed and PIXELPATROL_MODEL_INSTALL is off".into())
    };
    if let Err(why) = ready {
        tracing::error!(
            model_dir = %dir.display(),
            reason = %why,
            "THE NSFW IMAGE MODEL IS MISSING: images will be flagged `unanalyzed` for manual review, \
             never approved. Install it with `pixelpatrol models install --model-dir {}`",
            dir.display()
        );
    }
}

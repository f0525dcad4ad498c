//! What PixelPatrol's two storage backends share, written once: the rows as
//! the database returns them ([`rows`]), group commit for submissions
//! ([`batcher`]), and in `src/shared/` the statements that are the same on
//! both. `shared/` is not compiled here: each backend crate compiles it
//! (`#[path]`) against its own database type, so that `sqlx::query!` checks
//! every statement against that backend's schema, and each backend keeps its
//! own `.sqlx` data. Nothing in `shared/` asks which backend it runs on;
//! where a statement must differ, the backend's own file of that concern
//! holds it (`claim.rs`, `locks.rs`, `maintenance.rs`).
//!
//! Statements built at run time (multi-row VALUES, id lists) are run with
//! `persistent(false)`: their text changes with every row count, so keeping
//! them as prepared statements filled each connection's statement cache with
//! big one-off statements (a fifth of a gigabyte of server memory under
//! load).
//!
//! Ids and timestamps are domain types ([`pixelpatrol_core::model::SiteId`],
//! [`pixelpatrol_core::model::Timestamp`], …) that know nothing of sqlx;
//! statements bind their text and milliseconds. A `query!` argument is
//! borrowed for as long as the statement runs on SQLite, so a converted
//! value (`site.id.as_str()`, `at.millis()`) is first bound to a local
//! (`let id = site.id.as_str();`) and the local is passed: a temporary in the
//! argument list would be dropped too early.

pub mod batcher;
pub mod rows;

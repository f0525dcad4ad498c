//! The integration tests, in one binary (one compile and link): a real
//! server on 127.0.0.1 and a real database on both backends, driven over
//! HTTP, and the storage contract suite, which drives the store directly.

#[macro_use]
mod common;

mod api;
mod dashboard;
mod delivery;
mod interop;
mod moderation;
mod nsfw;
mod operations;
mod people_store;
mod process;
mod store;

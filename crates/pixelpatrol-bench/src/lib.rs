//! The benchmark's machinery: a real `pixelpatrol serve` process (SQLite or
//! PostgreSQL), a separate receiver process, load through the public HTTP API
//! only, and the scenarios that measure what the README publishes.

mod api;
mod common;
mod load;
mod machine;
mod moderation;
mod processes;
mod report;
mod scenarios;

pub use api::*;
pub use common::*;
pub use load::*;
pub use machine::*;
pub use moderation::*;
pub use processes::*;
pub use report::*;
pub use scenarios::*;

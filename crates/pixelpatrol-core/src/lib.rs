//! PixelPatrol's core: the domain ([`model`]: plain data and the rules that
//! hold for it), the storage roles the server asks of a database
//! ([`store`]: traits only; the backends are crates of their own), and small
//! shared helpers ([`util`]). Nothing here knows SQL, HTTP or a runtime:
//! the dependency rule (core ← storage backends ← server) is the compiler's
//! to enforce.

pub mod model;
pub mod store;
pub mod util;

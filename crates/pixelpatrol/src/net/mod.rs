//! The network guard, one for every outbound connection the server makes on
//! a site's behalf (webhook deliveries, image fetches, external analyzers)
//! and for the URLs the API accepts: private, loopback and link-local
//! targets are refused outside `--dev`, at validation and again at
//! connection time (DNS answers included).

pub mod guard;

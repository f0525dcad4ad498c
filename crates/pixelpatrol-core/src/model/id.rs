//! Identifiers, one type per kind of thing, so that a site's id cannot be
//! passed where an endpoint's is expected (`get_endpoint(site, endpoint)`
//! with the arguments swapped does not compile).
//!
//! An id is a type prefix and a ULID (`media_01JD…`): sortable by creation
//! time, and telling at a glance what it names. The server makes new ones
//! with `generate`; ids that come back from the store or from a client's
//! request are taken as they are (`From<String>`): an unknown id simply
//! finds nothing. Two fixed ids exist ([`OPERATOR_SITE_ID`](super::OPERATOR_SITE_ID),
//! [`ALERT_ENDPOINT_ID`](super::ALERT_ENDPOINT_ID)), so the form is not enforced.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// One generator for the process, so that ids made in the same millisecond
/// still sort in the order they were made (plain ULIDs sort at random within
/// a millisecond): a list ordered by id is in creation order.
static ULIDS: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());

/// The next ULID of this process, greater than every one before it.
pub fn next_ulid() -> ulid::Ulid {
    let mut generator = ULIDS.lock().unwrap_or_else(PoisonError::into_inner);
    // Overflow needs 2^80 ids in one millisecond; a plain ULID then.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident = $prefix:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What every generated id of this kind starts with (before `_`).
            pub const PREFIX: &'static str = $prefix;

            /// A new id, unique and sortable by creation time.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, next_ulid()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == &other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    )*};
}

ids! {
    /// A site (a tenant).
    SiteId = "site";
    /// A webhook endpoint of a site.
    EndpointId = "wh";
    /// A submitted media item.
    MediaId = "media";
    /// An event, written with the state change that caused it.
    EventId = "evt";
    /// One event's delivery to one endpoint.
    DeliveryId = "dlv";
    /// A rule group of a site.
    RuleGroupId = "rg";
    /// A worker's claim on deliveries or moderation jobs: only its holder
    /// may record their outcome.
    LeaseToken = "lease";
    /// A person with a dashboard account.
    UserId = "usr";
    /// A one-time link to join a site or the operators.
    InvitationId = "inv";
    /// An entry of the audit log.
    AuditId = "aud";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_carry_their_prefix_and_sort_in_the_order_made() {
        let first = SiteId::generate();
        let second = SiteId::generate();
        assert!(first.as_str().starts_with("site_"));
        assert_eq!(first.as_str().len(), "site_".len() + 26);
        assert!(first < second);
        let many: Vec<EventId> = (0..1000).map(|_| EventId::generate()).collect();
        assert!(
            many.windows(2).all(|pair| pair[0] < pair[1]),
            "same-millisecond ids in order"
        );
        assert!(EndpointId::generate().as_str().starts_with("wh_"));
        assert_eq!(
            serde_json::to_string(&MediaId::from("media_x")).unwrap(),
            "\"media_x\""
        );
    }
}

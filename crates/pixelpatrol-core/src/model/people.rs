//! People: dashboard accounts, what each may do on a site, their sessions,
//! invitations, sign-in throttling and the audit log.
//!
//! Who may do what is decided here ([`Role`]'s `can_…`), once, for every
//! page and action: the dashboard asks, it does not decide.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{SiteId, Timestamp, UserId};

/// A person who signs in to the dashboard.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    /// Lower-cased ([`normalize_email`]).
    pub email: String,
    /// argon2id, as a PHC string.
    pub password_hash: String,
    /// Operators see and manage every site.
    pub is_admin: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Emails compare without case and surrounding space: one account per address.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A person's role on one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Works the moderation queue, and nothing else: never a secret.
    Moderator,
    /// Webhooks, their secrets, delivery logs and tests.
    Developer,
    /// Everything of the site: its settings, members and keys.
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Developer, Role::Moderator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Developer => "developer",
            Role::Moderator => "moderator",
        }
    }

    /// Endpoints, their secrets, delivery logs, tests, retries and recovery.
    pub fn can_manage_webhooks(self) -> bool {
        matches!(self, Role::Owner | Role::Developer)
    }

    /// The moderation queue and decisions.
    pub fn can_moderate(self) -> bool {
        true
    }

    /// The site's settings and key, its members and invitations.
    pub fn can_manage_site(self) -> bool {
        self == Role::Owner
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use owner, developer or moderator")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "owner" => Ok(Role::Owner),
            "developer" => Ok(Role::Developer),
            "moderator" => Ok(Role::Moderator),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

/// What a signed-in person may do on one site: an operator everything, a
/// member what their role allows, anyone else nothing (the site is then
/// not found, so that its existence is not confirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Operator,
    Member(Role),
}

impl Access {
    pub fn of(user: &User, role: Option<Role>) -> Option<Access> {
        if user.is_admin {
            Some(Access::Operator)
        } else {
            role.map(Access::Member)
        }
    }

    /// The role this access acts with (an operator acts as an owner).
    pub fn role(self) -> Role {
        match self {
            Access::Operator => Role::Owner,
            Access::Member(role) => role,
        }
    }
}

/// A person's role on a site.
#[derive(Debug, Clone)]
pub struct Membership {
    pub site_id: SiteId,
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A signed-in browser. Only the token's hash is stored.
#[derive(Debug, Clone)]
pub struct Session {
    pub token_hash: String,
    pub user_id: UserId,
    /// Sent back with every state-changing form.
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// Idle expiry: moves on with every request.
    pub expires_at: Timestamp,
}

/// A one-time link to join a site with a role, or (without a site) the
/// operators. Only the token's hash is stored; the link is shown once.
#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: super::InvitationId,
    pub token_hash: String,
    pub site_id: Option<SiteId>,
    /// Who it is for; accepting creates (or joins) this account.
    pub email: String,
    /// The role on `site_id`.
    pub role: Option<Role>,
    pub is_admin: bool,
    pub invited_by: Option<UserId>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub accepted_at: Option<Timestamp>,
}

/// How long an invitation link stays usable.
pub const INVITATION_LIFETIME_MS: i64 = 7 * 24 * 3_600_000;

/// The outcome of accepting an invitation.
#[derive(Debug)]
pub enum AcceptOutcome {
    /// The account now holds what the invitation gave (created with
    /// `new_password_hash` when the address had none).
    Accepted(Box<User>),
    /// Unknown, used, revoked or expired: the same answer for each, so that
    /// a guessed link learns nothing.
    Invalid,
}

/// The outcome of changing or removing a site member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Done,
    /// Removing someone who is not a member.
    NotMember,
    /// Refused, nothing written: the site would be left without an owner.
    /// Checked inside the change's transaction, with the site's member
    /// changes taking turns, so two owners demoting each other at once
    /// cannot both succeed.
    LastOwner,
}

/// Consecutive failed sign-ins allowed before back-off starts.
pub const FREE_SIGN_IN_FAILURES: i64 = 5;

/// How long sign-ins under a throttle key wait after `failures` failures in
/// a row: nothing for the first [`FREE_SIGN_IN_FAILURES`], then 1 s, 2 s,
/// 4 s … doubling, capped at 15 minutes.
pub fn sign_in_back_off_ms(failures: i64) -> i64 {
    let over = failures - FREE_SIGN_IN_FAILURES;
    if over < 0 {
        return 0;
    }
    const CAP_MS: i64 = 15 * 60 * 1_000;
    1_000_i64
        .checked_shl(over.min(20) as u32)
        .unwrap_or(CAP_MS)
        .min(CAP_MS)
}

/// One entry of a site's audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: super::AuditId,
    /// `None` for server-wide actions (operators invited, …).
    pub site_id: Option<SiteId>,
    /// Who did it (`None`: the server itself, or the API with a key).
    pub actor: Option<Actor>,
    /// What was done, e.g. `endpoint.created`, `secret.revealed`.
    pub action: String,
    /// What it was done to, e.g. an endpoint's or a member's id.
    pub target: Option<String>,
    /// The details worth keeping (never a secret).
    pub detail: serde_json::Value,
    pub created_at: Timestamp,
}

/// A person acting, as the audit log and decisions record them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    pub user_id: UserId,
    pub email: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(is_admin: bool) -> User {
        User {
            id: UserId::generate(),
            email: "a@example.com".into(),
            password_hash: String::new(),
            is_admin,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_owners_and_developers_reach_webhooks_and_only_owners_the_site() {
        assert!(Role::Owner.can_manage_webhooks() && Role::Owner.can_manage_site());
        assert!(Role::Developer.can_manage_webhooks() && !Role::Developer.can_manage_site());
        assert!(!Role::Moderator.can_manage_webhooks() && !Role::Moderator.can_manage_site());
        assert!(Role::ALL.iter().all(|role| role.can_moderate()));
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn operators_act_as_owners_everywhere_and_strangers_get_nothing() {
        assert_eq!(Access::of(&user(true), None), Some(Access::Operator));
        assert_eq!(Access::of(&user(true), None).unwrap().role(), Role::Owner);
        assert_eq!(
            Access::of(&user(false), Some(Role::Moderator)),
            Some(Access::Member(Role::Moderator))
        );
        assert_eq!(Access::of(&user(false), None), None);
    }

    #[test]
    fn sign_in_back_off_starts_after_five_failures_and_doubles_to_a_cap() {
        assert_eq!(sign_in_back_off_ms(0), 0);
        assert_eq!(sign_in_back_off_ms(4), 0);
        assert_eq!(sign_in_back_off_ms(5), 1_000);
        assert_eq!(sign_in_back_off_ms(6), 2_000);
        assert_eq!(sign_in_back_off_ms(9), 16_000);
        assert_eq!(sign_in_back_off_ms(40), 15 * 60 * 1_000);
        assert_eq!(normalize_email("  Ann@Example.COM "), "ann@example.com");
    }
}

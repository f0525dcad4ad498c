//! Accounts of people (the dashboard's users): passwords hashed with
//! argon2id, and the first operator, made from the command line.
//!
//! Who may do what is the domain's ([`crate::model::people`]); what is kept
//! of people is the store's ([`crate::store::PeopleStore`]).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::model::people::normalize_email;
use crate::model::{Timestamp, User, UserId};
use crate::store::DynStore;

/// Shortest password accepted: long enough that the back-off on failed
/// sign-ins, not luck, decides how far a guesser gets.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (hashing is deliberately slow; unbounded input
/// would make it a lever).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Why a password or email is refused, in words for the person typing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("the password must be at most {MAX_PASSWORD_CHARS} characters")]
    PasswordTooLong,
    #[error("that is not an email address")]
    InvalidEmail,
    #[error("an account with that email exists")]
    EmailTaken,
}

pub fn check_password(password: &str) -> Result<(), AccountError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        Err(AccountError::PasswordTooShort)
    } else if length > MAX_PASSWORD_CHARS {
        Err(AccountError::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// A normalized email, or why it is not one. Deliberately loose (one `@`,
/// something on each side, no spaces): the invitation link, not the syntax,
/// proves the address.
pub fn parse_email(email: &str) -> Result<String, AccountError> {
    let email = normalize_email(email);
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(AccountError::InvalidEmail)
    }
}

/// The argon2id hash of `password` as a PHC string (its own salt and
/// parameters inside). Slow on purpose, so it runs off the async threads.
pub async fn hash_password(password: &str) -> anyhow::Result<String> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow::anyhow!("hashing the password failed: {error}"))
    })
    .await?
}

/// Whether `password` matches `phc` (in constant time, by the argon2 crate).
pub async fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_string(), phc.to_string());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Sign-ins (and invitation acceptances) checked at once per process.
const SIGN_IN_TURNS: usize = 2;

/// A turn to check a sign-in: held from reading the back-off to recording
/// the outcome, so that parallel guesses are counted one after another, and
/// so that the deliberately slow hashing cannot pile up.
pub async fn sign_in_turn() -> tokio::sync::SemaphorePermit<'static> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(SIGN_IN_TURNS);
    TURNS
        .acquire()
        .await
        .expect("the semaphore is never closed")
}

/// As [`verify_password`] against `phc`; without one (no such account),
/// the same hashing work against a throwaway hash, and `false`.
pub async fn verify_password_or_burn(password: &str, phc: Option<&str>) -> bool {
    static THROWAWAY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    match phc {
        Some(phc) => verify_password(password, phc).await,
        None => {
            let throwaway = THROWAWAY
                .get_or_try_init(|| async {
                    hash_password(&crate::util::random_token("", 32)).await
                })
                .await;
            if let Ok(throwaway) = throwaway {
                let _ = verify_password(password, throwaway).await;
            }
            false
        }
    }
}

/// An operator invitation for `email` (the first operator's setup link);
/// returns the link's token, which is not kept.
pub async fn invite_operator(store: &DynStore, email: &str) -> anyhow::Result<String> {
    let token = crate::util::random_token("ppi_", 43);
    let now = Timestamp::now();
    let invitation = crate::model::Invitation {
        id: crate::model::InvitationId::generate(),
        token_hash: crate::util::sha256_hex(&token),
        site_id: None,
        email: email.to_string(),
        role: None,
        is_admin: true,
        invited_by: None,
        created_at: now,
        expires_at: now.plus_ms(crate::model::people::INVITATION_LIFETIME_MS),
        accepted_at: None,
    };
    let audit = crate::model::AuditEntry {
        id: crate::model::AuditId::generate(),
        site_id: None,
        actor: None,
        action: "operator.invited".into(),
        target: Some(invitation.id.to_string()),
        detail: serde_json::json!({"email": email, "by": "command line"}),
        created_at: now,
    };
    store.create_invitation(&invitation, &audit).await?;
    Ok(token)
}

/// Creates an account with a password (`pixelpatrol users create`).
pub async fn create_account(
    store: &DynStore,
    email: &str,
    password: &str,
    is_admin: bool,
) -> anyhow::Result<Result<User, AccountError>> {
    let email = match parse_email(email) {
        Ok(email) => email,
        Err(error) => return Ok(Err(error)),
    };
    if let Err(error) = check_password(password) {
        return Ok(Err(error));
    }
    let now = Timestamp::now();
    let user = User {
        id: UserId::generate(),
        email,
        password_hash: hash_password(password).await?,
        is_admin,
        created_at: now,
        updated_at: now,
    };
    if store.create_user(&user).await? {
        Ok(Ok(user))
    } else {
        Ok(Err(AccountError::EmailTaken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_and_nothing_else() {
        let hash = hash_password("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash).await);
        assert!(!verify_password("correct horse battery!", &hash).await);
        assert!(!verify_password("correct horse battery", "not a hash").await);
        // A new salt each time.
        assert_ne!(hash, hash_password("correct horse battery").await.unwrap());
    }

    #[test]
    fn emails_and_passwords_are_checked_in_words_a_person_understands() {
        assert_eq!(parse_email(" Ann@Example.com ").unwrap(), "ann@example.com");
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert_eq!(parse_email(bad), Err(AccountError::InvalidEmail), "{bad:?}");
        }
        assert_eq!(check_password("short"), Err(AccountError::PasswordTooShort));
        assert_eq!(check_password(&"x".repeat(12)), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(1025)),
            Err(AccountError::PasswordTooLong)
        );
    }
}

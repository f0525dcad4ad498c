//! The storage contract for people, on both backends, calling the store
//! directly: accounts, roles on sites, sessions and their idle expiry,
//! sign-in back-off, invitations (one use, expiry, joining an existing
//! account) and the audit log written with the change it records.

use crate::common::{Backend, TestDb};
use pixelpatrol::model::people::{FREE_SIGN_IN_FAILURES, INVITATION_LIFETIME_MS};
use pixelpatrol::model::{
    AcceptOutcome, Actor, AuditEntry, AuditId, Invitation, InvitationId, Media, MediaStatus,
    MemberChange, OPERATOR_SITE_ID, Role, RuleGroup, RuleGroupId, Session, Site, SiteId, Timestamp,
    User, UserId,
};
use pixelpatrol::store::DynStore;
use pixelpatrol::util::{new_id, sha256_hex};
use pixelpatrol_webhooks::EventType;
use serde_json::json;

both_backends!(
    an_email_has_one_account_and_a_new_password_signs_out_everywhere,
    roles_are_per_site_and_removing_a_member_or_the_site_takes_the_role,
    a_session_lives_while_used_and_ends_on_sign_out_or_when_idle,
    a_busy_session_still_ends_at_its_lifetime,
    a_site_keeps_an_owner_even_when_two_step_down_at_once,
    an_invitation_dies_with_its_senders_right_to_give_it,
    the_review_count_covers_a_persons_own_sites,
    an_audit_entry_commits_only_with_its_change,
    failed_sign_ins_back_off_per_key_and_a_success_forgets_them,
    an_invitation_is_used_once_and_never_after_it_expires,
    an_invitation_for_an_existing_account_keeps_its_password,
    the_audit_log_is_per_site_newest_first_and_pages,
);

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn t(ms: i64) -> Timestamp {
    T0.plus_ms(ms)
}

async fn open(backend: Backend) -> (TestDb, DynStore) {
    let db = TestDb::create(backend).await;
    let store = pixelpatrol::store::connect(&db.url, 4).await.unwrap();
    (db, store)
}

async fn site(store: &DynStore, name: &str) -> Site {
    let site = Site {
        id: SiteId::generate(),
        name: name.into(),
        url: None,
        description: None,
        key_hash: sha256_hex(&new_id("key")),
        confidence_threshold: 0.75,
        external_analyzer_url: None,
        external_analyzer_secret: None,
        created_at: T0,
        updated_at: T0,
    };
    let group = RuleGroup {
        id: RuleGroupId::generate(),
        site_id: site.id.clone(),
        name: "Default".into(),
        description: None,
        is_default: true,
        rules: Vec::new(),
        created_at: T0,
        updated_at: T0,
    };
    store.create_site(&site, &group, None).await.unwrap();
    site
}

fn user(email: &str) -> User {
    User {
        id: UserId::generate(),
        email: email.into(),
        password_hash: format!("hash-of-{email}"),
        is_admin: false,
        created_at: T0,
        updated_at: T0,
    }
}

async fn account(store: &DynStore, email: &str) -> User {
    let user = user(email);
    assert!(store.create_user(&user).await.unwrap());
    user
}

fn audit(site: Option<&Site>, actor: Option<&User>, action: &str, at: Timestamp) -> AuditEntry {
    AuditEntry {
        id: AuditId::generate(),
        site_id: site.map(|site| site.id.clone()),
        actor: actor.map(|user| Actor {
            user_id: user.id.clone(),
            email: user.email.clone(),
        }),
        action: action.into(),
        target: None,
        detail: json!({"note": action}),
        created_at: at,
    }
}

fn session(user: &User, token: &str, at: Timestamp, idle_ms: i64) -> Session {
    Session {
        token_hash: sha256_hex(token),
        user_id: user.id.clone(),
        csrf_token: format!("csrf-{token}"),
        created_at: at,
        last_seen_at: at,
        expires_at: at.plus_ms(idle_ms),
    }
}

fn invitation(site: Option<&Site>, email: &str, role: Option<Role>, at: Timestamp) -> Invitation {
    Invitation {
        id: InvitationId::generate(),
        token_hash: sha256_hex(&new_id("invite")),
        site_id: site.map(|site| site.id.clone()),
        email: email.into(),
        role,
        is_admin: site.is_none(),
        invited_by: None,
        created_at: at,
        expires_at: at.plus_ms(INVITATION_LIFETIME_MS),
        accepted_at: None,
    }
}

async fn an_email_has_one_account_and_a_new_password_signs_out_everywhere(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ann = account(&store, "ann@example.com").await;
    assert!(
        !store.create_user(&user("ann@example.com")).await.unwrap(),
        "a second account for one email"
    );
    let found = store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, ann.id);
    assert_eq!(found.password_hash, "hash-of-ann@example.com");
    assert!(!found.is_admin);
    assert_eq!(found.created_at, T0);
    assert!(
        store
            .user_by_email("bob@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.get_user(&ann.id).await.unwrap().unwrap().email,
        ann.email
    );

    store
        .create_session(&session(&ann, "one", T0, HOUR))
        .await
        .unwrap();
    store
        .create_session(&session(&ann, "two", T0, HOUR))
        .await
        .unwrap();
    assert!(store.set_password(&ann.id, "new-hash", t(1)).await.unwrap());
    let found = store.get_user(&ann.id).await.unwrap().unwrap();
    assert_eq!(found.password_hash, "new-hash");
    assert_eq!(found.updated_at, t(1));
    for token in ["one", "two"] {
        assert!(
            store
                .touch_session(&sha256_hex(token), t(2), HOUR, DAY)
                .await
                .unwrap()
                .is_none(),
            "session {token} survived a new password"
        );
    }
    assert!(
        !store
            .set_password(&UserId::from("usr_missing"), "x", t(3))
            .await
            .unwrap()
    );
}

async fn roles_are_per_site_and_removing_a_member_or_the_site_takes_the_role(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let beta = site(&store, "Beta").await;
    let ann = account(&store, "ann@example.com").await;
    let bob = account(&store, "bob@example.com").await;

    store
        .set_member(
            &alpha.id,
            &ann.id,
            Role::Owner,
            T0,
            &audit(Some(&alpha), None, "member.added", T0),
        )
        .await
        .unwrap();
    store
        .set_member(
            &alpha.id,
            &bob.id,
            Role::Moderator,
            T0,
            &audit(Some(&alpha), Some(&ann), "member.invited", T0),
        )
        .await
        .unwrap();
    store
        .set_member(
            &beta.id,
            &bob.id,
            Role::Developer,
            T0,
            &audit(Some(&beta), None, "member.added", T0),
        )
        .await
        .unwrap();

    assert_eq!(
        store.member_role(&alpha.id, &ann.id).await.unwrap(),
        Some(Role::Owner)
    );
    assert_eq!(store.member_role(&beta.id, &ann.id).await.unwrap(), None);
    assert_eq!(
        store.member_role(&alpha.id, &bob.id).await.unwrap(),
        Some(Role::Moderator)
    );
    let members = store.list_members(&alpha.id).await.unwrap();
    let listed: Vec<(&str, Role)> = members
        .iter()
        .map(|member| (member.email.as_str(), member.role))
        .collect();
    assert_eq!(
        listed,
        [
            ("ann@example.com", Role::Owner),
            ("bob@example.com", Role::Moderator)
        ]
    );
    let sites: Vec<(String, Role)> = store
        .sites_of_member(&bob.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(site, role)| (site.name, role))
        .collect();
    assert_eq!(
        sites,
        [
            ("Alpha".to_string(), Role::Moderator),
            ("Beta".to_string(), Role::Developer)
        ]
    );

    // A new role replaces the old one.
    store
        .set_member(
            &alpha.id,
            &bob.id,
            Role::Developer,
            t(5),
            &audit(Some(&alpha), Some(&ann), "member.role_changed", t(5)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.member_role(&alpha.id, &bob.id).await.unwrap(),
        Some(Role::Developer)
    );
    let bob_on_alpha = store
        .list_members(&alpha.id)
        .await
        .unwrap()
        .into_iter()
        .find(|member| member.user_id == bob.id)
        .unwrap();
    assert_eq!(
        (bob_on_alpha.created_at, bob_on_alpha.updated_at),
        (T0, t(5))
    );

    // Removing: gone from that site only, and the change is in the log.
    let removal = audit(Some(&alpha), Some(&ann), "member.removed", t(6));
    assert_eq!(
        store
            .remove_member(&alpha.id, &bob.id, &removal)
            .await
            .unwrap(),
        MemberChange::Done
    );
    assert_eq!(
        store
            .remove_member(&alpha.id, &bob.id, &removal)
            .await
            .unwrap(),
        MemberChange::NotMember
    );
    assert_eq!(store.member_role(&alpha.id, &bob.id).await.unwrap(), None);
    assert_eq!(
        store.member_role(&beta.id, &bob.id).await.unwrap(),
        Some(Role::Developer)
    );
    let actions: Vec<String> = store
        .list_audit(&alpha.id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        actions,
        [
            "member.removed",
            "member.role_changed",
            "member.invited",
            "member.added"
        ],
        "one entry per change, the failed removal none"
    );

    // Deleting the site takes its memberships.
    assert!(store.delete_site(&beta.id).await.unwrap());
    assert_eq!(store.member_role(&beta.id, &bob.id).await.unwrap(), None);
    assert!(store.sites_of_member(&bob.id).await.unwrap().is_empty());
}

async fn a_session_lives_while_used_and_ends_on_sign_out_or_when_idle(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ann = account(&store, "ann@example.com").await;
    let idle = HOUR;
    store
        .create_session(&session(&ann, "browser", T0, idle))
        .await
        .unwrap();
    let hash = sha256_hex("browser");

    let (live, user) = store
        .touch_session(&hash, t(1_000), idle, DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id, ann.id);
    assert_eq!(live.csrf_token, "csrf-browser");
    // Used within the minute: the expiry is not rewritten for every request.
    assert_eq!(live.expires_at, t(idle));

    // Used again 50 minutes in: idle expiry moves to an hour after that.
    let (live, _) = store
        .touch_session(&hash, t(50 * 60_000), idle, DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.expires_at, t(50 * 60_000 + idle));
    assert_eq!(live.last_seen_at, t(50 * 60_000));
    // So it is alive after the first hour…
    assert!(
        store
            .touch_session(&hash, t(idle + 1), idle, DAY)
            .await
            .unwrap()
            .is_some()
    );
    // …and gone when idle past its expiry.
    let stale = t(idle + 1).plus_ms(idle);
    assert!(
        store
            .touch_session(&hash, stale, idle, DAY)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .touch_session(&sha256_hex("unknown"), T0, idle, DAY)
            .await
            .unwrap()
            .is_none()
    );

    // Signing out ends it on the server.
    store
        .create_session(&session(&ann, "laptop", T0, idle))
        .await
        .unwrap();
    store.end_session(&sha256_hex("laptop")).await.unwrap();
    assert!(
        store
            .touch_session(&sha256_hex("laptop"), t(1), idle, DAY)
            .await
            .unwrap()
            .is_none()
    );

    // Expired sessions are purged; live ones stay.
    store
        .create_session(&session(&ann, "phone", t(10 * HOUR), idle))
        .await
        .unwrap();
    assert_eq!(store.purge_expired_sessions(t(10 * HOUR)).await.unwrap(), 1);
    assert!(
        store
            .touch_session(&sha256_hex("phone"), t(10 * HOUR + 1), idle, DAY)
            .await
            .unwrap()
            .is_some()
    );
}

async fn a_busy_session_still_ends_at_its_lifetime(backend: Backend) {
    let (_db, store) = open(backend).await;
    let ann = account(&store, "ann@example.com").await;
    let (idle, lifetime) = (HOUR, 3 * HOUR);
    store
        .create_session(&session(&ann, "tab", T0, idle))
        .await
        .unwrap();
    let hash = sha256_hex("tab");
    // Used every 40 minutes: never idle, and the expiry moves on…
    let mut now = T0;
    for _ in 0..4 {
        now = now.plus_ms(40 * 60_000);
        let (live, _) = store
            .touch_session(&hash, now, idle, lifetime)
            .await
            .unwrap()
            .expect("alive while used");
        assert_eq!(live.expires_at, now.plus_ms(idle).min(t(lifetime)));
    }
    // …but never past three hours after sign-in.
    assert_eq!(now, t(160 * 60_000));
    assert!(
        store
            .touch_session(&hash, t(lifetime - 1), idle, lifetime)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .touch_session(&hash, t(lifetime), idle, lifetime)
            .await
            .unwrap()
            .is_none(),
        "ended at its lifetime, however busy"
    );
}

async fn owners_of(store: &DynStore, site: &Site) -> Vec<UserId> {
    store
        .list_members(&site.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|member| member.role == Role::Owner)
        .map(|member| member.user_id)
        .collect()
}

async fn a_site_keeps_an_owner_even_when_two_step_down_at_once(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let ann = account(&store, "ann@example.com").await;
    let bob = account(&store, "bob@example.com").await;
    let entry = |action: &str| audit(Some(&alpha), Some(&ann), action, T0);
    // A site without an owner (an operator made it) may gain other members.
    assert_eq!(
        store
            .set_member(
                &alpha.id,
                &bob.id,
                Role::Developer,
                T0,
                &entry("member.added")
            )
            .await
            .unwrap(),
        MemberChange::Done
    );
    for user in [&ann, &bob] {
        store
            .set_member(&alpha.id, &user.id, Role::Owner, T0, &entry("member.added"))
            .await
            .unwrap();
    }
    let logged = store.list_audit(&alpha.id, None, 100).await.unwrap().len();

    // One of two owners may step down; the last may not, nor be removed.
    assert_eq!(
        store
            .set_member(
                &alpha.id,
                &ann.id,
                Role::Developer,
                t(1),
                &entry("member.role_changed")
            )
            .await
            .unwrap(),
        MemberChange::Done
    );
    assert_eq!(
        store
            .set_member(
                &alpha.id,
                &bob.id,
                Role::Moderator,
                t(2),
                &entry("member.role_changed")
            )
            .await
            .unwrap(),
        MemberChange::LastOwner
    );
    assert_eq!(
        store
            .remove_member(&alpha.id, &bob.id, &entry("member.removed"))
            .await
            .unwrap(),
        MemberChange::LastOwner
    );
    assert_eq!(
        owners_of(&store, &alpha).await,
        std::slice::from_ref(&bob.id)
    );
    assert_eq!(
        store.list_audit(&alpha.id, None, 100).await.unwrap().len(),
        logged + 1,
        "a refused change writes no entry"
    );

    // Two owners stepping down at the same moment: exactly one succeeds,
    // every time (on PostgreSQL the two transactions really overlap).
    for round in 0..20 {
        store
            .set_member(
                &alpha.id,
                &ann.id,
                Role::Owner,
                t(3),
                &entry("member.role_changed"),
            )
            .await
            .unwrap();
        let at = t(10 + round);
        let demote = |user: &User| {
            let (store, site, user, audit) = (
                store.clone(),
                alpha.id.clone(),
                user.id.clone(),
                audit(Some(&alpha), Some(user), "member.role_changed", at),
            );
            tokio::spawn(async move {
                if round % 2 == 0 {
                    store
                        .set_member(&site, &user, Role::Developer, at, &audit)
                        .await
                } else {
                    store.remove_member(&site, &user, &audit).await
                }
            })
        };
        let (first, second) = (demote(&ann), demote(&bob));
        let outcomes = [
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        ];
        assert_eq!(
            outcomes
                .iter()
                .filter(|&&o| o == MemberChange::Done)
                .count(),
            1,
            "round {round}: {outcomes:?}"
        );
        let owners = owners_of(&store, &alpha).await;
        assert_eq!(owners.len(), 1, "round {round}: one owner left");
        // The one who stepped down (or left) comes back as an owner.
        for user in [&ann, &bob] {
            if !owners.contains(&user.id) {
                store
                    .set_member(&alpha.id, &user.id, Role::Owner, at, &entry("member.added"))
                    .await
                    .unwrap();
            }
        }
    }
}

async fn an_invitation_dies_with_its_senders_right_to_give_it(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let ann = account(&store, "ann@example.com").await;
    let bob = account(&store, "bob@example.com").await;
    for user in [&ann, &bob] {
        store
            .set_member(
                &alpha.id,
                &user.id,
                Role::Owner,
                T0,
                &audit(Some(&alpha), None, "member.added", T0),
            )
            .await
            .unwrap();
    }
    let sent_by = |user: &User, site: Option<&Site>, email: &str| Invitation {
        invited_by: Some(user.id.clone()),
        ..invitation(site, email, site.map(|_| Role::Moderator), T0)
    };
    let from_ann = sent_by(&ann, Some(&alpha), "carl@example.com");
    let from_bob = sent_by(&bob, Some(&alpha), "dora@example.com");
    for invite in [&from_ann, &from_bob] {
        store
            .create_invitation(invite, &audit(Some(&alpha), None, "member.invited", T0))
            .await
            .unwrap();
    }
    // Ann is an owner no longer: her pending link gives nothing (and is
    // not used up by trying); Bob's still works.
    store
        .set_member(
            &alpha.id,
            &ann.id,
            Role::Developer,
            t(1),
            &audit(Some(&alpha), Some(&bob), "member.role_changed", t(1)),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .accept_invitation(&from_ann.token_hash, &user("carl@example.com"), t(2))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    ));
    assert!(
        store
            .user_by_email("carl@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store
            .accept_invitation(&from_bob.token_hash, &user("dora@example.com"), t(2))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    // An owner again, her link works again (it was never used).
    store
        .set_member(
            &alpha.id,
            &ann.id,
            Role::Owner,
            t(3),
            &audit(Some(&alpha), Some(&bob), "member.role_changed", t(3)),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .accept_invitation(&from_ann.token_hash, &user("carl@example.com"), t(4))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));

    // Only an operator's operator invitation makes an operator.
    let from_owner = sent_by(&ann, None, "eve@example.com");
    store
        .create_invitation(
            &from_owner,
            &audit(None, Some(&ann), "operator.invited", t(5)),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .accept_invitation(&from_owner.token_hash, &user("eve@example.com"), t(6))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    ));
    let mut operator = user("op@example.com");
    operator.is_admin = true;
    assert!(store.create_user(&operator).await.unwrap());
    let from_operator = sent_by(&operator, None, "eve@example.com");
    store
        .create_invitation(
            &from_operator,
            &audit(None, Some(&operator), "operator.invited", t(7)),
        )
        .await
        .unwrap();
    let AcceptOutcome::Accepted(eve) = store
        .accept_invitation(&from_operator.token_hash, &user("eve@example.com"), t(8))
        .await
        .unwrap()
    else {
        panic!("the operator's invitation was refused");
    };
    assert!(eve.is_admin);
}

async fn the_review_count_covers_a_persons_own_sites(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let beta = site(&store, "Beta").await;
    let gamma = site(&store, "Gamma").await;
    let ann = account(&store, "ann@example.com").await;
    for site in [&alpha, &gamma] {
        store
            .set_member(
                &site.id,
                &ann.id,
                Role::Moderator,
                T0,
                &audit(Some(site), None, "member.added", T0),
            )
            .await
            .unwrap();
    }
    for (site, status, how_many) in [
        (&alpha, MediaStatus::Flagged, 2),
        (&alpha, MediaStatus::Approved, 3),
        (&beta, MediaStatus::Flagged, 1),
        (&gamma, MediaStatus::Pending, 1),
    ] {
        for _ in 0..how_many {
            let item = Media {
                status,
                ..crate::store::media(site, T0)
            };
            let created = crate::store::event(&site.id, EventType::MediaCreated, &item.id, T0, T0);
            store.create_media(&item, &created, false).await.unwrap();
        }
    }
    let operator_site = SiteId::from(OPERATOR_SITE_ID);
    assert_eq!(
        store
            .waiting_for_review(Some(&ann.id), &operator_site)
            .await
            .unwrap(),
        [(alpha.id.clone(), 2)],
        "her sites only, flagged items only, sites without any left out"
    );
    assert_eq!(
        store
            .waiting_for_review(None, &operator_site)
            .await
            .unwrap(),
        [(alpha.id.clone(), 2), (beta.id.clone(), 1)],
        "an operator's: every site"
    );
    assert_eq!(
        store.waiting_for_review(None, &beta.id).await.unwrap(),
        [(alpha.id.clone(), 2)],
        "but the one left out"
    );
}

async fn an_audit_entry_commits_only_with_its_change(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let entry = |action: &str| audit(Some(&alpha), None, action, t(1));
    let logged = || async { store.list_audit(&alpha.id, None, 100).await.unwrap().len() };

    // Changes that do not happen write no entry.
    let missing = Site {
        id: SiteId::generate(),
        ..alpha.clone()
    };
    assert!(
        !store
            .update_site(&missing, Some(&entry("site.updated")))
            .await
            .unwrap()
    );
    let default_group = store.default_rule_group(&alpha.id).await.unwrap().unwrap();
    assert!(
        !store
            .delete_rule_group(
                &alpha.id,
                &default_group.id,
                Some(&entry("rule_group.deleted"))
            )
            .await
            .unwrap(),
        "the default group stays"
    );
    assert!(matches!(
        store
            .retry_delivery(
                &pixelpatrol::model::EndpointId::from("wh_none"),
                &pixelpatrol::model::DeliveryId::from("dlv_none"),
                t(1),
                Some(&entry("delivery.retried")),
            )
            .await
            .unwrap(),
        pixelpatrol::model::RetryOutcome::NotFound
    ));
    assert_eq!(logged().await, 0);

    // One that does, writes its entry with it.
    let renamed = Site {
        name: "Alpha renamed".into(),
        ..alpha.clone()
    };
    assert!(
        store
            .update_site(&renamed, Some(&entry("site.updated")))
            .await
            .unwrap()
    );
    let written = store.list_audit(&alpha.id, None, 100).await.unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].action, "site.updated");
}

async fn failed_sign_ins_back_off_per_key_and_a_success_forgets_them(backend: Backend) {
    let (_db, store) = open(backend).await;
    let account_key = "account:ann@example.com".to_string();
    let address_key = "address:192.0.2.7".to_string();
    let keys = [account_key.clone(), address_key.clone()];
    assert_eq!(store.sign_in_blocked_until(&keys, T0).await.unwrap(), None);

    for failure in 1..FREE_SIGN_IN_FAILURES {
        let until = store
            .record_sign_in_failure(&keys, t(failure))
            .await
            .unwrap();
        assert_eq!(until, t(failure), "failure {failure} is free");
    }
    assert_eq!(
        store.sign_in_blocked_until(&keys, t(10)).await.unwrap(),
        None
    );
    // The fifth failure in a row starts the back-off: 1 s, then 2 s.
    let until = store.record_sign_in_failure(&keys, t(100)).await.unwrap();
    assert_eq!(until, t(1_100));
    assert_eq!(
        store.sign_in_blocked_until(&keys, t(200)).await.unwrap(),
        Some(t(1_100))
    );
    assert_eq!(
        store.sign_in_blocked_until(&keys, t(1_100)).await.unwrap(),
        None
    );
    let until = store.record_sign_in_failure(&keys, t(2_000)).await.unwrap();
    assert_eq!(until, t(4_000));

    // Another address for the same account is held back by the account key…
    let other_address = [
        "account:ann@example.com".to_string(),
        "address:198.51.100.1".to_string(),
    ];
    assert_eq!(
        store
            .sign_in_blocked_until(&other_address, t(2_001))
            .await
            .unwrap(),
        Some(t(4_000))
    );
    // …and another account from a fresh address is not.
    let other = [
        "account:bob@example.com".to_string(),
        "address:198.51.100.1".to_string(),
    ];
    assert_eq!(
        store.sign_in_blocked_until(&other, t(2_001)).await.unwrap(),
        None
    );

    // A success forgets the failures.
    store.clear_sign_in_failures(&keys).await.unwrap();
    assert_eq!(
        store.sign_in_blocked_until(&keys, t(2_001)).await.unwrap(),
        None
    );
    assert_eq!(
        store.record_sign_in_failure(&keys, t(3_000)).await.unwrap(),
        t(3_000)
    );

    // Failures an hour apart start the count again.
    for failure in 0..FREE_SIGN_IN_FAILURES + 3 {
        store
            .record_sign_in_failure(
                std::slice::from_ref(&account_key),
                t(10 * HOUR + failure * HOUR + 1),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .sign_in_blocked_until(&[account_key], t(20 * HOUR))
            .await
            .unwrap(),
        None,
        "spread-out failures never reach the back-off"
    );
}

async fn an_invitation_is_used_once_and_never_after_it_expires(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let owner = account(&store, "owner@example.com").await;
    store
        .set_member(
            &alpha.id,
            &owner.id,
            Role::Owner,
            T0,
            &audit(Some(&alpha), None, "member.added", T0),
        )
        .await
        .unwrap();
    let invite = Invitation {
        invited_by: Some(owner.id.clone()),
        ..invitation(Some(&alpha), "dev@example.com", Some(Role::Developer), T0)
    };
    store
        .create_invitation(
            &invite,
            &audit(Some(&alpha), Some(&owner), "member.invited", T0),
        )
        .await
        .unwrap();
    let pending = store
        .pending_invitations(Some(&alpha.id), t(1))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].email, "dev@example.com");
    assert_eq!(pending[0].role, Some(Role::Developer));
    assert_eq!(pending[0].invited_by.as_ref(), Some(&owner.id));
    assert!(
        store
            .pending_invitations(None, t(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .usable_invitation(&invite.token_hash, t(1))
            .await
            .unwrap()
            .is_some()
    );

    let newcomer = user("ignored@example.com");
    let AcceptOutcome::Accepted(accepted) = store
        .accept_invitation(&invite.token_hash, &newcomer, t(2))
        .await
        .unwrap()
    else {
        panic!("the invitation was refused");
    };
    // The account is the invitation's email, made from the given one.
    assert_eq!(accepted.email, "dev@example.com");
    assert_eq!(accepted.id, newcomer.id);
    assert_eq!(accepted.password_hash, newcomer.password_hash);
    assert_eq!(
        store.member_role(&alpha.id, &accepted.id).await.unwrap(),
        Some(Role::Developer)
    );
    // Used up.
    assert!(matches!(
        store
            .accept_invitation(&invite.token_hash, &user("x@example.com"), t(3))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    ));
    assert!(
        store
            .pending_invitations(Some(&alpha.id), t(3))
            .await
            .unwrap()
            .is_empty()
    );
    let actions: Vec<String> = store
        .list_audit(&alpha.id, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert_eq!(
        actions,
        ["invitation.accepted", "member.invited", "member.added"]
    );

    // Expired: refused, and not listed.
    let late = invitation(Some(&alpha), "late@example.com", Some(Role::Moderator), T0);
    store
        .create_invitation(
            &late,
            &audit(Some(&alpha), Some(&owner), "member.invited", T0),
        )
        .await
        .unwrap();
    let expired = T0.plus_ms(INVITATION_LIFETIME_MS);
    assert!(
        store
            .pending_invitations(Some(&alpha.id), expired)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .accept_invitation(&late.token_hash, &user("late@example.com"), expired)
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    ));
    assert!(
        store
            .user_by_email("late@example.com")
            .await
            .unwrap()
            .is_none(),
        "nothing half-written"
    );

    // Revoked: refused; a site cannot revoke another site's invitation.
    let beta = site(&store, "Beta").await;
    let revoked = invitation(
        Some(&alpha),
        "gone@example.com",
        Some(Role::Moderator),
        t(10),
    );
    store
        .create_invitation(
            &revoked,
            &audit(Some(&alpha), Some(&owner), "member.invited", t(10)),
        )
        .await
        .unwrap();
    let revocation = audit(Some(&beta), Some(&owner), "invitation.revoked", t(11));
    assert!(
        !store
            .revoke_invitation(Some(&beta.id), &revoked.id, &revocation)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_invitation(None, &revoked.id, &revocation)
            .await
            .unwrap()
    );
    let revocation = audit(Some(&alpha), Some(&owner), "invitation.revoked", t(11));
    assert!(
        store
            .revoke_invitation(Some(&alpha.id), &revoked.id, &revocation)
            .await
            .unwrap()
    );
    assert!(matches!(
        store
            .accept_invitation(&revoked.token_hash, &user("gone@example.com"), t(12))
            .await
            .unwrap(),
        AcceptOutcome::Invalid
    ));
    assert!(
        store
            .list_audit(&beta.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // An operator invitation (no site) makes an operator.
    let operator = invitation(None, "op@example.com", None, t(20));
    store
        .create_invitation(
            &operator,
            &audit(None, Some(&owner), "operator.invited", t(20)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.pending_invitations(None, t(21)).await.unwrap().len(),
        1
    );
    let AcceptOutcome::Accepted(op) = store
        .accept_invitation(&operator.token_hash, &user("op@example.com"), t(22))
        .await
        .unwrap()
    else {
        panic!("the operator invitation was refused");
    };
    assert!(op.is_admin);
    assert!(store.get_user(&op.id).await.unwrap().unwrap().is_admin);
}

async fn an_invitation_for_an_existing_account_keeps_its_password(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let beta = site(&store, "Beta").await;
    let ann = account(&store, "ann@example.com").await;
    store
        .set_member(
            &alpha.id,
            &ann.id,
            Role::Owner,
            T0,
            &audit(Some(&alpha), None, "member.added", T0),
        )
        .await
        .unwrap();
    let invite = invitation(Some(&beta), "ann@example.com", Some(Role::Moderator), T0);
    store
        .create_invitation(&invite, &audit(Some(&beta), None, "member.invited", T0))
        .await
        .unwrap();
    let AcceptOutcome::Accepted(joined) = store
        .accept_invitation(&invite.token_hash, &user("ann@example.com"), t(1))
        .await
        .unwrap()
    else {
        panic!("refused");
    };
    assert_eq!(joined.id, ann.id, "the existing account joined");
    let stored = store.get_user(&ann.id).await.unwrap().unwrap();
    assert_eq!(stored.password_hash, ann.password_hash, "its password kept");
    assert!(!stored.is_admin);
    assert_eq!(
        store.member_role(&beta.id, &ann.id).await.unwrap(),
        Some(Role::Moderator)
    );
    assert_eq!(
        store.member_role(&alpha.id, &ann.id).await.unwrap(),
        Some(Role::Owner)
    );

    // Invited again, with a lesser role: an invitation never lowers one.
    let lesser = invitation(Some(&alpha), "ann@example.com", Some(Role::Moderator), t(2));
    store
        .create_invitation(&lesser, &audit(Some(&alpha), None, "member.invited", t(2)))
        .await
        .unwrap();
    assert!(matches!(
        store
            .accept_invitation(&lesser.token_hash, &user("ann@example.com"), t(3))
            .await
            .unwrap(),
        AcceptOutcome::Accepted(_)
    ));
    assert_eq!(
        store.member_role(&alpha.id, &ann.id).await.unwrap(),
        Some(Role::Owner),
        "still the owner"
    );
    // A greater one is taken.
    let greater = invitation(Some(&beta), "ann@example.com", Some(Role::Developer), t(4));
    store
        .create_invitation(&greater, &audit(Some(&beta), None, "member.invited", t(4)))
        .await
        .unwrap();
    store
        .accept_invitation(&greater.token_hash, &user("ann@example.com"), t(5))
        .await
        .unwrap();
    assert_eq!(
        store.member_role(&beta.id, &ann.id).await.unwrap(),
        Some(Role::Developer)
    );
}

async fn the_audit_log_is_per_site_newest_first_and_pages(backend: Backend) {
    let (_db, store) = open(backend).await;
    let alpha = site(&store, "Alpha").await;
    let beta = site(&store, "Beta").await;
    let ann = account(&store, "ann@example.com").await;
    let mut written = Vec::new();
    for step in 0..5 {
        let entry = AuditEntry {
            target: Some(format!("wh_{step}")),
            detail: json!({"url": format!("https://example.com/{step}")}),
            ..audit(Some(&alpha), Some(&ann), "endpoint.created", t(step))
        };
        store.record_audit(&entry).await.unwrap();
        written.push(entry);
    }
    store
        .record_audit(&audit(Some(&beta), None, "endpoint.deleted", t(9)))
        .await
        .unwrap();

    let first = store.list_audit(&alpha.id, None, 3).await.unwrap();
    let targets: Vec<&str> = first
        .iter()
        .map(|entry| entry.target.as_deref().unwrap())
        .collect();
    assert_eq!(targets, ["wh_4", "wh_3", "wh_2"]);
    assert_eq!(
        first[0].actor,
        Some(Actor {
            user_id: ann.id.clone(),
            email: ann.email.clone()
        })
    );
    assert_eq!(first[0].detail, json!({"url": "https://example.com/4"}));
    assert_eq!(first[0].created_at, t(4));
    let rest = store
        .list_audit(&alpha.id, Some(&first[2].id), 3)
        .await
        .unwrap();
    let targets: Vec<&str> = rest
        .iter()
        .map(|entry| entry.target.as_deref().unwrap())
        .collect();
    assert_eq!(targets, ["wh_1", "wh_0"]);
    let beta_log = store.list_audit(&beta.id, None, 10).await.unwrap();
    assert_eq!(beta_log.len(), 1);
    assert_eq!(beta_log[0].actor, None);
    assert_eq!(written.len(), 5);
}

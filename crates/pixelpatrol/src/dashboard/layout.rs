//! The page shell every dashboard page shares (head, navigation, sign out)
//! and small pieces of markup used across pages.

use axum::response::{Html, IntoResponse};
use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;
use crate::model::Timestamp;

/// A full page for a signed-in person.
pub fn page(viewer: &Viewer, title: &str, crumbs: &[(&str, String)], body: Markup) -> Html<String> {
    document(
        title,
        html! {
            header.top {
                a.brand href="/sites" { "PixelPatrol" }
                nav aria-label="Main" {
                    a href="/sites" { "Sites" }
                    (queue_link(viewer))
                }
                div.account {
                    span.who title=(if viewer.user.is_admin { "Operator" } else { "Member" }) {
                        (viewer.user.email)
                        @if viewer.user.is_admin { " · operator" }
                    }
                    form method="post" action="/sign-out" {
                        input type="hidden" name="csrf" value=(viewer.session.csrf_token);
                        button.link type="submit" { "Sign out" }
                    }
                }
            }
            main {
                @if !crumbs.is_empty() {
                    nav.crumbs aria-label="Breadcrumb" {
                        @for (label, href) in crumbs {
                            a href=(href) { (label) } " / "
                        }
                    }
                }
                h1 { (title) }
                (body)
            }
        },
    )
}

/// The navigation's way to the moderation queue, with how many items wait:
/// straight to the queue when they wait on one site, to the sites list
/// (which shows each site's count) when on several.
fn queue_link(viewer: &Viewer) -> Markup {
    let total: i64 = viewer.waiting.iter().map(|(_, count)| count).sum();
    let href = match viewer.waiting.as_slice() {
        [(site_id, _)] => format!("/sites/{site_id}/moderation"),
        _ => "/sites".to_string(),
    };
    html! {
        a href=(href) aria-label=(format!("Review queue, {total} waiting")) {
            "Review queue " span.count { (total) }
        }
    }
}

/// A form's page again, its errors next to their fields: 422, so that a
/// script or a test can tell a refusal from a success.
pub fn refused(form_page: Html<String>) -> axum::response::Response {
    (axum::http::StatusCode::UNPROCESSABLE_ENTITY, form_page).into_response()
}

/// A page with only a title and a sentence (errors, refusals).
pub fn message_page(title: &str, text: &str) -> Html<String> {
    document(
        title,
        html! {
            header.top { a.brand href="/sites" { "PixelPatrol" } }
            main.narrow {
                h1 { (title) }
                p { (text) }
                p { a href="/sites" { "Back to your sites" } }
            }
        },
    )
}

/// The HTML document around `content`.
pub fn document(title: &str, content: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · PixelPatrol" }
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body { (content) }
            }
        }
        .into_string(),
    )
}

/// A point in time: UTC in the page (and on hover), the viewer's local time
/// once the script has run.
pub fn when(at: Timestamp) -> Markup {
    let utc = at.rfc3339();
    let shown = format!("{} UTC", utc.get(..16).unwrap_or(&utc).replace('T', " "));
    html! { time datetime=(utc) title=(utc) { (shown) } }
}

/// A value shown once, with a button that copies it.
pub fn reveal_once(label: &str, id: &str, value: &str) -> Markup {
    html! {
        div.reveal role="status" {
            p { strong { (label) } " — shown once: copy it now, it cannot be shown again." }
            div.copy {
                code id=(id) { (value) }
                button type="button" data-copy=(id) { "Copy" }
            }
        }
    }
}

/// A form field's error, next to the field.
pub fn field_error(error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.field-error role="alert" { (error) }
        }
    }
}

/// What a list says when it has nothing to show, and what to do about it.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

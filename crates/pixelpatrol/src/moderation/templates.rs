//! Rule templates: a ready-made rule for each label the built-in analyzers
//! produce, and the group a new site starts with.

use serde::Serialize;

use super::rules::{Rule, RuleAction, RuleKind};
use crate::util::new_id;

/// A template: a ready-made rule for one label the built-in analyzers produce.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTemplate {
    pub key: &'static str,
    pub name: &'static str,
    pub kind: RuleKind,
    pub label: &'static str,
    pub action: RuleAction,
    pub description: &'static str,
}

pub const TEMPLATES: &[RuleTemplate] = &[
    RuleTemplate {
        key: "explicit_images",
        name: "No explicit images",
        kind: RuleKind::Prohibition,
        label: "adult",
        action: RuleAction::Reject,
        description: "Rejects images the NSFW model scores as explicit.",
    },
    RuleTemplate {
        key: "explicit_text",
        name: "No sexually explicit text",
        kind: RuleKind::Prohibition,
        label: "adult_content",
        action: RuleAction::Reject,
        description: "Rejects sexually explicit text.",
    },
    RuleTemplate {
        key: "violence",
        name: "No violent threats",
        kind: RuleKind::Prohibition,
        label: "violence",
        action: RuleAction::Reject,
        description: "Rejects threats and violent language.",
    },
    RuleTemplate {
        key: "hate_speech",
        name: "No hate speech",
        kind: RuleKind::Prohibition,
        label: "hate_speech",
        action: RuleAction::Reject,
        description: "Rejects slurs and dehumanising language.",
    },
    RuleTemplate {
        key: "self_harm",
        name: "Self-harm goes to a human",
        kind: RuleKind::Prohibition,
        label: "self_harm",
        action: RuleAction::Flag,
        description: "Flags talk of suicide or self-harm so a person can respond with care.",
    },
    RuleTemplate {
        key: "drugs",
        name: "Drug dealing goes to a human",
        kind: RuleKind::Prohibition,
        label: "drugs",
        action: RuleAction::Flag,
        description: "Flags drug sales and drug use for review.",
    },
    RuleTemplate {
        key: "spam",
        name: "No spam",
        kind: RuleKind::Prohibition,
        label: "spam",
        action: RuleAction::Reject,
        description: "Rejects spam: sales phrases, link farms, repetition.",
    },
    RuleTemplate {
        key: "low_resolution",
        name: "Low-resolution images go to a human",
        kind: RuleKind::Prohibition,
        label: "low_resolution",
        action: RuleAction::Flag,
        description: "Flags images too small to judge (shorter side under about 200 pixels).",
    },
    RuleTemplate {
        key: "blurry",
        name: "Blurry images go to a human",
        kind: RuleKind::Prohibition,
        label: "blurry",
        action: RuleAction::Flag,
        description: "Flags images too blurry to judge.",
    },
];

/// The rules of the group a new site starts with: one per template.
pub fn template_rules() -> Vec<Rule> {
    TEMPLATES
        .iter()
        .map(|template| Rule {
            id: new_id("rule"),
            name: template.name.into(),
            kind: template.kind,
            label: Some(template.label.into()),
            threshold: None,
            pattern: None,
            action: template.action,
        })
        .collect()
}

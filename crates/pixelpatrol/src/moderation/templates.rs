//! Rule templates: a ready-made rule for a label an analyzer produces. Each
//! analyzer keeps its own (`TEMPLATES` in its file); [`super::all_templates`]
//! lists them all, and a new site's default group has one rule per template.

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

/// The rules of the group a new site starts with: one per template.
pub fn template_rules() -> Vec<Rule> {
    super::all_templates()
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

//! Rules and the decision they make from an item's labels.
//!
//! A rule group is a list of rules. Each rule either passes, fails (its
//! action applies: `reject` or `flag`) or lands in the gray area (a label
//! within [`GRAY_AREA`] below the threshold, which asks a human to look).
//! Any failing `reject` rule rejects the item; otherwise any failing `flag`
//! rule or gray area flags it; otherwise it is approved.

use serde::Deserialize;

use super::Verdict;
use super::analyzer::{ANALYSIS_CATEGORY, Label};
use crate::util::new_id;

/// How far below a rule's threshold a label still asks for review.
pub const GRAY_AREA: f64 = 0.10;
/// The site threshold when none is configured.
pub const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.75;
/// Most rules in one group.
pub const MAX_RULES: usize = 100;
/// Longest pattern, in characters; the compiled program is bounded too.
const MAX_PATTERN_CHARS: usize = 1_000;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

pub use super::templates::{RuleTemplate, template_rules};
pub use crate::model::moderation::{Rule, RuleAction, RuleKind, RuleOutcome};

/// A rule as a client writes it: the id is optional (one is made).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    pub id: Option<String>,
    pub name: String,
    pub kind: RuleKind,
    pub label: Option<String>,
    pub threshold: Option<f64>,
    pub pattern: Option<String>,
    pub action: RuleAction,
}

/// A rule a client wrote that cannot be used, naming the failing field
/// (such as `rules[2].threshold`); the API answers it as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

impl RuleError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        RuleError {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn field(&self) -> Option<&str> {
        Some(&self.field)
    }
}

/// Checks rules written by a client; errors name the failing field, such as
/// `rules[2].threshold`.
pub fn validate_rules(inputs: Vec<RuleInput>) -> Result<Vec<Rule>, RuleError> {
    if inputs.len() > MAX_RULES {
        return Err(RuleError::new(
            "rules",
            format!("a rule group holds at most {MAX_RULES} rules"),
        ));
    }
    let mut rules: Vec<Rule> = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let field = |name: &str| format!("rules[{index}].{name}");
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(RuleError::new(
                field("name"),
                "name must be 1 to 200 characters",
            ));
        }
        if let Some(threshold) = input.threshold
            && !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0)
        {
            return Err(RuleError::new(
                field("threshold"),
                "threshold must be a number above 0 and at most 1",
            ));
        }
        let (label, pattern) = match input.kind {
            RuleKind::Prohibition | RuleKind::Requirement => {
                let label = input.label.as_deref().map(str::trim).unwrap_or("");
                if label.is_empty()
                    || label.len() > 100
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    return Err(RuleError::new(
                        field("label"),
                        "a prohibition or requirement names a label: 1 to 100 letters, digits, '_', '-' or '.'",
                    ));
                }
                if input.pattern.is_some() {
                    return Err(RuleError::new(
                        field("pattern"),
                        "only pattern rules have a pattern",
                    ));
                }
                (Some(label.to_string()), None)
            }
            RuleKind::Pattern => {
                let Some(pattern) = input.pattern else {
                    return Err(RuleError::new(
                        field("pattern"),
                        "a pattern rule needs a regular expression",
                    ));
                };
                compile_pattern(&pattern)
                    .map_err(|message| RuleError::new(field("pattern"), message))?;
                if input.label.is_some() {
                    return Err(RuleError::new(
                        field("label"),
                        "pattern rules have no label",
                    ));
                }
                if input.threshold.is_some() {
                    return Err(RuleError::new(
                        field("threshold"),
                        "pattern rules have no threshold",
                    ));
                }
                (None, Some(pattern))
            }
        };
        let id = match input.id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(RuleError::new(
                        field("id"),
                        "id must be 1 to 64 letters, digits, '_' or '-'",
                    ));
                }
                id
            }
            None => new_id("rule"),
        };
        if rules.iter().any(|rule| rule.id == id) {
            return Err(RuleError::new(
                field("id"),
                "rule ids must be unique in a group",
            ));
        }
        rules.push(Rule {
            id,
            name: name.to_string(),
            kind: input.kind,
            label,
            threshold: input.threshold,
            pattern,
            action: input.action,
        });
    }
    Ok(rules)
}

/// Compiles a pattern with the linear-time engine and a bounded program size,
/// so no pattern can make evaluation slow or large.
fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!(
            "pattern must be 1 to {MAX_PATTERN_CHARS} characters"
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|error| format!("invalid regular expression: {error}"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    pub applied_rules: Vec<RuleOutcome>,
}

/// The highest confidence any analyzer gave `name`.
fn score_of(labels: &[Label], name: &str) -> Option<f64> {
    labels
        .iter()
        .filter(|label| label.name == name)
        .map(|label| label.confidence)
        .reduce(f64::max)
}

/// Decides from the rules, the site's threshold, the merged labels and the
/// text body. Labels of the `analysis` category (an analyzer failed or could
/// not look) always flag the item: missing analysis never approves.
pub fn decide(
    rules: &[Rule],
    site_threshold: f64,
    labels: &[Label],
    body: Option<&str>,
) -> Decision {
    let mut outcomes = Vec::with_capacity(rules.len() + 1);
    for rule in rules {
        let mut outcome = RuleOutcome {
            rule_id: rule.id.clone(),
            name: rule.name.clone(),
            kind: serde_json::to_value(rule.kind)
                .ok()
                .and_then(|kind| kind.as_str().map(str::to_string))
                .unwrap_or_default(),
            label: rule.label.clone(),
            threshold: None,
            score: None,
            passed: true,
            gray_area: false,
            action: rule.action,
        };
        match rule.kind {
            RuleKind::Prohibition | RuleKind::Requirement => {
                let threshold = rule.threshold.unwrap_or(site_threshold);
                let score = rule
                    .label
                    .as_deref()
                    .and_then(|label| score_of(labels, label))
                    .unwrap_or(0.0);
                let reaches = score >= threshold;
                let near = !reaches && score > 0.0 && score >= threshold - GRAY_AREA;
                outcome.threshold = Some(threshold);
                outcome.score = Some(score);
                if rule.kind == RuleKind::Prohibition {
                    outcome.passed = !reaches;
                    outcome.gray_area = near;
                } else if near {
                    // Close to what is required: a human decides.
                    outcome.gray_area = true;
                } else {
                    outcome.passed = reaches;
                }
            }
            RuleKind::Pattern => {
                // Patterns were checked when the rule was written; one that
                // no longer compiles (a changed limit) fails safe: flagged.
                let matched = match (rule.pattern.as_deref().map(compile_pattern), body) {
                    (Some(Ok(regex)), Some(body)) => regex.is_match(body),
                    (Some(Err(_)), _) => {
                        outcome.action = RuleAction::Flag;
                        true
                    }
                    _ => false,
                };
                outcome.passed = !matched;
            }
        }
        outcomes.push(outcome);
    }
    for label in labels
        .iter()
        .filter(|label| label.category == ANALYSIS_CATEGORY)
    {
        outcomes.push(RuleOutcome {
            rule_id: "system.analysis_complete".into(),
            name: "Every analyzer completed".into(),
            kind: "system".into(),
            label: Some(label.name.clone()),
            threshold: None,
            score: Some(label.confidence),
            passed: false,
            gray_area: false,
            action: RuleAction::Flag,
        });
    }
    let failed = |action| outcomes.iter().any(|o| !o.passed && o.action == action);
    let verdict = if failed(RuleAction::Reject) {
        Verdict::Rejected
    } else if failed(RuleAction::Flag) || outcomes.iter().any(|o| o.gray_area) {
        Verdict::Flagged
    } else {
        Verdict::Approved
    };
    Decision {
        verdict,
        applied_rules: outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, confidence: f64) -> Label {
        Label {
            name: name.into(),
            category: name.into(),
            confidence,
            analyzer: "test".into(),
            detail: None,
        }
    }

    fn rule(kind: RuleKind, label: &str, threshold: Option<f64>, action: RuleAction) -> Rule {
        Rule {
            id: format!("r_{label}"),
            name: label.into(),
            kind,
            label: Some(label.into()),
            threshold,
            pattern: None,
            action,
        }
    }

    fn pattern(pattern: &str, action: RuleAction) -> Rule {
        Rule {
            id: "r_pattern".into(),
            name: "pattern".into(),
            kind: RuleKind::Pattern,
            label: None,
            threshold: None,
            pattern: Some(pattern.into()),
            action,
        }
    }

    use RuleAction::{Flag, Reject};
    use RuleKind::{Prohibition, Requirement};

    #[test]
    fn the_decision_truth_table_holds() {
        // (rules, labels, body, expected verdict)
        type Case<'a> = (Vec<Rule>, Vec<Label>, Option<&'a str>, Verdict);
        let cases: Vec<Case> = vec![
            (vec![], vec![], None, Verdict::Approved),
            // Prohibition: below, at and above the threshold.
            (
                vec![rule(Prohibition, "violence", Some(0.8), Reject)],
                vec![label("violence", 0.5)],
                None,
                Verdict::Approved,
            ),
            (
                vec![rule(Prohibition, "violence", Some(0.8), Reject)],
                vec![label("violence", 0.8)],
                None,
                Verdict::Rejected,
            ),
            (
                vec![rule(Prohibition, "violence", Some(0.8), Flag)],
                vec![label("violence", 0.95)],
                None,
                Verdict::Flagged,
            ),
            // Label absent: a prohibition passes, a requirement fails.
            (
                vec![rule(Prohibition, "violence", None, Reject)],
                vec![],
                None,
                Verdict::Approved,
            ),
            (
                vec![rule(Requirement, "safe", Some(0.9), Reject)],
                vec![],
                None,
                Verdict::Rejected,
            ),
            (
                vec![rule(Requirement, "safe", Some(0.9), Flag)],
                vec![label("safe", 0.2)],
                None,
                Verdict::Flagged,
            ),
            (
                vec![rule(Requirement, "safe", Some(0.9), Reject)],
                vec![label("safe", 0.95)],
                None,
                Verdict::Approved,
            ),
            // Reject wins over flag.
            (
                vec![
                    rule(Prohibition, "spam", None, Flag),
                    rule(Prohibition, "violence", None, Reject),
                ],
                vec![label("spam", 0.9), label("violence", 0.9)],
                None,
                Verdict::Rejected,
            ),
            // Patterns.
            (
                vec![pattern(r"(?i)\bbuy now\b", Reject)],
                vec![],
                Some("Please BUY NOW!"),
                Verdict::Rejected,
            ),
            (
                vec![pattern(r"(?i)\bbuy now\b", Reject)],
                vec![],
                Some("buying nowhere"),
                Verdict::Approved,
            ),
            (
                vec![pattern(r"\d{4}-\d{4}", Flag)],
                vec![],
                None,
                Verdict::Approved,
            ),
            // Analysis labels always flag.
            (
                vec![],
                vec![Label {
                    category: ANALYSIS_CATEGORY.into(),
                    ..label("analyzer_failed", 1.0)
                }],
                None,
                Verdict::Flagged,
            ),
            (
                vec![rule(Prohibition, "violence", None, Reject)],
                vec![
                    label("violence", 0.99),
                    Label {
                        category: ANALYSIS_CATEGORY.into(),
                        ..label("analyzer_failed", 1.0)
                    },
                ],
                None,
                Verdict::Rejected,
            ),
        ];
        for (index, (rules, labels, body, expected)) in cases.into_iter().enumerate() {
            let decision = decide(&rules, DEFAULT_CONFIDENCE_THRESHOLD, &labels, body);
            assert_eq!(decision.verdict, expected, "case {index}: {decision:?}");
        }
    }

    #[test]
    fn a_score_just_below_the_threshold_is_a_gray_area_that_flags() {
        let rules = [rule(Prohibition, "violence", None, Reject)];
        // Site threshold 0.75: 0.70 is within 0.10 below it.
        let decision = decide(&rules, 0.75, &[label("violence", 0.70)], None);
        assert_eq!(decision.verdict, Verdict::Flagged);
        assert!(decision.applied_rules[0].passed);
        assert!(decision.applied_rules[0].gray_area);
        assert_eq!(decision.applied_rules[0].threshold, Some(0.75));
        assert_eq!(decision.applied_rules[0].score, Some(0.70));
        // 0.64 is below the gray area.
        let decision = decide(&rules, 0.75, &[label("violence", 0.64)], None);
        assert_eq!(decision.verdict, Verdict::Approved);
        assert!(!decision.applied_rules[0].gray_area);
        // The rule's own threshold wins over the site's.
        let rules = [rule(Prohibition, "violence", Some(0.5), Reject)];
        let decision = decide(&rules, 0.75, &[label("violence", 0.45)], None);
        assert_eq!(decision.verdict, Verdict::Flagged);
        let decision = decide(&rules, 0.75, &[label("violence", 0.55)], None);
        assert_eq!(decision.verdict, Verdict::Rejected);
        // A requirement close to its threshold is a gray area too.
        let rules = [rule(Requirement, "safe", Some(0.9), Reject)];
        let decision = decide(&rules, 0.75, &[label("safe", 0.85)], None);
        assert_eq!(decision.verdict, Verdict::Flagged);
    }

    #[test]
    fn every_evaluated_rule_is_reported() {
        let rules = [
            rule(Prohibition, "violence", None, Reject),
            rule(Prohibition, "spam", Some(0.6), Flag),
            pattern("casino", Flag),
        ];
        let decision = decide(
            &rules,
            0.75,
            &[label("spam", 0.9), label("spam", 0.3)],
            Some("hello"),
        );
        let outcomes = &decision.applied_rules;
        assert_eq!(outcomes.len(), 3);
        assert_eq!(
            outcomes[1].score,
            Some(0.9),
            "the highest score of a label counts"
        );
        assert!(!outcomes[1].passed);
        assert_eq!(outcomes[1].kind, "prohibition");
        assert_eq!(outcomes[2].kind, "pattern");
        assert!(outcomes[2].passed);
        assert_eq!(decision.verdict, Verdict::Flagged);
    }

    #[test]
    fn rule_validation_names_the_failing_field() {
        let input =
            |json: serde_json::Value| -> Vec<RuleInput> { serde_json::from_value(json).unwrap() };
        let error = validate_rules(input(serde_json::json!([
            {"name": "ok", "kind": "prohibition", "label": "violence", "action": "reject"},
            {"name": "bad", "kind": "prohibition", "label": "violence", "threshold": 1.5, "action": "reject"}
        ])))
        .unwrap_err();
        assert_eq!(error.field(), Some("rules[1].threshold"));
        let error = validate_rules(input(serde_json::json!([
            {"name": "p", "kind": "pattern", "pattern": "(unclosed", "action": "flag"}
        ])))
        .unwrap_err();
        assert_eq!(error.field(), Some("rules[0].pattern"));
        let error = validate_rules(input(serde_json::json!([
            {"name": "p", "kind": "pattern", "pattern": "a{1000}{1000}", "action": "flag"}
        ])))
        .unwrap_err();
        assert_eq!(
            error.field(),
            Some("rules[0].pattern"),
            "the compile-size limit holds"
        );
        let error = validate_rules(input(serde_json::json!([
            {"name": "r", "kind": "requirement", "action": "flag"}
        ])))
        .unwrap_err();
        assert_eq!(error.field(), Some("rules[0].label"));
        let rules = validate_rules(input(serde_json::json!([
            {"name": "r", "kind": "requirement", "label": "safe", "action": "flag"}
        ])))
        .unwrap();
        assert!(rules[0].id.starts_with("rule_"));
    }

    #[test]
    fn templates_cover_every_label_the_built_in_analyzers_produce() {
        let labels: Vec<&str> = super::super::all_templates().map(|t| t.label).collect();
        for expected in [
            "adult",
            "adult_content",
            "violence",
            "hate_speech",
            "self_harm",
            "drugs",
            "spam",
            "blurry",
            "low_resolution",
        ] {
            assert!(labels.contains(&expected), "{expected} has no template");
        }
        assert_eq!(
            template_rules().len(),
            super::super::all_templates().count()
        );
    }
}

//! The built-in text analyzer: lexicons kept as data files
//! (`data/lexicons/*.txt`, format in their README) and spam signals computed
//! from the text's shape (link density, repetition, shouting).
//!
//! Matching is on whole words after normalisation (lower case, leetspeak
//! folded, long letter runs shortened), so "Scunthorpe" never matches a word
//! hidden inside it. Several findings of one category combine as a noisy-or:
//! `1 - Π(1 - weight)`.

use std::collections::HashMap;

use async_trait::async_trait;

use super::analyzer::{AnalysisInput, Analyzer, AnalyzerError, Label};
use super::rules::{RuleAction, RuleKind};
use super::templates::RuleTemplate;

pub const ANALYZER: &str = "text";

/// The lexicons compiled into the binary: (category, file contents).
const LEXICONS: &[(&str, &str)] = &[
    ("violence", include_str!("../../data/lexicons/violence.txt")),
    (
        "adult_content",
        include_str!("../../data/lexicons/adult_content.txt"),
    ),
    (
        "hate_speech",
        include_str!("../../data/lexicons/hate_speech.txt"),
    ),
    (
        "self_harm",
        include_str!("../../data/lexicons/self_harm.txt"),
    ),
    ("drugs", include_str!("../../data/lexicons/drugs.txt")),
    ("spam", include_str!("../../data/lexicons/spam.txt")),
];

/// Most distinct phrases listed in a label's detail.
const DETAIL_MATCHES: usize = 5;

#[derive(Debug, Clone)]
struct Entry {
    category: &'static str,
    weight: f64,
    /// The words after the first; the last may be a prefix.
    rest: Vec<String>,
    last_is_prefix: bool,
    phrase: String,
}

/// Every lexicon entry, indexed by its first word for exact first words and
/// kept in a short list for one-word prefixes.
#[derive(Debug)]
pub struct Lexicon {
    by_first_word: HashMap<String, Vec<Entry>>,
    prefixes: Vec<(String, Entry)>,
}

impl Lexicon {
    /// Parses the built-in lexicons. Their format is checked by a test, so a
    /// bad line is a build-time mistake; it is reported, not skipped.
    pub fn builtin() -> Result<Self, String> {
        let mut lexicon = Lexicon {
            by_first_word: HashMap::new(),
            prefixes: Vec::new(),
        };
        for (category, text) in LEXICONS {
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |why: &str| {
                    format!(
                        "lexicon {category}.txt line {}: {why}: {line:?}",
                        number + 1
                    )
                };
                let (weight, phrase) = line
                    .split_once(' ')
                    .ok_or_else(|| bad("expected `<weight> <phrase>`"))?;
                let weight: f64 = weight.parse().map_err(|_| bad("weight is not a number"))?;
                if !(weight > 0.0 && weight <= 1.0) {
                    return Err(bad("weight must be in (0, 1]"));
                }
                let mut words: Vec<String> = phrase.split(' ').map(str::to_string).collect();
                if words.iter().any(|word| word.is_empty()) || words.len() > 5 {
                    return Err(bad(
                        "phrase must be 1 to 5 words separated by single spaces",
                    ));
                }
                let last_is_prefix = words.last().is_some_and(|word| word.ends_with('*'));
                if last_is_prefix {
                    let last = words.last_mut().expect("phrase has words");
                    last.pop();
                }
                for word in &words {
                    if word.is_empty()
                        || !word
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    {
                        return Err(bad(
                            "words are lowercase ASCII letters and digits; `*` only ends the last word",
                        ));
                    }
                }
                let entry = Entry {
                    category,
                    weight,
                    rest: words[1..].to_vec(),
                    last_is_prefix,
                    phrase: phrase.to_string(),
                };
                if words.len() == 1 && last_is_prefix {
                    lexicon.prefixes.push((words[0].clone(), entry));
                } else {
                    lexicon
                        .by_first_word
                        .entry(words[0].clone())
                        .or_default()
                        .push(entry);
                }
            }
        }
        Ok(lexicon)
    }

    /// Every entry that matches somewhere in `words`, each once.
    fn matches<'a>(&'a self, words: &[String]) -> Vec<&'a Entry> {
        let mut found: Vec<&Entry> = Vec::new();
        let mut push = |entry: &'a Entry| {
            if !found.iter().any(|seen| std::ptr::eq(*seen, entry)) {
                found.push(entry);
            }
        };
        for (index, word) in words.iter().enumerate() {
            if let Some(entries) = self.by_first_word.get(word) {
                for entry in entries {
                    let following = &words[index + 1..];
                    if following.len() < entry.rest.len() {
                        continue;
                    }
                    let last = entry.rest.len().saturating_sub(1);
                    let all =
                        entry
                            .rest
                            .iter()
                            .zip(following)
                            .enumerate()
                            .all(|(i, (want, got))| {
                                if entry.last_is_prefix && i == last {
                                    got.starts_with(want.as_str())
                                } else {
                                    got == want
                                }
                            });
                    if all {
                        push(entry);
                    }
                }
            }
            for (prefix, entry) in &self.prefixes {
                if word.starts_with(prefix.as_str()) {
                    push(entry);
                }
            }
        }
        found
    }
}

/// Lower-cases, drops apostrophes (`don't` is `dont`), folds leetspeak and
/// shortens runs of three or more equal characters to two inside words that
/// have letters, and splits into words.
pub fn normalize(text: &str) -> Vec<String> {
    let is_word_char = |c: char| c.is_alphanumeric() || matches!(c, '@' | '$');
    let text: String = text
        .chars()
        .filter(|c| !matches!(c, '\'' | '\u{2019}' | '`'))
        .collect();
    text.split(|c: char| !is_word_char(c))
        .filter(|token| !token.is_empty())
        .filter_map(|token| {
            let lower = token.to_lowercase();
            let has_letter = lower.chars().any(char::is_alphabetic);
            let folded: String = lower
                .chars()
                .filter_map(|c| match c {
                    '0' if has_letter => Some('o'),
                    '1' if has_letter => Some('i'),
                    '3' if has_letter => Some('e'),
                    '4' | '@' if has_letter => Some('a'),
                    '5' | '$' if has_letter => Some('s'),
                    '7' if has_letter => Some('t'),
                    '@' | '$' => None,
                    c => Some(c),
                })
                .collect();
            let mut word = String::with_capacity(folded.len());
            let mut run = (None, 0usize);
            for c in folded.chars() {
                run = if run.0 == Some(c) {
                    (Some(c), run.1 + 1)
                } else {
                    (Some(c), 1)
                };
                if run.1 <= 2 || !has_letter {
                    word.push(c);
                }
            }
            (!word.is_empty()).then_some(word)
        })
        .collect()
}

/// Spam signals from the text's shape, each a weight like a lexicon entry.
fn spam_signals(text: &str, words: &[String]) -> Vec<(f64, String)> {
    let mut signals = Vec::new();
    let lower = text.to_lowercase();
    let links = lower.matches("http://").count()
        + lower.matches("https://").count()
        + lower.matches("www.").count();
    let word_count = words.len().max(1);
    if links >= 3 && links as f64 / word_count as f64 >= 0.15 {
        signals.push((0.85, format!("{links} links in {word_count} words")));
    } else if links >= 2 && links as f64 / word_count as f64 >= 0.25 {
        signals.push((0.6, format!("{links} links in {word_count} words")));
    }
    if words.len() >= 12 {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for word in words.iter().filter(|word| word.chars().count() > 2) {
            *counts.entry(word.as_str()).or_default() += 1;
        }
        let distinct = counts.len().max(1);
        let ratio = distinct as f64 / words.len() as f64;
        if ratio < 0.25 {
            signals.push((0.8, format!("{distinct} distinct words in {}", words.len())));
        } else if ratio < 0.4 {
            signals.push((0.5, format!("{distinct} distinct words in {}", words.len())));
        }
    }
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() >= 30 {
        let upper = letters.iter().filter(|c| c.is_uppercase()).count();
        if upper as f64 / letters.len() as f64 > 0.8 {
            signals.push((0.35, "mostly capital letters".to_string()));
        }
    }
    signals
}

pub struct TextAnalyzer {
    lexicon: Lexicon,
}

impl TextAnalyzer {
    pub fn new() -> Result<Self, String> {
        Ok(TextAnalyzer {
            lexicon: Lexicon::builtin()?,
        })
    }

    /// The labels for `text`: one per category found, with its confidence
    /// and the phrases that matched.
    pub fn classify(&self, text: &str) -> Vec<Label> {
        let words = normalize(text);
        let mut found: HashMap<&'static str, Vec<(f64, String)>> = HashMap::new();
        for entry in self.lexicon.matches(&words) {
            found
                .entry(entry.category)
                .or_default()
                .push((entry.weight, entry.phrase.clone()));
        }
        let signals = spam_signals(text, &words);
        if !signals.is_empty() {
            found.entry("spam").or_default().extend(signals);
        }
        let mut labels: Vec<Label> = found
            .into_iter()
            .map(|(category, mut matches)| {
                let confidence = 1.0
                    - matches
                        .iter()
                        .map(|(weight, _)| 1.0 - weight)
                        .product::<f64>();
                matches.sort_by(|a, b| b.0.total_cmp(&a.0));
                let detail = matches
                    .iter()
                    .take(DETAIL_MATCHES)
                    .map(|(_, phrase)| phrase.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                Label::new(category, category, confidence, ANALYZER)
                    .with_detail(format!("matched: {detail}"))
            })
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels
    }
}

#[async_trait]
impl Analyzer for TextAnalyzer {
    fn name(&self) -> &'static str {
        ANALYZER
    }

    fn applies_to(&self, input: &AnalysisInput) -> bool {
        input
            .body
            .as_deref()
            .is_some_and(|body| !body.trim().is_empty())
    }

    async fn analyze(&self, input: &AnalysisInput) -> Result<Vec<Label>, AnalyzerError> {
        let body = input.body.as_deref().unwrap_or_default();
        Ok(self.classify(body))
    }
}

/// The rule templates for the labels this analyzer produces.
pub const TEMPLATES: &[RuleTemplate] = &[
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
];

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer() -> TextAnalyzer {
        TextAnalyzer::new().expect("the built-in lexicons parse")
    }

    fn confidence(labels: &[Label], category: &str) -> f64 {
        labels
            .iter()
            .find(|label| label.name == category)
            .map_or(0.0, |label| label.confidence)
    }

    #[test]
    fn normalisation_folds_case_leetspeak_and_letter_runs() {
        assert_eq!(
            normalize("I W1LL K1LLLLL y0u!!!"),
            ["i", "will", "kill", "you"]
        );
        assert_eq!(normalize("$hit h@ppens"), ["shit", "happens"]);
        // Numbers alone stay numbers.
        assert_eq!(normalize("call 555 1234"), ["call", "555", "1234"]);
        assert_eq!(normalize("Scunthorpe, U.K."), ["scunthorpe", "u", "k"]);
        assert_eq!(normalize("I don't, you’re"), ["i", "dont", "youre"]);
    }

    #[test]
    fn the_committed_cases_hold() {
        #[derive(serde::Deserialize)]
        struct Case {
            text: String,
            #[serde(default)]
            expect: Vec<String>,
            #[serde(default)]
            absent: Vec<String>,
        }
        let cases: Vec<Case> =
            serde_json::from_str(include_str!("../../tests/fixtures/text-cases.json")).unwrap();
        assert!(cases.len() >= 20);
        let analyzer = analyzer();
        for case in cases {
            let labels = analyzer.classify(&case.text);
            for category in &case.expect {
                assert!(
                    confidence(&labels, category) >= 0.75,
                    "{:?} should be {category} (≥ 0.75): {labels:?}",
                    case.text
                );
            }
            for category in &case.absent {
                assert_eq!(
                    confidence(&labels, category),
                    0.0,
                    "{:?} must not be {category}: {labels:?}",
                    case.text
                );
            }
        }
    }

    #[test]
    fn everyday_text_has_no_labels() {
        let analyzer = analyzer();
        for text in [
            "Lovely weather in Scunthorpe today, we walked the dog by the canal.",
            "The assassin in that novel was a classic villain; great cocktail party read.",
            "Our therapist recommended the grape juice recipe from Essex.",
            "Meeting moved to 3pm, see the agenda at https://example.com/agenda",
        ] {
            assert!(
                analyzer.classify(text).is_empty(),
                "{text:?}: {:?}",
                analyzer.classify(text)
            );
        }
    }

    #[test]
    fn link_farms_and_repetition_are_spam() {
        let analyzer = analyzer();
        let links =
            "deals https://a.example https://b.example https://c.example https://d.example here";
        assert!(confidence(&analyzer.classify(links), "spam") >= 0.75);
        let repeated = "win win win win win win win win win win win win win win prizes";
        assert!(confidence(&analyzer.classify(repeated), "spam") >= 0.75);
    }

    #[test]
    fn findings_of_one_category_combine() {
        let analyzer = analyzer();
        let one = confidence(&analyzer.classify("he has a gun"), "violence");
        let more = confidence(
            &analyzer.classify("he has a gun and will shoot and stab"),
            "violence",
        );
        assert!(more > one, "{one} then {more}");
    }
}

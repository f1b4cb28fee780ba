//! Sales pattern recognition. The catalog is data (`shared/catalog/patterns.json`, compiled in,
//! replaceable by configuration): each pattern lists cue phrases with weights. Matching is one
//! Aho-Corasick pass over a normalised copy of the text (lower case, typographic apostrophes
//! folded, zero-width characters dropped, punctuation as separators), whole words only, with a
//! cue cancelled when a negator stands shortly before it in the same clause.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use serde::Deserialize;

use crate::conversation::Detection;

/// The catalog that ships with salesloop.
pub const DEFAULT_CATALOG: &str = include_str!("../catalog/patterns.json");

/// The default confidence at which a detection counts.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid JSON: {0}")]
    Json(String),
    #[error("pattern {pattern}: cue {cue:?} {problem}")]
    BadCue {
        pattern: String,
        cue: String,
        problem: &'static str,
    },
    #[error("pattern {0} appears twice")]
    DuplicatePattern(String),
    #[error("catalog has no patterns")]
    Empty,
    #[error("cannot build the matcher: {0}")]
    Matcher(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    negators: Vec<String>,
    /// How many words before a cue are searched for a negator.
    negation_window: usize,
    patterns: Vec<PatternFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternFile {
    name: String,
    #[serde(default)]
    description: String,
    cues: Vec<CueFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CueFile {
    /// Words to match; `{a|b}` offers alternatives, `{a|}` makes a word optional.
    phrase: String,
    weight: f64,
    /// False for cues that carry their own negation ("can't afford").
    #[serde(default = "yes")]
    negatable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
struct Cue {
    pattern: usize,
    weight: f64,
    negatable: bool,
}

/// A compiled catalog: build it once per process, then detect on every message.
#[derive(Debug, Clone)]
pub struct Catalog {
    names: Vec<String>,
    cues: Vec<Cue>,
    matcher: AhoCorasick,
    negators: Vec<String>,
    negation_window: usize,
}

/// Expands `{a|b}` groups into every combination of words, with spaces normalised.
fn expand(phrase: &str) -> Result<Vec<String>, &'static str> {
    let mut variants = vec![String::new()];
    let mut rest = phrase;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or("has an unclosed {")? + open;
        let literal = &rest[..open];
        let options: Vec<&str> = rest[open + 1..close].split('|').collect();
        variants = variants
            .iter()
            .flat_map(|v| {
                options
                    .iter()
                    .map(move |option| format!("{v}{literal}{option}"))
            })
            .collect();
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("has an unopened }");
    }
    let expanded: Vec<String> = variants
        .into_iter()
        .map(|v| {
            let text = format!("{v}{rest}");
            normalise(&text)
                .text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    if expanded.is_empty() {
        return Err("matches nothing");
    }
    if expanded.len() > 4096 {
        return Err("expands to more than 4096 phrases");
    }
    Ok(expanded)
}

impl Catalog {
    /// Parses and compiles a catalog.
    pub fn from_json(raw: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile =
            serde_json::from_str(raw).map_err(|e| CatalogError::Json(e.to_string()))?;
        if file.patterns.is_empty() {
            return Err(CatalogError::Empty);
        }
        let mut names = Vec::new();
        let mut cues = Vec::new();
        let mut phrases = Vec::new();
        for (index, pattern) in file.patterns.into_iter().enumerate() {
            if names.contains(&pattern.name) {
                return Err(CatalogError::DuplicatePattern(pattern.name));
            }
            let _ = pattern.description;
            for cue in pattern.cues {
                let bad = |problem| CatalogError::BadCue {
                    pattern: pattern.name.clone(),
                    cue: cue.phrase.clone(),
                    problem,
                };
                if !(cue.weight > 0.0 && cue.weight <= 1.0) {
                    return Err(bad("needs a weight in (0, 1]"));
                }
                for phrase in expand(&cue.phrase).map_err(bad)? {
                    phrases.push(phrase);
                    cues.push(Cue {
                        pattern: index,
                        weight: cue.weight,
                        negatable: cue.negatable,
                    });
                }
            }
            names.push(pattern.name);
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&phrases)
            .map_err(|e| CatalogError::Matcher(e.to_string()))?;
        let negators = file
            .negators
            .iter()
            .map(|n| normalise(n).text.trim().to_owned())
            .collect();
        Ok(Catalog {
            names,
            cues,
            matcher,
            negators,
            negation_window: file.negation_window,
        })
    }

    /// The catalog that ships with salesloop, compiled once per process and shared (the matcher
    /// is reference-counted, so a copy is cheap).
    pub fn builtin() -> Catalog {
        static BUILTIN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The built-in catalog is checked by a unit test; failing here is a build defect.
                Catalog::from_json(DEFAULT_CATALOG)
                    .unwrap_or_else(|e| panic!("built-in catalog: {e}"))
            })
            .clone()
    }

    pub fn pattern_names(&self) -> &[String] {
        &self.names
    }

    /// Every pattern found in `text` with a confidence at or above `threshold`, strongest first.
    /// `calibration` scales a pattern's confidence (learned by the feedback loop).
    pub fn detect(
        &self,
        text: &str,
        threshold: f64,
        calibration: &BTreeMap<String, f64>,
    ) -> Vec<Detection> {
        let norm = normalise(text);
        let bytes = norm.text.as_bytes();
        // Per pattern: the product of (1 - weight) over its cues, and its strongest cue's span.
        let mut found: BTreeMap<usize, (f64, f64, usize, usize)> = BTreeMap::new();
        for m in self.matcher.find_overlapping_iter(&norm.text) {
            let (start, end) = (m.start(), m.end());
            let before_ok = start == 0 || !is_word_byte(bytes[start - 1]);
            let after_ok = end == bytes.len() || !is_word_byte(bytes[end]);
            if !before_ok || !after_ok {
                continue;
            }
            let cue = &self.cues[m.pattern().as_usize()];
            if cue.negatable && self.negated(&norm.text[..start]) {
                continue;
            }
            let entry = found.entry(cue.pattern).or_insert((1.0, 0.0, start, end));
            entry.0 *= 1.0 - cue.weight;
            if cue.weight > entry.1 || (cue.weight == entry.1 && end - start > entry.3 - entry.2) {
                *entry = (entry.0, cue.weight, start, end);
            }
        }
        let mut detections: Vec<Detection> = found
            .into_iter()
            .filter_map(|(pattern, (miss, _, start, end))| {
                let name = &self.names[pattern];
                let scale = calibration.get(name).copied().unwrap_or(1.0);
                let confidence = ((1.0 - miss) * scale).clamp(0.0, 1.0);
                if confidence < threshold {
                    return None;
                }
                let (from, to) = norm.original_span(start, end);
                Some(Detection {
                    pattern: name.clone(),
                    confidence: (confidence * 1000.0).round() / 1000.0,
                    evidence: text[from..to].to_owned(),
                    start: from,
                    end: to,
                })
            })
            .collect();
        detections.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        detections
    }

    /// Whether a negator stands among the last few words of the clause before a cue.
    fn negated(&self, before: &str) -> bool {
        let clause = before.rsplit(CLAUSE_BREAK).next().unwrap_or(before);
        clause
            .split_whitespace()
            .rev()
            .take(self.negation_window)
            .any(|word| self.negators.iter().any(|n| n == word))
    }
}

/// Stands in the normalised text where a clause ends (. , ; : ! ? and "but").
const CLAUSE_BREAK: char = '|';

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'\'' || b >= 0x80
}

/// Normalised text with, for each of its bytes, where it came from in the original.
struct Normalised {
    text: String,
    origin: Vec<(usize, usize)>,
}

impl Normalised {
    /// The original byte span of a normalised span.
    fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let from = self.origin[start].0;
        let to = self.origin[end - 1].1;
        (from, to)
    }

    fn push(&mut self, c: char, from: usize, to: usize) {
        let mut buf = [0u8; 4];
        let encoded = c.encode_utf8(&mut buf);
        self.text.push_str(encoded);
        for _ in 0..encoded.len() {
            self.origin.push((from, to));
        }
    }
}

fn normalise(text: &str) -> Normalised {
    let mut out = Normalised {
        text: String::with_capacity(text.len() + 2),
        origin: Vec::with_capacity(text.len() + 2),
    };
    let mut last_space = true;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        match c {
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}' => {}
            '\'' | '\u{2018}' | '\u{2019}' | '\u{02bc}' | '`' => {
                out.push('\'', i, end);
                last_space = false;
            }
            '.' | ',' | ';' | ':' | '!' | '?' | '\u{2014}' | '\u{2013}' | '(' | ')' => {
                if !last_space {
                    out.push(' ', i, end);
                }
                out.push(CLAUSE_BREAK, i, end);
                out.push(' ', i, end);
                last_space = true;
            }
            c if c.is_alphanumeric() => {
                for lower in c.to_lowercase() {
                    out.push(lower, i, end);
                }
                last_space = false;
            }
            _ => {
                if !last_space {
                    out.push(' ', i, end);
                    last_space = true;
                }
            }
        }
    }
    // "but" starts a new clause: "not cheap but not too expensive either" negates only locally.
    if out.text.contains(" but ") {
        let mut text = String::with_capacity(out.text.len());
        let mut origin = Vec::with_capacity(out.origin.len());
        let mut rest = out.text.as_str();
        let mut offset = 0;
        while let Some(at) = rest.find(" but ") {
            text.push_str(&rest[..at]);
            origin.extend_from_slice(&out.origin[offset..offset + at]);
            // " but " (5 bytes) becomes " | but " keeping the origin of the space.
            let space = out.origin[offset + at];
            text.push_str(" | but ");
            origin.extend([space, space, space]);
            origin.extend_from_slice(&out.origin[offset + at + 1..offset + at + 5]);
            offset += at + 5;
            rest = &rest[at + 5..];
        }
        text.push_str(rest);
        origin.extend_from_slice(&out.origin[offset..]);
        out.text = text;
        out.origin = origin;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(catalog: &Catalog, text: &str) -> Vec<String> {
        catalog
            .detect(text, DEFAULT_THRESHOLD, &BTreeMap::new())
            .into_iter()
            .map(|d| d.pattern)
            .collect()
    }

    #[test]
    fn builtin_catalog_compiles_and_covers_the_twelve_patterns() {
        let catalog = Catalog::builtin();
        for name in [
            "objection.price",
            "objection.timing",
            "objection.authority",
            "objection.need",
            "objection.competitor",
            "objection.trust",
            "buying_signal.process",
            "buying_signal.commitment",
            "question.product",
            "question.pricing",
            "pain_point",
            "next_step.demo",
        ] {
            assert!(catalog.pattern_names().iter().any(|n| n == name), "{name}");
        }
    }

    #[test]
    fn detects_with_evidence_from_the_original_text() {
        let catalog = Catalog::builtin();
        let text = "Honestly this looks TOO   Expensive for us.";
        let found = catalog.detect(text, DEFAULT_THRESHOLD, &BTreeMap::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pattern, "objection.price");
        assert_eq!(found[0].evidence, "TOO   Expensive");
        assert_eq!(&text[found[0].start..found[0].end], found[0].evidence);
        assert!((0.7..=1.0).contains(&found[0].confidence));
    }

    #[test]
    fn negation_cancels_a_cue_within_its_clause_only() {
        let catalog = Catalog::builtin();
        assert!(names(&catalog, "It's not too expensive, honestly").is_empty());
        assert!(names(&catalog, "Price isn’t too expensive").is_empty());
        assert_eq!(
            names(&catalog, "Not a problem. But it is too expensive"),
            ["objection.price"]
        );
    }

    #[test]
    fn typographic_apostrophes_and_zero_width_characters_do_not_hide_cues() {
        let catalog = Catalog::builtin();
        assert_eq!(names(&catalog, "We can’t afford it"), ["objection.price"]);
        assert_eq!(
            names(&catalog, "too ex\u{200b}pensive"),
            ["objection.price"]
        );
    }

    #[test]
    fn cues_match_whole_words_only() {
        let catalog = Catalog::builtin();
        assert!(names(&catalog, "my demonstration of tootoo expensiveness").is_empty());
    }

    #[test]
    fn calibration_scales_confidence_and_the_threshold_filters() {
        let catalog = Catalog::builtin();
        let text = "this is too expensive";
        let damp = BTreeMap::from([("objection.price".to_owned(), 0.5)]);
        assert!(catalog.detect(text, DEFAULT_THRESHOLD, &damp).is_empty());
        assert_eq!(catalog.detect(text, 0.3, &damp).len(), 1);
        assert!(catalog.detect(text, 1.0, &BTreeMap::new()).len() <= 1);
    }

    #[test]
    fn malformed_catalogs_are_refused_with_a_reason() {
        let bad_weight = r#"{"negators": [], "negation_window": 3, "patterns": [
            {"name": "x", "cues": [{"phrase": "a", "weight": 1.5}]}]}"#;
        assert!(matches!(
            Catalog::from_json(bad_weight),
            Err(CatalogError::BadCue { .. })
        ));
        let unclosed = r#"{"negators": [], "negation_window": 3, "patterns": [
            {"name": "x", "cues": [{"phrase": "{a|b", "weight": 0.5}]}]}"#;
        assert!(matches!(
            Catalog::from_json(unclosed),
            Err(CatalogError::BadCue { .. })
        ));
        assert!(matches!(
            Catalog::from_json("{}"),
            Err(CatalogError::Json(_))
        ));
    }

    #[test]
    fn alternatives_expand_to_every_combination() {
        assert_eq!(expand("how {do|can} {i|we} sign up").unwrap().len(), 4);
        assert_eq!(
            expand("{really |}pricey").unwrap(),
            ["really pricey", "pricey"]
        );
    }

    #[test]
    fn arbitrary_text_never_panics_and_spans_stay_inside() {
        let catalog = Catalog::builtin();
        for text in [
            "",
            "?",
            "ǅ İ ﬃ too expensive ß",
            "\u{feff}\u{200b}",
            "but but but",
            "too expensive but",
        ] {
            for d in catalog.detect(text, 0.0, &BTreeMap::new()) {
                assert!(d.start <= d.end && d.end <= text.len());
                assert_eq!(&text[d.start..d.end], d.evidence);
            }
        }
    }
}

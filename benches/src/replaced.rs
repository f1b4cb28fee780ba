//! The matcher that word-level detection replaced, rebuilt as it was: this mirrors
//! `shared/src/patterns.rs` at commit 0309cf2 (`cba526f^`, the parent of cba526f "Detection
//! matches cues word by word instead of compiling 58,271 expanded phrases"). Its `expand` and
//! `normalise` are copied from there unchanged; `compile` does what that commit's
//! `Catalog::from_json` did (every cue expanded and normalised, one automaton built with
//! `AhoCorasick::builder().match_kind(MatchKind::Standard)` and no other option, so matching is
//! case-sensitive and relies on the input being lower-cased by `normalise`), and `pass` does
//! what its `detect` did before the word-boundary, negation and scoring steps: normalise the
//! text, then one overlapping pass of the automaton over the normalised text.
//!
//! Only difference: the catalog JSON is read into a `serde_json::Value` here instead of typed
//! structs (same fields, same checks), which costs microseconds beside the automaton's build.

use aho_corasick::{AhoCorasick, MatchKind};

/// A compiled expanded-phrase catalog, as the replaced code kept it.
pub struct Replaced {
    /// The automaton of every expanded phrase.
    pub matcher: AhoCorasick,
    /// For each phrase: its pattern's index, weight and whether it can be negated.
    pub cues: Vec<(usize, f64, bool)>,
    /// The negators, normalised.
    pub negators: Vec<String>,
    /// The patterns' names.
    pub names: Vec<String>,
    /// Every expanded phrase, in the automaton's order.
    pub phrases: Vec<String>,
}

/// Compiles a catalog as the replaced `Catalog::from_json` did.
pub fn compile(raw: &str) -> Result<Replaced, String> {
    let file: serde_json::Value = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    let patterns = file["patterns"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or("catalog has no patterns")?;
    let mut names: Vec<String> = Vec::new();
    let mut cues = Vec::new();
    let mut phrases = Vec::new();
    for (index, pattern) in patterns.iter().enumerate() {
        let name = pattern["name"].as_str().ok_or("a pattern has no name")?;
        if names.iter().any(|n| n == name) {
            return Err(format!("pattern {name} appears twice"));
        }
        for cue in pattern["cues"].as_array().ok_or("a pattern has no cues")? {
            let phrase = cue["phrase"].as_str().ok_or("a cue has no phrase")?;
            let weight = cue["weight"].as_f64().ok_or("a cue has no weight")?;
            let negatable = cue["negatable"].as_bool().unwrap_or(true);
            if !(weight > 0.0 && weight <= 1.0) {
                return Err(format!(
                    "pattern {name}: cue {phrase:?} needs a weight in (0, 1]"
                ));
            }
            for expanded in expand(phrase).map_err(|p| format!("pattern {name}: {phrase:?} {p}"))? {
                phrases.push(expanded);
                cues.push((index, weight, negatable));
            }
        }
        names.push(name.to_owned());
    }
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::Standard)
        .build(&phrases)
        .map_err(|e| e.to_string())?;
    let negators = file["negators"]
        .as_array()
        .ok_or("catalog has no negators")?
        .iter()
        .filter_map(|n| n.as_str())
        .map(|n| normalise(n).text.trim().to_owned())
        .collect();
    Ok(Replaced {
        matcher,
        cues,
        negators,
        names,
        phrases,
    })
}

impl Replaced {
    /// Every expanded phrase with its pattern's name, in the automaton's order.
    pub fn named_phrases(&self) -> Vec<(String, String)> {
        self.cues
            .iter()
            .zip(&self.phrases)
            .map(|(&(pattern, _, _), phrase)| (self.names[pattern].clone(), phrase.clone()))
            .collect()
    }

    /// The replaced detection's matching step: the text normalised (with the map back to the
    /// original bytes it kept for evidence spans), then every overlapping match of every phrase.
    /// Returns the number of matches.
    pub fn pass(&self, text: &str) -> usize {
        let norm = normalise(text);
        std::hint::black_box(&norm.origin);
        self.matcher.find_overlapping_iter(&norm.text).count()
    }
}

// ---- copied unchanged from shared/src/patterns.rs at 0309cf2 (cba526f^) ----

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

/// Stands in the normalised text where a clause ends (. , ; : ! ? and "but").
const CLAUSE_BREAK: char = '|';

/// Normalised text with, for each of its bytes, where it came from in the original.
struct Normalised {
    text: String,
    origin: Vec<(usize, usize)>,
}

impl Normalised {
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

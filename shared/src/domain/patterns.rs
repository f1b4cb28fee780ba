//! Sales pattern recognition. The catalog is data (`shared/catalog/patterns.json`, shipped
//! compiled as `patterns.bin`, see `patterns/compiled.rs`; replaceable by configuration): each
//! pattern lists cue phrases with weights. A message is normalised (lower case, typographic
//! apostrophes folded, zero-width characters dropped, punctuation as clause breaks) and cut into
//! words; cues are matched word by word, whole words only, with a cue cancelled when a negator
//! stands shortly before it in the same clause.
//!
//! Cues are kept as sequences of word alternatives (`{too|very} {expensive|pricey}`), not
//! expanded into every phrase they stand for: the built-in catalog's 318 cues stand for 58,271
//! phrases, and compiling those into one automaton took 75 ms of every cold start. A cue matches
//! once for each way of choosing its alternatives that spells the words at hand, which is
//! exactly what matching every expanded phrase would count (a test holds the two together).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

use crate::domain::conversation::Detection;

mod compiled;

/// The catalog that ships with salesloop.
pub const DEFAULT_CATALOG: &str = include_str!("../../catalog/patterns.json");

/// `DEFAULT_CATALOG` compiled (`make catalog` writes it; see `patterns/compiled.rs`).
pub const COMPILED_CATALOG: &[u8] = include_bytes!("../../catalog/patterns.bin");

/// The default confidence at which a detection counts.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// The most alternatives a cue may stand for once expanded (a guard against a catalog typo
/// that multiplies into millions of phrases; the built-in catalog's largest cue has 1,440).
const MAX_EXPANSIONS: usize = 4096;

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
    #[error("compiled catalog: {0}")]
    Compiled(&'static str),
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

/// A word of the catalog, by number.
type Word = u32;

/// A cue: slots matched in order, each by one of its alternatives (a run of words, maybe none).
#[derive(Debug, Clone)]
struct Cue {
    pattern: usize,
    weight: f64,
    negatable: bool,
    slots: Vec<Vec<Vec<Word>>>,
}

/// FNV-1a: the catalog's words are short and trusted, and this hash is several times faster
/// than the default one on them. A text's words are only looked up, never inserted.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type WordMap<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

/// A compiled catalog: build it once per process, then detect on every message.
#[derive(Debug, Clone)]
pub struct Catalog {
    inner: std::sync::Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    names: Vec<String>,
    cues: Vec<Cue>,
    words: WordMap<Word>,
    /// For each word, the cues that can match that word alone and whose first word it can be.
    starts: Vec<Vec<usize>>,
    /// For each pair of words (`pair_key`), the cues of two or more words that can start with
    /// that pair (their range in `pair_cues`): a common first word ("i", "we") leads only to
    /// the cues its next word fits.
    pairs: HashMap<u64, (u32, u32), BuildHasherDefault<Fnv>>,
    pair_cues: Vec<usize>,
    negators: Vec<String>,
    negation_window: usize,
}

/// A phrase cut at its `{...}` groups: literal text is a group of one alternative.
fn groups(phrase: &str) -> Result<Vec<Vec<&str>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = phrase;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').ok_or("has an unclosed {")? + open;
        if rest[..open].contains('}') {
            return Err("has an unopened }");
        }
        out.push(vec![&rest[..open]]);
        out.push(rest[open + 1..close].split('|').collect());
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("has an unopened }");
    }
    out.push(vec![rest]);
    Ok(out)
}

/// Every phrase a cue stands for, normalised: what matching must be equivalent to. Detection
/// never expands cues; the benchmark builds its one-pass baseline from these, and a test holds
/// detection to them.
fn expand(phrase: &str) -> Result<Vec<String>, &'static str> {
    let mut variants = vec![String::new()];
    for group in groups(phrase)? {
        variants = variants
            .iter()
            .flat_map(|v| group.iter().map(move |option| format!("{v}{option}")))
            .collect();
        if variants.len() > MAX_EXPANSIONS {
            return Err("expands to more than 4096 phrases");
        }
    }
    let expanded: Vec<String> = variants
        .into_iter()
        .map(|v| words_of(&v).join(" "))
        .filter(|v| !v.is_empty())
        .collect();
    if expanded.is_empty() {
        return Err("matches nothing");
    }
    Ok(expanded)
}

/// The normalised words of a piece of a phrase.
fn words_of(text: &str) -> Vec<String> {
    normalise(text)
        .text
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every phrase of a catalog's cues, expanded and normalised, with the pattern of each.
pub fn expanded_phrases(raw: &str) -> Result<Vec<(String, String)>, CatalogError> {
    let file: CatalogFile =
        serde_json::from_str(raw).map_err(|e| CatalogError::Json(e.to_string()))?;
    let mut out = Vec::new();
    for pattern in file.patterns {
        for cue in pattern.cues {
            let phrases = expand(&cue.phrase).map_err(|problem| CatalogError::BadCue {
                pattern: pattern.name.clone(),
                cue: cue.phrase.clone(),
                problem,
            })?;
            out.extend(phrases.into_iter().map(|p| (pattern.name.clone(), p)));
        }
    }
    Ok(out)
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
        let mut words = WordMap::default();
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
                let slots = compile_cue(&cue.phrase, &mut words).map_err(bad)?;
                cues.push(Cue {
                    pattern: index,
                    weight: cue.weight,
                    negatable: cue.negatable,
                    slots,
                });
            }
            names.push(pattern.name);
        }
        let mut starts = vec![Vec::new(); words.len()];
        // Every (pair, cue), then grouped by pair: one list for all pairs, built at every cold
        // start without an allocation per pair.
        let mut entries: Vec<(u64, usize)> = Vec::new();
        let mut found = Vec::new();
        for (index, cue) in cues.iter().enumerate() {
            found.clear();
            openings(&cue.slots, &mut [0; 2], 0, &mut found);
            found.sort_unstable();
            found.dedup();
            if found.iter().any(|&(_, second)| second.is_none()) {
                // A cue that may be one word is tried at each of its first words.
                let mut firsts: Vec<Word> = found.iter().map(|&(first, _)| first).collect();
                firsts.dedup();
                for word in firsts {
                    starts[word as usize].push(index);
                }
            } else {
                for &(first, second) in &found {
                    let second = second.expect("two words");
                    entries.push((pair_key(first, second), index));
                }
            }
        }
        entries.sort_unstable();
        let distinct = entries.chunk_by(|a, b| a.0 == b.0).count();
        let mut pairs = HashMap::with_capacity_and_hasher(distinct, Default::default());
        let mut at = 0;
        for run in entries.chunk_by(|a, b| a.0 == b.0) {
            pairs.insert(run[0].0, (at as u32, (at + run.len()) as u32));
            at += run.len();
        }
        let pair_cues = entries.into_iter().map(|(_, cue)| cue).collect();
        let negators = file
            .negators
            .iter()
            .map(|n| normalise(n).text.trim().to_owned())
            .collect();
        Ok(Catalog {
            inner: std::sync::Arc::new(Compiled {
                names,
                cues,
                words,
                starts,
                pairs,
                pair_cues,
                negators,
                negation_window: file.negation_window,
            }),
        })
    }

    /// The catalog that ships with salesloop, compiled once per process and shared (a copy is
    /// a reference count).
    pub fn builtin() -> Catalog {
        static BUILTIN: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The compiled form is checked against the JSON by a unit test; failing here is
                // a build defect.
                Catalog::from_compiled(COMPILED_CATALOG)
                    .unwrap_or_else(|e| panic!("built-in catalog: {e}"))
            })
            .clone()
    }

    /// A catalog from its compiled form (what [`Catalog::compiled`] wrote).
    pub fn from_compiled(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        let compiled = compiled::decode(bytes).map_err(CatalogError::Compiled)?;
        Ok(Catalog {
            inner: std::sync::Arc::new(compiled),
        })
    }

    /// This catalog's compiled form: `make catalog` writes the built-in one's to
    /// `shared/catalog/patterns.bin`.
    pub fn compiled(&self) -> Vec<u8> {
        compiled::encode(&self.inner)
    }

    pub fn pattern_names(&self) -> &[String] {
        &self.inner.names
    }

    /// Every pattern found in `text` with a confidence at or above `threshold`, strongest first.
    /// `calibration` scales a pattern's confidence (learned by the feedback loop).
    pub fn detect(
        &self,
        text: &str,
        threshold: f64,
        calibration: &BTreeMap<String, f64>,
    ) -> Vec<Detection> {
        DETECT_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.detect_in(text, threshold, calibration, &mut scratch),
            Err(_) => self.detect_in(text, threshold, calibration, &mut Scratch::default()),
        })
    }

    /// [`Catalog::detect`] with the buffers of `scratch` (kept by each thread between messages,
    /// so that a message allocates only what it returns).
    fn detect_in(
        &self,
        text: &str,
        threshold: f64,
        calibration: &BTreeMap<String, f64>,
        scratch: &mut Scratch,
    ) -> Vec<Detection> {
        let inner = &*self.inner;
        let Scratch {
            norm,
            spare,
            tokens,
            ends,
        } = scratch;
        normalise_into(text, norm, spare);
        let norm = &*norm;
        // The words of the text, with their spans in the normalised text and their catalog number.
        tokens.clear();
        tokens.extend(
            tokens_of(&norm.text)
                .map(|(start, word)| (start, start + word.len(), inner.words.get(word).copied())),
        );
        // Per pattern: the product of (1 - weight) over its cues, and its strongest cue's span.
        let mut found: BTreeMap<usize, (f64, f64, usize, usize)> = BTreeMap::new();
        let tokens = &*tokens;
        for (first, &(start, _, word)) in tokens.iter().enumerate() {
            let Some(word) = word else { continue };
            // Whether a negator stands before this word: asked at most once per word.
            let mut negated = None;
            let longer = tokens
                .get(first + 1)
                .and_then(|t| t.2)
                .and_then(|next| inner.pairs.get(&pair_key(word, next)))
                .map(|&(from, to)| &inner.pair_cues[from as usize..to as usize]);
            let candidates = inner.starts[word as usize]
                .iter()
                .chain(longer.into_iter().flatten());
            for &index in candidates {
                let cue = &inner.cues[index];
                ends.clear();
                match_slots(&cue.slots, tokens, first, ends);
                if ends.is_empty() {
                    continue;
                }
                if cue.negatable
                    && *negated.get_or_insert_with(|| inner.negated(&norm.text[..start]))
                {
                    continue;
                }
                for &last in ends.iter() {
                    let end = tokens[last].1;
                    let entry = found.entry(cue.pattern).or_insert((1.0, 0.0, start, end));
                    entry.0 *= 1.0 - cue.weight;
                    if cue.weight > entry.1
                        || (cue.weight == entry.1 && end - start > entry.3 - entry.2)
                    {
                        *entry = (entry.0, cue.weight, start, end);
                    }
                }
            }
        }
        let mut detections: Vec<Detection> = found
            .into_iter()
            .filter_map(|(pattern, (miss, _, start, end))| {
                let name = &inner.names[pattern];
                let scale = calibration.get(name).copied().unwrap_or(1.0);
                // Reported to three decimals, and the threshold applies to what is reported, so
                // that no detection ever shows a confidence below it.
                let confidence = ((1.0 - miss) * scale).clamp(0.0, 1.0);
                let confidence = (confidence * 1000.0).round() / 1000.0;
                if confidence < threshold {
                    return None;
                }
                let (from, to) = norm.original_span(start, end);
                Some(Detection {
                    pattern: name.clone(),
                    confidence,
                    evidence: text[from..to].to_owned(),
                    start: from,
                    end: to,
                    calibrated: true,
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
}

impl Compiled {
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

/// Compiles a cue's phrase into slots of alternatives, numbering its words.
fn compile_cue(
    phrase: &str,
    words: &mut WordMap<Word>,
) -> Result<Vec<Vec<Vec<Word>>>, &'static str> {
    let groups = groups(phrase)?;
    let combinations = groups.iter().try_fold(1usize, |n, g| {
        n.checked_mul(g.len()).filter(|&n| n <= MAX_EXPANSIONS)
    });
    if combinations.is_none() {
        return Err("expands to more than 4096 phrases");
    }
    // Alternatives must meet at word boundaries ("{pre|}sale" would glue words), so that each
    // group's words are words of the text on their own.
    let mut may_end_in_word = false;
    for group in &groups {
        if may_end_in_word && group.iter().any(|o| o.chars().next().is_some_and(wordy)) {
            return Err("joins alternatives inside a word; put a space between them");
        }
        may_end_in_word = group
            .iter()
            .any(|o| o.chars().next_back().is_some_and(wordy))
            || (may_end_in_word && group.iter().any(|o| o.is_empty()));
    }
    let mut slots = Vec::new();
    // Compiled at every cold start: one buffer for every option's normalised text, and a word
    // allocated only the first time the catalog names it.
    let (mut norm, mut spare) = (Normalised::default(), Normalised::default());
    for group in groups {
        let mut alternatives = Vec::with_capacity(group.len());
        for option in group {
            // Most options are lower-case ASCII words, which normalising leaves as they are.
            let plain = option
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ');
            let text = if plain {
                option
            } else {
                normalise_into(option, &mut norm, &mut spare);
                &norm.text
            };
            let mut run = Vec::new();
            for word in text.split_ascii_whitespace() {
                if word == "but" {
                    // Texts are cut into clauses at "but"; a cue cannot span one.
                    return Err("contains \"but\", which starts a new clause");
                }
                let number = match words.get(word) {
                    Some(&number) => number,
                    None => {
                        let next = words.len() as Word;
                        words.insert(word.into(), next);
                        next
                    }
                };
                run.push(number);
            }
            alternatives.push(run);
        }
        if alternatives.len() == 1 && alternatives[0].is_empty() {
            continue;
        }
        slots.push(alternatives);
    }
    if slots.iter().all(|slot| slot.iter().any(Vec::is_empty)) {
        return Err("matches nothing");
    }
    Ok(slots)
}

/// Whether a character is kept as part of a word by `normalise`.
fn wordy(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{02bc}' | '`')
}

/// The key of a pair of words in `Compiled::pairs`.
fn pair_key(first: Word, second: Word) -> u64 {
    (u64::from(first) << 32) | u64::from(second)
}

/// How the cue's phrases can open: each phrase's first word and its second, none when the
/// phrase is one word. `have` holds the first `len` words taken so far.
fn openings(
    slots: &[Vec<Vec<Word>>],
    have: &mut [Word; 2],
    len: usize,
    out: &mut Vec<(Word, Option<Word>)>,
) {
    if len == 2 {
        out.push((have[0], Some(have[1])));
        return;
    }
    let Some((slot, rest)) = slots.split_first() else {
        if len == 1 {
            out.push((have[0], None));
        }
        return;
    };
    for alternative in slot {
        let mut taken = len;
        for &word in alternative.iter().take(2 - len) {
            have[taken] = word;
            taken += 1;
        }
        openings(rest, have, taken, out);
    }
}

/// Every way the slots match the tokens from `at` on, as the index of each way's last token:
/// one entry per choice of alternatives, so a cue counts as often as its expanded phrases would.
fn match_slots(
    slots: &[Vec<Vec<Word>>],
    tokens: &[(usize, usize, Option<Word>)],
    at: usize,
    ends: &mut Vec<usize>,
) {
    fn walk(
        slots: &[Vec<Vec<Word>>],
        tokens: &[(usize, usize, Option<Word>)],
        start: usize,
        at: usize,
        ends: &mut Vec<usize>,
    ) {
        let Some((slot, rest)) = slots.split_first() else {
            if at > start {
                ends.push(at - 1);
            }
            return;
        };
        for alternative in slot {
            let Some(next) = tokens.get(at..at + alternative.len()) else {
                continue;
            };
            if next.iter().zip(alternative).all(|(t, w)| t.2 == Some(*w)) {
                walk(rest, tokens, start, at + alternative.len(), ends);
            }
        }
    }
    walk(slots, tokens, at, at, ends);
}

/// The words of a normalised text with their byte offsets.
fn tokens_of(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(' ')
        .scan(0usize, |offset, word| {
            let start = *offset;
            *offset += word.len() + 1;
            Some((start, word))
        })
        .filter(|(_, word)| !word.is_empty())
}

/// Stands in the normalised text where a clause ends (. , ; : ! ? and "but").
const CLAUSE_BREAK: char = '|';

/// Normalised text with, for each of its bytes, where it came from in the original.
#[derive(Default)]
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

/// What [`Catalog::detect`] keeps between messages: the normalised text (and a second one for
/// the clause cut at "but"), the tokens and the ends of a cue's matches.
#[derive(Default)]
struct Scratch {
    norm: Normalised,
    spare: Normalised,
    tokens: Vec<(usize, usize, Option<Word>)>,
    ends: Vec<usize>,
}

thread_local! {
    static DETECT_SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

fn normalise(text: &str) -> Normalised {
    let mut out = Normalised {
        text: String::with_capacity(text.len() + 2),
        origin: Vec::with_capacity(text.len() + 2),
    };
    normalise_into(text, &mut out, &mut Normalised::default());
    out
}

/// [`normalise`] into buffers that are emptied first and kept; `spare` is a second pair of
/// buffers, used (and swapped with `out`'s) when the text holds " but ".
fn normalise_into(text: &str, out: &mut Normalised, spare: &mut Normalised) {
    out.text.clear();
    out.origin.clear();
    let mut last_space = true;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        match c {
            // The common case first: an ASCII letter or digit is pushed lower-cased.
            c if c.is_ascii_alphanumeric() => {
                out.text.push(c.to_ascii_lowercase());
                out.origin.push((i, end));
                last_space = false;
            }
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
        let Normalised { text, origin } = spare;
        text.clear();
        origin.clear();
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
        std::mem::swap(out, spare);
    }
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
    fn the_compiled_catalog_is_what_the_shipped_json_compiles_to() {
        let compiled = Catalog::from_json(DEFAULT_CATALOG)
            .expect("the shipped catalog compiles")
            .compiled();
        assert!(
            compiled == COMPILED_CATALOG,
            "shared/catalog/patterns.bin is not what patterns.json compiles to: run `make catalog`"
        );
        // And it reads back into the same catalog.
        let read = Catalog::from_compiled(COMPILED_CATALOG).expect("reads back");
        assert_eq!(read.compiled(), compiled);
        let json = Catalog::from_json(DEFAULT_CATALOG).expect("compiles");
        for text in [
            "Honestly this looks TOO   Expensive for us, we can't afford it right now.",
            "Can we book a demo next week? What does the premium plan cost per seat?",
            "Not a problem. But it is too expensive and my boss decides.",
        ] {
            assert_eq!(
                read.detect(text, 0.0, &BTreeMap::new()),
                json.detect(text, 0.0, &BTreeMap::new()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_damaged_compiled_catalog_is_refused_without_panicking() {
        let bytes = COMPILED_CATALOG;
        // Cut anywhere: refused.
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            assert!(
                Catalog::from_compiled(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Another file, or bytes after the end: refused with the reason.
        assert_eq!(
            Catalog::from_compiled(crate::domain::detector::DEFAULT_MODEL).unwrap_err(),
            CatalogError::Compiled("not a compiled catalog (wrong magic)")
        );
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(
            Catalog::from_compiled(&longer).unwrap_err(),
            CatalogError::Compiled("bytes after the end")
        );
        // Any byte changed: read or refused, never a panic, and what is read detects safely.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut damaged = bytes.to_vec();
            let at = (state % damaged.len() as u64) as usize;
            damaged[at] ^= (state >> 32) as u8 | 1;
            if let Ok(catalog) = Catalog::from_compiled(&damaged) {
                let _ = catalog.detect(
                    "we can't afford it, is there a demo? too expensive",
                    0.0,
                    &BTreeMap::new(),
                );
            }
        }
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
    fn no_detection_is_reported_below_the_threshold() {
        // 0.96 × 0.8098 = 0.77741, reported as 0.777: below a threshold of 0.7774.
        let catalog = Catalog::builtin();
        let calibration = BTreeMap::from([("objection.price".to_owned(), 0.7774 / 0.96)]);
        for d in catalog.detect("this is too expensive", 0.7774, &calibration) {
            assert!(d.confidence >= 0.7774, "{d:?}");
        }
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

    /// Detection as it was before cues stopped being expanded: one Aho-Corasick automaton over
    /// every expanded phrase, each match checked for whole words and negation.
    fn detect_by_expansion(
        catalog: &Catalog,
        matcher: &aho_corasick::AhoCorasick,
        cues: &[(usize, f64, bool)],
        text: &str,
    ) -> Vec<(String, f64, usize, usize)> {
        let inner = &*catalog.inner;
        let norm = normalise(text);
        let bytes = norm.text.as_bytes();
        let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'\'' || b >= 0x80;
        let mut found: BTreeMap<usize, (f64, f64, usize, usize)> = BTreeMap::new();
        for m in matcher.find_overlapping_iter(&norm.text) {
            let (start, end) = (m.start(), m.end());
            if (start > 0 && word_byte(bytes[start - 1]))
                || (end < bytes.len() && word_byte(bytes[end]))
            {
                continue;
            }
            let (pattern, weight, negatable) = cues[m.pattern().as_usize()];
            if negatable && inner.negated(&norm.text[..start]) {
                continue;
            }
            let entry = found.entry(pattern).or_insert((1.0, 0.0, start, end));
            entry.0 *= 1.0 - weight;
            if weight > entry.1 || (weight == entry.1 && end - start > entry.3 - entry.2) {
                *entry = (entry.0, weight, start, end);
            }
        }
        let mut out: Vec<_> = found
            .into_iter()
            .map(|(pattern, (miss, _, start, end))| {
                let (from, to) = norm.original_span(start, end);
                (inner.names[pattern].clone(), 1.0 - miss, from, to)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn matching_words_counts_exactly_what_matching_every_expanded_phrase_counts() {
        let catalog = Catalog::builtin();
        let file: CatalogFile = serde_json::from_str(DEFAULT_CATALOG).unwrap();
        let mut phrases = Vec::new();
        let mut cues = Vec::new();
        for (index, pattern) in file.patterns.iter().enumerate() {
            for cue in &pattern.cues {
                for phrase in expand(&cue.phrase).unwrap() {
                    phrases.push(phrase);
                    cues.push((index, cue.weight, cue.negatable));
                }
            }
        }
        assert_eq!(phrases.len(), 58_271);
        let matcher = aho_corasick::AhoCorasick::new(&phrases).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts: Vec<String> = Vec::new();
        for file in [
            "benches/data/casino/utterances.jsonl",
            "tests/fixtures/patterns/labelled.jsonl",
            "tests/fixtures/patterns/heldout.jsonl",
        ] {
            let raw = std::fs::read_to_string(root.join(file)).unwrap();
            for line in raw.lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                let text = value.get("text").unwrap_or(&value).as_str().unwrap();
                texts.push(text.to_owned());
            }
        }
        // Texts built to hit optional words, overlaps, negation and clause breaks.
        texts.extend(
            [
                "that's a bit too expensive, we can't afford it but we need it",
                "its way too pricey and over our budget, not over budget though",
                "we don't have the budget. But we do have the budget next quarter",
                "can we roll it out to the rest of the team after finance team to review",
                "too too expensive expensive pricey pricey",
            ]
            .map(str::to_owned),
        );
        assert!(texts.len() > 12_000);
        let mut detected = 0;
        for text in &texts {
            let mut words: Vec<_> = catalog
                .detect(text, 0.0, &BTreeMap::new())
                .into_iter()
                .map(|d| (d.pattern, d.confidence, d.start, d.end))
                .collect();
            words.sort_by(|a, b| a.0.cmp(&b.0));
            let expanded = detect_by_expansion(&catalog, &matcher, &cues, text);
            assert_eq!(words.len(), expanded.len(), "{text:?}");
            for (w, e) in words.iter().zip(&expanded) {
                assert_eq!((&w.0, w.2, w.3), (&e.0, e.2, e.3), "{text:?}");
                assert!((w.1 - e.1).abs() <= 0.0005 + 1e-12, "{text:?}: {w:?} {e:?}");
            }
            detected += words.len();
        }
        assert!(detected > 1_000, "only {detected} detections");
    }

    #[test]
    fn alternatives_must_meet_at_word_boundaries() {
        let glued = r#"{"negators": [], "negation_window": 3, "patterns": [
            {"name": "x", "cues": [{"phrase": "pre{sale|}", "weight": 0.5}]}]}"#;
        assert!(matches!(
            Catalog::from_json(glued),
            Err(CatalogError::BadCue { .. })
        ));
        let spaced = r#"{"negators": [], "negation_window": 3, "patterns": [
            {"name": "x", "cues": [{"phrase": "{really |}pricey {deal|}", "weight": 0.8}]}]}"#;
        let catalog = Catalog::from_json(spaced).unwrap();
        // "really pricey deal" is matched by four choices; "pricey" alone by one.
        let found = catalog.detect("a really pricey deal", 0.0, &BTreeMap::new());
        assert_eq!(found[0].evidence, "really pricey deal");
        assert!((found[0].confidence - (1.0 - 0.2f64.powi(4))).abs() < 1e-3);
        let found = catalog.detect("pricey", 0.0, &BTreeMap::new());
        assert!((found[0].confidence - 0.8).abs() < 1e-9);
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

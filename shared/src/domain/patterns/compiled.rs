//! The built-in catalog, compiled ahead of time: `shared/catalog/patterns.bin` holds what
//! `Catalog::from_json` makes of `patterns.json` (words numbered, cues as slots, the start and
//! pair indexes), so a cold start reads tables instead of parsing and compiling 318 cues
//! (BENCHMARKS.md times both, "built-in catalog load at init"). `make catalog` writes the file;
//! a unit test fails when it is not what the shipped JSON compiles to.
//!
//! The layout, little-endian throughout: the magic, then each part as a count followed by its
//! entries. A string is its byte length (u32) and its bytes; a list of numbers is its length
//! (u32) and the numbers (u32).
//!
//! ```text
//! magic "salesloop-catalog-1\n"
//! names        count, string each
//! negators     count, string each; negation_window u32
//! words        count, string each, in number order
//! cues         count, each: pattern u32, weight f64, negatable u8, slots count,
//!              each slot: alternatives count, each a list of words
//! starts       count (= words), each a list of cues
//! pairs        count, each: key u64, from u32, to u32, in key order
//! pair_cues    a list of cues
//! ```

use std::collections::HashMap;

use super::{Compiled, Cue, WordMap};

const MAGIC: &[u8] = b"salesloop-catalog-1\n";

/// The compiled form of a catalog, as `decode` reads it.
pub(super) fn encode(compiled: &Compiled) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(MAGIC);
    strings(&mut out, compiled.names.iter().map(String::as_str));
    strings(&mut out, compiled.negators.iter().map(String::as_str));
    number(&mut out, compiled.negation_window);
    let mut words: Vec<(&str, u32)> = compiled.words.iter().map(|(w, &n)| (&**w, n)).collect();
    words.sort_unstable_by_key(|&(_, n)| n);
    strings(&mut out, words.iter().map(|&(w, _)| w));
    number(&mut out, compiled.cues.len());
    for cue in &compiled.cues {
        number(&mut out, cue.pattern);
        out.extend_from_slice(&cue.weight.to_le_bytes());
        out.push(u8::from(cue.negatable));
        number(&mut out, cue.slots.len());
        for slot in &cue.slots {
            number(&mut out, slot.len());
            for alternative in slot {
                list(&mut out, alternative.iter().map(|&w| w as usize));
            }
        }
    }
    number(&mut out, compiled.starts.len());
    for cues in &compiled.starts {
        list(&mut out, cues.iter().copied());
    }
    let mut pairs: Vec<(u64, (u32, u32))> = compiled.pairs.iter().map(|(&k, &v)| (k, v)).collect();
    pairs.sort_unstable();
    number(&mut out, pairs.len());
    for (key, (from, to)) in pairs {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&from.to_le_bytes());
        out.extend_from_slice(&to.to_le_bytes());
    }
    list(&mut out, compiled.pair_cues.iter().copied());
    out
}

fn number(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("a catalog's counts fit in 32 bits");
    out.extend_from_slice(&n.to_le_bytes());
}

fn strings<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a str>) {
    number(out, items.len());
    for item in items {
        number(out, item.len());
        out.extend_from_slice(item.as_bytes());
    }
}

fn list(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = usize>) {
    number(out, items.len());
    for item in items {
        number(out, item);
    }
}

/// Why a compiled catalog could not be read.
pub(super) type Problem = &'static str;

/// Reads what `encode` wrote, checking every count and index against what it refers to.
pub(super) fn decode(bytes: &[u8]) -> Result<Compiled, Problem> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a compiled catalog (wrong magic)");
    }
    let names = r.strings()?;
    let negators = r.strings()?;
    let negation_window = r.number()?;
    let word_count = r.count()?;
    let mut words = WordMap::with_capacity_and_hasher(word_count, Default::default());
    for number in 0..word_count {
        if words.insert(r.string()?.into(), number as u32).is_some() {
            return Err("a word appears twice");
        }
    }
    let cue_count = r.count()?;
    let mut cues = Vec::with_capacity(cue_count);
    for _ in 0..cue_count {
        let pattern = r.number()?;
        let weight = f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let negatable = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err("a cue's negatable flag is not 0 or 1"),
        };
        if pattern >= names.len() || !(weight > 0.0 && weight <= 1.0) {
            return Err("a cue names no pattern or has a weight outside (0, 1]");
        }
        let slot_count = r.count()?;
        let mut slots = Vec::with_capacity(slot_count);
        for _ in 0..slot_count {
            let alternatives = r.count()?;
            let mut slot = Vec::with_capacity(alternatives);
            for _ in 0..alternatives {
                slot.push(
                    r.list_below(word_count)?
                        .into_iter()
                        .map(|w| w as u32)
                        .collect(),
                );
            }
            slots.push(slot);
        }
        cues.push(Cue {
            pattern,
            weight,
            negatable,
            slots,
        });
    }
    if r.count()? != word_count {
        return Err("the start index does not cover every word");
    }
    let mut starts = Vec::with_capacity(word_count);
    for _ in 0..word_count {
        starts.push(r.list_below(cue_count)?);
    }
    let pair_count = r.count()?;
    let mut bounds = Vec::with_capacity(pair_count);
    for _ in 0..pair_count {
        let key = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let from = r.number()? as u32;
        let to = r.number()? as u32;
        bounds.push((key, (from, to)));
    }
    let pair_cues = r.list_below(cue_count)?;
    let mut pairs = HashMap::with_capacity_and_hasher(pair_count, Default::default());
    for (key, (from, to)) in bounds {
        if from > to || to as usize > pair_cues.len() {
            return Err("a pair's cues lie outside the pair list");
        }
        pairs.insert(key, (from, to));
    }
    if !r.0.is_empty() {
        return Err("bytes after the end");
    }
    Ok(Compiled {
        names,
        cues,
        words,
        starts,
        pairs,
        pair_cues,
        negators,
        negation_window,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
        if self.0.len() < n {
            return Err("cut short");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn number(&mut self) -> Result<usize, Problem> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    }

    /// A count of entries, each at least one byte: never more than the bytes left, so that a
    /// damaged count cannot ask for a huge allocation.
    fn count(&mut self) -> Result<usize, Problem> {
        let n = self.number()?;
        if n > self.0.len() {
            return Err("a count larger than what follows");
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<&'a str, Problem> {
        let n = self.number()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a string that is not UTF-8")
    }

    fn strings(&mut self) -> Result<Vec<String>, Problem> {
        let n = self.count()?;
        (0..n).map(|_| self.string().map(str::to_owned)).collect()
    }

    /// A list of numbers, each below `limit`.
    fn list_below(&mut self, limit: usize) -> Result<Vec<usize>, Problem> {
        let n = self.count()?;
        let bytes = self.take(n * 4)?;
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .map(|i| {
                if i < limit {
                    Ok(i)
                } else {
                    Err("an index out of range")
                }
            })
            .collect()
    }
}

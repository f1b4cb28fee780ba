//! What the learned detector reads of a sentence: hashed word n-grams (with the start and end
//! of the sentence, numbers, and the words a negator governs marked), hashed character
//! n-grams of each word, and the turn's position in the conversation. Training and detection
//! both call `sentence_features`, so a model always sees text the way it was trained on it.

/// How many hash buckets the features fall into.
pub const BUCKETS: u32 = 1 << 18;

/// Words that put the next few words under negation.
const NEGATORS: &[&str] = &[
    "not", "no", "never", "isn't", "isnt", "aren't", "wasn't", "don't", "dont", "doesn't",
    "didn't", "won't", "wont", "wouldn't", "can't", "cant", "cannot", "nothing", "none",
];

/// How many words after a negator are marked as negated.
const NEGATION_SCOPE: usize = 4;

/// The weight of the character block against the word block (each has unit length).
const CHAR_WEIGHT: f32 = 0.5;

/// The last turn position told apart; later turns share it.
const LAST_POSITION: u32 = 8;

/// A sentence as the model sees it: (bucket, value) pairs, buckets in increasing order, each once.
pub type Features = Vec<(u32, f32)>;

/// FNV-1a over a tag and a string, reduced to a bucket.
fn bucket(tag: u8, parts: &[&str]) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    eat(tag);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            eat(b' ');
        }
        part.bytes().for_each(&mut eat);
    }
    // The high bits mix better than the low ones.
    ((hash ^ (hash >> 32)) % u64::from(BUCKETS)) as u32
}

/// The sentence lower-cased with typographic apostrophes folded, cut into words (letters,
/// digits and apostrophes) and the marks `?`, `!` and `$`.
pub fn words(sentence: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in sentence.chars().flat_map(char::to_lowercase) {
        let c = match c {
            '\u{2018}' | '\u{2019}' | '\u{02bc}' | '`' => '\'',
            c => c,
        };
        if c.is_alphanumeric() || c == '\'' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if matches!(c, '?' | '!' | '$') {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Sorts, merges equal buckets and scales the block to unit length.
fn finish(mut block: Vec<(u32, f32)>, weight: f32) -> Vec<(u32, f32)> {
    block.sort_unstable_by_key(|&(b, _)| b);
    let mut merged: Vec<(u32, f32)> = Vec::with_capacity(block.len());
    for (b, v) in block {
        match merged.last_mut() {
            Some(last) if last.0 == b => last.1 += v,
            _ => merged.push((b, v)),
        }
    }
    let norm = merged.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, v) in &mut merged {
            *v *= weight / norm;
        }
    }
    merged
}

/// The features of one sentence of a message at `turn` (0 for the conversation's first message;
/// `None` when the position is unknown, as for stand-alone labelled utterances).
pub fn sentence_features(sentence: &str, turn: Option<u32>) -> Features {
    let words = words(sentence);
    let mut word_block = Vec::with_capacity(words.len() * 3 + 4);
    let mut padded: Vec<&str> = Vec::with_capacity(words.len() + 2);
    padded.push("<s>");
    padded.extend(words.iter().map(String::as_str));
    padded.push("</s>");
    let mut negated = 0;
    for (i, word) in padded.iter().enumerate() {
        word_block.push((bucket(b'w', &[word]), 1.0));
        if let Some(next) = padded.get(i + 1) {
            word_block.push((bucket(b'b', &[word, next]), 1.0));
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            word_block.push((bucket(b'w', &["<num>"]), 1.0));
        }
        if NEGATORS.contains(word) {
            word_block.push((bucket(b'w', &["<neg>"]), 1.0));
            negated = NEGATION_SCOPE;
        } else if negated > 0 {
            word_block.push((bucket(b'n', &[word]), 1.0));
            negated -= 1;
        }
    }
    if let Some(turn) = turn {
        let position = turn.min(LAST_POSITION).to_string();
        word_block.push((bucket(b'p', &[&position]), 1.0));
    }
    let mut char_block = Vec::with_capacity(sentence.len() * 2);
    let mut buf = String::new();
    for word in &words {
        buf.clear();
        buf.push(' ');
        buf.push_str(word);
        buf.push(' ');
        let chars: Vec<(usize, char)> = buf.char_indices().collect();
        for n in 3..=4 {
            if chars.len() < n {
                continue;
            }
            for i in 0..=chars.len() - n {
                let from = chars[i].0;
                let to = chars.get(i + n).map_or(buf.len(), |c| c.0);
                char_block.push((bucket(b'c', &[&buf[from..to]]), 1.0));
            }
        }
    }
    let mut features = finish(word_block, 1.0);
    features.extend(finish(char_block, CHAR_WEIGHT));
    // The two blocks may share a bucket: one entry a bucket, in order.
    finish_merge(features)
}

/// Sorts and merges without rescaling.
fn finish_merge(mut features: Features) -> Features {
    features.sort_unstable_by_key(|&(b, _)| b);
    let mut merged: Features = Vec::with_capacity(features.len());
    for (b, v) in features {
        match merged.last_mut() {
            Some(last) if last.0 == b => last.1 += v,
            _ => merged.push((b, v)),
        }
    }
    merged
}

/// The sentences of a message as byte spans, trimmed: cut after `.`, `!` or `?` (runs of them)
/// when whitespace follows, and at line breaks.
pub fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let cut = match c {
            '\n' | '\r' => true,
            '.' | '!' | '?' => match chars.peek() {
                Some(&(_, next)) => next.is_whitespace(),
                None => false,
            },
            _ => false,
        };
        if cut {
            push_trimmed(text, start, end, &mut spans);
            start = end;
        }
    }
    push_trimmed(text, start, text.len(), &mut spans);
    spans
}

fn push_trimmed(text: &str, start: usize, end: usize, spans: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let trimmed = piece.trim();
    if trimmed.chars().any(char::is_alphanumeric) || trimmed.contains(['?', '$']) {
        let from = start + (piece.len() - piece.trim_start().len());
        spans.push((from, from + trimmed.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_and_apostrophes_and_keep_the_marks() {
        assert_eq!(
            words("I DON’T have $5, do you?"),
            ["i", "don't", "have", "$", "5", "do", "you", "?"]
        );
    }

    #[test]
    fn features_are_sorted_unique_and_the_same_for_the_same_input() {
        let a = sentence_features("How much should I give? I can't give much.", Some(3));
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(a.iter().all(|&(b, _)| b < BUCKETS));
        assert_eq!(
            a,
            sentence_features("How much should I give? I can't give much.", Some(3))
        );
        assert_ne!(
            a,
            sentence_features("How much should I give? I can't give much.", Some(0))
        );
    }

    #[test]
    fn negation_changes_the_features_of_the_words_it_governs() {
        let plain = sentence_features("i want to donate", None);
        let negated = sentence_features("i don't want to donate", None);
        let only_negated: Vec<u32> = negated
            .iter()
            .map(|f| f.0)
            .filter(|b| !plain.iter().any(|p| p.0 == *b))
            .collect();
        assert!(only_negated.contains(&bucket(b'n', &["donate"])));
        assert!(!plain.iter().any(|p| p.0 == bucket(b'n', &["donate"])));
    }

    #[test]
    fn sentences_cut_at_end_marks_followed_by_space_and_at_line_breaks() {
        let text = "  Sure. How does it work?! I have $1.50 \nmaybe";
        let spans: Vec<&str> = sentences(text)
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect();
        assert_eq!(
            spans,
            ["Sure.", "How does it work?!", "I have $1.50", "maybe"]
        );
        assert!(sentences(" ... ").is_empty());
    }
}

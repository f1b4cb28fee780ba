//! What the learned detector reads of a sentence: hashed word n-grams (with the start and end
//! of the sentence, numbers, and the words a negator governs marked), hashed character
//! n-grams of each word, and the turn's position in the conversation. Training and detection
//! both call `sentence_features`, so a model always sees text the way it was trained on it.

/// How many hash buckets the features fall into.
pub const BUCKETS: u32 = 1 << 18;

/// The group of a word of hedging or declining, or of doubt or complaint, in general English:
/// each such word also counts as its group's one feature, so that a word the training data
/// has seen rarely still weighs what its group weighs.
fn lexicon(word: &str) -> Option<&'static str> {
    Some(match word {
        "sorry" | "unfortunately" | "however" | "although" | "though" | "maybe" | "perhaps"
        | "rather" | "prefer" | "later" | "already" | "instead" | "unsure" | "hesitant"
        | "reluctant" | "afraid" | "busy" | "nah" | "nope" | "pass" | "decline" | "another" => {
            "<hedge>"
        }
        "skeptical" | "sceptical" | "doubt" | "doubts" | "doubtful" | "suspicious" | "scam"
        | "scams" | "fake" | "fraud" | "waste" | "corrupt" | "overhead" | "worried" | "worry"
        | "concern" | "concerned" | "concerns" | "bad" | "terrible" | "awful" | "expensive"
        | "afford" | "broke" | "wary" | "trust" | "legit" | "guarantee" => "<doubt>",
        _ => return None,
    })
}

/// Whether a word puts the next few words under negation.
fn is_negator(word: &str) -> bool {
    matches!(
        word,
        "not"
            | "no"
            | "never"
            | "isn't"
            | "isnt"
            | "aren't"
            | "wasn't"
            | "don't"
            | "dont"
            | "doesn't"
            | "didn't"
            | "won't"
            | "wont"
            | "wouldn't"
            | "can't"
            | "cant"
            | "cannot"
            | "nothing"
            | "none"
    )
}

/// How many words after a negator are marked as negated.
const NEGATION_SCOPE: usize = 4;

/// The weight of the character block against the word block (each has unit length).
const CHAR_WEIGHT: f32 = 0.5;

/// The last turn position told apart; later turns share it.
const LAST_POSITION: u32 = 8;

/// A sentence as the model sees it: (bucket, value) pairs, buckets in increasing order, each once.
pub type Features = Vec<(u32, f32)>;

/// FNV-1a, fed byte by byte.
struct Fnv(u64);

impl Fnv {
    fn new(tag: u8) -> Fnv {
        let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
        hash.eat(tag);
        hash
    }

    #[inline]
    fn eat(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }

    /// The bucket of what was eaten so far (the high bits mix better than the low ones).
    fn bucket(&self) -> u32 {
        ((self.0 ^ (self.0 >> 32)) % u64::from(BUCKETS)) as u32
    }
}

/// FNV-1a over a tag and a string (parts joined by a space), reduced to a bucket.
#[inline]
fn bucket(tag: u8, parts: &[&str]) -> u32 {
    let mut hash = Fnv::new(tag);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash.eat(b' ');
        }
        part.bytes().for_each(|b| hash.eat(b));
    }
    hash.bucket()
}

/// A sentence lower-cased with typographic apostrophes folded, and its words as spans of that
/// text: runs of letters, digits and apostrophes, and the marks `?`, `!` and `$` on their own.
#[derive(Default)]
struct Cut {
    text: String,
    spans: Vec<(usize, usize)>,
}

impl Cut {
    fn new(sentence: &str) -> Cut {
        let mut cut = Cut::default();
        cut.fill(sentence);
        cut
    }

    /// Cuts `sentence` into this one's buffers, replacing what they held.
    fn fill(&mut self, sentence: &str) {
        if sentence.is_ascii() {
            self.fill_ascii(sentence.as_bytes());
        } else {
            self.fill_chars(sentence);
        }
    }

    /// [`Cut::fill`] a character at a time, lower-casing by Unicode's rules.
    fn fill_chars(&mut self, sentence: &str) {
        let Cut { text, spans } = self;
        text.clear();
        spans.clear();
        let mut start = None;
        let mut take = |c: char| {
            let c = match c {
                '\u{2018}' | '\u{2019}' | '\u{02bc}' | '`' => '\'',
                c => c,
            };
            if c.is_alphanumeric() || c == '\'' {
                start.get_or_insert(text.len());
                text.push(c);
                return;
            }
            if let Some(from) = start.take() {
                spans.push((from, text.len()));
            }
            if matches!(c, '?' | '!' | '$') {
                let from = text.len();
                text.push(c);
                spans.push((from, text.len()));
            }
        };
        for c in sentence.chars() {
            if c.is_ascii() {
                take(c.to_ascii_lowercase());
            } else {
                c.to_lowercase().for_each(&mut take);
            }
        }
        if let Some(from) = start {
            spans.push((from, text.len()));
        }
    }

    /// [`Cut::fill`] of an ASCII sentence, a byte at a time (the same cut: an ASCII character
    /// is alphanumeric exactly when its byte is).
    fn fill_ascii(&mut self, sentence: &[u8]) {
        let Cut { text, spans } = self;
        text.clear();
        spans.clear();
        // SAFETY: only ASCII bytes are pushed, so the text stays UTF-8.
        let bytes = unsafe { text.as_mut_vec() };
        let mut start = None;
        for &b in sentence {
            let b = if b == b'`' {
                b'\''
            } else {
                b.to_ascii_lowercase()
            };
            if b.is_ascii_alphanumeric() || b == b'\'' {
                start.get_or_insert(bytes.len());
                bytes.push(b);
                continue;
            }
            if let Some(from) = start.take() {
                spans.push((from, bytes.len()));
            }
            if matches!(b, b'?' | b'!' | b'$') {
                spans.push((bytes.len(), bytes.len() + 1));
                bytes.push(b);
            }
        }
        if let Some(from) = start {
            spans.push((from, bytes.len()));
        }
    }

    fn words(&self) -> impl Iterator<Item = &str> + '_ {
        self.spans.iter().map(|&(a, b)| &self.text[a..b])
    }
}

/// The sentence lower-cased with typographic apostrophes folded, cut into words (letters,
/// digits and apostrophes) and the marks `?`, `!` and `$`.
pub fn words(sentence: &str) -> Vec<String> {
    Cut::new(sentence).words().map(str::to_owned).collect()
}

/// The two blocks of features, each scaled to its own length.
const WORDS: usize = 0;
const CHARS: usize = 1;

/// The turn positions as the features name them.
const POSITIONS: [&str; LAST_POSITION as usize + 1] = ["0", "1", "2", "3", "4", "5", "6", "7", "8"];

/// Calls `emit(block, bucket)` once for every feature occurrence of a sentence (a bucket may
/// come more than once: its value is then its count, before the block is scaled).
fn each_feature(
    sentence: &str,
    turn: Option<u32>,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, u32),
) {
    let Scratch {
        cut,
        bounds,
        padded_word,
        ..
    } = scratch;
    cut.fill(sentence);
    let cut = &*cut;
    // The words with the sentence's start and end marked.
    let count = cut.spans.len() + 2;
    let padded = |i: usize| -> &str {
        if i == 0 {
            "<s>"
        } else if i == count - 1 {
            "</s>"
        } else {
            let (a, b) = cut.spans[i - 1];
            &cut.text[a..b]
        }
    };
    let mut negated = 0;
    for i in 0..count {
        let word = padded(i);
        emit(WORDS, bucket(b'w', &[word]));
        if i + 1 < count {
            emit(WORDS, bucket(b'b', &[word, padded(i + 1)]));
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            emit(WORDS, bucket(b'w', &["<num>"]));
        }
        if let Some(group) = lexicon(word) {
            emit(WORDS, bucket(b'w', &[group]));
        }
        if is_negator(word) {
            emit(WORDS, bucket(b'w', &["<neg>"]));
            negated = NEGATION_SCOPE;
        } else if negated > 0 {
            emit(WORDS, bucket(b'n', &[word]));
            negated -= 1;
        }
    }
    if let Some(turn) = turn {
        emit(
            WORDS,
            bucket(b'p', &[POSITIONS[turn.min(LAST_POSITION) as usize]]),
        );
    }
    // A word's character 3- and 4-grams, padded with a space each side. The 4-gram starting
    // at a character extends the 3-gram's hash by one more character, so each is hashed once.
    for word in cut.words() {
        padded_word.clear();
        padded_word.push(b' ');
        padded_word.extend_from_slice(word.as_bytes());
        padded_word.push(b' ');
        if word.is_ascii() {
            // Character i of " word " is its byte i.
            char_grams(padded_word, |i| i, word.len() + 2, &mut emit);
        } else {
            bounds.clear();
            bounds.push(0);
            bounds.extend(word.char_indices().map(|(i, _)| i + 1));
            bounds.push(word.len() + 1);
            bounds.push(word.len() + 2);
            // `bounds[i]` is where character i starts in " word ", and its last entry the end.
            char_grams(padded_word, |i| bounds[i], bounds.len() - 1, &mut emit);
        }
    }
}

/// The character 3- and 4-grams of a padded word of `chars` characters, character `i`
/// starting at byte `at(i)` (and `at(chars)` the end).
#[inline]
fn char_grams(
    padded_word: &[u8],
    at: impl Fn(usize) -> usize,
    chars: usize,
    emit: &mut impl FnMut(usize, u32),
) {
    for i in 0..chars.saturating_sub(2) {
        let mut hash = Fnv::new(b'c');
        for &b in &padded_word[at(i)..at(i + 3)] {
            hash.eat(b);
        }
        emit(CHARS, hash.bucket());
        if i + 4 <= chars {
            for &b in &padded_word[at(i + 3)..at(i + 4)] {
                hash.eat(b);
            }
            emit(CHARS, hash.bucket());
        }
    }
}

/// Sorts by bucket and adds up the values of equal buckets, in place.
fn merge(block: &mut Vec<(u32, f32)>) {
    block.sort_unstable_by_key(|&(b, _)| b);
    block.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            kept.1 += later.1;
            true
        } else {
            false
        }
    });
}

/// The features of one sentence of a message at `turn` (0 for the conversation's first message;
/// `None` when the position is unknown, as for stand-alone labelled utterances): each block's
/// counts scaled to its length (the word block to 1, the character block to `CHAR_WEIGHT`),
/// then the two added up, one entry a bucket, in bucket order. Training reads these.
pub fn sentence_features(sentence: &str, turn: Option<u32>) -> Features {
    let mut blocks: [Vec<(u32, f32)>; 2] = [Vec::new(), Vec::new()];
    each_feature(sentence, turn, &mut Scratch::default(), |block, bucket| {
        blocks[block].push((bucket, 1.0))
    });
    let [mut words, mut chars] = blocks;
    for (block, weight) in [(&mut words, 1.0), (&mut chars, CHAR_WEIGHT)] {
        merge(block);
        let norm = block.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in block.iter_mut() {
                *v *= weight / norm;
            }
        }
    }
    words.append(&mut chars);
    merge(&mut words);
    words
}

/// The sum of the squared counts of a list of buckets, without sorting it: an open-addressing
/// count table twice its length, each slot a bucket (high half) and its count so far (low
/// half), all ones when empty (no bucket is `u32::MAX`).
fn squared_counts(buckets: &[u32], table: &mut Vec<u64>) -> f32 {
    const EMPTY: u64 = u64::MAX;
    let size = (buckets.len() * 2).next_power_of_two().max(8);
    let mask = size - 1;
    table.clear();
    table.resize(size, EMPTY);
    let table = &mut table[..size];
    let mut sum: u64 = 0;
    for &bucket in buckets {
        let mut at = bucket as usize & mask;
        loop {
            let slot = &mut table[at & mask];
            if *slot == EMPTY {
                *slot = u64::from(bucket) << 32 | 1;
                sum += 1;
                break;
            }
            if (*slot >> 32) as u32 == bucket {
                // (c + 1)^2 - c^2
                sum += 2 * (*slot & 0xffff_ffff) + 1;
                *slot += 1;
                break;
            }
            at += 1;
        }
    }
    sum as f32
}

/// What detection needs of a sentence, without building its sorted features: `add(bucket,
/// value)` for every occurrence, each block scaled as `sentence_features` scales it, so the
/// sum over a model's rows is the same dot product.
pub fn for_each_scaled_feature(sentence: &str, turn: Option<u32>, mut add: impl FnMut(u32, f32)) {
    for_each_block(sentence, turn, |scale, block| {
        for &bucket in block {
            add(bucket, scale);
        }
    });
}

/// [`for_each_scaled_feature`] a block at a time: `each(value, buckets)` for the word block and
/// the character block, every occurrence of the block having that value.
pub fn for_each_block(sentence: &str, turn: Option<u32>, mut each: impl FnMut(f32, &[u32])) {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => blocks_in(sentence, turn, &mut scratch, &mut each),
        // Called again from inside `each`: fresh buffers for the inner call.
        Err(_) => blocks_in(sentence, turn, &mut Scratch::default(), &mut each),
    })
}

fn blocks_in(
    sentence: &str,
    turn: Option<u32>,
    scratch: &mut Scratch,
    each: &mut impl FnMut(f32, &[u32]),
) {
    let mut blocks = std::mem::take(&mut scratch.blocks);
    for block in &mut blocks {
        block.clear();
    }
    each_feature(sentence, turn, scratch, |block, bucket| {
        blocks[block].push(bucket)
    });
    for (block, weight) in blocks.iter().zip([1.0, CHAR_WEIGHT]) {
        let norm = squared_counts(block, &mut scratch.table).sqrt();
        if norm > 0.0 {
            each(weight / norm, block);
        }
    }
    scratch.blocks = blocks;
}

/// The buffers a sentence's features are built in, kept from one sentence to the next so
/// that detection does not allocate for each.
#[derive(Default)]
struct Scratch {
    cut: Cut,
    bounds: Vec<usize>,
    padded_word: Vec<u8>,
    blocks: [Vec<u32>; 2],
    table: Vec<u64>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// The sentences of a message as byte spans, trimmed: cut after `.`, `!` or `?` (runs of them)
/// when whitespace follows, and at line breaks.
pub fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    // Every mark that cuts is ASCII, so the text is read a byte at a time (a byte of a longer
    // character is never one of them), and a character is decoded only after a mark.
    for (i, &b) in text.as_bytes().iter().enumerate() {
        let cut = match b {
            b'\n' | b'\r' => true,
            b'.' | b'!' | b'?' => text[i + 1..]
                .chars()
                .next()
                .is_some_and(char::is_whitespace),
            _ => false,
        };
        if cut {
            push_trimmed(text, start, i + 1, &mut spans);
            start = i + 1;
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
    fn a_word_of_a_lexicon_also_counts_as_its_group() {
        let has = |sentence: &str, group: &str| {
            sentence_features(sentence, None)
                .iter()
                .any(|f| f.0 == bucket(b'w', &[group]))
        };
        assert!(has("I am skeptical of charities", "<doubt>"));
        assert!(has("Maybe another time", "<hedge>"));
        assert!(!has("I am skeptical of charities", "<hedge>"));
        assert!(!has("How does the donation work?", "<doubt>"));
    }

    #[test]
    fn the_unsorted_path_gives_the_dot_product_of_the_sorted_features() {
        for sentence in [
            "the the the cat sat on the mat, the end",
            "I don't have $5 to give... not now, not ever!",
            "¿Qué? ÉTÉ’s naïve café",
            "",
        ] {
            let sorted = sentence_features(sentence, Some(2));
            let weight = |b: u32| (f64::from(b % 97) - 48.0) / 10.0;
            let expected: f64 = sorted.iter().map(|&(b, v)| f64::from(v) * weight(b)).sum();
            let mut got = 0.0f64;
            let mut seen = Vec::new();
            for_each_scaled_feature(sentence, Some(2), |b, v| {
                got += f64::from(v) * weight(b);
                seen.push(b);
            });
            assert!(
                (expected - got).abs() < 1e-4,
                "{sentence:?}: {expected} vs {got}"
            );
            seen.sort_unstable();
            seen.dedup();
            let buckets: Vec<u32> = sorted.iter().map(|f| f.0).collect();
            assert_eq!(seen, buckets, "{sentence:?}");
        }
    }

    #[test]
    fn squared_counts_count_repeats() {
        let table = &mut Vec::new();
        assert_eq!(squared_counts(&[], table), 0.0);
        assert_eq!(squared_counts(&[7, 7, 7, 1, 9, 9], table), 9.0 + 1.0 + 4.0);
        // Buckets that collide in the table are still told apart.
        assert_eq!(squared_counts(&[0, 8, 16, 0], table), 4.0 + 1.0 + 1.0);
    }

    #[test]
    fn the_ascii_paths_cut_and_hash_as_the_character_paths_do() {
        for sentence in [
            "I DON'T have $5, do you?! Maybe `later`... (or never)",
            "   ",
            "a",
            "Price: $1,250.00 -- OK? ok!!",
            "tabs\tand\nbreaks, under_scores & 'quotes'",
        ] {
            let (mut fast, mut slow) = (Cut::default(), Cut::default());
            fast.fill_ascii(sentence.as_bytes());
            slow.fill_chars(sentence);
            assert_eq!(fast.text, slow.text, "{sentence:?}");
            assert_eq!(fast.spans, slow.spans, "{sentence:?}");
        }
        for word in ["a", "ab", "abc", "don't", "$", "expensive"] {
            let padded = format!(" {word} ").into_bytes();
            let bounds: Vec<usize> = (0..=word.len() + 2).collect();
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            char_grams(&padded, |i| i, word.len() + 2, &mut |b, h| {
                fast.push((b, h))
            });
            char_grams(&padded, |i| bounds[i], bounds.len() - 1, &mut |b, h| {
                slow.push((b, h))
            });
            assert_eq!(fast, slow, "{word}");
            assert_eq!(fast.len(), (2 * word.len()).saturating_sub(1), "{word}");
        }
    }

    #[test]
    fn a_mark_cuts_before_any_whitespace_and_never_inside_a_character() {
        let spans = |text: &str| -> Vec<String> {
            sentences(text)
                .into_iter()
                .map(|(a, b)| text[a..b].to_owned())
                .collect()
        };
        assert_eq!(
            spans("Yes.\u{3000}No?\u{a0}Maybe"),
            ["Yes.", "No?", "Maybe"]
        );
        assert_eq!(spans("Café.é ok"), ["Café.é ok"]);
        assert_eq!(spans("Done!"), ["Done!"]);
        assert_eq!(spans("¿Qué?\r\nSí."), ["¿Qué?", "Sí."]);
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

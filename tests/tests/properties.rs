//! Properties that must hold for every input, not just the examples of the unit tests: id
//! parsing, pattern detection on arbitrary (also hostile) text, and the statistics of the
//! feedback loop. Case counts keep the whole file to a few seconds in a debug build.

use std::collections::BTreeMap;

use proptest::prelude::*;
use salesloop::domain::detector::Detector;
use salesloop::domain::stats::{
    Proportion, chi_square_gof, gamma_q, lift, phi, probability_to_beat, wilson,
};
use salesloop::{ConversationId, IdError, MessageId, TenantId};

// ---------------------------------------------------------------------------------------------
// ids

/// The documented rule: 1 to 64 characters of `[A-Za-z0-9._-]`, at least one letter or digit.
fn follows_the_id_rule(raw: &str) -> bool {
    (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && raw.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// Strings near the rule's edges (the legal alphabet, lengths around 64, path-like dots) mixed
/// with anything at all, including separators, control and zero-width characters.
fn id_candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,70}",
        "[._-]{1,4}",
        "[a-z0-9]{0,8}[#/\\\\ %\u{0}\u{200b}\u{feff}é.]{1,2}[a-z0-9]{0,8}",
        "\\PC{0,80}",
        any::<String>(),
    ]
}

/// What kind of refusal an error is, without the id kind it names.
fn refusal(error: &IdError) -> &'static str {
    match error {
        IdError::Empty { .. } => "empty",
        IdError::TooLong { .. } => "too_long",
        IdError::BadCharacter { .. } => "bad_character",
        IdError::NoAlphanumeric { .. } => "no_alphanumeric",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn ids_are_accepted_exactly_when_they_follow_the_rule(raw in id_candidates()) {
        let conversation = ConversationId::parse(&raw);
        prop_assert_eq!(conversation.is_ok(), follows_the_id_rule(&raw), "{:?}", raw);
        // The three kinds of id apply one rule, and parsing again gives the same answer.
        let message = MessageId::parse(&raw);
        let tenant = TenantId::parse(&raw);
        let again = ConversationId::parse(&raw);
        match (&conversation, &message, &tenant, &again) {
            (Ok(c), Ok(m), Ok(t), Ok(a)) => {
                prop_assert_eq!(c.as_str(), raw.as_str());
                prop_assert_eq!(m.as_str(), raw.as_str());
                prop_assert_eq!(t.to_string(), raw.clone());
                prop_assert_eq!(c, a);
            }
            (Err(c), Err(m), Err(t), Err(a)) => {
                prop_assert_eq!(refusal(c), refusal(m));
                prop_assert_eq!(refusal(c), refusal(t));
                prop_assert_eq!(c, a);
                prop_assert!(!c.to_string().is_empty());
            }
            _ => prop_assert!(false, "the id kinds disagree on {:?}", raw),
        }
    }

    #[test]
    fn accepted_ids_round_trip_through_json_and_refused_ones_do_not_deserialize(
        raw in id_candidates()
    ) {
        let json = serde_json::to_string(&raw).unwrap();
        let decoded = serde_json::from_str::<MessageId>(&json);
        match MessageId::parse(&raw) {
            Ok(id) => {
                let decoded = decoded.unwrap();
                prop_assert_eq!(&decoded, &id);
                prop_assert_eq!(serde_json::to_string(&id).unwrap(), json);
            }
            Err(_) => prop_assert!(decoded.is_err(), "{:?} deserialized", raw),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pattern detection

/// Words that make detections likely: cue words of every pattern, negators, clause breaks,
/// "but", typographic apostrophes, zero-width and combining characters, other scripts.
const WORDS: &[&str] = &[
    "too",
    "expensive",
    "pricey",
    "budget",
    "not",
    "no",
    "never",
    "isn't",
    "isn\u{2019}t",
    "but",
    "price",
    "cost",
    "how",
    "much",
    "does",
    "it",
    "sign",
    "up",
    "let's",
    "do",
    "demo",
    "show",
    "me",
    "boss",
    "manager",
    "approve",
    "next",
    "quarter",
    "later",
    "timing",
    "need",
    "competitor",
    "already",
    "use",
    "salesforce",
    "hubspot",
    "trust",
    "secure",
    "reviews",
    "problem",
    "pain",
    "losing",
    "leads",
    "integrate",
    "with",
    "contract",
    "buy",
    "today",
    ".",
    ",",
    ";",
    "!",
    "?",
    "—",
    "(",
    ")",
    "'",
    "`",
    "\u{200b}",
    "\u{200d}",
    "\u{feff}",
    "\u{ad}",
    "\u{301}",
    "İ",
    "ß",
    "ǅ",
    "Ⅻ",
    "日本語",
    "🙂",
    "\u{0}",
    "\t",
    "\n",
    " ",
    "  ",
    "e\u{301}",
    "ﬁ",
    "TOO",
    "EXPENSIVE",
    "Too\u{200b}expensive",
];

fn texts() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(WORDS), 0..40).prop_map(|words| {
            let mut text = String::new();
            for (i, word) in words.iter().enumerate() {
                if i % 3 != 2 {
                    text.push(' ');
                }
                text.push_str(word);
            }
            text
        }),
        "\\PC{0,120}",
        any::<String>(),
    ]
}

fn calibrations() -> impl Strategy<Value = BTreeMap<String, f64>> {
    let names: Vec<String> = Detector::builtin().catalog.pattern_names().to_vec();
    prop::collection::btree_map(prop::sample::select(names), 0.0..2.0f64, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_500, ..ProptestConfig::default() })]

    #[test]
    fn detections_are_sound_on_any_text(
        text in texts(),
        // Thresholds in steps of 0.001, the precision confidences are reported with.
        threshold in (0u32..=1000).prop_map(|t| f64::from(t) / 1000.0),
        calibration in calibrations(),
        turn in 0u32..12,
    ) {
        let detector = Detector::builtin();
        let detections = detector.detect(&text, turn, threshold, &calibration);
        let mut seen = std::collections::BTreeSet::new();
        for d in &detections {
            prop_assert!(detector.catalog.pattern_names().contains(&d.pattern), "{:?}", d);
            prop_assert!(seen.insert(d.pattern.clone()), "{} detected twice", d.pattern);
            prop_assert!(
                d.confidence.is_finite() && (0.0..=1.0).contains(&d.confidence),
                "{:?}", d
            );
            prop_assert!(d.confidence >= threshold, "{:?} below {}", d, threshold);
            prop_assert!(d.start < d.end && d.end <= text.len(), "{:?} in {:?}", d, text);
            prop_assert!(
                text.is_char_boundary(d.start) && text.is_char_boundary(d.end),
                "{:?} in {:?}", d, text
            );
            prop_assert_eq!(d.evidence.as_str(), &text[d.start..d.end]);
        }
        // Strongest first.
        for pair in detections.windows(2) {
            prop_assert!(pair[0].confidence >= pair[1].confidence, "{:?}", detections);
        }
    }

    #[test]
    fn detection_is_deterministic_and_a_higher_threshold_keeps_exactly_those_above_it(
        text in texts(),
        low in 0.0..=1.0f64,
        raise in 0.0..=1.0f64,
        turn in 0u32..12,
    ) {
        let detector = Detector::builtin();
        let none = BTreeMap::new();
        let first = detector.detect(&text, turn, low, &none);
        prop_assert_eq!(&first, &detector.detect(&text, turn, low, &none));
        let high = low + (1.0 - low) * raise;
        // Which detections stand does not depend on the threshold: a higher one keeps those
        // of the lower one that reach it, no more, no fewer.
        let kept: Vec<_> = first.iter().filter(|d| d.confidence >= high).cloned().collect();
        prop_assert_eq!(detector.detect(&text, turn, high, &none), kept, "at {} and {}", low, high);
    }
}

// ---------------------------------------------------------------------------------------------
// statistics

/// `successes <= trials`, with small and large counts both likely.
fn counts() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![0u64..50, 0u64..20_000].prop_flat_map(|trials| (0..=trials, Just(trials)))
}

fn in_unit(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn wilson_intervals_lie_in_the_unit_interval_around_the_estimate((s, n) in counts()) {
        let (lo, hi) = wilson(s, n);
        prop_assert!(in_unit(lo) && in_unit(hi) && lo <= hi, "({}, {}) for {}/{}", lo, hi, s, n);
        let p = Proportion::new(s, n);
        prop_assert!(in_unit(p.rate));
        prop_assert_eq!(p.interval, (lo, hi));
        if n > 0 {
            prop_assert!(lo <= p.rate + 1e-12 && p.rate <= hi + 1e-12, "{:?}", p);
            prop_assert!(hi - lo > 0.0, "a non-empty sample leaves some uncertainty: {:?}", p);
        } else {
            prop_assert_eq!((lo, hi), (0.0, 1.0));
        }
    }

    #[test]
    fn lift_intervals_contain_the_point_estimate((w, n) in counts(), (wc, nc) in counts()) {
        match lift(w, n, wc, nc) {
            None => prop_assert!(w == 0 || wc == 0 || n == 0 || nc == 0),
            Some(e) => {
                prop_assert!(w > 0 && wc > 0);
                prop_assert!(e.value.is_finite() && e.interval.0.is_finite() && e.interval.1.is_finite(), "{:?}", e);
                prop_assert!(e.value >= -1.0 && e.interval.0 >= -1.0, "{:?}", e);
                let slack = 1e-9 * (1.0 + e.value.abs());
                prop_assert!(
                    e.interval.0 <= e.value + slack && e.value <= e.interval.1 + slack,
                    "{:?} for {}/{} against {}/{}", e, w, n, wc, nc
                );
            }
        }
    }

    #[test]
    fn probability_to_beat_is_a_probability_and_symmetric(
        (w, n) in counts(), (wc, nc) in counts()
    ) {
        let p = probability_to_beat(w, n, wc, nc);
        let q = probability_to_beat(wc, nc, w, n);
        prop_assert!(in_unit(p) && in_unit(q), "{} {}", p, q);
        prop_assert!((p + q - 1.0).abs() < 1e-6, "P(beat) {} and its reverse {}", p, q);
        if (w, n) == (wc, nc) {
            prop_assert!((p - 0.5).abs() < 1e-6, "{}", p);
        }
    }

    #[test]
    fn chi_square_p_values_are_probabilities(
        observed in prop::collection::vec(prop_oneof![0u64..100, 0u64..1_000_000], 0..6),
        weights in prop::collection::vec(prop_oneof![Just(0.0), 0.001..100.0f64], 0..6),
    ) {
        if let Some((statistic, p)) = chi_square_gof(&observed, &weights) {
            prop_assert!(statistic.is_finite() && statistic >= 0.0, "{}", statistic);
            prop_assert!(in_unit(p), "p {} for {:?} against {:?}", p, observed, weights);
        }
    }

    #[test]
    fn gamma_q_is_a_probability(s in 0.5..200.0f64, x in prop_oneof![0.0..10.0f64, 0.0..1e6f64]) {
        prop_assert!(in_unit(gamma_q(s, x)), "Q({}, {}) = {}", s, x, gamma_q(s, x));
    }

    #[test]
    fn phi_and_its_interval_lie_in_minus_one_to_one(
        n11 in 0u64..5_000, n10 in 0u64..5_000, n01 in 0u64..5_000, n00 in 0u64..5_000,
    ) {
        match phi(n11, n10, n01, n00) {
            None => prop_assert!(
                (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00) == 0
            ),
            Some(c) => {
                prop_assert!(c.phi.is_finite() && (-1.0..=1.0).contains(&c.phi), "{:?}", c);
                prop_assert_eq!(c.n, n11 + n10 + n01 + n00);
                if let Some((lo, hi)) = c.interval {
                    prop_assert!(lo.is_finite() && hi.is_finite(), "{:?}", c);
                    prop_assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi), "{:?}", c);
                    prop_assert!(lo <= c.phi + 1e-9 && c.phi <= hi + 1e-9, "{:?}", c);
                }
            }
        }
    }
}

#![no_main]
//! Pattern detection (the cue catalog and the learned model) on arbitrary bytes (the text itself when it is UTF-8, else its lossy
//! decoding): never a panic; confidences in [0, 1] and at or above the threshold; each
//! evidence is the text between its offsets, on character boundaries; a higher threshold keeps
//! a subset.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use salesloop::domain::detector::Detector;

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(Detector::builtin)
}

fn boosted() -> &'static BTreeMap<String, f64> {
    static BOOSTED: OnceLock<BTreeMap<String, f64>> = OnceLock::new();
    BOOSTED.get_or_init(|| {
        detector()
            .catalog
            .pattern_names()
            .iter()
            .map(|name| (name.clone(), 1.25))
            .collect()
    })
}

fn detect_and_check(text: &str) {
    let detector = detector();
    let none = BTreeMap::new();
    // The position comes from the text, so that every position is reached.
    let turn = (text.len() % 12) as u32;
    let all = detector.detect(text, turn, 0.0, &none);
    for (threshold, calibration) in [(0.0, &none), (0.7, &none), (0.5, boosted())] {
        let detections = detector.detect(text, turn, threshold, calibration);
        for d in &detections {
            assert!(
                d.confidence.is_finite() && (0.0..=1.0).contains(&d.confidence),
                "{d:?}"
            );
            assert!(d.confidence >= threshold, "{d:?} below {threshold}");
            assert!(d.start < d.end && d.end <= text.len(), "{d:?}");
            assert!(
                text.is_char_boundary(d.start) && text.is_char_boundary(d.end),
                "{d:?}"
            );
            assert_eq!(d.evidence, text[d.start..d.end]);
            if std::ptr::eq(calibration, &none) {
                assert!(all.contains(d), "{d:?} at {threshold} but not at 0");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => detect_and_check(text),
        Err(_) => detect_and_check(&String::from_utf8_lossy(data)),
    }
});

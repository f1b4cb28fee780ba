#![no_main]
//! Pattern detection on arbitrary bytes (the text itself when it is UTF-8, else its lossy
//! decoding): never a panic; confidences in [0, 1] and at or above the threshold; each
//! evidence is the text between its offsets, on character boundaries; a higher threshold keeps
//! a subset.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use salesloop::domain::patterns::Catalog;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

fn boosted() -> &'static BTreeMap<String, f64> {
    static BOOSTED: OnceLock<BTreeMap<String, f64>> = OnceLock::new();
    BOOSTED.get_or_init(|| {
        catalog()
            .pattern_names()
            .iter()
            .map(|name| (name.clone(), 1.25))
            .collect()
    })
}

fn detect_and_check(text: &str) {
    let catalog = catalog();
    let none = BTreeMap::new();
    let all = catalog.detect(text, 0.0, &none);
    for (threshold, calibration) in [(0.0, &none), (0.7, &none), (0.5, boosted())] {
        let detections = catalog.detect(text, threshold, calibration);
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

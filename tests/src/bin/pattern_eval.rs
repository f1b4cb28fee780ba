//! Prints the pattern detector's precision and recall per pattern on the labelled set;
//! `--mistakes` also lists the utterances it gets wrong.

use salesloop::domain::detector::Detector;
use salesloop_tests::pattern_eval::{HELDOUT_SET, TUNING_SET, evaluate, evaluate_with, report};

fn main() {
    let started = std::time::Instant::now();
    let detector = Detector::builtin();
    let catalog = detector.catalog.clone();
    eprintln!("catalog compiled in {:?}", started.elapsed());
    for (title, file, learned) in [
        (
            "cues alone, tuning set (the catalog was fitted to it)",
            TUNING_SET,
            false,
        ),
        (
            "cues alone, held-out set (written blind to the catalog)",
            HELDOUT_SET,
            false,
        ),
        (
            "learned detector (cues and model), held-out set (never trained on)",
            HELDOUT_SET,
            true,
        ),
    ] {
        let evaluation = if learned {
            evaluate_with(&detector, file)
        } else {
            evaluate(&catalog, file)
        };
        println!("== {title}: {file}");
        print!("{}", report(&evaluation));
        if std::env::args().any(|a| a == "--mistakes") {
            for (text, missed, extra) in &evaluation.mistakes {
                println!("{text:?}\n    missed {missed:?} extra {extra:?}");
            }
        }
        println!();
    }
}

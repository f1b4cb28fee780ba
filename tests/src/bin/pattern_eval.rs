//! Prints the pattern detector's precision and recall per pattern on the labelled set;
//! `--mistakes` also lists the utterances it gets wrong.

use salesloop::domain::patterns::Catalog;
use salesloop_tests::pattern_eval::{HELDOUT_SET, TUNING_SET, evaluate, report};

fn main() {
    let started = std::time::Instant::now();
    let catalog = Catalog::builtin();
    eprintln!("catalog compiled in {:?}", started.elapsed());
    for (title, file) in [
        ("tuning set (the catalog was fitted to it)", TUNING_SET),
        ("held-out set (written blind to the catalog)", HELDOUT_SET),
    ] {
        let evaluation = evaluate(&catalog, file);
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

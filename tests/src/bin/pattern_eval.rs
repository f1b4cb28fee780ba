//! Prints the pattern detector's precision and recall per pattern on the labelled set;
//! `--mistakes` also lists the utterances it gets wrong.

use salesloop::patterns::Catalog;
use salesloop_tests::pattern_eval::{evaluate, report};

fn main() {
    let evaluation = evaluate(&Catalog::builtin());
    print!("{}", report(&evaluation));
    if std::env::args().any(|a| a == "--mistakes") {
        for (text, missed, extra) in &evaluation.mistakes {
            println!("{text:?}\n    missed {missed:?} extra {extra:?}");
        }
    }
}

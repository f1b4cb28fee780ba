//! The pattern detector's accuracy on the labelled utterances: overall precision at least 0.9
//! and recall at least 0.8 (`make eval-patterns` prints the per-pattern table).

use salesloop::domain::patterns::Catalog;
use salesloop_tests::pattern_eval::{TUNING_SET, evaluate, report};

#[test]
fn labelled_set_precision_and_recall_meet_the_bar() {
    let evaluation = evaluate(&Catalog::builtin(), TUNING_SET);
    println!("{}", report(&evaluation));
    assert!(
        evaluation.utterances >= 200,
        "the labelled set has at least 200 utterances"
    );
    let overall = evaluation.overall;
    assert!(
        overall.precision() >= 0.9,
        "precision {:.3}",
        overall.precision()
    );
    assert!(overall.recall() >= 0.8, "recall {:.3}", overall.recall());
}

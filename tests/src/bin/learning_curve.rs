//! `make learning-curve`: a tenant's detector layer learning from labels in a new domain
//! (see `salesloop_tests::learning_curve`); rewrites docs/learning-curve.md and its plot.

fn main() {
    let root = salesloop_tests::workspace_root();
    let (page, plot) = salesloop_tests::learning_curve::current_report();
    std::fs::write(root.join("docs/learning-curve.md"), &page).expect("writing the page");
    std::fs::write(root.join("docs/learning-curve.svg"), plot).expect("writing the plot");
    print!("{page}");
}

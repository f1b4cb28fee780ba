//! `make catalog`: compiles the shipped cue catalog (`shared/catalog/patterns.json`) and writes
//! its compiled form to `shared/catalog/patterns.bin`, which salesloop reads at start-up
//! instead of compiling the JSON. `--check` compares instead of writing (a unit test in
//! `salesloop::domain::patterns` checks the same).

use salesloop::domain::patterns::{COMPILED_CATALOG, Catalog, DEFAULT_CATALOG};

fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let catalog = Catalog::from_json(DEFAULT_CATALOG)
        .unwrap_or_else(|e| panic!("shared/catalog/patterns.json: {e}"));
    let bytes = catalog.compiled();
    let path = salesloop_tests::workspace_root().join("shared/catalog/patterns.bin");
    if check {
        if bytes != COMPILED_CATALOG {
            eprintln!(
                "catalog --check: {} is not what patterns.json compiles to; run `make catalog` \
                 and commit the result",
                path.display()
            );
            std::process::exit(1);
        }
        eprintln!("catalog --check: {} is up to date", path.display());
    } else {
        std::fs::write(&path, &bytes).expect("write the compiled catalog");
        eprintln!("catalog: wrote {} ({} bytes)", path.display(), bytes.len());
    }
}

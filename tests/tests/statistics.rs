//! The A/B and correlation statistics against reference values computed independently with
//! scipy (`tests/fixtures/stats/reference.py`; its output, with versions and formulas, is
//! `reference.json`).

use salesloop::domain::learning::{Tally, table};
use salesloop::domain::stats::phi;
use salesloop_tests::workspace_root;
use serde_json::Value;

fn reference() -> Value {
    let path = workspace_root().join("tests/fixtures/stats/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[track_caller]
fn close(actual: f64, expected: &Value, tolerance: f64, what: &str) {
    let expected = expected
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no reference value"));
    assert!(
        (actual - expected).abs() <= tolerance * expected.abs().max(1.0),
        "{what}: {actual} against the reference {expected}"
    );
}

#[track_caller]
fn close_pair(actual: Option<(f64, f64)>, expected: &Value, tolerance: f64, what: &str) {
    match actual {
        None => assert!(expected.is_null(), "{what}: None against {expected}"),
        Some((lo, hi)) => {
            close(lo, &expected[0], tolerance, &format!("{what} low"));
            close(hi, &expected[1], tolerance, &format!("{what} high"));
        }
    }
}

#[test]
fn ab_tables_match_the_scipy_reference() {
    let reference = reference();
    let cases = reference["ab_cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    let mut srm_flagged = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let rows: Vec<(String, u32, Tally)> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let variant = row["variant"].as_str().unwrap().to_owned();
                let weight = case["weights"][&variant].as_u64().unwrap() as u32;
                let tally = Tally {
                    conversations: row["conversations"].as_u64().unwrap(),
                    wins: row["wins"].as_u64().unwrap(),
                };
                (variant, weight, tally)
            })
            .collect();
        let results = table(name, 0, case["control"].as_str().unwrap(), &rows);
        let expected = &case["expected"];
        let srm = results.srm.expect("two or more variants");
        close(
            srm.chi_square,
            &expected["chi_square"],
            1e-9,
            &format!("{name} chi-square"),
        );
        close(
            srm.p_value,
            &expected["srm_p_value"],
            1e-9,
            &format!("{name} SRM p"),
        );
        assert_eq!(
            srm.mismatch,
            expected["srm_p_value"].as_f64().unwrap() < 0.001,
            "{name}"
        );
        srm_flagged += usize::from(srm.mismatch);
        for (row, want) in results
            .variants
            .iter()
            .zip(expected["rows"].as_array().unwrap())
        {
            let what = format!("{name}/{}", row.variant);
            assert_eq!(row.variant, want["variant"].as_str().unwrap());
            close(
                row.win_rate,
                &want["win_rate"],
                1e-12,
                &format!("{what} win rate"),
            );
            close_pair(
                Some(row.win_rate_interval),
                &want["win_rate_interval"],
                1e-9,
                &format!("{what} win-rate interval"),
            );
            match row.lift {
                None => assert!(
                    want["lift"].is_null(),
                    "{what}: lift None against {}",
                    want["lift"]
                ),
                Some(lift) => close(lift, &want["lift"], 1e-9, &format!("{what} lift")),
            }
            close_pair(
                row.lift_interval,
                &want["lift_interval"],
                1e-9,
                &format!("{what} lift interval"),
            );
            match row.probability_to_beat_control {
                None => assert!(want["probability_to_beat_control"].is_null(), "{what}"),
                Some(p) => close(
                    p,
                    &want["probability_to_beat_control"],
                    1e-7,
                    &format!("{what} P(beat control)"),
                ),
            }
        }
    }
    assert!(
        srm_flagged >= 1,
        "the reference has a sample-ratio-mismatch case"
    );
}

#[test]
fn outcome_correlations_match_the_scipy_reference() {
    let reference = reference();
    for case in reference["correlation_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let count = |key: &str| case[key].as_u64().unwrap();
        let got = phi(count("n11"), count("n10"), count("n01"), count("n00")).expect("defined");
        let expected = &case["expected"];
        close(got.phi, &expected["phi"], 1e-12, &format!("{name} phi"));
        close_pair(
            got.interval,
            &expected["interval"],
            1e-9,
            &format!("{name} interval"),
        );
        assert_eq!(got.n, expected["n"].as_u64().unwrap(), "{name}");
    }
}

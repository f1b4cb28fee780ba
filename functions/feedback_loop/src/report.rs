//! How a run's results leave the function: EMF lines for CloudWatch, the run's `ab_test_results`
//! events, and a plain-text report for people.

use std::fmt::Write as _;

use salesloop::domain::learning::{OutcomeCorrelation, RunReport, VariantResult};
use salesloop::domain::stats::Proportion;
use salesloop::edge::emf::Emf;
use salesloop::{Event, ModelVersion, TenantId};
use serde_json::{Value, json};

/// The EMF documents of a published version: the run's scalar metrics, then one document per
/// pattern, per pattern family and per strategy for the outcome correlation.
pub fn emf_documents(tenant: &TenantId, version: &ModelVersion) -> Vec<Value> {
    let Some(report) = &version.report else {
        return Vec::new();
    };
    let mut documents = Vec::new();
    let mut run = Emf::new(report.at)
        .dimension("Tenant", tenant.as_str())
        .metric("EventTrackingRate", "None", report.tracking.run.rate)
        .metric("OutcomesLearned", "Count", report.outcomes as f64)
        .metric("ModelUpdates", "Count", 1.0)
        .metric(
            "ModelVersionsLast24h",
            "Count",
            report.updates.versions_last_24h as f64,
        )
        .property("model_version", json!(version.version));
    if report.accuracy.precision.trials > 0 {
        run = run.metric("PatternPrecision", "None", report.accuracy.precision.rate);
    }
    if report.accuracy.recall.trials > 0 {
        run = run.metric("PatternRecall", "None", report.accuracy.recall.rate);
    }
    for experiment in &report.experiments {
        if let Some(srm) = experiment.srm {
            let key = match experiment.config_version {
                0 => format!("srm_p_value.{}", experiment.experiment),
                config => format!("srm_p_value.{}.config{config}", experiment.experiment),
            };
            run = run.property(&key, json!(srm.p_value));
        }
    }
    documents.push(run.to_json());
    for (kind, table) in [
        ("Pattern", &report.correlation.patterns),
        ("Family", &report.correlation.families),
        ("Strategy", &report.correlation.strategies),
    ] {
        for (name, correlation) in table {
            let Some(phi) = correlation.phi else { continue };
            documents.push(
                Emf::new(report.at)
                    .dimension("Tenant", tenant.as_str())
                    .dimension(kind, name)
                    .metric("OutcomeCorrelation", "None", phi.phi)
                    .property("n", json!(phi.n))
                    .property("interval", json!(phi.interval))
                    .to_json(),
            );
        }
    }
    documents
}

/// The run's `ab_test_results` events, one per experiment.
pub fn run_events(tenant: &TenantId, version: &ModelVersion) -> Vec<Event> {
    version
        .report
        .iter()
        .flat_map(|report| {
            report
                .experiments
                .iter()
                .map(|results| Event::run_results(tenant, version.version, report.at, results))
        })
        .collect()
}

fn proportion(p: &Proportion) -> String {
    if p.trials == 0 {
        return "n/a (no data)".to_owned();
    }
    format!(
        "{:.3} [{:.3}, {:.3}] ({}/{})",
        p.rate, p.interval.0, p.interval.1, p.successes, p.trials
    )
}

fn optional(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn correlation_rows(
    out: &mut String,
    title: &str,
    rows: &std::collections::BTreeMap<String, OutcomeCorrelation>,
) {
    let _ = writeln!(
        out,
        "  {title:<26} {:>6} {:>10} {:>12} {:>7}  phi 95%",
        "n", "won with", "won without", "phi"
    );
    for (name, row) in rows {
        let (phi, interval) = match row.phi {
            Some(c) => (
                format!("{:+.3}", c.phi),
                c.interval.map_or_else(
                    || "-".to_owned(),
                    |(lo, hi)| format!("[{lo:+.3}, {hi:+.3}]"),
                ),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let rate = |p: &Proportion| {
            if p.trials == 0 {
                "-".to_owned()
            } else {
                format!("{:.3}", p.rate)
            }
        };
        let _ = writeln!(
            out,
            "  {name:<26} {:>6} {:>10} {:>12} {phi:>7}  {interval}",
            row.win_rate_with.trials,
            rate(&row.win_rate_with),
            rate(&row.win_rate_without)
        );
    }
}

/// A person's view of a tenant's current model: version, metrics, correlations, A/B tables.
pub fn render(tenant: &TenantId, version: Option<&ModelVersion>) -> String {
    let mut out = String::new();
    let Some(version) = version else {
        let _ = writeln!(
            out,
            "tenant {tenant}: no model version published yet (priors only)"
        );
        return out;
    };
    let _ = writeln!(
        out,
        "tenant {tenant}: model version {}, published {}, {} outcomes learned",
        version.version,
        version.published_at.to_rfc3339(),
        version.outcomes_learned
    );
    match &version.model.detector {
        None => {
            let _ = writeln!(out, "detector: the shipped weights (no labels learned yet)");
        }
        Some(layer) => {
            let rows = layer
                .model()
                .map_or_else(|| "unreadable".to_owned(), |m| m.row_count().to_string());
            let _ = writeln!(
                out,
                "detector: the shipped weights and this tenant's layer, learned from {} labelled \
                 messages ({} rows, {:.1} KB)",
                layer.labels_learned,
                rows,
                layer.weights.len() as f64 / 1000.0
            );
        }
    }
    let Some(report) = &version.report else {
        return out;
    };
    render_report(&mut out, report);
    out
}

fn render_report(out: &mut String, report: &RunReport) {
    let _ = writeln!(
        out,
        "\nmetrics (run of version {}, {} new outcomes)",
        report.version, report.outcomes
    );
    let _ = writeln!(
        out,
        "  event tracking rate     run {}",
        proportion(&report.tracking.run)
    );
    let _ = writeln!(
        out,
        "                          all time {}",
        proportion(&report.tracking.all_time)
    );
    let _ = writeln!(
        out,
        "  pattern precision       {}",
        proportion(&report.accuracy.precision)
    );
    let _ = writeln!(
        out,
        "  pattern recall          {}",
        proportion(&report.accuracy.recall)
    );
    let _ = writeln!(
        out,
        "  model updates           {} in the last 24 h; mean interval {} h; {:.1} outcomes per update",
        report.updates.versions_last_24h,
        optional(report.updates.mean_hours_between, 2),
        report.updates.outcomes_per_update
    );
    let value = &report.policy_value;
    let _ = writeln!(
        out,
        "  policy value            logged {}, new greedy policy (SNIPS) {}, effective n {:.1} of {} decisions",
        optional(value.logged, 3),
        optional(value.greedy_estimate, 3),
        value.effective_sample_size,
        value.decisions
    );
    if !report.accuracy.patterns.is_empty() {
        let _ = writeln!(out, "\npattern accuracy (labelled detections, all time)");
        for (name, acc) in &report.accuracy.patterns {
            let _ = writeln!(
                out,
                "  {name:<26} precision {}  recall {}  calibration x{:.3}",
                proportion(&acc.precision),
                proportion(&acc.recall),
                acc.calibration
            );
        }
    }
    let _ = writeln!(out, "\ncorrelation with winning (all time)");
    correlation_rows(out, "pattern", &report.correlation.patterns);
    correlation_rows(out, "family", &report.correlation.families);
    correlation_rows(out, "strategy", &report.correlation.strategies);
    for experiment in &report.experiments {
        let srm = experiment.srm.map_or_else(
            || "sample ratio: n/a".to_owned(),
            |s| {
                format!(
                    "sample ratio chi2 {:.2}, p {:.4}{}",
                    s.chi_square,
                    s.p_value,
                    if s.mismatch {
                        "  MISMATCH: do not trust this table"
                    } else {
                        ""
                    }
                )
            },
        );
        let versions = match experiment.config_versions.as_slice() {
            [] => format!("version {}", experiment.config_version),
            [one] => format!("version {one}"),
            many => format!(
                "versions {}",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "\nA/B {} under configuration {versions} (control {}; {srm})",
            experiment.experiment, experiment.control
        );
        let _ = writeln!(
            out,
            "  {:<16} {:>6} {:>7} {:>6} {:>8}  {:<16} {:>8}  {:<18} {:>8}",
            "variant", "weight", "conv", "wins", "win rate", "95%", "lift", "lift 95%", "P(beat)"
        );
        for row in &experiment.variants {
            let _ = writeln!(out, "{}", variant_row(row));
        }
    }
}

/// One variant's line of an A/B table. A variant without conversations has no win rate,
/// interval, lift or chance to beat control: each shows `-`, not the prior's `0.000 [0.000,
/// 1.000]`.
fn variant_row(row: &VariantResult) -> String {
    let measured = row.conversations > 0;
    let when_measured = |figure: String| if measured { figure } else { "-".to_owned() };
    format!(
        "  {:<16} {:>6} {:>7} {:>6} {:>8}  {:<16} {:>8}  {:<18} {:>8}",
        row.variant,
        row.weight,
        row.conversations,
        row.wins,
        when_measured(format!("{:.3}", row.win_rate)),
        when_measured(format!(
            "[{:.3}, {:.3}]",
            row.win_rate_interval.0, row.win_rate_interval.1
        )),
        when_measured(
            row.lift
                .map_or_else(|| "-".to_owned(), |l| format!("{:+.1}%", l * 100.0))
        ),
        when_measured(row.lift_interval.map_or_else(
            || "-".to_owned(),
            |(lo, hi)| format!("[{:+.1}%, {:+.1}%]", lo * 100.0, hi * 100.0)
        )),
        when_measured(optional(row.probability_to_beat_control, 3)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(conversations: u64, wins: u64) -> VariantResult {
        VariantResult {
            variant: "short_replies".into(),
            weight: 50,
            conversations,
            wins,
            win_rate: if conversations == 0 {
                0.0
            } else {
                wins as f64 / conversations as f64
            },
            win_rate_interval: if conversations == 0 {
                (0.0, 1.0)
            } else {
                (0.2, 0.6)
            },
            lift: None,
            lift_interval: None,
            probability_to_beat_control: Some(0.5),
        }
    }

    #[test]
    fn a_variant_without_conversations_shows_dashes_not_the_prior() {
        let line = variant_row(&row(0, 0));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            columns,
            ["short_replies", "50", "0", "0", "-", "-", "-", "-", "-"],
            "{line}"
        );
        assert!(!line.contains("0.000"), "{line}");
        assert!(!line.contains("[0.000, 1.000]"), "{line}");
    }

    #[test]
    fn a_variant_with_conversations_shows_its_figures() {
        let line = variant_row(&row(10, 4));
        assert!(line.contains(" 0.400 "), "{line}");
        assert!(line.contains("[0.200, 0.600]"), "{line}");
        assert!(line.trim_end().ends_with("0.500"), "{line}");
    }
}

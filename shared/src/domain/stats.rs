//! The statistics of the feedback loop, written out so each formula can be checked against an
//! independent computation (`tests/fixtures/stats/reference.py`, scipy):
//!
//! - a proportion's 95% interval is the Wilson score interval;
//! - the lift of a variant against control is `p_v / p_c - 1`, its interval the Katz log
//!   interval of the risk ratio, `exp(ln(p_v / p_c) ± z·se) - 1` with
//!   `se = sqrt(1/w_v - 1/n_v + 1/w_c - 1/n_c)` (undefined when either arm has no win);
//! - the probability to beat control is `P(X_v > X_c)` for independent
//!   `X ~ Beta(1 + wins, 1 + conversations - wins)`, summed exactly in log space;
//! - the sample-ratio-mismatch check is Pearson's chi-square goodness of fit of the
//!   conversations per variant against the configured weights, `k - 1` degrees of freedom;
//! - the correlation of a binary feature with winning is the phi coefficient, its interval by
//!   Fisher's z transform, `tanh(atanh(r) ± z / sqrt(n - 3))`.

use serde::{Deserialize, Serialize};

/// The 0.975 quantile of the standard normal distribution.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A count of successes out of trials, with its rate and 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    pub successes: u64,
    pub trials: u64,
    /// `successes / trials`; zero when there are no trials.
    pub rate: f64,
    pub interval: (f64, f64),
}

impl Proportion {
    pub fn new(successes: u64, trials: u64) -> Proportion {
        let rate = if trials == 0 {
            0.0
        } else {
            successes as f64 / trials as f64
        };
        Proportion {
            successes,
            trials,
            rate,
            interval: wilson(successes, trials),
        }
    }
}

/// The Wilson score 95% interval of `successes / trials`; `(0, 1)` without trials.
pub fn wilson(successes: u64, trials: u64) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z95 * Z95;
    let centre = p + z2 / (2.0 * n);
    let spread = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denominator = 1.0 + z2 / n;
    (
        ((centre - spread) / denominator).max(0.0),
        ((centre + spread) / denominator).min(1.0),
    )
}

/// Lift of a variant against control, `p_v / p_c - 1`, with its Katz log 95% interval.
/// `None` when either arm has no conversation or no win.
pub fn lift(wins: u64, trials: u64, control_wins: u64, control_trials: u64) -> Option<Estimate> {
    if wins == 0 || control_wins == 0 || trials == 0 || control_trials == 0 {
        return None;
    }
    let (w, n, wc, nc) = (
        wins as f64,
        trials as f64,
        control_wins as f64,
        control_trials as f64,
    );
    let ratio = (w / n) / (wc / nc);
    let se = (1.0 / w - 1.0 / n + 1.0 / wc - 1.0 / nc).max(0.0).sqrt();
    let log_ratio = ratio.ln();
    Some(Estimate {
        value: ratio - 1.0,
        interval: (
            (log_ratio - Z95 * se).exp() - 1.0,
            (log_ratio + Z95 * se).exp() - 1.0,
        ),
    })
}

/// A point estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub interval: (f64, f64),
}

/// `P(X_v > X_c)` for `X_v ~ Beta(1 + wins, 1 + trials - wins)` and the same for control.
pub fn probability_to_beat(wins: u64, trials: u64, control_wins: u64, control_trials: u64) -> f64 {
    let v = (1.0 + wins as f64, 1.0 + trials.saturating_sub(wins) as f64);
    let c = (
        1.0 + control_wins as f64,
        1.0 + control_trials.saturating_sub(control_wins) as f64,
    );
    // The exact sum has one term per unit of the first shape parameter of the variable that
    // must come out larger; sum over the smaller of the two and use the complement if needed.
    if v.0 <= c.0 {
        beta_greater(v, c)
    } else {
        1.0 - beta_greater(c, v)
    }
    .clamp(0.0, 1.0)
}

/// `P(B > A)` for `B ~ Beta(b)`, `A ~ Beta(a)`, where `b.0` is a whole number:
/// `sum_{i < b.0} exp(lnB(a.0 + i, a.1 + b.1) - ln(b.1 + i) - lnB(1 + i, b.1) - lnB(a.0, a.1))`.
fn beta_greater(b: (f64, f64), a: (f64, f64)) -> f64 {
    let terms = b.0.round() as u64;
    let base = ln_beta(a.0, a.1);
    let mut total = 0.0;
    for i in 0..terms {
        let i = i as f64;
        total +=
            (ln_beta(a.0 + i, a.1 + b.1) - (b.1 + i).ln() - ln_beta(1.0 + i, b.1) - base).exp();
    }
    total
}

/// Pearson's chi-square goodness-of-fit statistic and its p-value, `k - 1` degrees of freedom,
/// for observed counts against expected shares (any positive weights). `None` with fewer than
/// two categories or no observations.
pub fn chi_square_gof(observed: &[u64], weights: &[f64]) -> Option<(f64, f64)> {
    let total: u64 = observed.iter().sum();
    let weight_sum: f64 = weights.iter().sum();
    if observed.len() < 2 || observed.len() != weights.len() || total == 0 || weight_sum <= 0.0 {
        return None;
    }
    let mut statistic = 0.0;
    for (&o, &w) in observed.iter().zip(weights) {
        let expected = total as f64 * w / weight_sum;
        if expected <= 0.0 {
            return None;
        }
        statistic += (o as f64 - expected).powi(2) / expected;
    }
    let df = (observed.len() - 1) as f64;
    Some((statistic, gamma_q(df / 2.0, statistic / 2.0)))
}

/// The correlation of a binary feature with a binary outcome: the phi coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub phi: f64,
    /// Fisher z 95% interval; `None` with three observations or fewer.
    pub interval: Option<(f64, f64)>,
    pub n: u64,
}

/// Phi of a 2×2 table: `n11` feature and outcome, `n10` feature only, `n01` outcome only,
/// `n00` neither. `None` when a row or column is empty (phi is undefined).
pub fn phi(n11: u64, n10: u64, n01: u64, n00: u64) -> Option<Correlation> {
    let (a, b, c, d) = (n11 as f64, n10 as f64, n01 as f64, n00 as f64);
    let margins = (a + b) * (c + d) * (a + c) * (b + d);
    if margins <= 0.0 {
        return None;
    }
    let r = ((a * d - b * c) / margins.sqrt()).clamp(-1.0, 1.0);
    let n = n11 + n10 + n01 + n00;
    let interval = (n > 3).then(|| {
        let z = r.clamp(-0.999_999_999, 0.999_999_999).atanh();
        let se = 1.0 / ((n - 3) as f64).sqrt();
        ((z - Z95 * se).tanh(), (z + Z95 * se).tanh())
    });
    Some(Correlation {
        phi: r,
        interval,
        n,
    })
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, nine coefficients; ~15 digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The regularized incomplete beta function `I_x(a, b)`, `P(X <= x)` for `X ~ Beta(a, b)`:
/// a modified Lentz continued fraction, evaluated on the side of the mean where it converges
/// fast (`I_x(a, b) = 1 - I_{1-x}(b, a)`).
pub fn beta_cdf(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_cdf(1.0 - x, b, a);
    }
    const TINY: f64 = 1e-300;
    let prefix = (a * x.ln() + b * (1.0 - x).ln() - ln_beta(a, b)).exp() / a;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut fraction = d;
    for m in 1..10_000 {
        let m = m as f64;
        // The even step, then the odd step, of the continued fraction.
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            fraction *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (prefix * fraction).clamp(0.0, 1.0)
}

/// The equal-tailed 95% credible interval of `Beta(a, b)`: its 2.5% and 97.5% quantiles, found
/// by bisection on [`beta_cdf`] to 1e-9.
pub fn beta_interval(a: f64, b: f64) -> (f64, f64) {
    let quantile = |p: f64| {
        let (mut low, mut high) = (0.0_f64, 1.0_f64);
        while high - low > 1e-9 {
            let mid = 0.5 * (low + high);
            if beta_cdf(mid, a, b) < p {
                low = mid;
            } else {
                high = mid;
            }
        }
        0.5 * (low + high)
    };
    (quantile(0.025), quantile(0.975))
}

/// The regularized upper incomplete gamma function `Q(s, x) = Γ(s, x) / Γ(s)`: the power series
/// of `P` below `x < s + 1`, a Lentz continued fraction above.
pub fn gamma_q(s: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = s * x.ln() - x - ln_gamma(s);
    if x < s + 1.0 {
        let mut term = 1.0 / s;
        let mut sum = term;
        let mut k = s;
        for _ in 0..10_000 {
            k += 1.0;
            term *= x / k;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - s;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - s);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (log_prefix.exp() * h).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_quantiles_match_known_values() {
        // Beta(1, 1) is uniform; Beta(2, 5)'s 2.5% and 97.5% quantiles are 0.04327 and 0.64123
        // (R: qbeta(c(.025, .975), 2, 5)); Beta(50, 50) is symmetric about one half.
        let (lo, hi) = beta_interval(1.0, 1.0);
        assert!(
            (lo - 0.025).abs() < 1e-7 && (hi - 0.975).abs() < 1e-7,
            "{lo} {hi}"
        );
        let (lo, hi) = beta_interval(2.0, 5.0);
        assert!(
            (lo - 0.04327).abs() < 5e-5 && (hi - 0.64123).abs() < 5e-5,
            "{lo} {hi}"
        );
        let (lo, hi) = beta_interval(50.0, 50.0);
        assert!(
            (lo + hi - 1.0).abs() < 1e-7 && (0.40..0.41).contains(&lo),
            "{lo} {hi}"
        );
        assert!((beta_cdf(0.3, 2.0, 5.0) - 0.579825).abs() < 1e-5);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (n, factorial) in [(1u32, 1.0f64), (5, 24.0), (11, 3_628_800.0)] {
            assert!(
                (ln_gamma(f64::from(n)) - factorial.ln()).abs() < 1e-12,
                "{n}"
            );
        }
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn chi_square_survival_matches_known_quantiles() {
        // The 0.95 quantiles of chi-square with 1 and 2 degrees of freedom.
        assert!((gamma_q(0.5, 3.841_458_820_694_124 / 2.0) - 0.05).abs() < 1e-12);
        assert!((gamma_q(1.0, 5.991_464_547_107_979 / 2.0) - 0.05).abs() < 1e-12);
        // Q(1, x) = e^-x exactly.
        assert!((gamma_q(1.0, 40.0) - (-40.0f64).exp()).abs() < 1e-25);
    }

    #[test]
    fn probability_to_beat_is_symmetric_and_one_half_for_equal_arms() {
        assert!((probability_to_beat(30, 100, 30, 100) - 0.5).abs() < 1e-9);
        let p = probability_to_beat(150, 1000, 120, 1000);
        let q = probability_to_beat(120, 1000, 150, 1000);
        assert!((p + q - 1.0).abs() < 1e-9);
        assert!(p > 0.9);
    }

    #[test]
    fn undefined_statistics_are_none_not_nan() {
        assert!(lift(0, 10, 3, 10).is_none());
        assert!(phi(5, 5, 0, 0).is_none());
        assert!(chi_square_gof(&[10], &[1.0]).is_none());
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}

//! The decision engine: the playbook (`shared/catalog/playbook.json`) names, per decision
//! context, the strategies that fit; a bandit over Beta posteriors (from the current model
//! version, or priors before any) picks one. Every decision carries the probability with which
//! its strategy was picked, so that policies can be evaluated offline.
//!
//! Priors: the playbook's first strategy for a context starts at Beta(2, 1), the others at
//! Beta(1, 1): the expert's choice leads until outcomes say otherwise. A playbook may set its
//! own prior for any (context, strategy) in `priors`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::conversation::{ConversationState, Detection};
use crate::domain::experiments::{Experiments, Invalid, PolicyName, Treatment, parse_json};
use crate::domain::model::{Beta, Model};
use crate::domain::random::Rng;

pub const DEFAULT_PLAYBOOK: &str = include_str!("../../catalog/playbook.json");

/// Monte Carlo draws used to estimate a Thompson decision's probability when it cannot be
/// computed ([`thompson_probabilities`]).
const PROBABILITY_DRAWS: u32 = 200;

/// The least probability a decision logs: every picked strategy had a positive chance, and the
/// policy value's inverse-propensity weights stay finite.
const MIN_LOGGED_PROBABILITY: f64 = 0.001;

/// Intervals of the grid [`thompson_probabilities`] integrates on.
const GRID: usize = 1_024;

/// The probability that Thompson sampling picks each arm: `P(i is the largest draw) =
/// ∫ f_i(x) Π_{j≠i} F_j(x) dx` for independent Beta posteriors, integrated numerically on a grid
/// of [`GRID`] intervals over where the posteriors have their mass (every mean ± 12 standard
/// deviations, within [0, 1]); each CDF is the running trapezoid integral of its density on the
/// same grid, normalised. Against a million draws the tests find it within 0.002. Computed once
/// per set of posteriors and process (a model version's are fixed), so a decision pays a lookup.
/// `None` when a shape is below 1 (the density is unbounded at an end).
pub fn thompson_probabilities(posteriors: &[Beta]) -> Option<std::sync::Arc<Vec<f64>>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    if posteriors.iter().any(|b| b.alpha < 1.0 || b.beta < 1.0) {
        return None;
    }
    type Memo = Mutex<HashMap<Vec<u64>, Arc<Vec<f64>>>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    let key: Vec<u64> = posteriors
        .iter()
        .flat_map(|b| [b.alpha.to_bits(), b.beta.to_bits()])
        .collect();
    let memo = MEMO.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = memo.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Some(found.clone());
    }
    let table = Arc::new(integrate_thompson(posteriors));
    let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: a process meets few sets of posteriors (one per context and model version).
    if memo.len() >= 4_096 {
        memo.clear();
    }
    memo.insert(key, table.clone());
    Some(table)
}

fn integrate_thompson(posteriors: &[Beta]) -> Vec<f64> {
    use crate::domain::stats::ln_beta;
    let spread = |b: &Beta| {
        let n = b.alpha + b.beta;
        (b.alpha * b.beta / (n * n * (n + 1.0))).sqrt()
    };
    let lo = posteriors
        .iter()
        .map(|b| b.mean() - 12.0 * spread(b))
        .fold(1.0_f64, f64::min)
        .max(0.0);
    let hi = posteriors
        .iter()
        .map(|b| b.mean() + 12.0 * spread(b))
        .fold(0.0_f64, f64::max)
        .min(1.0);
    let step = (hi - lo) / GRID as f64;
    let xs: Vec<f64> = (0..=GRID).map(|k| lo + step * k as f64).collect();
    // Densities, and CDFs as running trapezoid sums normalised to end at 1.
    let densities: Vec<Vec<f64>> = posteriors
        .iter()
        .map(|b| {
            let norm = ln_beta(b.alpha, b.beta);
            xs.iter()
                .map(|&x| {
                    if x <= 0.0 || x >= 1.0 {
                        // The density's limit at an end, for shapes of at least 1.
                        let at_zero = x <= 0.0;
                        let shape = if at_zero { b.alpha } else { b.beta };
                        if shape == 1.0 { (-norm).exp() } else { 0.0 }
                    } else {
                        ((b.alpha - 1.0) * x.ln() + (b.beta - 1.0) * (1.0 - x).ln() - norm).exp()
                    }
                })
                .collect()
        })
        .collect();
    let cdfs: Vec<Vec<f64>> = densities
        .iter()
        .map(|f| {
            let mut running = vec![0.0; f.len()];
            for k in 1..f.len() {
                running[k] = running[k - 1] + 0.5 * step * (f[k - 1] + f[k]);
            }
            let total = running[f.len() - 1];
            if total > 0.0 {
                running.iter_mut().for_each(|c| *c /= total);
            }
            running
        })
        .collect();
    let mut table: Vec<f64> = (0..posteriors.len())
        .map(|i| {
            let integrand = |k: usize| {
                let others: f64 = (0..posteriors.len())
                    .filter(|&j| j != i)
                    .map(|j| cdfs[j][k])
                    .product();
                densities[i][k] * others
            };
            (1..=GRID)
                .map(|k| 0.5 * step * (integrand(k - 1) + integrand(k)))
                .sum::<f64>()
        })
        .collect();
    let total: f64 = table.iter().sum();
    if total > 0.0 {
        table.iter_mut().for_each(|p| *p /= total);
    } else {
        let even = 1.0 / table.len() as f64;
        table.iter_mut().for_each(|p| *p = even);
    }
    table
}

/// The longest reply template, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 1_000;
/// The most contexts, strategies, and templates per (strategy, tone), a playbook may hold.
pub const MAX_CONTEXTS: usize = 64;
pub const MAX_STRATEGIES: usize = 64;
pub const MAX_TEMPLATES: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Decision context to the strategies that fit it, the preferred one first.
    contexts: BTreeMap<String, Vec<String>>,
    /// Strategy to tone to reply templates.
    strategies: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Context to strategy to its prior, where the default rule (the preferred strategy at
    /// Beta(2, 1), the others at Beta(1, 1)) should not hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    priors: BTreeMap<String, BTreeMap<String, Beta>>,
}

/// A chosen strategy, the context it was chosen in, and its selection probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub context: String,
    pub strategy: String,
    pub probability: f64,
}

impl Playbook {
    /// Reads and checks a playbook whose every strategy has a template in each of `tones`.
    pub fn from_json(raw: &str, tones: &BTreeSet<&str>) -> Result<Playbook, Invalid> {
        let playbook: Playbook = parse_json(raw)?;
        playbook.validate(tones)?;
        Ok(playbook)
    }

    /// Checks the playbook: the contexts every turn can fall into, valid names, a template for
    /// every strategy a context names in every one of `tones`, priors with positive finite
    /// parameters for strategies their context names.
    pub fn validate(&self, tones: &BTreeSet<&str>) -> Result<(), Invalid> {
        use crate::domain::ids::check;
        for required in ["none", "opening", "momentum"] {
            if !self.contexts.contains_key(required) {
                return Err(Invalid::new(
                    format!("contexts.{required}"),
                    "is required (every turn falls into it or a pattern's context)",
                ));
            }
        }
        if self.contexts.len() > MAX_CONTEXTS {
            return Err(Invalid::new("contexts", format!("at most {MAX_CONTEXTS}")));
        }
        if self.strategies.len() > MAX_STRATEGIES {
            return Err(Invalid::new(
                "strategies",
                format!("at most {MAX_STRATEGIES}"),
            ));
        }
        for (context, strategies) in &self.contexts {
            let at = format!("contexts.{context}");
            check("context", context).map_err(|e| Invalid::new(&at, e.to_string()))?;
            if strategies.is_empty() || strategies.len() > 16 {
                return Err(Invalid::new(&at, "needs 1 to 16 strategies"));
            }
            for (i, strategy) in strategies.iter().enumerate() {
                if strategies[..i].contains(strategy) {
                    return Err(Invalid::new(format!("{at}[{i}]"), "names a strategy twice"));
                }
                let Some(templates) = self.strategies.get(strategy) else {
                    return Err(Invalid::new(
                        format!("strategies.{strategy}"),
                        format!("is missing: context {context} names it"),
                    ));
                };
                for tone in tones {
                    if templates.get(*tone).is_none_or(|t| t.is_empty()) {
                        return Err(Invalid::new(
                            format!("strategies.{strategy}.{tone}"),
                            "needs at least one template: an experiment uses this tone",
                        ));
                    }
                }
            }
        }
        for (strategy, tones) in &self.strategies {
            let at = format!("strategies.{strategy}");
            check("strategy", strategy).map_err(|e| Invalid::new(&at, e.to_string()))?;
            for (tone, templates) in tones {
                let at = format!("{at}.{tone}");
                check("tone", tone).map_err(|e| Invalid::new(&at, e.to_string()))?;
                if templates.len() > MAX_TEMPLATES {
                    return Err(Invalid::new(
                        &at,
                        format!("at most {MAX_TEMPLATES} templates"),
                    ));
                }
                for (i, template) in templates.iter().enumerate() {
                    let length = template.chars().count();
                    if template.trim().is_empty() || length > MAX_TEMPLATE_CHARS {
                        return Err(Invalid::new(
                            format!("{at}[{i}]"),
                            format!("a template holds 1 to {MAX_TEMPLATE_CHARS} characters"),
                        ));
                    }
                }
            }
        }
        for (context, priors) in &self.priors {
            let Some(strategies) = self.contexts.get(context) else {
                return Err(Invalid::new(
                    format!("priors.{context}"),
                    "is not a context of the playbook",
                ));
            };
            for (strategy, beta) in priors {
                let at = format!("priors.{context}.{strategy}");
                if !strategies.contains(strategy) {
                    return Err(Invalid::new(at, "the context does not name this strategy"));
                }
                let fine = |x: f64| x.is_finite() && x > 0.0 && x <= 10_000.0;
                if !fine(beta.alpha) || !fine(beta.beta) {
                    return Err(Invalid::new(at, "alpha and beta lie in (0, 10000]"));
                }
            }
        }
        Ok(())
    }

    pub fn builtin() -> Playbook {
        let tones = Experiments::builtin();
        Playbook::from_json(DEFAULT_PLAYBOOK, &tones.tones())
            .unwrap_or_else(|e| panic!("built-in playbook: {e}"))
    }

    /// The strategies of a context, the preferred one first.
    pub fn candidates(&self, context: &str) -> Option<&[String]> {
        self.contexts.get(context).map(Vec::as_slice)
    }

    pub fn contexts(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.contexts.iter()
    }

    /// The decision context of a turn: its strongest detected pattern when the playbook knows
    /// it; otherwise whether the conversation is opening, has shown buying signals, or neither.
    pub fn context(&self, detections: &[Detection], state: &ConversationState) -> String {
        if let Some(top) = detections
            .iter()
            .find(|d| self.contexts.contains_key(&d.pattern))
        {
            return top.pattern.clone();
        }
        let buying = state.summary().is_some_and(|s| {
            s.patterns_seen
                .iter()
                .any(|p| p.starts_with("buying_signal."))
        });
        if buying {
            "momentum".to_owned()
        } else if state.turns() == 0 {
            "opening".to_owned()
        } else {
            "none".to_owned()
        }
    }

    /// The posterior of `strategy` in `context`: the model's, else the prior.
    pub fn posterior(&self, model: &Model, context: &str, strategy: &str) -> Beta {
        if let Some(beta) = model.posteriors.get(context).and_then(|s| s.get(strategy)) {
            return *beta;
        }
        if let Some(beta) = self.priors.get(context).and_then(|s| s.get(strategy)) {
            return *beta;
        }
        let preferred = self
            .contexts
            .get(context)
            .and_then(|s| s.first())
            .is_some_and(|first| first == strategy);
        if preferred {
            Beta {
                alpha: 2.0,
                beta: 1.0,
            }
        } else {
            Beta::UNIFORM
        }
    }

    /// Picks a strategy for `context` under the treatment's policy.
    pub fn decide(
        &self,
        context: &str,
        model: &Model,
        treatment: &Treatment,
        rng: &mut Rng,
    ) -> Decision {
        let fallback = Vec::new();
        let candidates = self
            .contexts
            .get(context)
            .or_else(|| self.contexts.get("none"))
            .unwrap_or(&fallback);
        let posteriors: Vec<Beta> = candidates
            .iter()
            .map(|s| self.posterior(model, context, s))
            .collect();
        let Some(first) = candidates.first() else {
            return Decision {
                context: context.to_owned(),
                strategy: "ask_discovery_question".to_owned(),
                probability: 1.0,
            };
        };
        if candidates.len() == 1 {
            return Decision {
                context: context.to_owned(),
                strategy: first.clone(),
                probability: 1.0,
            };
        }
        let (chosen, probability) = match treatment.policy {
            PolicyName::Thompson => {
                let chosen = thompson_pick(&posteriors, rng);
                let p = match thompson_probabilities(&posteriors) {
                    Some(table) => table[chosen],
                    // A posterior whose density is unbounded at an end (a shape below 1, which
                    // no learned or default posterior has): estimated by drawing instead.
                    None => {
                        let wins = (0..PROBABILITY_DRAWS)
                            .filter(|_| thompson_pick(&posteriors, rng) == chosen)
                            .count();
                        (wins as f64 + 0.5) / (f64::from(PROBABILITY_DRAWS) + 1.0)
                    }
                };
                // Never log zero: a picked strategy had a positive chance.
                (chosen, p.max(MIN_LOGGED_PROBABILITY))
            }
            PolicyName::EpsilonGreedy => {
                let k = candidates.len() as f64;
                let best = posteriors
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.mean().total_cmp(&b.1.mean()))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let explore = rng.uniform() < treatment.epsilon;
                let chosen = if explore {
                    (rng.next_u64() % candidates.len() as u64) as usize
                } else {
                    best
                };
                let share = treatment.epsilon / k;
                let p = if chosen == best {
                    1.0 - treatment.epsilon + share
                } else {
                    share
                };
                (chosen, p)
            }
        };
        Decision {
            context: context.to_owned(),
            strategy: candidates[chosen].clone(),
            probability: (probability * 1000.0).round() / 1000.0,
        }
    }

    /// The reply template for a strategy in a tone (neutral when the tone has none).
    pub fn template(&self, strategy: &str, tone: &str, pick: u64) -> Option<&str> {
        let tones = self.strategies.get(strategy)?;
        let templates = tones
            .get(tone)
            .filter(|t| !t.is_empty())
            .or_else(|| tones.get("neutral"))?;
        let index = (pick % templates.len() as u64) as usize;
        templates.get(index).map(String::as_str)
    }
}

fn thompson_pick(posteriors: &[Beta], rng: &mut Rng) -> usize {
    let mut best = (0, f64::MIN);
    for (i, posterior) in posteriors.iter().enumerate() {
        let draw = rng.beta(posterior.alpha, posterior.beta);
        if draw > best.1 {
            best = (i, draw);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn treatment(policy: PolicyName) -> Treatment {
        Treatment {
            tone: "neutral".into(),
            policy,
            epsilon: 0.1,
            threshold: 0.7,
        }
    }

    #[test]
    fn builtin_playbook_has_a_context_for_every_pattern() {
        let playbook = Playbook::builtin();
        let catalog = crate::domain::patterns::Catalog::builtin();
        for name in catalog.pattern_names() {
            assert!(playbook.contexts.contains_key(name), "{name}");
        }
    }

    #[test]
    fn thompson_probabilities_match_a_million_draws() {
        let sets: [&[(f64, f64)]; 5] = [
            &[(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)],
            &[(2.0, 1.0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)],
            &[(60.0, 40.0), (30.0, 70.0), (30.0, 70.0)],
            &[(12.5, 30.25), (14.0, 29.0), (3.0, 9.5)],
            &[(400.0, 600.0), (410.0, 590.0), (1.0, 1.0)],
        ];
        let mut rng = Rng::seeded(7);
        for set in sets {
            let posteriors: Vec<Beta> = set
                .iter()
                .map(|&(alpha, beta)| Beta { alpha, beta })
                .collect();
            let table = thompson_probabilities(&posteriors).expect("shapes of at least 1");
            assert!((table.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            let draws = 1_000_000;
            let mut wins = vec![0u32; posteriors.len()];
            for _ in 0..draws {
                wins[thompson_pick(&posteriors, &mut rng)] += 1;
            }
            for (i, &won) in wins.iter().enumerate() {
                let seen = f64::from(won) / f64::from(draws);
                // A million draws: the sampling error's standard deviation is at most 0.0005.
                assert!(
                    (table[i] - seen).abs() < 0.002,
                    "{set:?} arm {i}: computed {} drawn {seen}",
                    table[i]
                );
            }
        }
        // Below a shape of 1 the density is unbounded at an end: not computed.
        let spiky = [
            Beta {
                alpha: 0.5,
                beta: 1.0,
            },
            Beta::UNIFORM,
        ];
        assert!(thompson_probabilities(&spiky).is_none());
    }

    #[test]
    fn thompson_follows_the_posteriors_and_logs_a_matching_probability() {
        let playbook = Playbook::builtin();
        let mut model = Model::default();
        let strong = Beta {
            alpha: 60.0,
            beta: 40.0,
        };
        let weak = Beta {
            alpha: 30.0,
            beta: 70.0,
        };
        let context = "objection.price";
        let table = model.posteriors.entry(context.to_owned()).or_default();
        table.insert("handle_price_objection".into(), weak);
        table.insert("social_proof".into(), strong);
        table.insert("ask_discovery_question".into(), weak);
        let mut rng = Rng::seeded(1);
        let mut chosen = 0;
        let mut logged = 0.0;
        for _ in 0..1_000 {
            let d = playbook.decide(context, &model, &treatment(PolicyName::Thompson), &mut rng);
            if d.strategy == "social_proof" {
                chosen += 1;
                logged += d.probability;
            }
        }
        assert!(chosen > 950, "{chosen}");
        // The logged probabilities agree with how often it was picked.
        assert!((logged / f64::from(chosen) - f64::from(chosen) / 1000.0).abs() < 0.05);
    }

    /// What `decide` draws for epsilon-greedy, replayed from the seed: one uniform (explore when
    /// it is below epsilon) and, when exploring, one more u64 whose remainder by the number of
    /// strategies is the index explored. `None` is "exploit".
    fn epsilon_draw(seed: u64, epsilon: f64, strategies: u64) -> Option<u64> {
        let mut rng = Rng::seeded(seed);
        (rng.uniform() < epsilon).then(|| rng.next_u64() % strategies)
    }

    #[test]
    fn epsilon_greedy_logs_exact_probabilities() {
        let playbook = Playbook::builtin();
        // "none" offers ask_discovery_question, propose_demo, social_proof. With no model the
        // preferred first one has the prior Beta(2, 1) (mean 2/3) against Beta(1, 1) (1/2), so it
        // is the greedy choice. epsilon = 0.1 and k = 3, so the logged probabilities are
        //   greedy: 1 - 0.1 + 0.1/3 = 0.9333... -> 0.933
        //   other:          0.1/3 = 0.0333... -> 0.033
        let none = ["ask_discovery_question", "propose_demo", "social_proof"];
        assert_eq!(playbook.candidates("none").unwrap(), none);
        let decide = |seed| {
            playbook.decide(
                "none",
                &Model::default(),
                &treatment(PolicyName::EpsilonGreedy),
                &mut Rng::seeded(seed),
            )
        };

        // Seeds whose draws are known: the first that exploits, the first that explores into the
        // greedy strategy anyway, and the first that explores into each other strategy.
        let first = |wanted: Option<u64>| {
            (0..10_000u64)
                .find(|&seed| epsilon_draw(seed, 0.1, 3) == wanted)
                .expect("a seed with that draw")
        };
        for (draw, strategy, probability) in [
            (None, none[0], 0.933),
            (Some(0), none[0], 0.933),
            (Some(1), none[1], 0.033),
            (Some(2), none[2], 0.033),
        ] {
            let seed = first(draw);
            let d = decide(seed);
            assert_eq!(
                (d.strategy.as_str(), d.probability),
                (strategy, probability),
                "seed {seed}, draw {draw:?}"
            );
            assert_eq!(d.context, "none");
        }

        // Over many seeds the choices follow the logged probabilities. Expected in 30 000:
        //   greedy 30 000 x 14/15 = 28 000, sd = sqrt(30 000 x 14/15 x 1/15) = 43.2
        //   other  30 000 x  1/30 =  1 000, sd = sqrt(30 000 x 1/30 x 29/30) = 31.1
        // and the bounds are five standard deviations either side. Every decision's logged
        // probability is exactly that of its branch.
        let mut counts = BTreeMap::new();
        for seed in 0..30_000 {
            let d = decide(seed);
            let expected = if d.strategy == none[0] { 0.933 } else { 0.033 };
            assert_eq!(d.probability, expected, "seed {seed}: {d:?}");
            *counts.entry(d.strategy).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!((27_784..=28_216).contains(&counts[none[0]]), "{counts:?}");
        for other in &none[1..] {
            assert!((845..=1_155).contains(&counts[*other]), "{counts:?}");
        }
    }

    #[test]
    fn context_prefers_detections_then_the_conversation_so_far() {
        let playbook = Playbook::builtin();
        let detection = Detection {
            pattern: "objection.price".into(),
            confidence: 0.9,
            evidence: "too expensive".into(),
            start: 0,
            end: 13,
            calibrated: true,
        };
        assert_eq!(
            playbook.context(std::slice::from_ref(&detection), &ConversationState::New),
            "objection.price"
        );
        assert_eq!(playbook.context(&[], &ConversationState::New), "opening");
        let mut summary = crate::domain::conversation::ConversationSummary::default();
        summary.patterns_seen.insert("buying_signal.process".into());
        let state = ConversationState::Open { turns: 3, summary };
        assert_eq!(playbook.context(&[], &state), "momentum");
    }
}

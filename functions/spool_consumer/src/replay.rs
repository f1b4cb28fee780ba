//! `spool_consumer replay FILE...`: the last resort's way back. process_message writes an
//! exchange it could neither record nor spool as one log line (`SpooledExchange::log_line`);
//! this reads such lines from files (a CloudWatch Logs export, gunzipped, or any text holding
//! them: other lines are skipped) and records each through the same idempotent append as the
//! spool consumer, in file order. Run it twice and the second run records nothing.

use std::collections::HashSet;
use std::io::BufRead;

use salesloop::domain::spool::{SpooledExchange, Via};
use salesloop::service::{SpoolFailure, SpoolOutcome, record_spooled};
use salesloop::{ConversationId, Store, TenantId};

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub recorded: u64,
    pub duplicates: u64,
    /// Lines that can never be recorded, with their reason (`file:line: reason`).
    pub rejected: Vec<String>,
    /// Lines the store did not take now (unavailable): run the replay again later.
    pub retry: Vec<String>,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} unrecorded-exchange lines: {} recorded, {} already recorded, {} rejected, {} \
             to retry",
            self.lines,
            self.recorded,
            self.duplicates,
            self.rejected.len(),
            self.retry.len()
        )?;
        for line in self.rejected.iter().chain(&self.retry) {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Replays the unrecorded-exchange lines of `input` (named `name` in the report).
pub async fn replay<S: Store>(
    store: &S,
    name: &str,
    input: impl BufRead,
    summary: &mut ReplaySummary,
) -> std::io::Result<()> {
    // Conversations with a line left for a later run: their later lines wait too, so a
    // conversation's exchanges are never recorded out of order.
    let mut held: HashSet<(TenantId, ConversationId)> = HashSet::new();
    for (number, line) in input.lines().enumerate() {
        let line = line?;
        let Some(parsed) = SpooledExchange::from_log_line(&line) else {
            continue;
        };
        summary.lines += 1;
        let at = format!("{name}:{}", number + 1);
        let record = match parsed {
            Ok(record) => record,
            Err(reason) => {
                summary.rejected.push(format!("{at}: {reason}"));
                continue;
            }
        };
        let key = (record.tenant.clone(), record.conversation_id.clone());
        if held.contains(&key) {
            summary.retry.push(format!(
                "{at}: held behind an earlier line of its conversation"
            ));
            continue;
        }
        match record_spooled(store, &record, Via::Replay).await {
            Ok(SpoolOutcome::Recorded(_)) => summary.recorded += 1,
            Ok(SpoolOutcome::Duplicate) => summary.duplicates += 1,
            Err(SpoolFailure::Rejected(reason)) => summary.rejected.push(format!("{at}: {reason}")),
            Err(SpoolFailure::Retry { why, .. }) => {
                summary.retry.push(format!("{at}: {why}"));
                held.insert(key);
            }
        }
    }
    Ok(())
}

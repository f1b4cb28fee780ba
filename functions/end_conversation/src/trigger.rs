//! The threshold trigger: an asynchronous invoke of the feedback function for the tenant whose
//! ended count reached a multiple of `FEEDBACK_EVERY` (see `salesloop::clients::lambda`). On
//! failure the scheduled run catches up (the end marked the tenant pending), so a failure is
//! logged, never raised.

use salesloop::TenantId;
use salesloop::clients::lambda::Invoker;
pub use salesloop::clients::lambda::{INVOKE_TIMEOUT, InvokeError as TriggerError};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Trigger {
    invoker: Invoker,
}

impl Trigger {
    pub fn new(invoker: Invoker) -> Trigger {
        Trigger { invoker }
    }

    /// The client for AWS: region and credentials from the environment (the function's role).
    pub fn aws(
        shared: &salesloop::clients::aws::SdkConfig,
        function: impl Into<String>,
    ) -> Trigger {
        Trigger::new(Invoker::aws(shared, function))
    }

    /// A client for a local invoke API (cargo lambda watch, or a test server).
    pub fn local(endpoint: &str, function: impl Into<String>, detach: bool) -> Trigger {
        Trigger::new(Invoker::local(endpoint, function, detach))
    }

    pub fn function(&self) -> &str {
        self.invoker.function()
    }

    /// Asks for a feedback run of `tenant`. Errors are returned for the caller to log.
    pub async fn fire(&self, tenant: &TenantId, ended_count: u64) -> Result<(), TriggerError> {
        let payload = json!({
            "source": "salesloop.end_conversation",
            "tenant": tenant,
            "ended_count": ended_count,
        });
        self.invoker.invoke(&payload).await
    }
}

//! CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns into metrics,
//! with no API call and no extra latency. A line holds one set of dimensions; its metric values
//! and properties sit at the top level beside the `_aws` directive.

use serde_json::{Map, Value, json};

use crate::domain::time::Millis;

pub const NAMESPACE: &str = "salesloop";

/// One EMF document under construction.
#[derive(Debug, Clone)]
pub struct Emf {
    dimensions: Vec<String>,
    metrics: Vec<Value>,
    fields: Map<String, Value>,
    at: Millis,
}

impl Emf {
    pub fn new(at: Millis) -> Emf {
        Emf {
            dimensions: Vec::new(),
            metrics: Vec::new(),
            fields: Map::new(),
            at,
        }
    }

    /// Adds a dimension (metrics are aggregated per distinct value).
    pub fn dimension(mut self, name: &str, value: &str) -> Emf {
        self.dimensions.push(name.to_owned());
        self.fields.insert(name.to_owned(), json!(value));
        self
    }

    /// Adds a metric; non-finite values are left out (CloudWatch refuses them).
    pub fn metric(mut self, name: &str, unit: &str, value: f64) -> Emf {
        if value.is_finite() {
            self.metrics.push(json!({"Name": name, "Unit": unit}));
            self.fields.insert(name.to_owned(), json!(value));
        }
        self
    }

    /// Adds a property: searchable in the log, not a metric.
    pub fn property(mut self, name: &str, value: Value) -> Emf {
        self.fields.insert(name.to_owned(), value);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut document = self.fields.clone();
        document.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": self.at.0,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [self.dimensions],
                    "Metrics": self.metrics,
                }],
            }),
        );
        Value::Object(document)
    }
}

/// The EMF document process_message prints for an answer the store could not record, by
/// where the exchange went: `ExchangesSpooled` to the spool, `ExchangesLogged` to the log
/// (the last resort, which an alarm watches: docs/spool.md).
pub fn unrecorded_exchange(logged: bool) -> Value {
    let name = if logged {
        "ExchangesLogged"
    } else {
        "ExchangesSpooled"
    };
    Emf::new(Millis::now())
        .dimension("Function", "process_message")
        .metric(name, "Count", 1.0)
        .to_json()
}

/// The EMF line an API function prints per request: its latency, and whether it answered with
/// a client error (4xx) or a server error (5xx), per function.
pub fn request_metrics(function: &str, status: u16, latency: std::time::Duration) -> Value {
    Emf::new(Millis::now())
        .dimension("Function", function)
        .metric("Latency", "Milliseconds", latency.as_secs_f64() * 1000.0)
        .metric(
            "ClientErrors",
            "Count",
            f64::from(u8::from((400..500).contains(&status))),
        )
        .metric("ServerErrors", "Count", f64::from(u8::from(status >= 500)))
        .property("status", json!(status))
        .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_each_metric_and_carries_its_value() {
        let doc = Emf::new(Millis(1_700_000_000_000))
            .dimension("Tenant", "acme")
            .metric("EventTrackingRate", "None", 1.0)
            .metric("Broken", "None", f64::NAN)
            .property("version", json!(3))
            .to_json();
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Tenant"]]));
        assert_eq!(directive["Metrics"].as_array().unwrap().len(), 1);
        assert_eq!(doc["EventTrackingRate"], 1.0);
        assert_eq!(doc["Tenant"], "acme");
        assert!(doc.get("Broken").is_none());
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000u64);
    }

    #[test]
    fn request_metrics_count_errors_by_class() {
        let doc = request_metrics(
            "process_message",
            503,
            std::time::Duration::from_micros(1500),
        );
        assert_eq!(doc["Latency"], 1.5);
        assert_eq!(doc["ServerErrors"], 1.0);
        assert_eq!(doc["ClientErrors"], 0.0);
        assert_eq!(doc["Function"], "process_message");
    }
}

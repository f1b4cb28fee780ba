//! Counts the requests a DynamoDB client sends, by operation (retries included): what a
//! message or a feedback run costs in requests is read off the wire, not off the code. It also
//! asks every Query and GetItem for the capacity it consumed (`ReturnConsumedCapacity`) and adds
//! up what the answers say: the read units of a read, as the server counts them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};

#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, u64>>>, Arc<Mutex<f64>>);

impl Requests {
    pub fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().expect("counts"))
    }

    /// The read units the Queries and GetItems since the last call consumed, as their answers
    /// report them.
    pub fn take_read_units(&self) -> f64 {
        std::mem::take(&mut *self.1.lock().expect("units"))
    }
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        if let Some(query) = input.downcast_mut::<QueryInput>() {
            query.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
        } else if let Some(get) = input.downcast_mut::<GetItemInput>() {
            get.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let consumed: Option<&ConsumedCapacity> = output
            .downcast_ref::<QueryOutput>()
            .and_then(|o| o.consumed_capacity())
            .or_else(|| {
                output
                    .downcast_ref::<GetItemOutput>()
                    .and_then(|o| o.consumed_capacity())
            });
        if let Some(units) = consumed.and_then(|c| c.capacity_units()) {
            *self.1.lock().expect("units") += units;
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown")
            .to_owned();
        *self.0.lock().expect("counts").entry(operation).or_default() += 1;
        Ok(())
    }
}

/// A client of DynamoDB Local at `endpoint` that counts its requests into `requests`.
pub fn client(endpoint: &str, requests: &Requests) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "bench"))
        .interceptor(requests.clone())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value (strings and
/// binaries by their bytes; numbers about one byte per two digits plus one; booleans and nulls
/// one byte; lists and maps three bytes plus one per element plus their elements).
pub fn item_size(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    match value {
        V::S(s) => s.len(),
        V::N(n) => {
            let digits = n.trim_start_matches('-').replace('.', "");
            let significant = digits
                .trim_start_matches('0')
                .trim_end_matches('0')
                .len()
                .max(1);
            significant.div_ceil(2) + 1
        }
        V::B(b) => b.as_ref().len(),
        V::Bool(_) | V::Null(_) => 1,
        V::Ss(v) => v.iter().map(String::len).sum(),
        V::Ns(v) => v.iter().map(|n| value_size(&V::N(n.clone()))).sum(),
        V::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        V::L(v) => 3 + v.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        V::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

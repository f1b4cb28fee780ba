//! Clients of outside services, built once per process: the AWS SDK's shared configuration and
//! the optional LLM that writes replies.

pub mod aws;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod llm;
pub mod sqs;

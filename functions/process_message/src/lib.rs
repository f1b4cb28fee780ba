//! process_message as a library, so that the workspace's tests drive its handler directly.

pub mod handler;
pub mod llm_key;

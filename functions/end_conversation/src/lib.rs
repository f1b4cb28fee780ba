//! end_conversation as a library, so that the workspace's tests drive its handler directly.

pub mod handler;
pub mod labels;
pub mod trigger;

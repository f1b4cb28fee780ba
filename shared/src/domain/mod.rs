//! The rules of salesloop, without I/O: a module here reads and returns values, and imports no
//! store, HTTP or AWS crate. Lower modules first: ids, time and random depend on nothing;
//! `model` (what decisions read) sits below `learning` (what a feedback run writes).

pub mod config;
pub mod conversation;
pub mod decision;
pub mod detector;
pub mod engine;
pub mod events;
pub mod experiments;
pub mod ids;
pub mod labels;
pub mod learning;
pub mod model;
pub mod patterns;
pub mod privacy;
pub mod random;
pub mod spool;
pub mod stats;
pub mod time;

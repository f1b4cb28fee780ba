//! read_api as a library: the read routes' handler, generic over the store so tests drive it
//! with either adapter.

pub mod handler;

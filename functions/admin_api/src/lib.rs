//! admin_api as a library: the admin routes' handler, generic over the store so tests drive it
//! with either adapter.

pub mod handler;

//! What the functions face: HTTP requests and answers, the API's error mapping, EMF metric
//! lines, and each function's settings read from the environment once at start-up.

pub mod admin;
pub mod dashboard;
pub mod emf;
pub mod error;
pub mod http;
pub mod settings;

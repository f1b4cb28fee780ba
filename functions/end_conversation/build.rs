//! On Linux the bootstrap is linked at a fixed address: see `docs/operations.md` ("Start-up")
//! for why, and what it trades.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

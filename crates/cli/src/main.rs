//! The `synod` binary.
mod seeds;
fn main() {}

//! Placeholder for the stress and soak driver (issue 3).
fn main() {}

//! The Shoal node daemon

fn main() {}

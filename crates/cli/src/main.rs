//! The shoal CLI

fn main() {}

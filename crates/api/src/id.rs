//! Object IDs in Docker's style: 25 lowercase base-36 characters, shown
//! truncated to 12 in tables.

use rand::RngExt;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A fresh random 25-character ID.
pub fn new_id() -> String {
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The 12-character prefix shown in tables.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_docker_shaped() {
        let a = super::new_id();
        assert_eq!(a.len(), 25);
        assert!(a.bytes().all(|b| super::ALPHABET.contains(&b)));
        assert_ne!(a, super::new_id());
        assert_eq!(super::short(&a).len(), 12);
    }
}

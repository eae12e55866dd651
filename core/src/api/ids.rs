//! Object ids: 25 characters of base 36, as swarmkit's `identity.NewID`, drawn from the runtime rng.

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 25;

/// A fresh random id (deterministic under the simulator's seed).
pub fn new_id() -> String {
    (0..ID_LEN).map(|_| ALPHABET[(crate::env::runtime::random_u64() % 36) as usize] as char).collect()
}

/// The 12-character prefix Docker shows in tables.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((cut, _)) => &id[..cut],
        None => id,
    }
}

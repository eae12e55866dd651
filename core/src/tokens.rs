//! Join tokens in Swarm's shape: `SWMTKN-1-<root CA digest, 50 base-36 chars>-<secret, 25 base-36 chars>`
//! (swarmkit `ca/config.go`). The digest pins the cluster CA; the secret says which role the token grants.
//! In the daemon the digest is [`digest_from_sha256`] of the cluster CA certificate, which a joining node
//! checks before it trusts the CA it is handed; in the simulator it is a random placeholder.

use crate::api::{Cluster, NodeRole};
use crate::dispatcher::DispatcherError;

const PREFIX: &str = "SWMTKN-1-";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

fn base36(len: usize) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len).map(|_| ALPHABET[(crate::env::runtime::random_u64() % 36) as usize] as char).collect()
}

/// A fresh root-CA digest placeholder for clusters without a real CA (the simulator), in token form.
pub fn new_digest() -> String {
    base36(DIGEST_LEN)
}

/// A CA certificate's SHA-256 in token form, as swarmkit writes it: the 256-bit number in base 36,
/// zero-padded to 50 digits (36^50 > 2^256, so every digest fits).
pub fn digest_from_sha256(sha256: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // Long division of the big-endian number by 36, least significant digit first.
    let mut number = sha256.to_vec();
    let mut digits = Vec::with_capacity(DIGEST_LEN);
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 36) as u8;
            remainder = value % 36;
        }
        digits.push(ALPHABET[remainder as usize]);
    }
    digits.resize(DIGEST_LEN.max(digits.len()), b'0');
    digits.iter().rev().map(|&d| d as char).collect()
}

/// A new token for a cluster whose CA digest is `digest`.
pub fn generate(digest: &str) -> String {
    format!("{PREFIX}{digest}-{}", base36(SECRET_LEN))
}

/// Split a token into (digest, secret), refusing anything not in Swarm's shape.
pub fn parse(token: &str) -> Result<(&str, &str), DispatcherError> {
    let invalid = || DispatcherError::InvalidToken("invalid join token".into());
    let rest = token.strip_prefix(PREFIX).ok_or_else(invalid)?;
    let (digest, secret) = rest.split_once('-').ok_or_else(invalid)?;
    let is_base36 = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    if digest.len() != DIGEST_LEN || secret.len() != SECRET_LEN || !is_base36(digest) || !is_base36(secret) {
        return Err(invalid());
    }
    Ok((digest, secret))
}

/// The role `token` grants in `cluster`, or a refusal that says why.
pub fn check(token: &str, cluster: &Cluster) -> Result<NodeRole, DispatcherError> {
    let (digest, _) = parse(token)?;
    if digest != cluster.root_ca_digest {
        return Err(DispatcherError::InvalidToken(format!(
            "remote CA does not match fingerprint: the token was made for another swarm (expected CA digest {})",
            &cluster.root_ca_digest
        )));
    }
    if token == cluster.manager_join_token {
        Ok(NodeRole::Manager)
    } else if token == cluster.worker_join_token {
        Ok(NodeRole::Worker)
    } else {
        Err(DispatcherError::InvalidToken(
            "A valid join token is necessary to join this cluster: this token is not current (was it rotated?). \
             Get one with `shoal swarm join-token worker` on a manager."
                .into(),
        ))
    }
}

// Plain tests: the rng outside a simulation is madsim's only in the normal build.
#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let digest = new_digest();
        Cluster {
            id: "c".into(),
            meta: Default::default(),
            spec: Default::default(),
            worker_join_token: generate(&digest),
            manager_join_token: generate(&digest),
            root_ca_pem: String::new(),
            root_ca_digest: digest,
            root_ca_key_pem: String::new(),
            unlock_key: None,
            root_rotation: None,
        }
    }

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let c = cluster();
        assert_eq!(check(&c.worker_join_token, &c).unwrap(), NodeRole::Worker);
        assert_eq!(check(&c.manager_join_token, &c).unwrap(), NodeRole::Manager);
        let other = cluster();
        let err = check(&other.worker_join_token, &c).unwrap_err();
        assert!(err.to_string().contains("remote CA does not match"), "{err}");
        let stale = generate(&c.root_ca_digest);
        assert!(check(&stale, &c).unwrap_err().to_string().contains("A valid join token is necessary"));
        for bad in ["foobaz", "SWMTKN-1-abc-def", "", "SWMTKN-2-x"] {
            assert_eq!(check(bad, &c).unwrap_err().to_string(), "invalid join token");
        }
        assert_eq!(c.worker_join_token.len(), 9 + 50 + 1 + 25);
    }

    #[test]
    fn sha256_digests_take_the_token_shape() {
        assert_eq!(digest_from_sha256(&[0; 32]), "0".repeat(50));
        let mut one = [0u8; 32];
        one[31] = 37;
        assert_eq!(digest_from_sha256(&one), format!("{}11", "0".repeat(48)));
        let max = digest_from_sha256(&[0xff; 32]);
        assert_eq!(max.len(), 50);
        // 2^256 - 1 in base 36, as Go's big.Int.Text(36) writes it.
        assert_eq!(max, "6dp5qcb22im238nr3wvp0ic7q99w035jmy2iw7i6n43d37jtof");
        let token = generate(&max);
        assert_eq!(parse(&token).unwrap().0, max);
    }
}

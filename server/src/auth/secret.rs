//! Random secrets and how they are stored: refresh tokens and personal access tokens are random
//! bytes in base64url, kept only as their SHA-256.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// `bytes` random bytes, base64url.
pub(super) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not something a server can work around.
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// SHA-256 of a token: what storage keeps.
pub(super) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

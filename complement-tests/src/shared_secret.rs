//! The MAC of Synapse-compatible shared-secret registration
//! (`POST /_synapse/admin/v1/register`).

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The hex HMAC-SHA1, keyed with the shared secret, of
/// `nonce NUL username NUL password NUL ("admin" | "notadmin")`.
pub fn shared_secret_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC
    // would simply be rejected by the server.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(username.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independently_computed_digest() {
        // HMAC-SHA1(key = "secret", "n\0u\0p\0admin"), computed with
        // Python's hmac module.
        assert_eq!(
            shared_secret_mac("secret", "n", "u", "p", true),
            "f393a2fa070427923635b76f35737172331c3aef"
        );
        assert_ne!(
            shared_secret_mac("secret", "n", "u", "p", true),
            shared_secret_mac("secret", "n", "u", "p", false)
        );
    }
}

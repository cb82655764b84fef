//! Opaque secret tokens: generation and the hash under which they are stored.
//!
//! A token is 256 random bits, URL-safe base64 without padding, behind a short prefix naming
//! its kind (`axa_` access, `axr_` refresh, `axl_` login), which makes leaked tokens easy to
//! recognise in logs and secret scanners. Only the SHA-256 of a token is stored, as the table
//! key: a copy of the database does not hand out working tokens.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::storage::{DecodeError, KeyCodec};

/// What a token is for; decides its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Authenticates client requests.
    Access,
    /// Exchanged for a new access token.
    Refresh,
    /// Single-use `m.login.token`.
    Login,
}

impl TokenKind {
    /// The prefix of tokens of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Access => "axa_",
            Self::Refresh => "axr_",
            Self::Login => "axl_",
        }
    }
}

/// A new random token of `kind`.
pub fn generate_token(kind: TokenKind) -> String {
    let mut bytes = [0_u8; 32];
    // The thread-local generator is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(4 + 43);
    token.push_str(kind.prefix());
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// The SHA-256 of a token's text: what is stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The stored form of a token: its SHA-256. A fixed-length key (32 raw bytes) and, inside
/// JSON records, a hex string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash of `token`.
    pub fn of(token: &str) -> Self {
        Self(hash_token(token))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to tell hashes apart in logs.
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

impl KeyCodec for TokenHash {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let (head, rest) = input
            .split_first_chunk::<32>()
            .ok_or_else(|| DecodeError("token hash key shorter than 32 bytes".to_owned()))?;
        *input = rest;
        Ok(Self(*head))
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn tokens_have_their_prefix_and_256_bits() {
        for kind in [TokenKind::Access, TokenKind::Refresh, TokenKind::Login] {
            let token = generate_token(kind);
            let body = token.strip_prefix(kind.prefix()).unwrap();
            assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
            assert!(
                body.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        assert_eq!(generate_token(TokenKind::Access).len(), 4 + 43);
    }

    #[test]
    fn tokens_do_not_repeat() {
        let tokens: HashSet<_> = (0..1000)
            .map(|_| generate_token(TokenKind::Access))
            .collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            hex::encode(hash_token("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(TokenHash::of("abc").0, hash_token("abc"));
    }

    #[test]
    fn token_hash_round_trips_as_key_and_json() {
        let hash = TokenHash::of("axa_x");
        assert_eq!(hash.to_key_bytes(), hash.0.to_vec());
        assert_eq!(TokenHash::from_key_bytes(&hash.to_key_bytes()), Ok(hash));
        assert!(TokenHash::from_key_bytes(&[0; 31]).is_err());
        assert!(TokenHash::from_key_bytes(&[0; 33]).is_err());
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hex::encode(hash.0)));
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<TokenHash>("\"abcd\"").is_err());
    }
}

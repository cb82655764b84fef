//! The one order-preserving key codec, and the value codecs.
//!
//! Keys are compared byte-wise by every backend, so the encoding must sort exactly as the
//! values do: unsigned integers are big-endian; signed integers have their sign bit flipped;
//! strings and byte strings escape `0x00` as `0x00 0xFF` and end with `0x00 0x00`, so a
//! shorter string sorts before its extensions and a tuple's encoding is a prefix of every
//! longer tuple that starts with the same elements (which is what prefix scans rely on).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a key or value could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A type that can be a key, or part of one, in its order-preserving encoding.
pub trait KeyCodec: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);

    /// Reads one value from the front of `input`, advancing it.
    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError>;

    /// The encoding of `self` on its own.
    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_key(&mut out);
        out
    }

    /// Decodes a whole key; trailing bytes are an error.
    fn from_key_bytes(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let value = Self::decode_key(&mut bytes)?;
        if bytes.is_empty() {
            Ok(value)
        } else {
            Err(DecodeError::new(format!(
                "{} trailing bytes after key",
                bytes.len()
            )))
        }
    }
}

fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or_else(|| DecodeError::new(format!("key too short: wanted {N} bytes")))?;
    *input = rest;
    Ok(*head)
}

impl KeyCodec for u64 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take::<8>(input).map(u64::from_be_bytes)
    }
}

impl KeyCodec for u32 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take::<4>(input).map(u32::from_be_bytes)
    }
}

impl KeyCodec for i64 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        // Flipping the sign bit maps i64's order onto u64's.
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        take::<8>(input).map(|bytes| (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
    }
}

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x00;

fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        out.push(byte);
        if byte == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

fn decode_bytes(input: &mut &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = *input;
    loop {
        match rest {
            [ESCAPE, TERMINATOR, tail @ ..] => {
                *input = tail;
                return Ok(out);
            }
            [ESCAPE, ESCAPED_ZERO, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [ESCAPE, other, ..] => {
                return Err(DecodeError::new(format!(
                    "bad escape 0x00 0x{other:02x} in key"
                )));
            }
            [byte, tail @ ..] => {
                out.push(*byte);
                rest = tail;
            }
            [] => return Err(DecodeError::new("unterminated string in key")),
        }
    }
}

impl KeyCodec for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_bytes(input)
    }
}

impl KeyCodec for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }

    fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(decode_bytes(input)?)
            .map_err(|err| DecodeError::new(format!("key string is not UTF-8: {err}")))
    }
}

macro_rules! tuple_key_codec {
    ($($name:ident),+) => {
        impl<$($name: KeyCodec),+> KeyCodec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }

            fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(($($name::decode_key(input)?,)+))
            }
        }
    };
}

tuple_key_codec!(A);
tuple_key_codec!(A, B);
tuple_key_codec!(A, B, C);
tuple_key_codec!(A, B, C, D);

/// Ruma's owned identifiers are keys through their string form.
macro_rules! ruma_id_key_codec {
    ($($id:ty),+ $(,)?) => {
        $(
            impl KeyCodec for $id {
                fn encode_key(&self, out: &mut Vec<u8>) {
                    encode_bytes(self.as_str().as_bytes(), out);
                }

                fn decode_key(input: &mut &[u8]) -> Result<Self, DecodeError> {
                    let text = String::decode_key(input)?;
                    <$id>::try_from(text)
                        .map_err(|err| DecodeError::new(format!("bad identifier in key: {err}")))
                }
            }
        )+
    };
}

ruma_id_key_codec!(
    ruma::OwnedUserId,
    ruma::OwnedDeviceId,
    ruma::OwnedRoomId,
    ruma::OwnedEventId,
    ruma::OwnedServerName,
    ruma::OwnedRoomAliasId,
);

/// A type that can be stored as a value.
pub trait ValueCodec: Sized {
    /// The stored bytes.
    fn encode_value(&self) -> Vec<u8>;

    /// Decodes stored bytes.
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError>;
}

impl ValueCodec for Vec<u8> {
    fn encode_value(&self) -> Vec<u8> {
        self.clone()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl ValueCodec for u64 {
    fn encode_value(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError::new(format!("u64 value has {} bytes", bytes.len())))?;
        Ok(u64::from_be_bytes(array))
    }
}

impl ValueCodec for () {
    fn encode_value(&self) -> Vec<u8> {
        Vec::new()
    }

    fn decode_value(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

/// A value stored as JSON: for records whose shape evolves (serde defaults make old rows
/// readable after a field is added).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned> ValueCodec for Json<T> {
    fn encode_value(&self) -> Vec<u8> {
        // Serialising plain records to a Vec cannot fail: they hold no maps with non-string
        // keys and no failing Serialize impls.
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|err| DecodeError::new(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<K: KeyCodec>(value: K) -> Vec<u8> {
        value.to_key_bytes()
    }

    #[test]
    fn unsigned_integers_sort_numerically() {
        let values = [0_u64, 1, 255, 256, 65_535, u64::MAX / 2, u64::MAX];
        for pair in values.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{} !< {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn signed_integers_sort_numerically() {
        let values = [i64::MIN, -1_000, -1, 0, 1, 1_000, i64::MAX];
        for pair in values.windows(2) {
            assert!(key(pair[0]) < key(pair[1]), "{} !< {}", pair[0], pair[1]);
        }
        for value in values {
            assert_eq!(i64::from_key_bytes(&key(value)), Ok(value));
        }
    }

    #[test]
    fn strings_sort_like_their_bytes_and_prefixes_first() {
        let values = ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "b"];
        for pair in values.windows(2) {
            assert!(
                key(pair[0].to_owned()) < key(pair[1].to_owned()),
                "{:?} !< {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn strings_with_zero_bytes_round_trip() {
        for value in ["", "plain", "a\0b", "\0", "\u{ff}\0\u{ff}"] {
            assert_eq!(
                String::from_key_bytes(&key(value.to_owned())),
                Ok(value.to_owned())
            );
        }
    }

    #[test]
    fn tuple_key_starts_with_its_prefix_tuple() {
        let full = key(("@alice:example.org".to_owned(), "DEVICE".to_owned()));
        let prefix = key(("@alice:example.org".to_owned(),));
        assert!(full.starts_with(&prefix));
        // A longer user id is not caught by the shorter one's prefix.
        let other = key(("@alice:example.org.evil".to_owned(), "X".to_owned()));
        assert!(!other.starts_with(&prefix));
    }

    #[test]
    fn tuples_sort_element_by_element() {
        let a = key(("a".to_owned(), 2_u64));
        let b = key(("a".to_owned(), 10_u64));
        let c = key(("ab".to_owned(), 0_u64));
        assert!(a < b && b < c);
        assert_eq!(
            <(String, u64)>::from_key_bytes(&b),
            Ok(("a".to_owned(), 10))
        );
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        assert!(u64::from_key_bytes(&[1, 2, 3]).is_err());
        assert!(String::from_key_bytes(b"abc").is_err());
        assert!(String::from_key_bytes(&[b'a', 0, 7]).is_err());
        assert!(u64::from_key_bytes(&[0; 9]).is_err());
        assert!(String::from_key_bytes(&[0xC3, 0x28, 0, 0]).is_err());
    }

    #[test]
    fn ruma_ids_round_trip() {
        let user = ruma::OwnedUserId::try_from("@alice:example.org").unwrap();
        assert_eq!(
            ruma::OwnedUserId::from_key_bytes(&key(user.clone())),
            Ok(user)
        );
    }

    #[test]
    fn json_values_round_trip_and_reject_garbage() {
        let value = Json(vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            Json::<Vec<String>>::decode_value(&value.encode_value()),
            Ok(value)
        );
        assert!(Json::<Vec<String>>::decode_value(b"{").is_err());
        assert_eq!(u64::decode_value(&7_u64.encode_value()), Ok(7));
        assert!(u64::decode_value(&[1]).is_err());
    }
}

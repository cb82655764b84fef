//! The server's ed25519 signing key: created on first start, kept in the data directory.
//!
//! The key file holds one line, `ed25519 <version> <unpadded base64 of the PKCS#8 document>`,
//! readable only by its owner. Losing it means other servers see a new identity, so it is
//! written atomically (temporary file, fsync, rename) and never rewritten once present.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use rand::distr::Alphanumeric;
use ruma::room_version_rules::RedactionRules;
use ruma::signatures::{Ed25519KeyPair, KeyPair};
use ruma::{CanonicalJsonObject, OwnedServerName, OwnedServerSigningKeyId, ServerName};

/// The file name of the signing key inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// What can go wrong loading or creating the signing key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file exists but does not hold a valid key.
    #[error("signing key file {path} is malformed: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Signing a JSON object failed (the object was not signable).
    #[error("cannot sign JSON: {0}")]
    Signing(String),
}

/// The server's signing key and the name it signs for.
pub struct ServerKeys {
    server_name: OwnedServerName,
    key_pair: Ed25519KeyPair,
    key_id: OwnedServerSigningKeyId,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("ServerKeys")
            .field("server_name", &self.server_name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ServerKeys {
    /// Loads the key from `data_dir`, creating one the first time.
    pub fn load_or_create(data_dir: &Path, server_name: &ServerName) -> Result<Self, KeyError> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        if !path.exists() {
            write_new_key_file(&path)?;
            tracing::info!(path = %path.display(), "created a new server signing key");
        }
        Self::load(&path, server_name)
    }

    /// Loads the key from `path`.
    pub fn load(path: &Path, server_name: &ServerName) -> Result<Self, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let mut fields = text.split_whitespace();
        let (Some(algorithm), Some(version), Some(encoded), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(
                "expected `ed25519 <version> <base64 key>`".to_owned(),
            ));
        };
        if algorithm != "ed25519" {
            return Err(malformed(format!("unsupported algorithm {algorithm:?}")));
        }
        let key_id = OwnedServerSigningKeyId::try_from(format!("ed25519:{version}"))
            .map_err(|err| malformed(format!("bad key version {version:?}: {err}")))?;
        let document = STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|err| malformed(format!("bad base64: {err}")))?;
        let key_pair = Ed25519KeyPair::from_der(&document, version.to_owned())
            .map_err(|err| malformed(err.to_string()))?;
        Ok(Self {
            server_name: server_name.to_owned(),
            key_pair,
            key_id,
        })
    }

    /// The server name the key signs for.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The key id, `ed25519:<version>`.
    pub fn key_id(&self) -> &OwnedServerSigningKeyId {
        &self.key_id
    }

    /// The public key, unpadded base64 as the spec writes keys.
    pub fn public_key_base64(&self) -> String {
        STANDARD_NO_PAD.encode(self.key_pair.public_key())
    }

    /// Adds this server's signature to `object` (over its canonical JSON without `signatures`
    /// and `unsigned`).
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<(), KeyError> {
        ruma::signatures::sign_json(self.server_name.as_str(), &self.key_pair, object)
            .map_err(|err| KeyError::Signing(err.to_string()))
    }

    /// Adds the content hash (`hashes.sha256`) and this server's signature to a new PDU.
    ///
    /// The signature covers the event as redacted by `redaction_rules` (the rules of the event's
    /// room version), so it stays valid after the event is redacted.
    pub fn hash_and_sign_event(
        &self,
        event: &mut CanonicalJsonObject,
        redaction_rules: &RedactionRules,
    ) -> Result<(), KeyError> {
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.key_pair,
            event,
            redaction_rules,
        )
        .map_err(|err| KeyError::Signing(err.to_string()))
    }

    /// A raw signature of `message`, for callers that build their own signed structures.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_bytes().to_vec()
    }
}

fn write_new_key_file(path: &Path) -> Result<(), KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let version: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(8)
        .map(char::from)
        .collect();
    let document = Ed25519KeyPair::generate();
    let line = format!(
        "ed25519 a_{version} {}\n",
        STANDARD_NO_PAD.encode(&*document)
    );

    let temporary = path.with_extension("key.tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary).map_err(io_error)?;
    file.write_all(line.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error)?;
    if let Some(parent) = path.parent() {
        // Make the rename itself durable.
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use ruma::signatures::{PublicKeyMap, PublicKeySet, verify_json};

    use super::*;

    #[test]
    fn key_is_created_once_and_reloaded_identically() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerKeys::load_or_create(dir.path(), server_name!("example.org")).unwrap();
        let second = ServerKeys::load_or_create(dir.path(), server_name!("example.org")).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.public_key_base64(), second.public_key_base64());
        assert!(first.key_id().as_str().starts_with("ed25519:a_"));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        ServerKeys::load_or_create(dir.path(), server_name!("example.org")).unwrap();
        let mode = fs::metadata(dir.path().join(SIGNING_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn signatures_verify_with_the_published_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(dir.path(), server_name!("example.org")).unwrap();
        let mut object: CanonicalJsonObject =
            serde_json::from_str(r#"{"server_name":"example.org","b":[1,2]}"#).unwrap();
        keys.sign_json(&mut object).unwrap();

        let mut key_set = PublicKeySet::new();
        key_set.insert(
            keys.key_id().to_string(),
            ruma::serde::Base64::parse(keys.public_key_base64()).unwrap(),
        );
        let mut key_map = PublicKeyMap::new();
        key_map.insert("example.org".to_owned(), key_set);
        verify_json(&key_map, &object).unwrap();

        object.insert("b".to_owned(), ruma::CanonicalJsonValue::Bool(true));
        assert!(
            verify_json(&key_map, &object).is_err(),
            "a changed object must not verify"
        );
    }

    #[test]
    fn malformed_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SIGNING_KEY_FILE);
        for contents in [
            "",
            "ed25519 a_x",
            "rsa a_x AAAA",
            "ed25519 a_x !!!",
            "ed25519 a_x AAAA",
        ] {
            fs::write(&path, contents).unwrap();
            let err = ServerKeys::load(&path, server_name!("example.org")).unwrap_err();
            assert!(
                matches!(err, KeyError::Malformed { .. }),
                "{contents:?} gave {err}"
            );
        }
    }
}

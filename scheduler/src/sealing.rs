//! Secrets sealed at rest: XChaCha20-Poly1305 (authenticated encryption, a random 24-byte nonce
//! per value, so random nonces never repeat in practice) under a 32-byte key read from a file of
//! its base64. A sealed value names the key that sealed it, so a server given a new key and its
//! previous ones reads everything and re-seals it under the new one at start-up (`Store::reseal`).
//!
//! Sealed form: `batchctl-sealed:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`. The key id is
//! the first 8 hex digits of the SHA-256 of a label and the key: it tells keys apart and says
//! nothing of the key.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::core::secret::SecretText;

const PREFIX: &str = "batchctl-sealed:v1:";
const NONCE_BYTES: usize = 24;

/// How to make a key, for every message that needs one.
pub const HOW_TO_MAKE_A_KEY: &str = "make a key with `head -c 32 /dev/urandom | base64 > secret.key` (keep it private: chmod 600) and start the server with --secret-key-file secret.key or BATCHCTL_SECRET_KEY_FILE";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the secret key file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the secret key file {path} does not hold 32 bytes in base64 ({found}); {HOW_TO_MAKE_A_KEY}")]
    Malformed { path: PathBuf, found: String },
    #[error("--previous-secret-key-file {path} is the current key; name only keys that are being replaced")]
    Repeated { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("it was sealed with key {key_id}, which this server was not given; start it with that key as --secret-key-file or --previous-secret-key-file")]
    UnknownKey { key_id: String },
    #[error(
        "its sealed form is damaged or was not sealed with key {key_id} (authentication failed)"
    )]
    Damaged { key_id: String },
    #[error("its sealed form is not readable ({0})")]
    Malformed(&'static str),
}

/// One key: its id, its cipher, and the key of the digests (`digest`).
struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
    digest_key: [u8; 32],
}

impl SecretKey {
    fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        let id = hex_of(
            &Sha256::new_with_prefix(b"batchctl key id\0")
                .chain_update(bytes)
                .finalize()[..4],
        );
        let digest_key: [u8; 32] = Sha256::new_with_prefix(b"batchctl digest key\0")
            .chain_update(bytes)
            .finalize()
            .into();
        SecretKey {
            id,
            cipher: XChaCha20Poly1305::new(bytes.into()),
            digest_key,
        }
    }
}

/// The server's key and the keys it is moving away from.
pub struct Keyring {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|key| &key.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// Reads the current key file and the previous ones.
    pub fn load(current: &Path, previous: &[PathBuf]) -> Result<Keyring, KeyError> {
        let current_key = read_key(current)?;
        let mut previous_keys = Vec::with_capacity(previous.len());
        for path in previous {
            let key = read_key(path)?;
            if key.id == current_key.id {
                return Err(KeyError::Repeated { path: path.clone() });
            }
            previous_keys.push(key);
        }
        Ok(Keyring {
            current: current_key,
            previous: previous_keys,
        })
    }

    /// A keyring of raw keys, the first current (tests and benches).
    pub fn from_keys(current: &[u8; 32], previous: &[[u8; 32]]) -> Keyring {
        Keyring {
            current: SecretKey::from_bytes(current),
            previous: previous.iter().map(SecretKey::from_bytes).collect(),
        }
    }

    /// The id of the key new values are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    /// `value` sealed under the current key, with a fresh random nonce.
    pub fn seal(&self, value: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, value.as_bytes())
            .expect("XChaCha20-Poly1305 seals any value that fits in memory");
        let mut sealed = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(sealed))
    }

    /// The value a `seal` made, with any key of the ring.
    pub fn unseal(&self, sealed: &str) -> Result<SecretText, UnsealError> {
        let (key_id, body) =
            sealed_parts(sealed).ok_or(UnsealError::Malformed("no sealed prefix"))?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or_else(|| UnsealError::UnknownKey {
                key_id: key_id.to_string(),
            })?;
        let bytes = STANDARD
            .decode(body)
            .map_err(|_| UnsealError::Malformed("not base64"))?;
        if bytes.len() < NONCE_BYTES {
            return Err(UnsealError::Malformed("too short"));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| UnsealError::Damaged {
                key_id: key_id.to_string(),
            })?;
        String::from_utf8(plain)
            .map(SecretText::new)
            .map_err(|_| UnsealError::Malformed("not UTF-8"))
    }

    /// Whether `stored` is sealed under the current key (false for any other key, and for a
    /// value stored before values were sealed).
    pub fn is_current(&self, stored: &str) -> bool {
        sealed_parts(stored).is_some_and(|(key_id, _)| key_id == self.current.id)
    }

    /// A keyed digest of `value` (HMAC-SHA-256 under a key derived from the current key), kept in
    /// a row's spec as applied in place of the value: equal values give equal digests, so
    /// applying the same secret again is "unchanged", and without the key the digest tells
    /// nothing about the value.
    pub fn digest(&self, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.current.digest_key)
            .expect("HMAC takes a key of any length");
        mac.update(value.as_bytes());
        format!(
            "(sealed, digest {})",
            hex_of(&mac.finalize().into_bytes()[..12])
        )
    }
}

/// Whether a stored value is in the sealed form (rather than a value stored before sealing).
pub fn is_sealed(stored: &str) -> bool {
    sealed_parts(stored).is_some()
}

fn sealed_parts(stored: &str) -> Option<(&str, &str)> {
    stored.strip_prefix(PREFIX)?.split_once(':')
}

fn read_key(path: &Path) -> Result<SecretKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    warn_if_readable_by_others(path);
    let malformed = |found: String| KeyError::Malformed {
        path: path.to_path_buf(),
        found,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| malformed("not base64".into()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| malformed(format!("{} bytes", bytes.len())))?;
    Ok(SecretKey::from_bytes(&bytes))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode();
        // Group-readable is how Kubernetes hands a Secret to a pod's group (fsGroup); readable by
        // everyone is not.
        if mode & 0o007 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the secret key file can be read by any user; chmod 600 it");
        }
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: [u8; 32] = [7; 32];
    const NEW: [u8; 32] = [9; 32];

    #[test]
    fn seals_and_unseals_under_any_key_of_the_ring() {
        let old = Keyring::from_keys(&OLD, &[]);
        let sealed = old.seal("hunter2-hunter2");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            old.seal("hunter2-hunter2"),
            "a fresh nonce each time"
        );
        assert_eq!(old.unseal(&sealed).unwrap().expose(), "hunter2-hunter2");
        assert!(old.is_current(&sealed));

        let rotated = Keyring::from_keys(&NEW, &[OLD]);
        assert_eq!(rotated.unseal(&sealed).unwrap().expose(), "hunter2-hunter2");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal("x")));

        let new_only = Keyring::from_keys(&NEW, &[]);
        assert!(matches!(
            new_only.unseal(&sealed),
            Err(UnsealError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_changed_byte_is_refused() {
        let ring = Keyring::from_keys(&OLD, &[]);
        let sealed = ring.seal("value");
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(body).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = format!("{head}:{}", STANDARD.encode(bytes));
        assert!(matches!(
            ring.unseal(&tampered),
            Err(UnsealError::Damaged { .. })
        ));
        assert!(matches!(
            ring.unseal("plain"),
            Err(UnsealError::Malformed(_))
        ));
    }

    #[test]
    fn digests_are_stable_per_key_and_hide_the_value() {
        let ring = Keyring::from_keys(&OLD, &[]);
        assert_eq!(ring.digest("value"), ring.digest("value"));
        assert_ne!(ring.digest("value"), ring.digest("other"));
        assert_ne!(
            ring.digest("value"),
            Keyring::from_keys(&NEW, &[]).digest("value")
        );
        assert!(!ring.digest("value").contains("value"));
    }

    #[test]
    fn key_files() {
        let directory = tempfile::tempdir().unwrap();
        let good = directory.path().join("good.key");
        std::fs::write(&good, format!("{}\n", STANDARD.encode(OLD))).unwrap();
        let short = directory.path().join("short.key");
        std::fs::write(&short, STANDARD.encode([1u8; 16])).unwrap();
        assert!(Keyring::load(&good, &[]).is_ok());
        let error = Keyring::load(&short, &[]).unwrap_err().to_string();
        assert!(
            error.contains("16 bytes") && error.contains("head -c 32"),
            "{error}"
        );
        assert!(matches!(
            Keyring::load(&good, std::slice::from_ref(&good)),
            Err(KeyError::Repeated { .. })
        ));
        assert!(Keyring::load(&directory.path().join("missing"), &[]).is_err());
    }
}

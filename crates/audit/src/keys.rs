//! Audit keys: AES-256-GCM encryption of each event's plaintext.
//!
//! A key file (a mounted Kubernetes or Vault secret) or `TELLER_AUDIT_KEY`
//! holds one key per line as `ID:BASE64` (32 bytes once decoded); `#` starts
//! a comment. The first key encrypts; the others only decrypt, so a key can
//! rotate while older records stay readable.
//!
//! Random 96-bit GCM nonces under one key are safe only up to about 2^32
//! messages, which an audited bank service reaches in days. So each writer
//! draws a random 128-bit salt, derives its data key as
//! HKDF-SHA256(key, salt), and numbers its nonces: a nonce never repeats
//! under a data key, and data keys repeat only if salts collide.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use teller_contract::Error;
use teller_contract::ErrorCode;
use teller_contract::{AuditEvent, EncryptedEvent};

/// The environment variable that may hold the keys themselves.
pub const KEY_ENV: &str = "TELLER_AUDIT_KEY";

const HKDF_INFO: &[u8] = b"teller audit event v1";

/// The keys a teller holds; the first one encrypts.
pub struct AuditKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for AuditKeys {
    /// Names the keys, never their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("AuditKeys").field("ids", &ids).finish()
    }
}

impl AuditKeys {
    /// Reads the keys from `path`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_request(
                ErrorCode::AuditKeyUnreadable,
                format!("cannot read audit key file {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The keys from `TELLER_AUDIT_KEY`, if it is set.
    pub fn from_env() -> Result<Option<Self>, Error> {
        match std::env::var(KEY_ENV) {
            Ok(text) => Self::parse(&text, KEY_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::bad_request(
                ErrorCode::AuditKeyInvalid,
                format!("{KEY_ENV} is not valid UTF-8"),
            )),
        }
    }

    /// Parses `ID:BASE64` lines; `source` names where they came from in
    /// errors, which never quote key material.
    pub fn parse(text: &str, source: &str) -> Result<Self, Error> {
        let invalid = |line: usize, why: &str| {
            Error::bad_request(
                ErrorCode::AuditKeyInvalid,
                format!("audit key {source} line {line}: {why}"),
            )
        };
        let mut keys: Vec<(String, [u8; 32])> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, encoded) = line
                .split_once(':')
                .ok_or_else(|| invalid(i + 1, "expected ID:BASE64 (a key id, a colon, the key)"))?;
            let id = id.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(invalid(
                    i + 1,
                    "the key id must be 1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            let bytes = BASE64
                .decode(encoded.trim())
                .map_err(|_| invalid(i + 1, "the key is not valid base64"))?;
            let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                invalid(
                    i + 1,
                    &format!("an AES-256 key is 32 bytes; this one is {}", b.len()),
                )
            })?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(invalid(i + 1, &format!("key id {id:?} appears twice")));
            }
            keys.push((id.to_string(), key));
        }
        if keys.is_empty() {
            return Err(Error::bad_request(
                ErrorCode::AuditKeyInvalid,
                format!("audit key {source} holds no key (expected ID:BASE64 lines)"),
            ));
        }
        Ok(AuditKeys { keys })
    }

    /// A new random key as a key-file line.
    pub fn generate_line(id: &str) -> Result<String, Error> {
        let key = Aes256Gcm::generate_key(OsRng);
        let line = format!("{id}:{}", BASE64.encode(key));
        Self::parse(&line, "--id")?;
        Ok(line)
    }

    /// The id of the key that encrypts.
    pub fn current_id(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }

    /// A sealer for one writer: the current key, a fresh salt.
    pub fn encrypter(&self) -> Result<Encrypter, Error> {
        let (id, key) = self
            .keys
            .first()
            .ok_or_else(|| Error::internal(ErrorCode::AuditKeyInvalid, "no audit key"))?;
        let mut salt = [0u8; 16];
        OsRng.try_fill_bytes(&mut salt).map_err(|e| {
            Error::internal(
                ErrorCode::AuditKeyInvalid,
                format!("no randomness for the audit salt: {e}"),
            )
        })?;
        Ok(Encrypter {
            key_id: id.clone(),
            salt_b64: BASE64.encode(salt),
            cipher: data_cipher(key, &salt)?,
            counter: AtomicU64::new(0),
        })
    }

    /// Opens the plaintext of record `record_id`.
    pub fn decrypt(&self, record_id: &str, sealed: &EncryptedEvent) -> Result<Vec<u8>, String> {
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == sealed.key_id) else {
            let held: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
            return Err(format!(
                "it was encrypted with key {:?}, and the keys given are only {held:?}",
                sealed.key_id
            ));
        };
        let decode = |what: &str, value: &str| {
            BASE64
                .decode(value)
                .map_err(|_| format!("its {what} is not valid base64"))
        };
        let salt = decode("salt", &sealed.salt)?;
        let nonce = decode("nonce", &sealed.nonce)?;
        let ciphertext = decode("ciphertext", &sealed.ciphertext)?;
        if nonce.len() != 12 {
            return Err("its nonce is not 12 bytes".into());
        }
        let cipher = data_cipher(key, &salt).map_err(|e| e.message)?;
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad(&sealed.key_id, record_id),
                },
            )
            .map_err(|_| {
                format!(
                    "key {:?} does not open it: a different key under that id, or the record was altered",
                    sealed.key_id
                )
            })
    }
}

/// Encrypts events for one writer.
pub struct Encrypter {
    key_id: String,
    salt_b64: String,
    cipher: Aes256Gcm,
    counter: AtomicU64,
}

impl Encrypter {
    /// The event (whose `encrypted` must be `None`) as ciphertext bound to
    /// its id.
    pub fn encrypt(&self, event: &AuditEvent) -> Result<EncryptedEvent, Error> {
        let failed = |what: String| Error::internal(ErrorCode::AuditEncryptFailed, what);
        let plaintext = serde_json::to_vec(event)
            .map_err(|e| failed(format!("cannot encode the event: {e}")))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; 12];
        if let Some(tail) = nonce.get_mut(4..) {
            tail.copy_from_slice(&n.to_be_bytes());
        }
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad(&self.key_id, &event.id),
                },
            )
            .map_err(|_| failed("AES-GCM refused the event".into()))?;
        Ok(EncryptedEvent {
            key_id: self.key_id.clone(),
            salt: self.salt_b64.clone(),
            nonce: BASE64.encode(nonce),
            ciphertext: BASE64.encode(ciphertext),
        })
    }
}

fn data_cipher(key: &[u8; 32], salt: &[u8]) -> Result<Aes256Gcm, Error> {
    let mut data_key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), key)
        .expand(HKDF_INFO, &mut data_key)
        .map_err(|_| Error::internal(ErrorCode::AuditKeyInvalid, "HKDF refused the key"))?;
    Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&data_key)))
}

/// What the ciphertext is bound to: moving it to another record, or
/// relabelling its key, fails decryption.
fn aad(key_id: &str, record_id: &str) -> Vec<u8> {
    format!("{key_id}\n{record_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> AuditKeys {
        AuditKeys::parse(text, "test").unwrap()
    }

    fn event() -> AuditEvent {
        AuditEvent {
            id: "e-1".into(),
            timestamp: String::new(),
            actor: teller_contract::Actor {
                id: "u-1".into(),
                role: "r".into(),
            },
            action: "transfer".into(),
            resource: vec!["6222020200001234567".into()],
            outcome: "allow".into(),
            reasons: vec![],
            origin: teller_contract::Origin {
                client: "c".into(),
                request_id: "r".into(),
            },
            policy: None,
            policies: vec![],
            engine: "e".into(),
            details: vec![],
            encrypted: None,
        }
    }

    #[test]
    fn round_trips_and_refuses_the_wrong_key_or_record() {
        let line = AuditKeys::generate_line("k1").unwrap();
        let ring = keys(&line);
        let encrypter = ring.encrypter().unwrap();
        let sealed = encrypter.encrypt(&event()).unwrap();
        let second = encrypter.encrypt(&event()).unwrap();
        assert_ne!(sealed.nonce, second.nonce);
        assert!(!sealed.ciphertext.contains("6222020200001234567"));
        let plain = ring.decrypt("e-1", &sealed).unwrap();
        let back: AuditEvent = serde_json::from_slice(&plain).unwrap();
        assert_eq!(back.resource, ["6222020200001234567"]);

        assert!(
            ring.decrypt("e-2", &sealed)
                .unwrap_err()
                .contains("altered")
        );
        let other = keys(&AuditKeys::generate_line("k1").unwrap());
        assert!(other.decrypt("e-1", &sealed).is_err());
        let rotated = keys(&format!(
            "{}\n{line}",
            AuditKeys::generate_line("k2").unwrap()
        ));
        assert_eq!(rotated.current_id(), "k2");
        assert!(rotated.decrypt("e-1", &sealed).is_ok());
        let missing = keys(&AuditKeys::generate_line("k3").unwrap());
        assert!(
            missing
                .decrypt("e-1", &sealed)
                .unwrap_err()
                .contains("\"k1\"")
        );
    }

    #[test]
    fn bad_key_files_say_which_line_and_never_show_the_key() {
        let short = format!("k:{}", BASE64.encode([7u8; 16]));
        for (text, says) in [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("no-colon", "line 1: expected ID:BASE64"),
            ("k:!!!notbase64", "not valid base64"),
            (short.as_str(), "32 bytes; this one is 16"),
            ("bad id:AAAA", "key id must be"),
        ] {
            let err = AuditKeys::parse(text, "keys.txt").unwrap_err();
            assert!(err.message.contains(says), "{text:?}: {}", err.message);
            assert!(err.message.contains("keys.txt"), "{}", err.message);
        }
        let line = AuditKeys::generate_line("k").unwrap();
        let err = AuditKeys::parse(&format!("{line}\n{line}"), "f").unwrap_err();
        assert!(err.message.contains("line 2") && err.message.contains("twice"));
        assert!(!err.message.contains(line.split(':').nth(1).unwrap()));
    }
}

//! Function environment variable values at rest: sealed with ChaCha20-Poly1305 under a key
//! from the configuration. A sealed value reads `enc:v2:<key id>:<base64(nonce ‖ ciphertext)>`;
//! the function's name and the variable's are bound in as associated data, so a value copied
//! to another function or variable (by anyone who can write the database) does not open. The
//! key id lets old keys keep opening old values during a rotation.
//!
//! Values of the first format (`enc:v1:`) were bound to the variable's name only. They still
//! open, so that an upgrade needs no downtime, and `scheduler reseal-secrets` rewrites them in
//! the current format.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "enc:v2:";
/// Values bound to their variable's name only.
const LEGACY_PREFIX: &str = "enc:v1:";
const NONCE_BYTES: usize = 12;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// The key new values are sealed with: `<key id>:<base64 of 32 random bytes>`.
    pub key: Option<String>,
    /// Older keys, same form, comma-separated: they only open values sealed before a rotation.
    pub previous_keys: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("{key}: expected `<key id>:<base64 of 32 bytes>` ({reason})")]
    BadKey { key: &'static str, reason: String },
    #[error("the value is sealed with key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the value is sealed but no key is configured (secrets.key)")]
    NoKey,
    #[error("the sealed value is damaged, or was not sealed for this function and variable")]
    Damaged,
}

struct NamedKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

/// Seals and opens values. Without a configured key, values are stored as given (the
/// scheduler refuses that outside `auth.mode = "none"`).
#[derive(Default)]
pub struct SecretBox {
    current: Option<NamedKey>,
    previous: Vec<NamedKey>,
}

impl SecretBox {
    pub fn from_config(config: &SecretsConfig) -> Result<SecretBox, SecretError> {
        let current = config
            .key
            .as_deref()
            .map(|k| parse_key("secrets.key", k))
            .transpose()?;
        let previous = config
            .previous_keys
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| parse_key("secrets.previous_keys", k))
            .collect::<Result<_, _>>()?;
        Ok(SecretBox { current, previous })
    }

    pub fn has_key(&self) -> bool {
        self.current.is_some()
    }

    /// Seals `value` for the variable `name` of `function` with the current key (unchanged
    /// without a key).
    pub fn seal(&self, function: &str, name: &str, value: &str) -> String {
        let Some(key) = &self.current else {
            return value.to_owned();
        };
        let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
        let aad = bound_to(function, name);
        let payload = Payload {
            msg: value.as_bytes(),
            aad: aad.as_bytes(),
        };
        // Encryption cannot fail for inputs of this size; fall back to nothing rather than
        // ever storing the plain value.
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .unwrap_or_default();
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}:{}", key.id, STANDARD.encode(sealed))
    }

    /// Opens a value sealed for the variable `name` of `function`; a value that was never
    /// sealed is returned as it is.
    pub fn open(&self, function: &str, name: &str, stored: &str) -> Result<String, SecretError> {
        let (rest, aad) = if let Some(rest) = stored.strip_prefix(PREFIX) {
            (rest, bound_to(function, name))
        } else if let Some(rest) = stored.strip_prefix(LEGACY_PREFIX) {
            (rest, name.to_owned())
        } else {
            return Ok(stored.to_owned());
        };
        let (id, data) = rest.split_once(':').ok_or(SecretError::Damaged)?;
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                if self.current.is_none() && self.previous.is_empty() {
                    SecretError::NoKey
                } else {
                    SecretError::UnknownKey(id.to_owned())
                }
            })?;
        let bytes = STANDARD.decode(data).map_err(|_| SecretError::Damaged)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SecretError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SecretError::Damaged)
    }

    /// True when `stored` is not sealed with the current key in the current format (a rotation
    /// or an upgrade must reseal it).
    pub fn needs_resealing(&self, stored: &str) -> bool {
        match &self.current {
            Some(key) => !stored.starts_with(&format!("{PREFIX}{}:", key.id)),
            None => false,
        }
    }
}

/// The associated data of a value: function names hold no `/`, so no two pairs give the same.
fn bound_to(function: &str, name: &str) -> String {
    format!("{function}/{name}")
}

fn parse_key(setting: &'static str, text: &str) -> Result<NamedKey, SecretError> {
    let bad = |reason: &str| SecretError::BadKey {
        key: setting,
        reason: reason.to_owned(),
    };
    let (id, encoded) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("no key id"))?;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad("the key id must be letters, digits, - or _"));
    }
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| bad("the key is not base64"))?;
    if bytes.len() != 32 {
        return Err(bad("the key must be 32 bytes"));
    }
    Ok(NamedKey {
        id: id.to_owned(),
        cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    fn secret_box(current: &str, previous: Option<&str>) -> SecretBox {
        SecretBox::from_config(&SecretsConfig {
            key: Some(current.to_owned()),
            previous_keys: previous.map(str::to_owned),
        })
        .expect("valid keys")
    }

    #[test]
    fn sealed_values_open_and_never_show_the_plain_text() {
        let secrets = secret_box(&key("k1", 7), None);
        let sealed = secrets.seal("report", "API_KEY", "hunter2-secret");
        assert!(sealed.starts_with("enc:v2:k1:"));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            secrets.seal("report", "API_KEY", "hunter2-secret"),
            "fresh nonce"
        );
        assert_eq!(
            secrets.open("report", "API_KEY", &sealed).unwrap(),
            "hunter2-secret"
        );
    }

    #[test]
    fn a_value_moved_to_another_variable_or_function_or_tampered_with_does_not_open() {
        let secrets = secret_box(&key("k1", 7), None);
        let sealed = secrets.seal("report", "API_KEY", "v");
        assert_eq!(
            secrets.open("report", "OTHER", &sealed),
            Err(SecretError::Damaged)
        );
        assert_eq!(
            secrets.open("attacker", "API_KEY", &sealed),
            Err(SecretError::Damaged)
        );
        assert_eq!(
            secrets.open("report/API", "KEY", &sealed),
            Err(SecretError::Damaged)
        );
        let (head, data) = sealed.rsplit_once(':').unwrap();
        let mut bytes = STANDARD.decode(data).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = format!("{head}:{}", STANDARD.encode(bytes));
        assert_eq!(
            secrets.open("report", "API_KEY", &tampered),
            Err(SecretError::Damaged)
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_marks_them_for_resealing() {
        let old = secret_box(&key("k1", 1), None);
        let sealed = old.seal("f", "X", "value");
        let rotated = secret_box(&key("k2", 2), Some(&key("k1", 1)));
        assert_eq!(rotated.open("f", "X", &sealed).unwrap(), "value");
        assert!(rotated.needs_resealing(&sealed));
        assert!(rotated.needs_resealing("plain"));
        assert!(!rotated.needs_resealing(&rotated.seal("f", "X", "value")));
        let without_old = secret_box(&key("k2", 2), None);
        assert_eq!(
            without_old.open("f", "X", &sealed),
            Err(SecretError::UnknownKey("k1".to_owned()))
        );
    }

    #[test]
    fn values_of_the_first_format_open_and_are_marked_for_resealing() {
        let secrets = secret_box(&key("k1", 7), None);
        let sealed = secrets.seal("f", "X", "value");
        // The same value as the first format stored it: bound to the variable's name only.
        let legacy = {
            let data = sealed.strip_prefix("enc:v2:k1:").unwrap();
            let bytes = STANDARD.decode(data).unwrap();
            let (nonce, _) = bytes.split_at(NONCE_BYTES);
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
            let ciphertext = cipher
                .encrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: b"value",
                        aad: b"X",
                    },
                )
                .unwrap();
            format!(
                "enc:v1:k1:{}",
                STANDARD.encode([nonce, &ciphertext].concat())
            )
        };
        assert_eq!(secrets.open("f", "X", &legacy).unwrap(), "value");
        assert!(secrets.needs_resealing(&legacy));
        assert!(!secrets.needs_resealing(&sealed));
    }

    #[test]
    fn bad_keys_fail_naming_the_setting() {
        for bad in ["nokeyid", "k1:not-base64!", "k1:AAAA", ":AAAA"] {
            let error = SecretBox::from_config(&SecretsConfig {
                key: Some(bad.to_owned()),
                previous_keys: None,
            })
            .err()
            .expect("refused");
            assert!(error.to_string().contains("secrets.key"), "{error}");
        }
    }
}

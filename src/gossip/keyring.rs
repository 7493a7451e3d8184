//! The shared keys that authenticate and encrypt every gossip packet.
//!
//! A [`Keyring`] holds one *primary* key, used to encrypt what this member sends, and
//! any number of further installed keys, all tried when a packet arrives. Keys rotate
//! without downtime in three steps, each applied to every member before the next:
//! 1. [`install`](Keyring::install) the new key everywhere (members now accept it);
//! 2. [`use_key`](Keyring::use_key) it everywhere (members now send with it);
//! 3. [`remove`](Keyring::remove) the old key everywhere.
//!
//! The cipher is ChaCha20-Poly1305 with a random 96-bit nonce per packet; the cluster
//! label and the packet header are authenticated as associated data. The `Debug` output
//! never shows key material.
//!
//! ```
//! use palisade::gossip::keyring::Keyring;
//!
//! let mut ring = Keyring::new([1; 32]);
//! ring.install([2; 32]);
//! ring.use_key(&[2; 32]).unwrap();
//! ring.remove(&[1; 32]).unwrap();
//! assert_eq!(ring.primary(), &[2; 32]);
//! ```

use std::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};

/// Size of a key in bytes.
pub const KEY_LEN: usize = 32;
/// Size of the per-packet nonce in bytes.
pub(crate) const NONCE_LEN: usize = 12;
/// Size of the authentication tag in bytes.
pub(crate) const TAG_LEN: usize = 16;

/// A set of shared keys; the first is the primary. See the [module docs](self).
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<([u8; KEY_LEN], ChaCha20Poly1305)>,
}

/// A key operation the keyring refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringError {
    /// The key is not installed.
    NotInstalled,
    /// The primary key cannot be removed; make another key primary first.
    PrimaryKey,
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::NotInstalled => f.write_str("key is not installed"),
            KeyringError::PrimaryKey => f.write_str("the primary key cannot be removed"),
        }
    }
}

impl std::error::Error for KeyringError {}

impl Keyring {
    /// A keyring with one key, which is primary.
    pub fn new(primary: [u8; KEY_LEN]) -> Self {
        Self {
            keys: vec![(primary, cipher(&primary))],
        }
    }

    /// Accepts packets sealed with `key` too (no effect if already installed).
    pub fn install(&mut self, key: [u8; KEY_LEN]) {
        if !self.keys.iter().any(|(k, _)| *k == key) {
            self.keys.push((key, cipher(&key)));
        }
    }

    /// Makes an installed key the primary one (used for sending).
    pub fn use_key(&mut self, key: &[u8; KEY_LEN]) -> Result<(), KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(KeyringError::NotInstalled)?;
        let entry = self.keys.remove(at);
        self.keys.insert(0, entry);
        Ok(())
    }

    /// Stops accepting `key`. The primary key cannot be removed.
    pub fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<(), KeyringError> {
        let at = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(KeyringError::NotInstalled)?;
        if at == 0 {
            return Err(KeyringError::PrimaryKey);
        }
        self.keys.remove(at);
        Ok(())
    }

    /// The key used for sending.
    pub fn primary(&self) -> &[u8; KEY_LEN] {
        &self.keys[0].0
    }

    /// How many keys are installed (the primary included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a keyring holds at least its primary key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Encrypts `buf` in place with the primary key and returns the tag.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let tag = self.keys[0]
            .1
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .expect("ChaCha20-Poly1305 encrypts any buffer under 256 GiB");
        tag.into()
    }

    /// Decrypts `buf` in place with the first installed key that authenticates it.
    pub(crate) fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        // Decryption is in place and a failed attempt leaves `buf` untouched (the tag is
        // checked before decrypting), so each key can be tried on the same buffer.
        self.keys.iter().any(|(_, c)| {
            c.decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
                .is_ok()
        })
    }
}

fn cipher(key: &[u8; KEY_LEN]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(key.into())
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_installed_key_opens_and_primary_seals() {
        let mut ring = Keyring::new([1; 32]);
        let mut buf = *b"hello";
        let tag = ring.seal(&[0; 12], b"aad", &mut buf);
        ring.install([2; 32]);
        ring.use_key(&[2; 32]).unwrap();
        assert!(ring.open(&[0; 12], b"aad", &mut buf, &tag));
        assert_eq!(&buf, b"hello");
        let mut other = *b"hello";
        let tag2 = ring.seal(&[0; 12], b"aad", &mut other);
        let old = Keyring::new([1; 32]);
        assert!(!old.open(&[0; 12], b"aad", &mut other, &tag2));
    }

    #[test]
    fn wrong_associated_data_fails_to_open() {
        let ring = Keyring::new([7; 32]);
        let mut buf = *b"payload";
        let tag = ring.seal(&[3; 12], b"cluster-a", &mut buf);
        assert!(!ring.open(&[3; 12], b"cluster-b", &mut buf, &tag));
    }

    #[test]
    fn primary_key_cannot_be_removed_and_unknown_keys_are_refused() {
        let mut ring = Keyring::new([1; 32]);
        assert_eq!(ring.remove(&[1; 32]), Err(KeyringError::PrimaryKey));
        assert_eq!(ring.use_key(&[9; 32]), Err(KeyringError::NotInstalled));
        assert_eq!(ring.remove(&[9; 32]), Err(KeyringError::NotInstalled));
        let secret = Keyring::new([0xAB; 32]);
        assert!(!format!("{secret:?}").contains("171"));
    }
}

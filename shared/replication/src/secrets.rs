//! Remote registry secrets, sealed at rest. Locally an AES-256-GCM key from configuration or
//! the data directory seals them; in AWS, KMS does (see `berth-runtime`). Either way the
//! store only ever holds sealed bytes and the API never answers with a secret.

use std::path::Path;

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_core::{RegistryError, Result};

/// Seals and opens secrets.
#[async_trait]
pub trait SecretBox: Send + Sync + 'static {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>>;
    async fn open(&self, sealed: &[u8]) -> Result<String>;
}

/// The first byte of a locally sealed secret: the format, so it can change later.
const LOCAL_FORMAT: u8 = 1;
/// What a sealed secret is bound to, so bytes sealed for another purpose do not open here.
const AAD: &[u8] = b"berth replication credential";
const KEY_LEN: usize = 32;

/// AES-256-GCM with a 32-byte key.
pub struct LocalSecretBox {
    key: LessSafeKey,
}

impl std::fmt::Debug for LocalSecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalSecretBox")
    }
}

impl LocalSecretBox {
    pub fn new(key: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN {
            return Err(RegistryError::internal(format!(
                "the secret key must be {KEY_LEN} bytes, not {}",
                key.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| RegistryError::internal("the secret key is not an AES-256 key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A key given as base64 (`BERTH_SECRET_KEY`).
    pub fn from_base64(text: &str) -> Result<Self> {
        let key = STANDARD
            .decode(text.trim())
            .map_err(|_| RegistryError::internal("the secret key is not base64"))?;
        Self::new(&key)
    }

    /// The key in `path`, made (32 random bytes, base64, mode 0600) if there is none.
    pub fn from_file(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text).map_err(|e| {
                RegistryError::internal(format!("{}: {}", path.display(), e.message()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| RegistryError::internal("no random bytes for a secret key"))?;
                write_private(path, STANDARD.encode(key).as_bytes())?;
                Self::new(&key)
            }
            Err(e) => Err(RegistryError::internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn seal_now(&self, secret: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| RegistryError::internal("no random bytes for a nonce"))?;
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| RegistryError::internal("sealing a secret failed"))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + data.len());
        sealed.push(LOCAL_FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    fn open_now(&self, sealed: &[u8]) -> Result<String> {
        let unreadable = || {
            RegistryError::internal(
                "a stored remote credential cannot be opened: it was sealed with another key",
            )
        };
        let (format, rest) = sealed.split_first().ok_or_else(unreadable)?;
        if *format != LOCAL_FORMAT || rest.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut data)
            .map_err(|_| unreadable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| unreadable())
    }
}

#[async_trait]
impl SecretBox for LocalSecretBox {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>> {
        self.seal_now(secret)
    }

    async fn open(&self, sealed: &[u8]) -> Result<String> {
        self.open_now(sealed)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| {
        RegistryError::internal(format!("cannot write {}: {e}", path.display()))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sealed_secrets_open_only_with_their_key() {
        let dir = std::env::temp_dir().join(format!("berth-secret-{}", std::process::id()));
        let path = dir.join("replication.key");
        let made = LocalSecretBox::from_file(&path).expect("made");
        let sealed = made.seal("s3cr3t").await.expect("sealed");
        assert!(
            !sealed.windows(6).any(|w| w == b"s3cr3t"),
            "not in the clear"
        );
        assert_ne!(
            sealed,
            made.seal("s3cr3t").await.expect("sealed"),
            "fresh nonce"
        );
        let again = LocalSecretBox::from_file(&path).expect("read back");
        assert_eq!(again.open(&sealed).await.expect("opened"), "s3cr3t");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("key file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let other = LocalSecretBox::new(&[7u8; 32]).expect("key");
        let error = other.open(&sealed).await.expect_err("wrong key");
        assert!(error.to_string().contains("another key"), "{error}");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(again.open(&tampered).await.is_err());
        assert!(LocalSecretBox::new(&[1u8; 16]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}

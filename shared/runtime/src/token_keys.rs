//! The token keys of a deployment in AWS Systems Manager Parameter Store, under one path
//! (like `/berth/<stack>/token-keys`):
//!
//! | parameter | type | holds | read by |
//! |---|---|---|---|
//! | `<path>/private` | `SecureString` | the signing key (private PEM), then the public PEMs of the previous keys | the token function |
//! | `<path>/public` | `String` | the public PEMs of the current and the previous keys | the registry functions |
//! | `<path>/upload` | `SecureString` | the key of upload grants ([`berth_auth::grant`]) | the push function and the upload front |
//!
//! So a registry function can check tokens but never sign one. Encrypted with the stack's
//! own KMS key ([`SsmKeys::with_kms_key`]), only the token function's role may decrypt the
//! signing key. `berth init --token-keys-ssm <path>` makes the key;
//! `berth rotate-key --token-keys-ssm <path>` makes a new one and keeps
//! [`KEPT_PREVIOUS_KEYS`] previous keys verifying. A rotation writes the public parameter
//! first, so every key is published before anything signs with it; a warm registry function
//! meeting a token signed by a key it does not know loads the public keys again
//! ([`berth_http::KeySource`]).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;
use aws_sdk_ssm::operation::put_parameter::PutParameterError;
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType};
use berth_auth::{GrantKey, KeyRing, generate_es256_pem};
use berth_core::{RegistryError, Result};
use berth_http::KeySource;

use crate::aws::AwsConfig;

/// How many previous keys a rotation keeps verifying: tokens they signed stay valid until
/// they expire. Access tokens live 30 minutes; refresh tokens (docker's stored login) 30
/// days, so rotating more often than every 10 days ends some logins early (docker asks to
/// log in again).
pub const KEPT_PREVIOUS_KEYS: usize = 3;

const PRIVATE: &str = "private";
const PUBLIC: &str = "public";
const UPLOAD: &str = "upload";

/// The token keys under one Parameter Store path.
#[derive(Debug, Clone)]
pub struct SsmKeys {
    client: aws_sdk_ssm::Client,
    path: String,
    /// The KMS key that encrypts the signing key; `None`: the one it has, else `aws/ssm`.
    kms_key: Option<String>,
}

/// Checks a Parameter Store path for the token keys: absolute, no trailing `/`, and only the
/// characters a parameter name may hold.
pub fn check_keys_path(path: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    if !path.starts_with('/') || path.ends_with('/') || path.len() < 2 {
        return Err(format!(
            "{path:?} is not a Parameter Store path like /berth/registry/token-keys"
        ));
    }
    if !path.chars().all(allowed) || path.contains("//") {
        return Err(format!(
            "{path:?} holds characters a Parameter Store name cannot (letters, digits, _ . - /)"
        ));
    }
    // Room for "/private" within the 1011 characters of a parameter name.
    if path.len() > 1000 {
        return Err("the Parameter Store path is longer than 1000 characters".to_owned());
    }
    Ok(())
}

impl SsmKeys {
    /// The keys under `path`, through the process's AWS configuration (the standard chain,
    /// and `AWS_ENDPOINT_URL_SSM`). Makes no request.
    pub async fn new(path: &str) -> Result<Self> {
        check_keys_path(path).map_err(RegistryError::internal)?;
        Ok(Self {
            client: AwsConfig::from_env()?.ssm().await,
            path: path.to_owned(),
            kms_key: None,
        })
    }

    /// Encrypts the signing key with this KMS key (id, ARN or alias): the template's
    /// `TokenKeysKmsKey`, which only the token function may decrypt with. Without it the key
    /// the parameter already has is kept, and a new parameter gets the account's `aws/ssm`
    /// key, which every principal allowed `ssm:GetParameter` on it can decrypt with.
    #[must_use]
    pub fn with_kms_key(mut self, key: Option<String>) -> Self {
        self.kms_key = key;
        self
    }

    /// The KMS key the signing key's parameter is encrypted with (`None`: `aws/ssm`, or no
    /// parameter).
    pub async fn kms_key_in_use(&self) -> Result<Option<String>> {
        let name = self.private_name();
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .values(&name)
            .build()
            .map_err(RegistryError::internal)?;
        let described = self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .send()
            .await
            .map_err(|error| ssm_error(&name, "describing", &error))?;
        Ok(described
            .parameters
            .unwrap_or_default()
            .into_iter()
            .find(|parameter| parameter.name.as_deref() == Some(name.as_str()))
            .and_then(|parameter| parameter.key_id)
            .filter(|key| key != "alias/aws/ssm"))
    }

    /// The name of the parameter holding the signing key.
    pub fn private_name(&self) -> String {
        format!("{}/{PRIVATE}", self.path)
    }

    /// The name of the parameter holding the public keys.
    pub fn public_name(&self) -> String {
        format!("{}/{PUBLIC}", self.path)
    }

    /// The name of the parameter holding the upload grant key.
    pub fn upload_name(&self) -> String {
        format!("{}/{UPLOAD}", self.path)
    }

    /// The key that signs and checks upload grants (the push function's and the front's).
    pub async fn upload_key(&self) -> Result<GrantKey> {
        let name = self.upload_name();
        let text = self.get(&name).await?.ok_or_else(|| missing(&name))?;
        GrantKey::from_text(&text).map_err(|e| RegistryError::internal(format!("{name}: {e}")))
    }

    /// Makes the upload grant key if there is none; `true` when it made one.
    pub async fn ensure_upload_key(&self) -> Result<bool> {
        let name = self.upload_name();
        if self.get(&name).await?.is_some() {
            return Ok(false);
        }
        let text = GrantKey::generate().map_err(RegistryError::internal)?;
        let kms_key = match &self.kms_key {
            Some(key) => Some(key.clone()),
            None => self.kms_key_in_use().await?,
        };
        // false: another `berth init` made it first, and its key is the one in force.
        self.put(&name, &text, ParameterType::SecureString, false, kms_key)
            .await
    }

    /// The ring that signs (the token function's).
    pub async fn signing_ring(&self) -> Result<KeyRing> {
        let name = self.private_name();
        let text = self.get(&name).await?.ok_or_else(|| missing(&name))?;
        let ring = ring_of(&name, &text)?;
        if !ring.can_sign() {
            return Err(RegistryError::internal(format!(
                "{name} must start with a private key"
            )));
        }
        Ok(ring)
    }

    /// The ring that only verifies (the registry functions').
    pub async fn verification_ring(&self) -> Result<KeyRing> {
        let name = self.public_name();
        let text = self.get(&name).await?.ok_or_else(|| missing(&name))?;
        ring_of(&name, &text)
    }

    /// Makes the keys if there are none; otherwise writes the public parameter again from
    /// the private one (mending one lost or never written). Returns the current `kid` and
    /// whether a key was made.
    pub async fn ensure(&self) -> Result<(String, bool)> {
        let name = self.private_name();
        let (ring, made) = match self.get(&name).await? {
            Some(text) => (ring_of(&name, &text)?, false),
            None => {
                let pem = new_key()?;
                let kms_key = self.kms_key.clone();
                if self
                    .put(&name, &pem, ParameterType::SecureString, false, kms_key)
                    .await?
                {
                    (ring_of(&name, &pem)?, true)
                } else {
                    // Another `berth init` made it first: its key is the one in force.
                    let text = self.get(&name).await?.ok_or_else(|| missing(&name))?;
                    (ring_of(&name, &text)?, false)
                }
            }
        };
        self.publish(&ring).await?;
        Ok((ring.current_kid().to_owned(), made))
    }

    /// Starts signing with a new key, keeping [`KEPT_PREVIOUS_KEYS`] previous keys for
    /// verification. Returns the new key's `kid`. Refused where there are no keys yet (a
    /// mistyped path must not make a new key set: `ensure` makes the first key).
    pub async fn rotate(&self) -> Result<String> {
        let name = self.private_name();
        let text = self.get(&name).await?.ok_or_else(|| missing(&name))?;
        let old = ring_of(&name, &text)?;
        let kms_key = match &self.kms_key {
            Some(key) => Some(key.clone()),
            None => self.kms_key_in_use().await?,
        };
        let pem = new_key()?;
        let mut publics = old.public_pems();
        publics.truncate(KEPT_PREVIOUS_KEYS);
        let mut private = vec![pem.clone()];
        private.extend(publics.iter().cloned());
        let ring = KeyRing::from_pems(&private)
            .map_err(|e| RegistryError::internal(format!("the new token key: {e}")))?;
        // Published before it signs anything.
        self.publish(&ring).await?;
        self.put(
            &name,
            &private.join(""),
            ParameterType::SecureString,
            true,
            kms_key,
        )
        .await?;
        Ok(ring.current_kid().to_owned())
    }

    /// Writes the public keys of `ring`, current first.
    async fn publish(&self, ring: &KeyRing) -> Result<()> {
        let public = ring.public_pems().join("");
        self.put(
            &self.public_name(),
            &public,
            ParameterType::String,
            true,
            None,
        )
        .await
        .map(drop)
    }

    async fn get(&self, name: &str) -> Result<Option<String>> {
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(output) => Ok(output.parameter.and_then(|parameter| parameter.value)),
            Err(SdkError::ServiceError(error))
                if matches!(error.err(), GetParameterError::ParameterNotFound(_)) =>
            {
                Ok(None)
            }
            Err(error) => Err(ssm_error(name, "reading", &error)),
        }
    }

    /// Writes a parameter; `false` when it exists and `overwrite` is off.
    async fn put(
        &self,
        name: &str,
        value: &str,
        kind: ParameterType,
        overwrite: bool,
        kms_key: Option<String>,
    ) -> Result<bool> {
        let sent = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(kind)
            .set_key_id(kms_key)
            .overwrite(overwrite)
            // Standard up to 4 KB, advanced only when the value needs it (large RSA keys).
            .tier(ParameterTier::IntelligentTiering)
            .description("Berth token keys (berth init / berth rotate-key)")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(error))
                if matches!(error.err(), PutParameterError::ParameterAlreadyExists(_)) =>
            {
                Ok(false)
            }
            Err(error) => Err(ssm_error(name, "writing", &error)),
        }
    }
}

/// The public keys under a path, loaded again whenever a token names a key a registry
/// function does not know.
#[derive(Debug)]
pub struct PublicKeys(pub SsmKeys);

#[async_trait]
impl KeySource for PublicKeys {
    async fn load(&self) -> Result<KeyRing> {
        self.0.verification_ring().await
    }
}

impl PublicKeys {
    pub fn shared(keys: SsmKeys) -> Arc<dyn KeySource> {
        Arc::new(Self(keys))
    }
}

fn new_key() -> Result<String> {
    generate_es256_pem().map_err(|e| RegistryError::internal(format!("making a token key: {e}")))
}

fn missing(name: &str) -> RegistryError {
    RegistryError::internal(format!(
        "the parameter {name} does not exist: make the token keys with \
         `berth init --token-keys-ssm <path>`"
    ))
}

fn ring_of(name: &str, text: &str) -> Result<KeyRing> {
    KeyRing::from_pems(&split_pems(text))
        .map_err(|e| RegistryError::internal(format!("the token keys in {name}: {e}")))
}

/// The PEM blocks of a text holding several, in order.
pub fn split_pems(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        // A new block starts, even where the last one was not ended.
        if line.starts_with("-----BEGIN ") && !current.is_empty() {
            blocks.push(std::mem::take(&mut current));
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        // An unterminated block: left for the key parser to refuse.
        blocks.push(current);
    }
    blocks
}

fn ssm_error<E: std::error::Error + Send + Sync + 'static>(
    name: &str,
    doing: &str,
    error: &SdkError<E>,
) -> RegistryError {
    use std::error::Error as _;
    let mut cause = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    RegistryError::internal(format!("{doing} the parameter {name}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        for good in ["/berth/prod/token-keys", "/b", "/a_b.c-d/e"] {
            assert_eq!(check_keys_path(good), Ok(()), "{good}");
        }
        for bad in ["", "/", "berth/keys", "/berth/", "/ber th", "/a//b", "/a$b"] {
            assert!(check_keys_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn several_pems_split_into_their_blocks() {
        let one = generate_es256_pem().expect("a key");
        let two = generate_es256_pem().expect("a key");
        let ring = KeyRing::from_pems(&[&one, &two]).expect("a ring");
        let joined = format!("{one}\n{}", ring.public_pems().join(""));
        let blocks = split_pems(&joined);
        assert_eq!(blocks.len(), 3);
        let parsed = KeyRing::from_pems(&blocks).expect("the blocks parse");
        assert!(parsed.can_sign());
        assert_eq!(parsed.current_kid(), ring.current_kid());
        assert_eq!(parsed.keys().count(), 2, "a key given twice counts once");
        assert!(split_pems("").is_empty());
    }
}

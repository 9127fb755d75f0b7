//! Auth for one process: the token keys, the first accounts, and the routers that check
//! and issue tokens.
//!
//! Local mode keeps its keys in the data directory, under `token-keys/`: `current.pem`
//! (an ES256 private key, made on first start, readable by its owner only) signs; every
//! `*.pem` in `token-keys/previous/` still verifies, so a rotation
//! ([`rotate_local_keys`]) logs nobody out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use berth_auth::PasswordHasher;
use berth_auth::{KeyRing, TokenIssuer, TokenService, TokenVerifier, generate_es256_pem};
use berth_core::accounts::{Project, User};
use berth_core::{AccountStore, RegistryError, Result};
use berth_http::{AccountSettings, RegistryAuth};

/// The user who exists from the start.
pub const ADMIN_USER: &str = "admin";
/// The public project that exists from the start, as in Harbor.
pub const LIBRARY_PROJECT: &str = "library";

const KEYS_DIR: &str = "token-keys";
const CURRENT_KEY: &str = "current.pem";
const PREVIOUS_KEYS: &str = "previous";

/// How tokens are issued and checked.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The service name tokens are for (their `aud`), and their issuer (`iss`).
    pub service: String,
    /// The token endpoint's absolute URL for challenges; `None` derives it per request.
    pub realm: Option<String>,
    /// How long an access token lives.
    pub token_lifetime: Duration,
    pub accounts: AccountSettings,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            service: "berth".to_owned(),
            realm: None,
            token_lifetime: berth_auth::token::DEFAULT_ACCESS_LIFETIME,
            accounts: AccountSettings::default(),
        }
    }
}

/// The keys of a local registry, made on first use: see the module documentation.
pub fn local_keys(data_dir: &Path) -> Result<KeyRing> {
    let dir = data_dir.join(KEYS_DIR);
    let current = dir.join(CURRENT_KEY);
    if !current.exists() {
        std::fs::create_dir_all(dir.join(PREVIOUS_KEYS)).map_err(|e| io_error(&dir, e))?;
        write_private(&current, &new_key()?)?;
        tracing::info!(path = %current.display(), "made a new token signing key");
    }
    let mut pems = vec![std::fs::read_to_string(&current).map_err(|e| io_error(&current, e))?];
    pems.extend(previous_keys(&dir.join(PREVIOUS_KEYS))?);
    KeyRing::from_pems(&pems)
        .map_err(|e| RegistryError::internal(format!("the token keys in {}: {e}", dir.display())))
}

/// Starts signing with a new key; the current one moves to `previous/` and keeps verifying
/// the tokens it signed. Returns the path of the retired key, or `None` when there was no key
/// to retire (a data directory `berth serve` never ran on).
pub fn rotate_local_keys(data_dir: &Path) -> Result<Option<PathBuf>> {
    let dir = data_dir.join(KEYS_DIR);
    let current = dir.join(CURRENT_KEY);
    let previous = dir.join(PREVIOUS_KEYS);
    std::fs::create_dir_all(&previous).map_err(|e| io_error(&previous, e))?;
    let retired = if current.exists() {
        // Named by time, never over an earlier one (two rotations within a second).
        let stamp = berth_auth::unix_now();
        let retired = (0u32..)
            .map(|n| previous.join(format!("{stamp}-{n}.pem")))
            .find(|path| !path.exists())
            .ok_or_else(|| RegistryError::internal("no free name for the retired token key"))?;
        std::fs::rename(&current, &retired).map_err(|e| io_error(&current, e))?;
        Some(retired)
    } else {
        None
    };
    write_private(&current, &new_key()?)?;
    Ok(retired)
}

fn new_key() -> Result<String> {
    generate_es256_pem().map_err(|e| RegistryError::internal(format!("making a token key: {e}")))
}

fn previous_keys(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| std::fs::read_to_string(path).map_err(|e| io_error(path, e)))
        .collect()
}

/// Writes a secret file that only its owner may read.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, error: std::io::Error) -> RegistryError {
    RegistryError::internal(format!("{}: {error}", path.display()))
}

/// Creates what a new registry (one without users) has from the start: the user `admin` (a
/// system administrator) and the public project `library`. The admin's password is
/// `admin_password`, or a new random one, which is returned so it can be shown once.
pub async fn bootstrap(
    accounts: &dyn AccountStore,
    passwords: &PasswordHasher,
    admin_password: Option<&str>,
) -> Result<Option<String>> {
    let now = berth_auth::unix_now();
    // Only a registry without any user is new: an administrator who later deleted `admin`
    // or `library` must not see them come back at the next start.
    if !accounts.users(None, 1).await?.is_empty() {
        return Ok(None);
    }
    let mut generated = None;
    if accounts.user(ADMIN_USER).await?.is_none() {
        let password = match admin_password {
            Some(password) => {
                berth_auth::check_password_policy(password).map_err(|weak| {
                    RegistryError::internal(format!("BERTH_ADMIN_PASSWORD: {weak}"))
                })?;
                password.to_owned()
            }
            None => {
                let password = berth_auth::generate_robot_secret()?;
                generated = Some(password.clone());
                password
            }
        };
        let admin = User {
            name: ADMIN_USER.to_owned(),
            email: None,
            password_hash: passwords.hash(&password)?,
            admin: true,
            created_at: now,
            password_changed_at: 0,
        };
        if accounts.create_user(&admin).await? {
            tracing::info!(user = ADMIN_USER, "created the first system administrator");
        } else {
            // Another process created it first: its password is the one in force.
            generated = None;
        }
    }
    let library = Project {
        name: LIBRARY_PROJECT.to_owned(),
        public: true,
        owner: ADMIN_USER.to_owned(),
        created_at: now,
        immutable_tags: Default::default(),
    };
    if accounts.create_project(&library).await? {
        tracing::info!(project = LIBRARY_PROJECT, "created the public project");
    }
    Ok(generated)
}

/// Everything a process with auth needs, built from one key ring.
#[derive(Debug, Clone)]
pub struct Auth {
    pub tokens: Arc<TokenService>,
    pub registry: Arc<RegistryAuth>,
    pub config: AuthConfig,
}

impl Auth {
    pub fn new(
        config: AuthConfig,
        ring: &KeyRing,
        accounts: Arc<dyn AccountStore>,
    ) -> Result<Self> {
        let (issuer, verifier) = service_keys(&config, ring)?;
        Ok(Self {
            tokens: Arc::new(TokenService::new(accounts, issuer, verifier)),
            registry: Arc::new(registry_auth(&config, ring)),
            config,
        })
    }
}

/// What the token service signs with and reads refresh tokens with, from `ring`.
pub fn service_keys(config: &AuthConfig, ring: &KeyRing) -> Result<(TokenIssuer, TokenVerifier)> {
    let issuer = TokenIssuer::new(&config.service, &config.service, ring)
        .map_err(|e| RegistryError::internal(format!("token keys: {e}")))?
        .with_access_lifetime(config.token_lifetime);
    Ok((
        issuer,
        TokenVerifier::new(&config.service, &config.service, ring),
    ))
}

/// How many verified tokens a registry process remembers.
pub const VERIFIED_TOKEN_CACHE: usize = 4096;

/// The registry's token check with the keys of `ring`. Registry requests repeat their
/// token: the verified ones are remembered.
pub fn registry_auth(config: &AuthConfig, ring: &KeyRing) -> RegistryAuth {
    let verifier =
        TokenVerifier::new(&config.service, &config.service, ring).with_cache(VERIFIED_TOKEN_CACHE);
    RegistryAuth::new(verifier, &config.service, config.realm.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_keys_are_made_once_and_rotate() {
        let dir = tempfile::tempdir().expect("a directory");
        let ring = local_keys(dir.path()).expect("made");
        let kid = ring.current_kid().to_owned();
        assert_eq!(local_keys(dir.path()).expect("read").current_kid(), kid);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEYS_DIR).join(CURRENT_KEY))
                .expect("the key file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let retired = rotate_local_keys(dir.path()).expect("rotated");
        assert!(
            retired.is_some_and(|path| path.is_file()),
            "the old key is kept"
        );
        let rotated = local_keys(dir.path()).expect("read");
        assert_ne!(rotated.current_kid(), kid);
        assert!(
            rotated.keys().any(|(id, _)| id == kid),
            "the retired key still verifies"
        );
    }
}

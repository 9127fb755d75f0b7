//! Passwords and robot secrets: Argon2id hashes in PHC string form, the user password
//! policy, and the generation of robot account secrets.
//!
//! New hashes use Argon2id (version 0x13) with 19 MiB of memory, 2 passes and 1 lane, the
//! minimum OWASP's password storage cheat sheet recommends, a 16-byte random salt and a
//! 32-byte output: about 20 to 50 ms of one core per hash or verification. A stored hash is
//! verified with the parameters written in it, so raising the cost later leaves existing
//! hashes usable. Only `argon2id` hashes are accepted.
//!
//! [`PasswordHasher::verify_against_dummy`] spends the same effort on a login for an account
//! that does not exist, so response times do not reveal which names exist.

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_core::RegistryError;

/// Salt length of new hashes, in bytes.
const SALT_LEN: usize = 16;
/// Random bytes in a robot secret.
const ROBOT_SECRET_LEN: usize = 32;
/// Shortest and longest user password, in characters (Harbor's policy).
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 8..=128;

/// Hashes and verifies passwords and robot secrets with Argon2id.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("memory_kib", &self.params.m_cost())
            .field("iterations", &self.params.t_cost())
            .field("parallelism", &self.params.p_cost())
            .finish()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// Argon2id with 19 MiB, 2 passes, 1 lane (OWASP's minimum).
    pub fn new() -> Self {
        Self {
            params: Params::DEFAULT,
        }
    }

    /// Argon2id with other costs: `memory_kib` KiB (at least 8 per lane), `iterations`
    /// passes (at least 1), `parallelism` lanes (at least 1). Cheap settings are for tests.
    pub fn with_cost(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    ) -> Result<Self, argon2::Error> {
        Ok(Self {
            params: Params::new(memory_kib, iterations, parallelism, None)?,
        })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string of a new hash of `password`, with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, RegistryError> {
        let mut salt = [0u8; SALT_LEN];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| RegistryError::internal("no random salt"))?;
        let hash = self
            .argon2()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| RegistryError::internal(format!("hashing a password failed: {e}")))?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches the Argon2id PHC string `hash`. A hash that cannot be read
    /// matches nothing, after the same effort as a real verification.
    pub fn verify(&self, password: &str, hash: &str) -> bool {
        match PasswordHash::new(hash) {
            Ok(parsed) if parsed.algorithm.as_str() == Algorithm::Argon2id.as_str() => self
                .argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            _ => {
                self.verify_against_dummy(password);
                false
            }
        }
    }

    /// Spends on `password` the effort of verifying it against a hash made with this
    /// hasher's parameters, and forgets the result: the answer for an unknown account.
    pub fn verify_against_dummy(&self, password: &str) {
        let mut output = [0u8; 32];
        // The outcome does not matter, only the time it takes; the salt need not be secret.
        let _ =
            self.argon2()
                .hash_password_into(password.as_bytes(), b"berth-dummy-salt", &mut output);
    }
}

/// A new robot account secret: 32 random bytes in URL-safe base64 without padding (43
/// characters). Shown to its owner once; only its hash is stored.
pub fn generate_robot_secret() -> Result<String, RegistryError> {
    let mut bytes = [0u8; ROBOT_SECRET_LEN];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RegistryError::internal("no random bytes"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A user password that breaks the policy; the message states the whole policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeakPassword;

impl fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the password must be {} to {} characters long and contain at least one \
             upper-case letter, one lower-case letter and one digit",
            PASSWORD_LENGTH.start(),
            PASSWORD_LENGTH.end()
        )
    }
}

impl std::error::Error for WeakPassword {}

/// Harbor's policy for user passwords: 8 to 128 characters, with at least one upper-case
/// letter, one lower-case letter and one digit (ASCII `A-Z`, `a-z`, `0-9`, as Harbor counts
/// them; other characters are allowed and count toward the length).
pub fn check_password_policy(password: &str) -> Result<(), WeakPassword> {
    let long_enough = PASSWORD_LENGTH.contains(&password.chars().count());
    let has = |test: fn(&u8) -> bool| password.bytes().any(|b| test(&b));
    if long_enough
        && has(u8::is_ascii_uppercase)
        && has(u8::is_ascii_lowercase)
        && has(u8::is_ascii_digit)
    {
        Ok(())
    } else {
        Err(WeakPassword)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::with_cost(8, 1, 1).unwrap()
    }

    #[test]
    fn hashes_verify_their_password_only() {
        let hasher = cheap();
        let hash = hasher.hash("Correct horse 1").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(hasher.verify("Correct horse 1", &hash));
        assert!(!hasher.verify("correct horse 1", &hash));
        assert!(!hasher.verify("", &hash));
        // Salted: the same password hashes differently each time.
        assert_ne!(hasher.hash("Correct horse 1").unwrap(), hash);
    }

    #[test]
    fn a_hash_is_verified_with_its_own_parameters() {
        let hash = cheap().hash("pw").unwrap();
        let other = PasswordHasher::with_cost(16, 2, 1).unwrap();
        assert!(other.verify("pw", &hash));
    }

    #[test]
    fn the_default_cost_is_owasps_minimum() {
        let hasher = PasswordHasher::new();
        assert_eq!(
            format!("{hasher:?}"),
            "PasswordHasher { memory_kib: 19456, iterations: 2, parallelism: 1 }"
        );
    }

    #[test]
    fn unreadable_or_foreign_hashes_match_nothing() {
        let hasher = cheap();
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password_with_salt(b"pw", b"saltsaltsalt")
        .unwrap()
        .to_string();
        for hash in [
            "",
            "pw",
            "$argon2id$",
            "$2b$12$abcdefghijklmnopqrstuv",
            &argon2i,
        ] {
            assert!(!hasher.verify("pw", hash), "{hash}");
        }
        assert!(PasswordHasher::with_cost(1, 1, 1).is_err());
    }

    #[test]
    fn the_dummy_costs_about_a_real_verification() {
        // Cheap enough for a test, costly enough to measure.
        let hasher = PasswordHasher::with_cost(4096, 1, 1).unwrap();
        let hash = hasher.hash("pw").unwrap();
        let time = |f: &dyn Fn()| {
            let start = Instant::now();
            for _ in 0..5 {
                f();
            }
            start.elapsed()
        };
        let real = time(&|| {
            hasher.verify("wrong", &hash);
        });
        let dummy = time(&|| hasher.verify_against_dummy("wrong"));
        let ratio = dummy.as_secs_f64() / real.as_secs_f64();
        assert!(
            (0.3..3.0).contains(&ratio),
            "dummy {dummy:?} vs real {real:?}"
        );
    }

    #[test]
    fn robot_secrets_are_random_and_url_safe() {
        let a = generate_robot_secret().unwrap();
        let b = generate_robot_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
    }

    #[test]
    fn password_policy() {
        for good in [
            "Harbor12345",
            "aB3aaaaa",
            "Ünïcode1A",
            &format!("Aa1{}", "x".repeat(125)),
        ] {
            assert_eq!(check_password_policy(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Aa1aaaa",
            "harbor12345",
            "HARBOR12345",
            "HarborHarbor",
            &format!("Aa1{}", "x".repeat(126)),
        ] {
            assert_eq!(check_password_policy(bad), Err(WeakPassword), "{bad}");
        }
        let message = WeakPassword.to_string();
        assert!(message.contains("8 to 128 characters"), "{message}");
    }
}

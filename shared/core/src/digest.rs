//! Content digests (`algorithm:hex`) and the incremental hashers that produce them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

use crate::error::{ErrorCode, RegistryError};

/// The hash algorithms Berth accepts for content addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest such as `sha256:<64 lowercase hex>`.
///
/// Only sha256 and sha512 are accepted; the encoded part must be lowercase hex of exactly the
/// algorithm's length, so two equal digests are always equal strings.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    text: Box<str>,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Digest of a complete byte string.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Self {
        let mut hasher = DigestHasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }

    fn from_raw(algorithm: Algorithm, output: &[u8]) -> Self {
        Self {
            algorithm,
            text: format!("{algorithm}:{}", hex::encode(output)).into(),
        }
    }
}

fn invalid(input: &str, why: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::DigestInvalid,
        format!("invalid digest {input:?}: {why}"),
    )
}

impl FromStr for Digest {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (name, encoded) = input
            .split_once(':')
            .ok_or_else(|| invalid(input, "expected algorithm:hex"))?;
        let algorithm = Algorithm::from_name(name)
            .ok_or_else(|| invalid(input, "only sha256 and sha512 are supported"))?;
        if encoded.len() != algorithm.hex_len() {
            return Err(invalid(
                input,
                &format!("{algorithm} needs {} hex characters", algorithm.hex_len()),
            ));
        }
        if !encoded
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid(input, "the encoded part must be lowercase hex"));
        }
        Ok(Self {
            algorithm,
            text: input.into(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one [`Algorithm`], whose state can be saved between requests.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestHasher({})", self.algorithm())
    }
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Sha256(_) => Algorithm::Sha256,
            Self::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest::from_raw(Algorithm::Sha256, &h.finalize()),
            Self::Sha512(h) => Digest::from_raw(Algorithm::Sha512, &h.finalize()),
        }
    }

    /// The hasher's internal state (about 100 bytes), to resume hashing in another request.
    pub fn save(&self) -> SavedHash {
        let state = match self {
            Self::Sha256(h) => h.serialize().to_vec(),
            Self::Sha512(h) => h.serialize().to_vec(),
        };
        SavedHash {
            algorithm: self.algorithm(),
            state,
        }
    }

    /// Rebuilds a hasher from [`DigestHasher::save`]'s output.
    pub fn restore(saved: &SavedHash) -> Result<Self, RegistryError> {
        let corrupt = || RegistryError::internal("saved hash state is corrupt");
        Ok(match saved.algorithm {
            Algorithm::Sha256 => {
                let state = SerializedState::<sha2::Sha256>::try_from(saved.state.as_slice())
                    .map_err(|_| corrupt())?;
                Self::Sha256(sha2::Sha256::deserialize(&state).map_err(|_| corrupt())?)
            }
            Algorithm::Sha512 => {
                let state = SerializedState::<sha2::Sha512>::try_from(saved.state.as_slice())
                    .map_err(|_| corrupt())?;
                Self::Sha512(sha2::Sha512::deserialize(&state).map_err(|_| corrupt())?)
            }
        })
    }
}

/// A serialised [`DigestHasher`], kept in an upload session between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHash {
    pub algorithm: Algorithm,
    #[serde(with = "hex_bytes")]
    pub state: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_valid_digests() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        let long = format!("sha512:{}", "a".repeat(128));
        assert_eq!(
            long.parse::<Digest>().unwrap().algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn rejects_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("md5:{}", "a".repeat(32)),
            &format!("SHA256:{}", "a".repeat(64)),
            &format!("sha256:{}:", "a".repeat(64)),
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert_eq!(err.code(), ErrorCode::DigestInvalid, "{bad:?}");
        }
    }

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").as_str(), EMPTY_SHA256);
        assert!(
            Digest::of(Algorithm::Sha512, b"")
                .hex()
                .starts_with("cf83e1357eefb8bdf1542850d66d8007")
        );
    }

    #[test]
    fn saved_state_resumes_hashing() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = DigestHasher::new(algorithm);
            first.update(b"hello ");
            let saved = first.save();
            let json = serde_json::to_string(&saved).unwrap();
            let mut resumed = DigestHasher::restore(&serde_json::from_str(&json).unwrap()).unwrap();
            resumed.update(b"world");
            assert_eq!(resumed.finish(), Digest::of(algorithm, b"hello world"));
        }
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let saved = SavedHash {
            algorithm: Algorithm::Sha256,
            state: vec![1, 2, 3],
        };
        assert!(DigestHasher::restore(&saved).is_err());
    }
}

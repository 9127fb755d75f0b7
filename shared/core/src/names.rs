//! Repository names, tags, manifest references and upload ids, validated by the spec's grammar.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};

/// Longest repository name accepted, as in common registries (host and name together must
/// stay within 255 characters).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag allowed by the spec.
pub const MAX_TAG_LEN: usize = 128;

/// A repository name: lowercase path components joined by `/`, each matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(Box<str>);

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path component: the project a repository belongs to.
    pub fn project(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The name within its project, as Harbor's project policies match it (`team/app` is
    /// `app`); a one-part name is its own.
    pub fn within_project(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, rest)| rest)
    }
}

fn component_is_valid(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    // Alternate: a run of alphanumerics, then one separator, until the end.
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[sep_start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(matches!(separator, "." | "_" | "__") || dashes) {
            return false;
        }
    }
}

impl FromStr for RepositoryName {
    type Err = RegistryError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| {
            RegistryError::new(
                ErrorCode::NameInvalid,
                format!("invalid repository name {name:?}: {why}"),
            )
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(&format!("longer than {MAX_NAME_LEN} characters")));
        }
        if !name.split('/').all(component_is_valid) {
            return Err(invalid(
                "each path component must be lowercase letters and digits, separated by \
                 '.', '_', '__' or dashes",
            ));
        }
        Ok(Self(name.into()))
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = RegistryError;

    fn from_str(tag: &str) -> Result<Self, Self::Err> {
        let bytes = tag.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || tag.len() > MAX_TAG_LEN {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "invalid tag {tag:?}: up to {MAX_TAG_LEN} of letters, digits, '_', '.' \
                     and '-', not starting with '.' or '-'"
                ),
            ));
        }
        Ok(Self(tag.into()))
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = RegistryError;

    fn from_str(reference: &str) -> Result<Self, Self::Err> {
        if reference.contains(':') {
            Ok(Self::Digest(reference.parse()?))
        } else {
            Ok(Self::Tag(reference.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => f.write_str(tag.as_str()),
            Self::Digest(digest) => f.write_str(digest.as_str()),
        }
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An upload session id: a UUID in its hyphenated lowercase form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(Box<str>);

impl UploadId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UploadId {
    type Err = RegistryError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) if uuid.hyphenated().to_string() == id => Ok(Self(id.into())),
            _ => Err(RegistryError::new(
                ErrorCode::BlobUploadUnknown,
                format!("no upload session {id:?}"),
            )),
        }
    }
}

macro_rules! string_newtype_impls {
    ($($ty:ident),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($ty), &self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

string_newtype_impls!(RepositoryName, Tag, UploadId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "library/ubuntu",
            "a/b/c/d/e/f",
            "my-app",
            "my--app",
            "my_app",
            "my__app",
            "my.app",
            "0",
            "a1/b2.c3_d4__e5-f6",
            "manifests/blobs/tags",
        ] {
            let parsed: RepositoryName = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.as_str(), name);
        }
        let longest = "a".repeat(MAX_NAME_LEN);
        assert!(longest.parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn invalid_names() {
        for name in [
            "",
            "Upper",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "/a",
            "a/",
            "-a",
            "a-",
            "a___b",
            "a..b",
            "a._b",
            "a b",
            "a%2fb",
            "ä",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = name.parse::<RepositoryName>().unwrap_err();
            assert_eq!(err.code(), ErrorCode::NameInvalid, "{name:?}");
        }
    }

    #[test]
    fn project_is_the_first_component() {
        let name: RepositoryName = "team/app/web".parse().unwrap();
        assert_eq!(name.project(), "team");
        assert_eq!(name.within_project(), "app/web");
        let alone: RepositoryName = "alone".parse().unwrap();
        assert_eq!(
            (alone.project(), alone.within_project()),
            ("alone", "alone")
        );
    }

    #[test]
    fn tags() {
        for tag in ["latest", "v1.0.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(tag.parse::<Tag>().is_ok(), "{tag}");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", "a+b", &"t".repeat(129)] {
            assert!(tag.parse::<Tag>().is_err(), "{tag}");
        }
    }

    #[test]
    fn references_dispatch_on_the_colon() {
        let digest = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            digest.parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        let err = "sha256:zz".parse::<Reference>().unwrap_err();
        assert_eq!(err.code(), ErrorCode::DigestInvalid);
    }

    #[test]
    fn upload_ids_are_canonical_uuids() {
        let id = UploadId::generate();
        assert_eq!(id.as_str().parse::<UploadId>().unwrap(), id);
        assert!("not-a-uuid".parse::<UploadId>().is_err());
        assert!(id.as_str().to_uppercase().parse::<UploadId>().is_err());
        assert!("../../etc/passwd".parse::<UploadId>().is_err());
    }
}

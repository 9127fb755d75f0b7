//! The object keys the store uses, all under one configurable prefix.

use berth_core::{Digest, UploadId};

/// Names objects: blobs by content address, staging by upload id and writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Empty, or ending in `/`.
    prefix: String,
}

/// Identifies the append that wrote a staging object: random, so that two appends racing
/// from the same staged state write different objects.
pub(crate) type Writer = u32;

impl Layout {
    pub(crate) fn new(prefix: Option<&str>) -> Self {
        let trimmed = prefix.unwrap_or_default().trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Self { prefix }
    }

    pub(crate) fn blob(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!(
            "{}blobs/{}/{}/{hex}",
            self.prefix,
            digest.algorithm().as_str(),
            &hex[..2]
        )
    }

    /// The prefix every staging object of upload `id` shares (upload ids are UUIDs).
    pub(crate) fn upload(&self, id: &UploadId) -> String {
        format!("{}uploads/{id}/", self.prefix)
    }

    /// Full part `number` (1-based) of an upload, as `writer` wrote it.
    pub(crate) fn part(&self, id: &UploadId, number: u32, writer: Writer) -> String {
        format!("{}part-{number:05}-{writer:08x}", self.upload(id))
    }

    /// The tail `writer` wrote, which ends at byte `end` of the upload.
    pub(crate) fn tail(&self, id: &UploadId, end: u64, writer: Writer) -> String {
        format!("{}tail-{end}-{writer:08x}", self.upload(id))
    }
}

#[cfg(test)]
mod tests {
    use berth_core::Algorithm;

    use super::*;

    #[test]
    fn blobs_live_at_their_content_address() {
        let digest = Digest::of(Algorithm::Sha256, b"x");
        let hex = digest.hex();
        assert_eq!(
            Layout::new(None).blob(&digest),
            format!("blobs/sha256/{}/{hex}", &hex[..2])
        );
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert!(Layout::new(None).blob(&sha512).starts_with("blobs/sha512/"));
    }

    #[test]
    fn prefixes_are_normalised() {
        let digest = Digest::of(Algorithm::Sha256, b"x");
        for prefix in ["reg", "reg/", "/reg/", "//reg"] {
            let key = Layout::new(Some(prefix)).blob(&digest);
            assert!(key.starts_with("reg/blobs/sha256/"), "{prefix:?}: {key}");
        }
        for empty in [None, Some(""), Some("/")] {
            let key = Layout::new(empty).blob(&digest);
            assert!(key.starts_with("blobs/"), "{empty:?}: {key}");
        }
        assert_eq!(
            Layout::new(Some("a/b")).blob(&digest),
            format!("a/b/{}", Layout::new(None).blob(&digest))
        );
    }

    #[test]
    fn staging_objects_stay_under_their_upload() {
        let layout = Layout::new(Some("p"));
        let id = UploadId::generate();
        let dir = layout.upload(&id);
        assert_eq!(dir, format!("p/uploads/{id}/"));
        assert_eq!(
            layout.part(&id, 7, 0xbeef),
            format!("{dir}part-00007-0000beef")
        );
        assert_eq!(
            layout.tail(&id, 1234, 1),
            format!("{dir}tail-1234-00000001")
        );
        assert_ne!(layout.part(&id, 1, 1), layout.part(&id, 1, 2));
    }
}

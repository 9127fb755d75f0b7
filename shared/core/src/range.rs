//! Byte ranges: `Range` on blob reads and `Content-Range` on upload chunks.

use std::ops::Range;

use crate::error::{ErrorCode, RegistryError, Result};

/// Resolves a `Range` request header against a blob of `size` bytes.
///
/// Returns `Ok(None)` when the whole blob should be served: no header, a header in a form
/// Berth does not serve partially (several ranges, another unit), as HTTP allows. A single
/// byte range that cannot be satisfied is `RANGE_INVALID`.
pub fn resolve_range(header: Option<&str>, size: u64) -> Result<Option<Range<u64>>> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("range {spec:?} cannot be satisfied for a blob of {size} bytes"),
        )
        .with_hint(crate::error::ErrorHint::BlobSize(size))
    };
    let (first, last) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| unsatisfiable());
    let range = match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 {
                return Err(unsatisfiable());
            }
            size.saturating_sub(suffix)..size
        }
        (false, true) => number(first)?..size,
        (false, false) => {
            let (start, end) = (number(first)?, number(last)?);
            if end < start {
                return Err(unsatisfiable());
            }
            start..end.saturating_add(1).min(size)
        }
        (true, true) => return Err(unsatisfiable()),
    };
    if range.start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

/// An upload chunk's position, from `Content-Range: <start>-<end>` (inclusive end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// How many bytes the chunk holds.
    pub fn byte_count(self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parses an upload `Content-Range`. The spec's form is `<start>-<end>`; the HTTP forms
/// `bytes <start>-<end>[/<total>]` and `bytes=<start>-<end>` that some clients send are
/// accepted too.
pub fn parse_content_range(header: &str) -> Result<ChunkRange> {
    let invalid = || {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("invalid Content-Range {header:?}: expected <start>-<end>"),
        )
    };
    let text = header.trim();
    let text = text
        .strip_prefix("bytes=")
        .or_else(|| text.strip_prefix("bytes "))
        .unwrap_or(text);
    let text = text.split_once('/').map_or(text, |(range, _total)| range);
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let digits = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        s.parse::<u64>().map_err(|_| invalid())
    };
    let (start, end) = (digits(start)?, digits(end)?);
    if end < start {
        return Err(invalid());
    }
    Ok(ChunkRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let cases: [(Option<&str>, Option<Range<u64>>); 9] = [
            (None, None),
            (Some("bytes=0-9"), Some(0..10)),
            (Some("bytes=10-"), Some(10..100)),
            (Some("bytes=-10"), Some(90..100)),
            (Some("bytes=-1000"), Some(0..100)),
            (Some("bytes=90-1000"), Some(90..100)),
            (Some("bytes=0-0"), Some(0..1)),
            (Some("bytes=0-1,5-6"), None),
            (Some("items=0-1"), None),
        ];
        for (header, expected) in cases {
            assert_eq!(resolve_range(header, 100).unwrap(), expected, "{header:?}");
        }
    }

    #[test]
    fn unsatisfiable_ranges() {
        for header in [
            "bytes=100-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=a-b",
            "bytes=-",
            "bytes=7",
        ] {
            let err = resolve_range(Some(header), 100).unwrap_err();
            assert_eq!(err.code(), ErrorCode::RangeInvalid, "{header}");
            assert_eq!(err.hint(), Some(&crate::error::ErrorHint::BlobSize(100)));
        }
    }

    #[test]
    fn content_ranges() {
        for (header, start, end) in [
            ("0-99", 0, 99),
            ("100-199", 100, 199),
            ("bytes 0-9/10", 0, 9),
            ("bytes=5-5", 5, 5),
            (" 7-8 ", 7, 8),
        ] {
            let range = parse_content_range(header).unwrap();
            assert_eq!((range.start, range.end), (start, end), "{header}");
        }
        assert_eq!(parse_content_range("0-9").unwrap().byte_count(), 10);
        for bad in ["", "-", "5-", "-5", "9-0", "a-b", "1-2-3", "+1-2", "0x1-2"] {
            assert!(parse_content_range(bad).is_err(), "{bad:?}");
        }
    }
}

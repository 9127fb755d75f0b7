//! The state an upload keeps in its session between requests: which staging objects hold
//! its bytes, in order.
//!
//! An upload of `size` bytes is `parts` full parts of `part_size` bytes each, then a tail of
//! `size - parts * part_size` bytes (less than a part; no object when empty). Sizes are not
//! stored: they follow from the session's size, so the state stays small (a few bytes per
//! append, well within what a DynamoDB item holds) and a state that does not add up to the
//! session's size is refused rather than trusted.
//!
//! Serialised as compact JSON, for example
//! `{"v":1,"part_size":8388608,"parts":[[2864434397,3]],"tail":305419896,"stale_tail":[40,7]}`:
//! three parts written by one append, then a tail.

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, Writer};

/// S3's smallest part (except the last).
pub(crate) const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part size the store accepts: an append holds up to two parts in memory.
pub(crate) const MAX_PART_SIZE: usize = 64 * 1024 * 1024;
/// S3's most parts in one multipart upload; the tail, when there is one, is one of them.
pub(crate) const MAX_PARTS: u32 = 10_000;

const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadState {
    #[serde(rename = "v")]
    format: u32,
    /// Fixed when the upload begins, so a configuration change cannot reinterpret it.
    part_size: u64,
    /// The full parts, in order, as runs written by one append each.
    parts: Vec<Run>,
    /// The writer of the tail, which ends at the session's size.
    tail: Option<Writer>,
    /// The tail the append that made this state read and replaced. The next successful
    /// append deletes it: by then no winning append can still need it (see [`Self::grown`]).
    stale_tail: Option<TailName>,
}

/// `count` consecutive parts written by `writer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Run(Writer, u32);

/// A tail, by the offset it ends at and its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TailName(u64, Writer);

/// One staging object and the number of bytes it must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) key: String,
    pub(crate) len: u64,
}

impl UploadState {
    pub(crate) fn new(part_size: usize) -> Self {
        Self {
            format: FORMAT,
            part_size: part_size as u64,
            parts: Vec::new(),
            tail: None,
            stale_tail: None,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the upload state always serialises")
    }

    /// Reads a state and checks that it describes exactly `size` bytes.
    pub(crate) fn decode(bytes: &[u8], size: u64) -> Result<Self, String> {
        let state: Self = serde_json::from_slice(bytes)
            .map_err(|e| format!("the upload state cannot be read: {e}"))?;
        state.check(size)?;
        Ok(state)
    }

    fn check(&self, size: u64) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("upload state format {} is not known", self.format));
        }
        let part_size = self.part_size;
        if !(MIN_PART_SIZE as u64..=MAX_PART_SIZE as u64).contains(&part_size) {
            return Err(format!("part size {part_size} is out of bounds"));
        }
        if self.parts.iter().any(|run| run.1 == 0) {
            return Err("the upload state has an empty run of parts".into());
        }
        let parts = self.part_count();
        if parts > MAX_PARTS {
            return Err(format!("the upload state has {parts} parts"));
        }
        let in_parts = u64::from(parts) * part_size;
        let tail = size.checked_sub(in_parts).ok_or_else(|| {
            format!("the upload state holds {in_parts} bytes in parts, the session {size}")
        })?;
        if tail >= part_size || (tail > 0) != self.tail.is_some() {
            return Err(format!(
                "a tail of {tail} bytes does not match the upload state"
            ));
        }
        Ok(())
    }

    pub(crate) fn part_size(&self) -> usize {
        // Checked against MAX_PART_SIZE when decoded or created.
        self.part_size as usize
    }

    pub(crate) fn part_count(&self) -> u32 {
        self.parts
            .iter()
            .fold(0u32, |count, run| count.saturating_add(run.1))
    }

    /// The staging objects holding the upload's `size` bytes, in order.
    pub(crate) fn pieces(
        &self,
        layout: &Layout,
        id: &berth_core::UploadId,
        size: u64,
    ) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut number = 0;
        for &Run(writer, count) in &self.parts {
            for _ in 0..count {
                number += 1;
                pieces.push(Piece {
                    key: layout.part(id, number, writer),
                    len: self.part_size,
                });
            }
        }
        if let Some(tail) = self.tail(layout, id, size) {
            pieces.push(tail);
        }
        pieces
    }

    /// The tail object, if the upload has one.
    pub(crate) fn tail(
        &self,
        layout: &Layout,
        id: &berth_core::UploadId,
        size: u64,
    ) -> Option<Piece> {
        let writer = self.tail?;
        Some(Piece {
            key: layout.tail(id, size, writer),
            len: size - u64::from(self.part_count()) * self.part_size,
        })
    }

    /// The tail this state's append replaced, which the next append may delete.
    pub(crate) fn stale_tail(&self, layout: &Layout, id: &berth_core::UploadId) -> Option<String> {
        self.stale_tail
            .map(|TailName(end, writer)| layout.tail(id, end, writer))
    }

    /// The state after `writer` appended to this one (`size` bytes long, and growing): it
    /// wrote `parts` more full parts and, if `tail`, a new tail.
    ///
    /// The tail this state had was read and replaced, so it becomes the stale tail. It may
    /// not be deleted yet: the append that made the new state can still lose its race, or
    /// fail to save its session, and then this state stays current and needs its tail. Once
    /// the new state is current, its successor's append deletes it.
    pub(crate) fn grown(&self, size: u64, writer: Writer, parts: u32, tail: bool) -> Self {
        let mut runs = self.parts.clone();
        if parts > 0 {
            runs.push(Run(writer, parts));
        }
        Self {
            format: FORMAT,
            part_size: self.part_size,
            parts: runs,
            tail: tail.then_some(writer),
            stale_tail: self.tail.map(|old| TailName(size, old)),
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_core::UploadId;

    use super::*;

    const PART: usize = MIN_PART_SIZE;
    const P: u64 = PART as u64;

    #[test]
    fn a_new_upload_holds_nothing() {
        let state = UploadState::new(PART);
        let decoded = UploadState::decode(&state.encode(), 0).expect("a new state");
        assert_eq!(decoded, state);
        assert!(
            decoded
                .pieces(&Layout::new(None), &UploadId::generate(), 0)
                .is_empty()
        );
        assert!(
            UploadState::decode(&state.encode(), 1).is_err(),
            "one byte nowhere"
        );
    }

    #[test]
    fn pieces_follow_the_runs_in_order() {
        let layout = Layout::new(None);
        let id = UploadId::generate();
        let state = UploadState::new(PART)
            .grown(0, 0xa, 2, true)
            .grown(2 * P + 10, 0xb, 0, true)
            .grown(2 * P + 20, 0xc, 1, false);
        let size = 3 * P;
        let state = UploadState::decode(&state.encode(), size).expect("consistent");
        let pieces = state.pieces(&layout, &id, size);
        let keys: Vec<&str> = pieces.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                layout.part(&id, 1, 0xa),
                layout.part(&id, 2, 0xa),
                layout.part(&id, 3, 0xc),
            ]
        );
        assert!(pieces.iter().all(|p| p.len == P));
        assert_eq!(
            state.stale_tail(&layout, &id),
            Some(layout.tail(&id, 2 * P + 20, 0xb)),
            "the tail the last append consumed"
        );
    }

    #[test]
    fn the_tail_ends_the_upload() {
        let layout = Layout::new(None);
        let id = UploadId::generate();
        let state = UploadState::new(PART).grown(0, 7, 1, true);
        let size = P + 99;
        let pieces = state.pieces(&layout, &id, size);
        assert_eq!(pieces.len(), 2);
        assert_eq!(
            pieces[1],
            Piece {
                key: layout.tail(&id, size, 7),
                len: 99
            }
        );
        assert_eq!(state.stale_tail(&layout, &id), None);
    }

    #[test]
    fn states_that_do_not_add_up_are_refused() {
        let with_tail = UploadState::new(PART).grown(0, 1, 1, true).encode();
        let without_tail = UploadState::new(PART).grown(0, 1, 1, false).encode();
        for (bytes, size) in [
            (&with_tail, P),        // a tail of 0 bytes
            (&with_tail, 2 * P),    // a tail of a whole part
            (&with_tail, P - 1),    // less than the parts
            (&without_tail, P + 1), // bytes with no tail
        ] {
            assert!(UploadState::decode(bytes, size).is_err(), "size {size}");
        }
        UploadState::decode(&with_tail, P + 1).expect("consistent");
        UploadState::decode(&without_tail, P).expect("consistent");
        for garbage in [
            &b""[..],
            b"{}",
            b"[1,2]",
            br#"{"v":2,"part_size":5242880,"parts":[],"tail":null,"stale_tail":null}"#,
        ] {
            assert!(UploadState::decode(garbage, 0).is_err(), "{garbage:?}");
        }
        let tiny_parts = br#"{"v":1,"part_size":1024,"parts":[],"tail":null,"stale_tail":null}"#;
        assert!(UploadState::decode(tiny_parts, 0).is_err());
    }

    #[test]
    fn the_state_stays_small() {
        // A 10 GiB upload sent in 4 MiB chunks, as through API Gateway: one run per part.
        let mut state = UploadState::new(8 * 1024 * 1024);
        for writer in 0..1280 {
            state = state.grown(0, u32::MAX - writer, 1, true);
        }
        let bytes = state.encode().len();
        assert!(bytes < 32 * 1024, "{bytes} bytes of state");
    }
}

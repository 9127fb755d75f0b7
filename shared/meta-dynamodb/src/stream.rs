//! The table's stream read back as registry changes: which stream records are pushes and
//! deletions of manifests and tags, for the events function to hand to replication.
//!
//! A push writes its manifest and tag items in one transaction, so it reaches the stream as
//! one record per item; a deletion by digest removes the manifest item and every tag item
//! pointing at it. What each record means:
//!
//! | record                                   | change                                      |
//! |------------------------------------------|---------------------------------------------|
//! | tag item `INSERT`                        | pushed, with the tag and its digest         |
//! | tag item `MODIFY` to another digest      | pushed, with the tag and its new digest     |
//! | tag item `MODIFY`, same digest           | none: the manifest's media type was rewritten, nothing moved |
//! | tag item `REMOVE`                        | tag deleted (with the digest it pointed at) |
//! | manifest item `INSERT`                   | pushed, without a tag                       |
//! | manifest item `MODIFY`                   | none: the same bytes pushed again           |
//! | manifest item `REMOVE`                   | manifest deleted                            |
//! | anything else                            | none                                        |
//!
//! "Anything else" is every other item of the table: manifest parts, referrers, blob links,
//! repository items, upload sessions, accounts, and replication's own `REPL#` records.
//!
//! DynamoDB writes no stream record for a put that changes nothing, so pushing the same
//! manifest under the same tag again makes no change here (in `berth serve` it is an event).

use serde_json::Value;

use crate::schema::{MANIFEST_PREFIX, PART_MARKER, PARTITION_KEY, SORT_KEY, TAG_PREFIX};
use crate::store::attr;

const REPOSITORY_PREFIX: &str = "REPO#";

/// A push or deletion found in one stream record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    /// A manifest was pushed, by tag (`tag` is set) or by digest.
    Pushed {
        repository: String,
        digest: String,
        tag: Option<String>,
    },
    /// A manifest and the tags pointing at it were deleted.
    ManifestDeleted { repository: String, digest: String },
    /// A tag was deleted, alone or with its manifest (`digest`, from the old image, tells
    /// which: a deletion by digest also brings the manifest's [`Self::ManifestDeleted`]).
    TagDeleted {
        repository: String,
        tag: String,
        digest: Option<String>,
    },
}

/// The change one record of the stream (as Lambda delivers it: `eventName`, and `dynamodb`
/// with `Keys`, `NewImage` and `OldImage` in DynamoDB's typed JSON) stands for, if any.
///
/// Errors name what is missing from a record that is not a DynamoDB stream record at all;
/// retrying it would not help.
pub fn stream_change(record: &Value) -> Result<Option<StreamChange>, String> {
    let event = record
        .get("eventName")
        .and_then(Value::as_str)
        .ok_or("the record has no eventName")?;
    let change = record
        .get("dynamodb")
        .ok_or("the record has no dynamodb section")?;
    let keys = change.get("Keys").ok_or("the record has no Keys")?;
    let (Some(pk), Some(sk)) = (string(keys, PARTITION_KEY), string(keys, SORT_KEY)) else {
        return Err(format!(
            "the record's Keys have no string {PARTITION_KEY} and {SORT_KEY}"
        ));
    };
    let Some(repository) = pk.strip_prefix(REPOSITORY_PREFIX) else {
        return Ok(None);
    };
    let image_digest = |image: &str| {
        change
            .get(image)
            .and_then(|item| string(item, attr::DIGEST))
            .map(str::to_owned)
    };
    let repository = repository.to_owned();
    if let Some(tag) = sk.strip_prefix(TAG_PREFIX) {
        let tag = tag.to_owned();
        return Ok(match event {
            "INSERT" | "MODIFY" => {
                let digest = image_digest("NewImage")
                    .ok_or("a tag record has no digest in its NewImage (is the stream's view NEW_AND_OLD_IMAGES?)")?;
                let moved = event == "INSERT" || image_digest("OldImage").as_ref() != Some(&digest);
                moved.then_some(StreamChange::Pushed {
                    repository,
                    digest,
                    tag: Some(tag),
                })
            }
            "REMOVE" => Some(StreamChange::TagDeleted {
                repository,
                tag,
                digest: image_digest("OldImage"),
            }),
            _ => None,
        });
    }
    if let Some(digest) = sk.strip_prefix(MANIFEST_PREFIX) {
        if digest.contains(PART_MARKER) {
            return Ok(None);
        }
        let digest = digest.to_owned();
        return Ok(match event {
            "INSERT" => Some(StreamChange::Pushed {
                repository,
                digest,
                tag: None,
            }),
            "REMOVE" => Some(StreamChange::ManifestDeleted { repository, digest }),
            _ => None,
        });
    }
    Ok(None)
}

/// The changes of a batch of records, in order, without the tag deletions that are part of
/// a manifest deletion in the same batch: in `berth serve` deleting a manifest is one event,
/// and replicating it deletes the manifest (so its tags) at the destination too. A manifest
/// deletion's records share a partition, so they reach one stream shard, in order, and
/// usually one batch; when they are split, the tag deletions stand on their own.
///
/// Each entry is the record's position in `records` and its change; records that are not
/// DynamoDB stream records are returned as errors, in place.
pub fn stream_changes(records: &[Value]) -> Vec<(usize, Result<StreamChange, String>)> {
    let parsed: Vec<(usize, Result<StreamChange, String>)> = records
        .iter()
        .enumerate()
        .filter_map(|(index, record)| stream_change(record).transpose().map(|c| (index, c)))
        .collect();
    let deleted: Vec<(String, String)> = parsed
        .iter()
        .filter_map(|(_, change)| match change {
            Ok(StreamChange::ManifestDeleted { repository, digest }) => {
                Some((repository.clone(), digest.clone()))
            }
            _ => None,
        })
        .collect();
    parsed
        .into_iter()
        .filter(|(_, change)| match change {
            Ok(StreamChange::TagDeleted {
                repository,
                digest: Some(digest),
                ..
            }) => !deleted.iter().any(|(r, d)| r == repository && d == digest),
            _ => true,
        })
        .collect()
}

/// A string attribute (`{"S": "..."}`) of an item in DynamoDB's typed JSON.
fn string<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item.get(name)?.get("S")?.as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DIGEST: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";
    const OTHER: &str = "sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    /// A record as DynamoDB Streams hands it to Lambda (view NEW_AND_OLD_IMAGES).
    fn record(event: &str, pk: &str, sk: &str, new: Option<Value>, old: Option<Value>) -> Value {
        let mut change = json!({
            "ApproximateCreationDateTime": 1_764_140_000,
            "Keys": { "PK": { "S": pk }, "SK": { "S": sk } },
            "SequenceNumber": "4421584500000000017450439091",
            "SizeBytes": 412,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        });
        if let Some(new) = new {
            change["NewImage"] = new;
        }
        if let Some(old) = old {
            change["OldImage"] = old;
        }
        json!({
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": event,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": change,
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/berth-MetadataTable/stream/2026-11-26T06:00:00.000",
        })
    }

    fn tag_image(repo: &str, tag: &str, digest: &str) -> Value {
        json!({
            "PK": { "S": format!("REPO#{repo}") },
            "SK": { "S": format!("TAG#{tag}") },
            "digest": { "S": digest },
            "media_type": { "S": "application/vnd.oci.image.manifest.v1+json" },
            "size": { "N": "528" },
            "bytes": { "B": "eyJzY2hlbWFWZXJzaW9uIjoyfQ==" },
        })
    }

    fn manifest_image(repo: &str, digest: &str) -> Value {
        json!({
            "PK": { "S": format!("REPO#{repo}") },
            "SK": { "S": format!("MANIFEST#{digest}") },
            "media_type": { "S": "application/vnd.oci.image.manifest.v1+json" },
            "size": { "N": "528" },
            "bytes": { "B": "eyJzY2hlbWFWZXJzaW9uIjoyfQ==" },
            "revision": { "S": "8f14e45fceea167a5a36dedd4bea2543" },
        })
    }

    fn change(record: &Value) -> Option<StreamChange> {
        stream_change(record).expect("a stream record")
    }

    #[test]
    fn a_new_tag_is_a_push_by_tag() {
        let new = tag_image("library/alpine", "3.20", DIGEST);
        let record = record("INSERT", "REPO#library/alpine", "TAG#3.20", Some(new), None);
        assert_eq!(
            change(&record),
            Some(StreamChange::Pushed {
                repository: "library/alpine".into(),
                digest: DIGEST.into(),
                tag: Some("3.20".into()),
            })
        );
    }

    #[test]
    fn a_moved_tag_is_a_push_and_a_rewritten_one_is_not() {
        let moved = record(
            "MODIFY",
            "REPO#app",
            "TAG#latest",
            Some(tag_image("app", "latest", DIGEST)),
            Some(tag_image("app", "latest", OTHER)),
        );
        assert_eq!(
            change(&moved),
            Some(StreamChange::Pushed {
                repository: "app".into(),
                digest: DIGEST.into(),
                tag: Some("latest".into()),
            })
        );
        let mut retyped = tag_image("app", "latest", DIGEST);
        retyped["media_type"] =
            json!({ "S": "application/vnd.docker.distribution.manifest.v2+json" });
        let rewritten = record(
            "MODIFY",
            "REPO#app",
            "TAG#latest",
            Some(retyped),
            Some(tag_image("app", "latest", DIGEST)),
        );
        assert_eq!(change(&rewritten), None);
    }

    #[test]
    fn manifests_pushed_and_deleted() {
        let key = format!("MANIFEST#{DIGEST}");
        let inserted = record(
            "INSERT",
            "REPO#a/b/c",
            &key,
            Some(manifest_image("a/b/c", DIGEST)),
            None,
        );
        assert_eq!(
            change(&inserted),
            Some(StreamChange::Pushed {
                repository: "a/b/c".into(),
                digest: DIGEST.into(),
                tag: None,
            })
        );
        let pushed_again = record(
            "MODIFY",
            "REPO#a/b/c",
            &key,
            Some(manifest_image("a/b/c", DIGEST)),
            Some(manifest_image("a/b/c", DIGEST)),
        );
        assert_eq!(change(&pushed_again), None);
        let removed = record(
            "REMOVE",
            "REPO#a/b/c",
            &key,
            None,
            Some(manifest_image("a/b/c", DIGEST)),
        );
        assert_eq!(
            change(&removed),
            Some(StreamChange::ManifestDeleted {
                repository: "a/b/c".into(),
                digest: DIGEST.into(),
            })
        );
    }

    #[test]
    fn a_removed_tag_is_a_tag_deletion() {
        let removed = record(
            "REMOVE",
            "REPO#app",
            "TAG#v1",
            None,
            Some(tag_image("app", "v1", DIGEST)),
        );
        assert_eq!(
            change(&removed),
            Some(StreamChange::TagDeleted {
                repository: "app".into(),
                tag: "v1".into(),
                digest: Some(DIGEST.into()),
            })
        );
    }

    #[test]
    fn other_items_are_no_registry_change() {
        let part = format!("MANIFEST#{DIGEST}#PART#9f86d081#0000");
        let referrer = format!("REFERRER#{OTHER}#{DIGEST}");
        let blob = format!("BLOB#{DIGEST}");
        let records = [
            ("REPO#app", part.as_str()),
            ("REPO#app", referrer.as_str()),
            ("REPO#app", blob.as_str()),
            ("REPO#app", "META"),
            ("UPLOAD#1f0e3dad99908345f7439f8ffabdffc4", "META"),
            ("USER#alice", "META"),
            ("USER#alice", "MEMBERSHIP#library"),
            ("PROJECT#library", "MEMBER#alice"),
            ("LOGIN#alice", "META"),
            ("REPL#EXECUTION", "00000000000000000001"),
            (
                "REPL#EXECUTION#00000000000000000001",
                "TASK#00000000000000000001",
            ),
            ("REPL#COUNTER", "task"),
            ("REPL#SCHEDULE", "00000000000000000003"),
        ];
        for (pk, sk) in records {
            for event in ["INSERT", "MODIFY", "REMOVE"] {
                let image =
                    json!({ "PK": { "S": pk }, "SK": { "S": sk }, "digest": { "S": DIGEST } });
                let record = record(event, pk, sk, Some(image.clone()), Some(image));
                assert_eq!(change(&record), None, "{event} {pk} {sk}");
            }
        }
    }

    #[test]
    fn records_that_are_not_stream_records_are_errors() {
        for bad in [
            json!({}),
            json!({ "eventName": "INSERT" }),
            json!({ "eventName": "INSERT", "dynamodb": {} }),
            json!({ "eventName": "INSERT", "dynamodb": { "Keys": { "PK": { "N": "1" } } } }),
            record("INSERT", "REPO#app", "TAG#v1", None, None),
        ] {
            assert!(stream_change(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_manifest_deletion_takes_its_tags_along() {
        let key = format!("MANIFEST#{DIGEST}");
        let records = [
            record(
                "REMOVE",
                "REPO#app",
                &key,
                None,
                Some(manifest_image("app", DIGEST)),
            ),
            record(
                "REMOVE",
                "REPO#app",
                "TAG#v1",
                None,
                Some(tag_image("app", "v1", DIGEST)),
            ),
            // Another repository's tag of the same digest, and a tag of another digest.
            record(
                "REMOVE",
                "REPO#other",
                "TAG#v1",
                None,
                Some(tag_image("other", "v1", DIGEST)),
            ),
            record(
                "REMOVE",
                "REPO#app",
                "TAG#v2",
                None,
                Some(tag_image("app", "v2", OTHER)),
            ),
            json!({ "eventName": "INSERT" }),
        ];
        let changes = stream_changes(&records);
        let positions: Vec<usize> = changes.iter().map(|(index, _)| *index).collect();
        assert_eq!(positions, [0, 2, 3, 4]);
        assert!(changes[3].1.is_err());
    }
}

//! Berth's registry metadata, accounts and replication records in one DynamoDB table:
//! [`DynamoMetadataStore`] implements the `MetadataStore`, `AccountStore` and
//! `ReplicationStore`, `AuditStore`, `StatisticsStore`, `WebhookStore` and `RetentionStore`
//! ports, and [`create_table`] creates the table for `berth init` and tests.
//! [`stream_change`] reads the table's stream back as registry pushes and deletions.
//!
//! The items are those of the embedded redb store (`berth-store-local`, whose semantics this
//! adapter mirrors), and every adapter passes the same conformance suite.
//!
//! # Key schema
//!
//! One table, partition key `PK` and sort key `SK`, both strings; one sparse global secondary
//! index `catalog` (`CatalogPK` / `CatalogSK`, keys only); time to live on `expires_at`.
//! [`CLOUDFORMATION_TABLE`] is the same table as a template resource.
//!
//! | item                 | `PK`           | `SK`                                   | other attributes                                                      |
//! |----------------------|----------------|----------------------------------------|-----------------------------------------------------------------------|
//! | repository           | `REPO#<name>`  | `META`                                 | `CatalogPK` = `REPOS`, `CatalogSK` = `<name>`                         |
//! | tag                  | `REPO#<name>`  | `TAG#<tag>`                            | `digest`, `media_type`, `size`, `bytes` or `parts`, `subject`, `referrer` |
//! | manifest             | `REPO#<name>`  | `MANIFEST#<digest>`                    | `media_type`, `size`, `bytes` or `parts` + `generation`, `subject`, `referrer`, `revision` |
//! | manifest part        | `REPO#<name>`  | `MANIFEST#<digest>#PART#<generation>#<nnnn>` | `bytes`                                                         |
//! | referrer             | `REPO#<name>`  | `REFERRER#<subject>#<digest>`          | `referrer` (the descriptor as JSON)                                   |
//! | blob link            | `REPO#<name>`  | `BLOB#<digest>`                        | `size`                                                                |
//! | upload session       | `UPLOAD#<id>`  | `META`                                 | `size`, `session` (JSON), `expires_at`                                |
//! | user                 | `USER#<name>`  | `META`                                 | `CatalogPK` = `USERS`, `CatalogSK` = `<name>`, `record` (JSON), `revision` |
//! | membership (mirror)  | `USER#<name>`  | `MEMBERSHIP#<project>`                 | `project`, `user`, `role` (Harbor's `role_id`), `created_at`          |
//! | project              | `PROJECT#<name>` | `META`                               | `CatalogPK` = `PROJECTS`, `CatalogSK` = `<name>`, `record` (JSON), `revision` |
//! | member               | `PROJECT#<name>` | `MEMBER#<user>`                      | `project`, `user`, `role`, `created_at`                               |
//! | robot account        | `PROJECT#<project>` | `ROBOT#robot$<project>+<name>`    | `record` (JSON)                                                       |
//! | failed-login counter | `LOGIN#<key>`  | `META`                                 | `failures`, `first_failure`, `expires_at`                             |
//! | replication id counter | `REPL#COUNTER` | `<kind>` (`registry`, `policy`, `execution`, `task`) | `last_id`                         |
//! | replication endpoint | `REPL#REGISTRY` | `<id>`                                | `record` (JSON)                                                       |
//! | replication policy   | `REPL#POLICY`  | `<id>`                                 | `record` (JSON)                                                       |
//! | replication execution | `REPL#EXECUTION` | `<id>`                              | `policy` (its policy id), `record` (JSON)                             |
//! | replication task     | `REPL#EXECUTION#<execution id>` | `TASK#<id>`           | `status`, `record` (JSON)                                             |
//! | schedule claim       | `REPL#SCHEDULE` | `<policy id>`                         | `fired` (the last fire time claimed)                                  |
//! | audit entry          | `AUDIT#<yyyy-mm-dd>` | `<at_ms>#<id>`                   | `entry` (JSON), `expires_at`                                          |
//! | audit day            | `AUDIT#DAYS`   | `<yyyy-mm-dd>`                         | `expires_at`                                                          |
//! | repository usage     | `STATS#REPOSITORIES` | `<repository>`                   | `pulls`, `last_pull`, `pushed`                                        |
//! | artifact usage       | `REPO#<name>`  | `STATS#<digest>`                       | `pulls`, `last_pull`, `pushed`                                        |
//! | daily pulls          | `STATS#DAILY`  | `<day>` (8 digits)                     | `pulls`, `expires_at`                                                 |
//! | count claim          | `COUNTED#<id>` | `META`                                 | `expires_at`                                                          |
//! | webhook policy       | `PROJECT#<name>` | `WEBHOOK#<id>`                       | `record` (JSON)                                                       |
//! | webhook policy name  | `PROJECT#<name>` | `WEBHOOKNAME#<policy name>`          | `id`                                                                  |
//! | webhook id counter   | `PROJECT#<name>` | `WEBHOOKCOUNTER`                     | `last_id`                                                             |
//! | webhook delivery     | `HOOKS#<project>#<id>` | `<created ms>#<delivery id>`   | `record` (JSON)                                                       |
//! | retention id counters | `RETENTION#ROOT` | `COUNTER`                          | `policy_id`, `execution_id`                                           |
//! | retention policy     | `RETENTION#ROOT` | `POLICY#<id>`                        | `record` (JSON)                                                       |
//! | project's retention policy | `RETENTION#ROOT` | `PROJECT#<project>`            | `id`                                                                  |
//! | retention execution's policy | `RETENTION#ROOT` | `EXEC#<id>`                  | `policy`                                                              |
//! | running retention execution | `RETENTION#ROOT` | `RUNNING#<id>`                | `policy`, `tasks`, `after` (the gc function's stream filter picks these) |
//! | retention execution  | `RETENTION#P<policy id>` | `EXEC#<id>`                  | `record` (JSON)                                                       |
//! | retention task       | `RETENTION#E<execution id>` | `TASK#<id>`               | `record` (JSON)                                                       |
//!
//! Replication ids (`<id>`, `<kind>` aside) are written as 20 zero-padded digits, so that key
//! order is numeric order.
//!
//! A global `BLOB#<digest>` partition is left for garbage collection.
//!
//! Why these keys:
//!
//! - **A repository is one partition**, so tags, manifests, referrers and links are read with
//!   key lookups and range queries, and every multi-item write stays inside it. The partition
//!   key is compared whole, so repository `a` never sees the items of `a/b` or `a-b`.
//! - **Tags sort by key**: a tag listing is a Query of `SK BETWEEN "TAG#<after>" AND "TAG$"`
//!   (`$` follows `#`), in DynamoDB's byte-wise order, the order the port promises.
//! - **The catalog is a sparse index**: only repository items carry `CatalogPK`, all with the
//!   same value, so one index partition lists every repository in name order. The repository
//!   item is rewritten with every push, but an index is only written when its keys change, so
//!   the index partition sees one write per new repository, not one per push. It is eventually
//!   consistent: a new repository can be missing from the catalog for a moment.
//! - **A tag holds what serving it needs**: digest, media type, referrer and, up to
//!   [`INLINE_LIMIT`] bytes (with media type and descriptor), the manifest bytes, so a pull by
//!   tag is one `GetItem`. Manifests are immutable per digest, so the copy only changes when
//!   the tag moves (the tag item is rewritten whole) or when the same bytes are pushed again
//!   under another media type (every tag pointing at the digest is rewritten in the same
//!   transaction). Deleting a manifest deletes its tags.
//! - **Large manifests are split**: items are limited to 400 KB and manifests to 4 MiB. Above
//!   the inline limit the bytes go to part items of [`PART_BYTES`] that sort right after the
//!   manifest item, so reading by digest is still one Query (following its 1 MB pages), and a
//!   tag of a split manifest costs one more request. Parts are written before the manifest
//!   item that names them, under a `generation` of their own, and removed only once no
//!   manifest item names that generation, so a reader never finds a manifest without its
//!   parts. Pushing a split manifest again reuses the stored parts.
//! - **Writes that must agree are transactions**: a push writes manifest, tag, referrer and
//!   repository items in one `TransactWriteItems`. A delete finds the manifest's tags by
//!   reading the repository's tag items with a filter on `digest`, then removes manifest,
//!   referrer and tags in one transaction, on the condition that the manifest's `revision`
//!   (new with every push) is unchanged and each tag still points at it; a push that raced in
//!   makes the delete start over. A reverse index (tags listed on the manifest item) would make
//!   deletes cheaper but every tag move a read-modify-write of two manifests; pushes are the
//!   hot path, deletes are rare.
//! - **Upload offsets advance by condition**: `update_upload` is a `PutItem` on the condition
//!   that the stored `size` is the expected one; a missing item fails it too.
//! - **A user or a project is one partition** with what hangs off it: a user's holds a mirror
//!   of each of their memberships, a project's its members and robot accounts, so a project's
//!   members and a user's memberships are one Query each, in name order. A robot account's
//!   name (`robot$<project>+<name>`) names its project, so a login by robot name is one
//!   `GetItem`. A robot's own expiry stays inside its JSON record: as an `expires_at`
//!   attribute it would be the table's time to live, and DynamoDB would delete the robot.
//! - **Users and projects are listed through the catalog index** under `CatalogPK` values of
//!   their own (`USERS`, `PROJECTS`), apart from the repositories (`REPOS`). The index holds
//!   keys only, so each page of names is followed by one `BatchGetItem` of the items; it is
//!   eventually consistent like the repository catalog.
//! - **Memberships are written in pairs**: `put_member` is one `TransactWriteItems` of the
//!   member item, its mirror, and a new `revision` on the user and the project items on the
//!   condition that both exist (otherwise nothing is written and the answer is `false`). An
//!   existing member keeps its `created_at`. `create_robot` likewise renews the project's
//!   `revision` in the transaction that writes the robot.
//! - **Deletes remove children first and the parent last**: `delete_user` and
//!   `delete_project` read the partition (the parent's `revision` and its children's keys),
//!   then delete every child (both sides of each membership, the robots) and, in the same
//!   transaction as the last of them, the parent on the condition that its `revision` is
//!   unchanged; a member or robot added meanwhile fails it, and the delete starts over. Up to
//!   100 items (a user with 49 memberships; a project whose robots plus twice its members are
//!   at most 99) that is one transaction, and atomic. A larger delete takes one transaction per
//!   100 items and only its last step is atomic with the parent: if it is cut short, the user
//!   or project still exists with fewer memberships, members or robots. It never leaves a
//!   membership or robot without its parent, so access is only ever lost, and a new user or
//!   project of the same name inherits nothing.
//! - **A failed-login counter is one item updated in place**: `record_login_failure` is an
//!   `UpdateItem` that adds 1 on the condition that `first_failure` is within the window;
//!   when that fails (no counter, or its window has passed) a second `UpdateItem` starts the
//!   count at 1 on the condition that no concurrent call started a new window first (then it
//!   adds again). `expires_at` is the end of the window, so DynamoDB's time to live removes
//!   counters that count nothing any more; reads check the window themselves, since the time
//!   to live deletes late.
//! - **Replication keeps to partitions of its own**, all starting with `REPL#`
//!   ([`REPLICATION_PREFIX`]): a reader of the table's stream, which watches for pushes and
//!   deletes, tells replication's writes apart by the partition key alone, and IAM policies
//!   can grant them by leading key. Endpoints, policies and executions are one partition each
//!   (there are few of them, and listings read them whole or newest first with
//!   `ScanIndexForward=false`); listing one policy's executions filters the executions
//!   partition on `policy`, following pages until enough matched. An execution's tasks are a
//!   partition of their own, in id order. Ids come from one counter item per kind, an
//!   `UpdateItem` that adds 1 and returns the new value, so concurrent callers in any number
//!   of processes never get the same id. `update_task` is a `PutItem` on the condition that
//!   the stored `status` is the expected one (a missing task fails it too): exactly one of
//!   workers racing to claim a pending task wins. `claim_schedule` is an `UpdateItem` of the
//!   policy's schedule item on the condition that no fire time at or after this one was
//!   recorded. An execution keeps no counters (its state is computed from its tasks), so
//!   tasks finishing in different invocations never write the same item.
//!
//! Reads are strongly consistent (a pull right after a push must find the manifest), except
//! the catalog, which reads an index.
//!
//! # Requests per operation
//!
//! | method              | DynamoDB requests                                                              |
//! |---------------------|--------------------------------------------------------------------------------|
//! | `tagged_manifest`   | 1 `GetItem`; a split manifest adds 1 `Query` (one per MB of manifest)          |
//! | `manifest`          | 1 `Query` (one per MB of manifest)                                             |
//! | `manifests_present` | ⌈distinct digests / 100⌉ `BatchGetItem`, in parallel, plus retries of unprocessed keys |
//! | `blob_links`        | the same                                                                        |
//! | `put_manifest`      | 1 `TransactWriteItems`; when stored with another media type: + 1 `GetItem`, 1+ `Query` of the tags, 1 `TransactWriteItems`; a split manifest: 1 `GetItem`, 1 `BatchWriteItem` of the parts (unless stored already), 1 `TransactWriteItems` |
//! | `delete_manifest`   | 1 `GetItem`, 1+ `Query` (the repository's tags, 1 MB a page), 1 `TransactWriteItems`; a split manifest adds 1 `BatchWriteItem` |
//! | `delete_tag`, `unlink_blob` | 1 conditional `DeleteItem`                                              |
//! | `tags`, `repositories` | 1 `Query` per page (`limit` items or 1 MB)                                  |
//! | `repository_exists`, `upload` | 1 `GetItem`                                                           |
//! | `referrers`         | 1 `Query` per MB of descriptors                                                |
//! | `link_blob`         | 1 `TransactWriteItems` (repository and link items)                             |
//! | `create_upload`, `update_upload`, `delete_upload` | 1 `PutItem` / conditional `PutItem` / `DeleteItem` |
//! | `user`, `project`, `member`, `robot`, `login_failures` | 1 `GetItem`                               |
//! | `create_user`, `update_user`, `create_project`, `update_project`, `update_robot` | 1 conditional `PutItem` |
//! | `delete_robot`, `clear_login_failures` | 1 (conditional) `DeleteItem`                                |
//! | `create_robot`, `put_member`, `delete_member` | 1 `TransactWriteItems`                               |
//! | `members`, `memberships`, `robots` | 1 `Query` per MB                                                |
//! | `users`, `projects` | 1 `Query` of the index and 1 `BatchGetItem` per page                           |
//! | `delete_user`, `delete_project` | 1+ `Query` of the partition, 1 `TransactWriteItems` per 100 items  |
//! | `record_login_failure` | 1 `UpdateItem`; 2 when a window starts                                      |
//! | `next_id`, `claim_schedule` | 1 (conditional) `UpdateItem`                                         |
//! | `put_registry`, `put_policy`, `put_execution`, `put_task`, `update_task` | 1 (conditional) `PutItem` |
//! | `registry`, `policy`, `execution`, `task` | 1 `GetItem`                                            |
//! | `delete_registry`, `delete_policy` | 1 conditional `DeleteItem`                                     |
//! | `registries`, `policies`, `tasks` | 1 `Query` per MB                                                |
//! | `executions`        | 1 `Query` per page: `limit` items, or 1 MB read when filtered by policy        |
//!
//! Transactions cancelled by a conflicting transaction or throttling are tried again with
//! back-off; writes that lose a race (a condition failed) start over, both up to a bound
//! after which the call is `UNAVAILABLE`.
//!
//! # Errors
//!
//! Throttling, timeouts, connection failures and 5xx answers are `UNAVAILABLE` (503, the
//! client may retry); anything else is an internal error. The client sees only a generic
//! message; the cause, which may name the table or the endpoint, is for the log.

mod accounts;
mod audit;
mod error;
mod garbage;
mod quota;
mod replication;
mod retention;
mod schema;
mod statistics;
mod store;
mod stream;
mod toolkit;
mod webhooks;

pub use replication::REPLICATION_PREFIX;
pub use schema::{
    CATALOG_INDEX, CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, CLOUDFORMATION_TABLE, PARTITION_KEY,
    SORT_KEY, TTL_ATTRIBUTE, create_table,
};
pub use store::{DynamoMetadataStore, INLINE_LIMIT, PART_BYTES};
pub use stream::{StreamChange, stream_change, stream_changes};

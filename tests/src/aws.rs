//! Registries on the real S3 server and DynamoDB Local the test command starts (Garage and
//! DynamoDB Local on loopback), for the tests of Berth's AWS backends at the HTTP level.
//!
//! The environment comes from `scripts/services/garage.sh start DIR` and
//! `scripts/services/dynamodb-local.sh start`; `BERTH_TEST_GARAGE_DIR` names the Garage node's
//! directory for the tests that stop and restart it.

use std::path::PathBuf;
use std::process::Command;

use berth_runtime::{BlobLocation, MetadataLocation, S3Options, StorageConfig};

/// One test's share of the S3 bucket and its own DynamoDB table.
#[derive(Debug)]
pub struct AwsSandbox {
    pub bucket: String,
    /// The key prefix of this test's objects, ending in `/`.
    pub prefix: String,
    pub table: String,
    s3: aws_sdk_s3::Client,
}

impl AwsSandbox {
    /// A fresh prefix and a new table (created as `berth init` creates it).
    pub async fn new() -> Self {
        let bucket = std::env::var("BERTH_TEST_S3_BUCKET").expect(
            "BERTH_TEST_S3_BUCKET, AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL_DYNAMODB name the \
             test services: scripts/test-all.sh starts them",
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        let sandbox = Self {
            bucket,
            prefix: format!("http-{id}/"),
            table: format!("berth-http-{id}"),
            s3,
        };
        sandbox
            .storage()
            .init()
            .await
            .expect("the DynamoDB table can be created");
        sandbox
    }

    /// Storage on this sandbox: blobs in S3 (presigned redirects on), metadata in DynamoDB.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            data_dir: PathBuf::new(),
            blobs: BlobLocation::S3 {
                bucket: self.bucket.clone(),
                prefix: Some(self.prefix.trim_end_matches('/').to_owned()),
            },
            metadata: MetadataLocation::DynamoDb {
                table: self.table.clone(),
            },
            s3: S3Options {
                force_path_style: true,
                ..S3Options::default()
            },
        }
    }

    /// Every object key under this sandbox's prefix followed by `under`, sorted.
    pub async fn keys(&self, under: &str) -> Vec<String> {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{under}", self.prefix))
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("listing objects");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// The key a blob has under its content address.
    pub fn blob_key(&self, digest: &str) -> String {
        let (algorithm, hex) = digest.split_once(':').expect("a digest");
        format!("{}blobs/{algorithm}/{}/{hex}", self.prefix, &hex[..2])
    }

    /// Fetches a URL (such as a presigned one) with a plain client.
    pub async fn fetch(url: &str) -> (u16, Vec<u8>) {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
            .get(url)
            .send()
            .await
            .expect("the URL answers");
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("a body").to_vec();
        (status, body)
    }

    /// Removes this sandbox's objects (the table lives in DynamoDB Local's memory).
    pub async fn clear(&self) {
        for key in self.keys("").await {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("deleting a test object");
        }
    }
}

/// The Garage node of the test command, which a test may stop and start again.
#[derive(Debug)]
pub struct GarageNode {
    dir: PathBuf,
}

impl GarageNode {
    pub fn from_env() -> Self {
        let dir = std::env::var_os("BERTH_TEST_GARAGE_DIR")
            .expect("BERTH_TEST_GARAGE_DIR names the Garage node's directory");
        Self { dir: dir.into() }
    }

    /// Stops the node until the outage ends (or is dropped, so that a failing test does not
    /// leave S3 down for the tests after it).
    pub fn outage(&self) -> Outage<'_> {
        self.script("stop");
        Outage {
            node: self,
            over: false,
        }
    }

    fn script(&self, action: &str) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/services/garage.sh");
        let output = Command::new(script)
            .arg(action)
            .arg(&self.dir)
            .output()
            .expect("garage.sh runs");
        assert!(
            output.status.success(),
            "garage.sh {action} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A stopped Garage node; [`Outage::end`] starts it again on the same data and ports.
#[derive(Debug)]
pub struct Outage<'a> {
    node: &'a GarageNode,
    over: bool,
}

impl Outage<'_> {
    /// Starts the node and waits until it is healthy.
    pub fn end(mut self) {
        self.over = true;
        self.node.script("start");
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if !self.over {
            self.node.script("start");
        }
    }
}

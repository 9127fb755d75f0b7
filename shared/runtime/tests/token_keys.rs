//! The token keys in Parameter Store, against a real SSM endpoint (moto's, as
//! `scripts/services/moto.sh` starts it; `scripts/test-all.sh` runs this with
//! `--include-ignored`):
//!
//! ```sh
//! eval "$(scripts/services/moto.sh start /tmp/berth-moto)"
//! AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 \
//!   cargo test -p berth-runtime --all-features --test token_keys -- --include-ignored
//! ```

use berth_auth::{TokenIssuer, TokenVerifier};
use berth_http::KeySource as _;
use berth_runtime::token_keys::{KEPT_PREVIOUS_KEYS, PublicKeys, SsmKeys};

fn path() -> String {
    format!("/berth/test-{}/token-keys", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
#[ignore = "needs an SSM endpoint: scripts/services/moto.sh"]
async fn keys_are_made_once_published_and_rotated() {
    let path = path();
    let keys = SsmKeys::new(&path)
        .await
        .expect("a path")
        .with_kms_key(Some("alias/berth-test-token-keys".to_owned()));
    let missing = keys.verification_ring().await.expect_err("no keys yet");
    assert!(
        missing.to_string().contains("berth init --token-keys-ssm")
            || format!("{missing:?}").contains("berth init --token-keys-ssm"),
        "{missing:?}"
    );

    keys.rotate()
        .await
        .expect_err("no rotation where there is no key: a mistyped path makes none");
    let (kid, made) = keys.ensure().await.expect("made");
    assert!(made);
    let (again, made) = keys.ensure().await.expect("already there");
    assert_eq!((again.as_str(), made), (kid.as_str(), false));

    let signing = keys.signing_ring().await.expect("the signing ring");
    assert!(signing.can_sign());
    assert_eq!(signing.current_kid(), kid);
    let public = keys.verification_ring().await.expect("the public ring");
    assert!(
        !public.can_sign(),
        "the public parameter holds no private key"
    );
    assert_eq!(public.current_kid(), kid);

    // A token of the old key verifies after every rotation while the key is kept.
    let old_token = TokenIssuer::new("berth", "berth", &signing)
        .expect("an issuer")
        .issue("alice", Vec::new(), berth_auth::unix_now(), None)
        .expect("a token")
        .token;
    assert_eq!(
        keys.kms_key_in_use().await.expect("described").as_deref(),
        Some("alias/berth-test-token-keys"),
        "the signing key is encrypted with the KMS key given"
    );

    // Rotations without a KMS key keep the one the parameter has.
    let keys = SsmKeys::new(&path).await.expect("a path");
    let mut kids = vec![kid.clone()];
    for rotation in 1..=KEPT_PREVIOUS_KEYS + 1 {
        let new = keys.rotate().await.expect("rotated");
        assert!(!kids.contains(&new));
        kids.push(new.clone());
        let signing = keys.signing_ring().await.expect("the signing ring");
        assert_eq!(signing.current_kid(), new);
        let public = PublicKeys(keys.clone()).load().await.expect("reloaded");
        assert_eq!(public.current_kid(), new);
        let published: Vec<&str> = public.keys().map(|(kid, _)| kid).collect();
        let expected: Vec<&str> = kids
            .iter()
            .rev()
            .take(KEPT_PREVIOUS_KEYS + 1)
            .map(String::as_str)
            .collect();
        assert_eq!(published, expected, "current first, then the kept ones");
        assert_eq!(
            keys.kms_key_in_use().await.expect("described").as_deref(),
            Some("alias/berth-test-token-keys")
        );
        let verified = TokenVerifier::new("berth", "berth", &public)
            .verify(&old_token, berth_auth::unix_now());
        if rotation <= KEPT_PREVIOUS_KEYS {
            verified.expect("the first key still verifies its token");
        } else {
            assert!(
                matches!(verified, Err(berth_auth::VerifyError::UnknownKey)),
                "{verified:?}"
            );
        }
    }
}

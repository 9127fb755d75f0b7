//! Token costs on the request path: verifying one (every registry request with a token) and
//! issuing one (every token request, after the password check).

use std::hint::black_box;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_auth::{
    Action, KeyRing, ResourceAccess, TokenIssuer, TokenVerifier, generate_es256_pem, unix_now,
};
use criterion::{Criterion, criterion_group, criterion_main};

const ISSUER: &str = "berth";
const SERVICE: &str = "registry.example.com";

fn rsa_pem() -> String {
    let pair =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let der = pair.as_der().expect("PKCS#8");
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// One repository, pull and push: what `docker push` asks for.
fn typical_access() -> Vec<ResourceAccess> {
    let name = "team/app".parse().expect("a repository name");
    vec![ResourceAccess::repository(
        &name,
        [Action::Pull, Action::Push],
    )]
}

fn tokens(c: &mut Criterion) {
    let now = unix_now();
    let es256 =
        KeyRing::from_pems(&[generate_es256_pem().expect("an ES256 key")]).expect("an ES256 ring");
    let rs256 = KeyRing::from_pems(&[rsa_pem()]).expect("an RS256 ring");

    for (name, ring) in [("es256", &es256), ("rs256", &rs256)] {
        let issuer = TokenIssuer::new(ISSUER, SERVICE, ring).expect("a signing ring");
        let verifier = TokenVerifier::new(ISSUER, SERVICE, ring);
        let token = issuer
            .issue("alice", typical_access(), now, None)
            .expect("a token")
            .token;
        c.bench_function(&format!("{name}_verify"), |b| {
            b.iter(|| verifier.verify(black_box(&token), now).expect("valid"))
        });
        // What the registry does: the same token again, from its cache of verified tokens.
        let cached = TokenVerifier::new(ISSUER, SERVICE, ring).with_cache(4096);
        c.bench_function(&format!("{name}_verify_cached"), |b| {
            b.iter(|| cached.verify(black_box(&token), now).expect("valid"))
        });
        c.bench_function(&format!("{name}_issue"), |b| {
            b.iter(|| {
                issuer
                    .issue(black_box("alice"), typical_access(), now, None)
                    .expect("a token")
            })
        });
    }
}

/// The floor under `es256_verify`: the signature check alone, with a parsed key, over a
/// message as long as a typical token's. What `es256_verify` adds is the JWT's cost.
fn signature_floor(c: &mut Criterion) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a key");
    let message = vec![b'x'; 360];
    let signature = pair
        .sign(&SystemRandom::new(), &message)
        .expect("a signature");
    let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref())
        .expect("a public key");
    c.bench_function("es256_signature_only_verify", |b| {
        b.iter(|| {
            key.verify_sig(black_box(&message), signature.as_ref())
                .expect("valid")
        })
    });
}

criterion_group!(benches, tokens, signature_floor);
criterion_main!(benches);

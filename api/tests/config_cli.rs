//! Production configuration over the real binary: weak or inconsistent secrets are refused
//! with exit status 2, every problem listed at once, and no secret echoed.

mod common;

use common::Store;

#[tokio::test]
async fn production_refuses_hand_typed_and_mismatched_secrets_listing_all_and_echoing_none() {
    let store = Store::sqlite().await;
    let jwt = "a".repeat(40);
    let master = "11".repeat(32);
    let previous_jwt = "short-previous-secret";
    let out = store
        .egec()
        .args(["migrate"])
        .env("EGEC_ENV", "production")
        .env("EGEC_JWT_SECRET", &jwt)
        .env("EGEC_MASTER_KEY", &master)
        .env("EGEC_JWT_SECRET_PREVIOUS", previous_jwt)
        .env("EGEC_MASTER_KEY_PREVIOUS", &master)
        .env("EGEC_TRUSTED_PROXIES", "10.0.0.0/8, not-a-network")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "EGEC_JWT_SECRET is not random enough",
        "EGEC_MASTER_KEY is not random enough",
        "EGEC_JWT_SECRET_PREVIOUS must be at least 32 bytes",
        "EGEC_MASTER_KEY_PREVIOUS must differ",
        "EGEC_TRUSTED_PROXIES must be",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
    for secret in [jwt.as_str(), master.as_str(), previous_jwt] {
        assert!(!err.contains(secret), "a secret was echoed: {err}");
    }
    assert!(!err.contains("panicked"));
}

#[tokio::test]
async fn production_starts_with_random_secrets() {
    let store = Store::sqlite().await;
    let out = store
        .egec()
        .args(["migrate"])
        .env("EGEC_ENV", "production")
        .env(
            "EGEC_JWT_SECRET",
            "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100",
        )
        .env(
            "EGEC_MASTER_KEY",
            "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `EGEC_*` variable the configuration reads is documented in `.env.example` and the
/// README's configuration table.
#[test]
fn every_setting_read_by_the_configuration_is_documented() {
    let sources = [
        include_str!("../src/config.rs"),
        include_str!("../src/rate_limit/mod.rs"),
    ];
    let env_example = include_str!("../../.env.example");
    let readme = include_str!("../../README.md");
    let mut names = std::collections::BTreeSet::new();
    for src in sources {
        for (i, _) in src.match_indices("\"EGEC_") {
            let rest = &src[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                .unwrap_or(rest.len());
            names.insert(&rest[..end]);
        }
    }
    assert!(names.len() > 15, "{names:?}");
    for name in names {
        assert!(
            env_example.contains(name),
            "{name} missing from .env.example"
        );
        assert!(readme.contains(name), "{name} missing from README.md");
    }
}

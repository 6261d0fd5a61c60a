//! Checks of the secrets in the configuration, beyond their format: what production refuses.
//!
//! Messages name the variable and the problem, never the value.

use crate::config::Environment;
use std::collections::BTreeSet;

/// Fewer distinct characters than this and a secret was typed by hand, not drawn at random
/// (`openssl rand -hex 32` gives 64 characters over 16 symbols; chance of < 10: negligible).
const MIN_DISTINCT: usize = 10;

fn distinct(s: &str) -> usize {
    s.bytes().collect::<BTreeSet<_>>().len()
}

/// Every problem with the secrets, given the environment.
pub fn secret_problems(
    env: Environment,
    jwt: Option<&str>,
    jwt_previous: Option<&str>,
    master_key: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(p) = jwt_previous {
        if p.len() < 32 {
            problems.push("EGEC_JWT_SECRET_PREVIOUS must be at least 32 bytes".to_owned());
        }
        if jwt.is_none() {
            problems
                .push("EGEC_JWT_SECRET_PREVIOUS needs EGEC_JWT_SECRET (the new secret)".to_owned());
        }
        if Some(p) == jwt {
            problems.push("EGEC_JWT_SECRET_PREVIOUS must differ from EGEC_JWT_SECRET".to_owned());
        }
    }
    if env == Environment::Production {
        if let Some(j) = jwt
            && j.len() >= 32
            && distinct(j) < MIN_DISTINCT
        {
            problems.push(
                "EGEC_JWT_SECRET is not random enough for production; generate it with `openssl rand -hex 32`"
                    .to_owned(),
            );
        }
        if let Some(k) = master_key
            && distinct(&k.to_ascii_lowercase()) < MIN_DISTINCT
        {
            problems.push(
                "EGEC_MASTER_KEY is not random enough for production; generate it with `openssl rand -hex 32`"
                    .to_owned(),
            );
        }
        if let (Some(j), Some(k)) = (jwt, master_key)
            && j == k
        {
            problems
                .push("EGEC_JWT_SECRET and EGEC_MASTER_KEY must be different secrets".to_owned());
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD_JWT: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddccbbaa99887766554433221100";
    const GOOD_KEY: &str = "00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn random_secrets_pass_in_production() {
        let p = secret_problems(
            Environment::Production,
            Some(GOOD_JWT),
            None,
            Some(GOOD_KEY),
        );
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn production_refuses_hand_typed_secrets_and_names_them_without_their_values() {
        let weak_jwt = "a".repeat(40);
        let weak_key = "11".repeat(32);
        let p = secret_problems(
            Environment::Production,
            Some(&weak_jwt),
            None,
            Some(&weak_key),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("EGEC_JWT_SECRET") && p[1].contains("EGEC_MASTER_KEY"));
        assert!(
            p.iter()
                .all(|m| !m.contains(&weak_jwt) && !m.contains(&weak_key))
        );
        // Development keeps accepting them (test fixtures, local runs).
        assert!(
            secret_problems(
                Environment::Development,
                Some(&weak_jwt),
                None,
                Some(&weak_key)
            )
            .is_empty()
        );
    }

    #[test]
    fn a_previous_jwt_secret_must_be_long_and_not_the_current_one() {
        let p = secret_problems(
            Environment::Development,
            Some(GOOD_JWT),
            Some("short"),
            None,
        );
        assert_eq!(p.len(), 1);
        let p = secret_problems(
            Environment::Development,
            Some(GOOD_JWT),
            Some(GOOD_JWT),
            None,
        );
        assert_eq!(p.len(), 1);
    }
}

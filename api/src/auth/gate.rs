//! What an account must do before anything else: change its password (forced by an
//! administrator, or expired under `EGEC_PASSWORD_MAX_AGE_DAYS`) or enrol in two-factor
//! authentication (its role is in `EGEC_MFA_REQUIRED_ROLES`). The rule itself is
//! `egec_domain::permission::{account_requirement, allowed_while}`; this module only names
//! the endpoint of a request and maps the outcome to the API's error.

use crate::config::Config;
use crate::error::ApiError;
use axum::http::Method;
use chrono::{DateTime, Utc};
use egec_domain::permission::{
    AccountRequirement, SelfService, account_requirement, allowed_while,
};
use egec_domain::user::credentials::password_change_due;
use egec_projections::UserRow;

/// The self-service endpoint a request is for.
pub fn endpoint(method: &Method, path: &str) -> SelfService {
    let path = path.trim_end_matches('/');
    match (method, path) {
        (&Method::GET, "/api/auth/me") => SelfService::Me,
        (&Method::POST, "/api/auth/logout") => SelfService::Logout,
        (&Method::POST, "/api/auth/password") => SelfService::ChangePassword,
        (&Method::POST, "/api/auth/totp/setup") => SelfService::TotpSetup,
        (&Method::POST, "/api/auth/totp/enable") => SelfService::TotpEnable,
        _ => SelfService::Other,
    }
}

/// Whether the user must change the password now (forced, or expired).
pub fn must_change_password(config: &Config, user: &UserRow, now: DateTime<Utc>) -> bool {
    password_change_due(
        user.must_change_password,
        user.password_changed_at,
        config.password_max_age,
        now,
    )
}

/// Refuses the request with 403 when the account has a pending requirement and the
/// endpoint is not one it may use meanwhile.
pub fn check(
    config: &Config,
    method: &Method,
    path: &str,
    user: &UserRow,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let requirement = account_requirement(
        must_change_password(config, user, now),
        config.mfa_required_roles.contains(&user.role),
        user.mfa_enabled,
    );
    match requirement {
        Some(r) if !allowed_while(r, endpoint(method, path)) => Err(match r {
            AccountRequirement::ChangePassword => ApiError::PasswordChangeRequired,
            AccountRequirement::SetUpMfa => ApiError::MfaSetupRequired,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_method_and_exact_path() {
        assert_eq!(endpoint(&Method::GET, "/api/auth/me"), SelfService::Me);
        assert_eq!(endpoint(&Method::POST, "/api/auth/me"), SelfService::Other);
        assert_eq!(
            endpoint(&Method::POST, "/api/auth/totp/enable"),
            SelfService::TotpEnable
        );
        assert_eq!(
            endpoint(&Method::POST, "/api/auth/totp/disable"),
            SelfService::Other
        );
        assert_eq!(
            endpoint(&Method::POST, "/api/auth/logout-all"),
            SelfService::Other
        );
        assert_eq!(endpoint(&Method::GET, "/api/customers"), SelfService::Other);
    }
}

//! The one permission matrix. The API asks [`can`]; nothing else decides who may do what.
//!
//! Grants follow the security review: each action lists the lowest roles that hold it, and
//! the role hierarchy (see [`Role::inherits`]) hands them upwards. Row-level visibility (an
//! agent sees only customers assigned to them) is decided by [`can_see_customer`].

use crate::{Role, UserId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    CustomersView,
    CustomersCreate,
    CustomersEdit,
    CustomersDelete,
    CustomersImport,
    CustomersExport,
    CustomersBulkEdit,
    FollowupsView,
    FollowupsEdit,
    UsersView,
    UsersManage,
    AuditView,
    AuditExport,
    GdprExport,
    GdprErase,
    /// See passport numbers unmasked.
    PassportReveal,
    /// See the rate limiter's per-endpoint statistics (`GET /api/admin/rate-limits`).
    RateLimitsView,
    /// Issue, list, revoke and rotate API keys.
    ApiKeysManage,
}

impl Action {
    pub const ALL: [Action; 18] = [
        Action::CustomersView,
        Action::CustomersCreate,
        Action::CustomersEdit,
        Action::CustomersDelete,
        Action::CustomersImport,
        Action::CustomersExport,
        Action::CustomersBulkEdit,
        Action::FollowupsView,
        Action::FollowupsEdit,
        Action::UsersView,
        Action::UsersManage,
        Action::AuditView,
        Action::AuditExport,
        Action::GdprExport,
        Action::GdprErase,
        Action::PassportReveal,
        Action::RateLimitsView,
        Action::ApiKeysManage,
    ];

    /// The `<resource>:<action>` name used by API keys.
    pub fn name(self) -> &'static str {
        match self {
            Action::CustomersView => "customers:view",
            Action::CustomersCreate => "customers:create",
            Action::CustomersEdit => "customers:edit",
            Action::CustomersDelete => "customers:delete",
            Action::CustomersImport => "customers:import",
            Action::CustomersExport => "customers:export",
            Action::CustomersBulkEdit => "customers:bulk_edit",
            Action::FollowupsView => "followups:view",
            Action::FollowupsEdit => "followups:edit",
            Action::UsersView => "users:view",
            Action::UsersManage => "users:manage",
            Action::AuditView => "audit:view",
            Action::AuditExport => "audit:export",
            Action::GdprExport => "gdpr:export",
            Action::GdprErase => "gdpr:erase",
            Action::PassportReveal => "customers:passport_reveal",
            Action::RateLimitsView => "rate_limits:view",
            Action::ApiKeysManage => "api_keys:manage",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The roles granted this action directly; the hierarchy extends it to their superiors.
    fn granted_to(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::CustomersView => &[Agent, Auditor],
            Action::CustomersCreate => &[Dataentry],
            Action::CustomersEdit => &[Agent],
            Action::CustomersDelete => &[Superadmin],
            Action::CustomersImport => &[Admin],
            Action::CustomersExport => &[Superagent],
            Action::CustomersBulkEdit => &[Admin],
            Action::FollowupsView => &[Agent, Auditor],
            Action::FollowupsEdit => &[Agent],
            Action::UsersView => &[Admin, Auditor],
            Action::UsersManage => &[Admin],
            Action::AuditView => &[Admin, Auditor],
            Action::AuditExport => &[Admin, Auditor],
            Action::GdprExport => &[Admin],
            Action::GdprErase => &[Superadmin],
            Action::PassportReveal => &[Admin],
            Action::RateLimitsView => &[Superadmin],
            Action::ApiKeysManage => &[Superadmin],
        }
    }
}

/// Whether a role may perform an action at all (before row-level visibility).
pub fn can(role: Role, action: Action) -> bool {
    let granted = action.granted_to();
    granted.contains(&role) || role.inherits().iter().any(|r| granted.contains(r))
}

/// Who is acting: a staff user in a role, or an API key with its scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal<'a> {
    Staff(Role),
    ApiKey { scopes: &'a [Action] },
}

/// Whether replayed events (`GET /api/replay/streams/...`) show a principal personal fields
/// in clear rather than masked: exactly those who may see passport numbers in clear, the most
/// sensitive field an event holds. Credentials are shown to no one either way.
pub fn personal_data_in_clear(principal: Principal<'_>) -> bool {
    allows(principal, Action::PassportReveal)
}

/// Whether a principal may perform an action: a staff user by the role matrix, an API key by
/// exactly the permissions it was issued with (nothing inherited, nothing more).
pub fn allows(principal: Principal<'_>, action: Action) -> bool {
    match principal {
        Principal::Staff(role) => can(role, action),
        Principal::ApiKey { scopes } => scopes.contains(&action),
    }
}

/// Whether a permission may be given to an API key. Managing keys is not: a key that could
/// issue keys would outlive its own revocation.
pub fn grantable_to_api_key(action: Action) -> bool {
    action != Action::ApiKeysManage
}

/// Whether a role sees every customer or only those assigned to the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    All,
    AssignedTo(UserId),
}

/// Row-level visibility of customers for an actor.
pub fn customer_visibility(role: Role, actor: UserId) -> Visibility {
    match role {
        Role::Agent => Visibility::AssignedTo(actor),
        _ => Visibility::All,
    }
}

/// Whether an actor may see one customer with the given assignment.
pub fn can_see_customer(role: Role, actor: UserId, assigned: &[UserId]) -> bool {
    can(role, Action::CustomersView)
        && match customer_visibility(role, actor) {
            Visibility::All => true,
            Visibility::AssignedTo(me) => assigned.contains(&me),
        }
}

/// Whether a staff user holding `role` may be assigned to customers: the agent roles, who
/// work the customers they are given (a superagent also sees every other customer).
pub fn can_be_assigned_customers(role: Role) -> bool {
    matches!(role, Role::Agent | Role::Superagent)
}

/// Whether a role sees soft-deleted customers: those who may delete may see what was deleted.
pub fn can_see_deleted_customers(role: Role) -> bool {
    can(role, Action::CustomersDelete)
}

/// Whether `actor` may create or change a staff user holding `target`: only a superadmin
/// manages admins and superadmins; anyone who may manage users manages the other roles.
pub fn can_manage_user(actor: Role, target: Role) -> bool {
    can(actor, Action::UsersManage)
        && match target {
            Role::Superadmin | Role::Admin => actor == Role::Superadmin,
            _ => true,
        }
}

/// Whether a principal may read a staff account: everyone may read their own (a staff user
/// whose id is the account's; `reading_self`), other accounts need `users:view`.
pub fn can_read_user(principal: Principal<'_>, reading_self: bool) -> bool {
    (reading_self && matches!(principal, Principal::Staff(_)))
        || allows(principal, Action::UsersView)
}

/// Whether `actor` may change a staff user who holds `current` and, when `new_role` is
/// given, give them that role: the actor must be allowed to manage both the role the user
/// has and the role they would get (an admin neither touches an admin nor makes one).
pub fn can_update_user(actor: Role, current: Role, new_role: Option<Role>) -> bool {
    can_manage_user(actor, current) && new_role.is_none_or(|r| can_manage_user(actor, r))
}

/// Whether requests authenticated with this role are held to the admin IP allowlist
/// (`EGEC_ADMIN_IP_ALLOWLIST`): the roles that manage users and settings.
pub fn is_ip_restricted(role: Role) -> bool {
    matches!(role, Role::Superadmin | Role::Admin)
}

/// Whether a request may proceed given the allowlist verdict for its address: `None` means
/// no allowlist is configured (no restriction); `Some(inside)` whether the address is in it.
pub fn admin_ip_allowed(role: Role, inside_allowlist: Option<bool>) -> bool {
    !is_ip_restricted(role) || inside_allowlist.unwrap_or(true)
}

/// Something an account must do before it may use the rest of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRequirement {
    /// Forced by an administrator, or the password expired: `password_change_required`.
    ChangePassword,
    /// The role requires two-factor authentication and the user has none: `mfa_setup_required`.
    SetUpMfa,
}

/// The self-service endpoints that stay reachable while a requirement is pending; every
/// other endpoint is [`SelfService::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfService {
    Me,
    Logout,
    ChangePassword,
    TotpSetup,
    TotpEnable,
    Other,
}

/// What the account must do first, if anything. A password change comes before enrolment,
/// so an account with both pending is never stuck: after the change only enrolment remains.
pub fn account_requirement(
    password_change_due: bool,
    mfa_required_for_role: bool,
    mfa_enabled: bool,
) -> Option<AccountRequirement> {
    if password_change_due {
        Some(AccountRequirement::ChangePassword)
    } else if mfa_required_for_role && !mfa_enabled {
        Some(AccountRequirement::SetUpMfa)
    } else {
        None
    }
}

/// Whether an endpoint may be used while `requirement` is pending.
pub fn allowed_while(requirement: AccountRequirement, endpoint: SelfService) -> bool {
    use SelfService::*;
    match requirement {
        AccountRequirement::ChangePassword => matches!(endpoint, Me | Logout | ChangePassword),
        AccountRequirement::SetUpMfa => matches!(endpoint, Me | Logout | TotpSetup | TotpEnable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn only_agents_and_superagents_may_be_assigned_customers() {
        let assignable: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| can_be_assigned_customers(*r))
            .collect();
        assert_eq!(assignable, [Superagent, Agent]);
    }

    #[test]
    fn everyone_reads_their_own_account_and_only_users_view_reads_others() {
        for role in Role::ALL {
            assert!(can_read_user(Principal::Staff(role), true), "{role:?} self");
            assert_eq!(
                can_read_user(Principal::Staff(role), false),
                can(role, Action::UsersView),
                "{role:?} other"
            );
        }
        // A key has no account of its own: only its scopes count.
        assert!(!can_read_user(Principal::ApiKey { scopes: &[] }, true));
        assert!(can_read_user(
            Principal::ApiKey {
                scopes: &[Action::UsersView]
            },
            false
        ));
    }

    /// The review's customer matrix, written out in full so a change to the grants or to the
    /// hierarchy that alters any cell fails here.
    #[test]
    fn the_customer_matrix_matches_the_security_review() {
        let expect = [
            (
                Action::CustomersView,
                vec![Superadmin, Admin, Superagent, Agent, Auditor],
            ),
            (
                Action::CustomersCreate,
                vec![Superadmin, Admin, Superagent, Agent, Dataentry],
            ),
            (
                Action::CustomersEdit,
                vec![Superadmin, Admin, Superagent, Agent],
            ),
            (Action::CustomersDelete, vec![Superadmin]),
            (Action::CustomersImport, vec![Superadmin, Admin]),
            (Action::CustomersExport, vec![Superadmin, Admin, Superagent]),
            (Action::CustomersBulkEdit, vec![Superadmin, Admin]),
            (Action::PassportReveal, vec![Superadmin, Admin]),
        ];
        for (action, roles) in expect {
            for role in Role::ALL {
                assert_eq!(
                    can(role, action),
                    roles.contains(&role),
                    "{role} {action:?}"
                );
            }
        }
    }

    #[test]
    fn an_auditor_changes_nothing() {
        for a in [
            Action::CustomersCreate,
            Action::CustomersEdit,
            Action::CustomersDelete,
            Action::UsersManage,
            Action::GdprErase,
        ] {
            assert!(!can(Auditor, a), "{a:?}");
        }
    }

    #[test]
    fn an_agent_sees_only_customers_assigned_to_them() {
        let me = UserId::from_uuid(uuid::Uuid::from_u128(1));
        let other = UserId::from_uuid(uuid::Uuid::from_u128(2));
        assert!(can_see_customer(Agent, me, &[other, me]));
        assert!(!can_see_customer(Agent, me, &[other]));
        assert!(can_see_customer(Superagent, me, &[]));
        assert!(!can_see_customer(Dataentry, me, &[me]));
    }

    #[test]
    fn only_a_superadmin_manages_admins_and_sees_deleted_customers() {
        for target in Role::ALL {
            assert!(can_manage_user(Superadmin, target));
            let admin_may = !matches!(target, Superadmin | Admin);
            assert_eq!(can_manage_user(Admin, target), admin_may, "{target}");
            assert!(!can_manage_user(Superagent, target));
            assert!(!can_manage_user(Auditor, target));
        }
        for role in Role::ALL {
            assert_eq!(can_see_deleted_customers(role), role == Superadmin);
        }
    }

    #[test]
    fn an_admin_changes_neither_an_admin_nor_a_superadmin_nor_makes_one() {
        assert!(can_update_user(Admin, Agent, Some(Superagent)));
        assert!(can_update_user(Admin, Dataentry, None));
        assert!(!can_update_user(Admin, Agent, Some(Admin)));
        assert!(!can_update_user(Admin, Agent, Some(Superadmin)));
        assert!(!can_update_user(Admin, Superadmin, None));
        assert!(!can_update_user(Admin, Admin, Some(Agent)));
        assert!(can_update_user(Superadmin, Admin, Some(Superadmin)));
        assert!(!can_update_user(Superagent, Agent, None));
        assert!(!can_update_user(Auditor, Agent, None));
    }

    #[test]
    fn only_a_superadmin_manages_api_keys_and_no_key_can_be_given_that_power() {
        for role in Role::ALL {
            assert_eq!(
                can(role, Action::ApiKeysManage),
                role == Superadmin,
                "{role}"
            );
        }
        assert!(!grantable_to_api_key(Action::ApiKeysManage));
        assert!(grantable_to_api_key(Action::CustomersView));
    }

    #[test]
    fn an_api_key_may_do_exactly_what_its_scopes_name() {
        let scopes = [Action::CustomersView];
        for a in Action::ALL {
            assert_eq!(
                allows(Principal::ApiKey { scopes: &scopes }, a),
                a == Action::CustomersView,
                "{a:?}"
            );
        }
        assert!(allows(Principal::Staff(Admin), Action::UsersManage));
        assert!(!allows(Principal::Staff(Agent), Action::UsersManage));
    }

    #[test]
    fn every_action_name_parses_back() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
    }

    #[test]
    fn a_pending_password_change_allows_only_the_change_logout_and_me() {
        let req = account_requirement(true, true, false);
        assert_eq!(req, Some(AccountRequirement::ChangePassword));
        let req = req.unwrap();
        for ok in [
            SelfService::Me,
            SelfService::Logout,
            SelfService::ChangePassword,
        ] {
            assert!(allowed_while(req, ok), "{ok:?}");
        }
        for no in [
            SelfService::TotpSetup,
            SelfService::TotpEnable,
            SelfService::Other,
        ] {
            assert!(!allowed_while(req, no), "{no:?}");
        }
    }

    #[test]
    fn a_role_that_requires_mfa_allows_only_enrolment_logout_and_me_until_enrolled() {
        assert_eq!(account_requirement(false, false, false), None);
        assert_eq!(account_requirement(false, true, true), None);
        let req = account_requirement(false, true, false);
        assert_eq!(req, Some(AccountRequirement::SetUpMfa));
        let req = req.unwrap();
        for ok in [
            SelfService::Me,
            SelfService::Logout,
            SelfService::TotpSetup,
            SelfService::TotpEnable,
        ] {
            assert!(allowed_while(req, ok), "{ok:?}");
        }
        for no in [SelfService::ChangePassword, SelfService::Other] {
            assert!(!allowed_while(req, no), "{no:?}");
        }
    }
}

#[cfg(test)]
mod network_tests {
    use super::*;

    #[test]
    fn only_superadmins_and_admins_are_held_to_the_ip_allowlist() {
        for role in Role::ALL {
            let restricted = matches!(role, Role::Superadmin | Role::Admin);
            assert_eq!(is_ip_restricted(role), restricted, "{role:?}");
            assert_eq!(admin_ip_allowed(role, Some(false)), !restricted, "{role:?}");
            assert!(admin_ip_allowed(role, Some(true)));
            assert!(admin_ip_allowed(role, None), "no allowlist, no restriction");
        }
    }

    #[test]
    fn only_superadmins_see_rate_limit_statistics() {
        for role in Role::ALL {
            assert_eq!(
                can(role, Action::RateLimitsView),
                role == Role::Superadmin,
                "{role:?}"
            );
        }
    }
}

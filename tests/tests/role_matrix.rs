//! Every role against every endpoint the router serves, asserting the status the permission
//! matrix (`egec_domain::permission`) gives. Expected statuses are computed by calling the
//! permission module (`can`, `can_see_customer`, `can_manage_user`, `can_update_user`), not
//! written out, so the test proves that the API enforces the one matrix. Every mismatch is
//! collected and reported at once, naming the caller, method, path, expected and actual status.
//!
//! [`ENDPOINTS`] is the table: one row per endpoint with the rule that decides it and the
//! status on success. A rule denies with 403, except where row-level visibility hides a
//! customer (404). Without credentials every `/api` endpoint answers 401, except login (the
//! way in) and the OpenAPI document, which like `/healthz`, `/readyz` and `/metrics` is public.
//! A final check fails when the OpenAPI document lists an endpoint the table lacks.

mod support;

use egec_domain::Role;
use egec_domain::UserId;
use egec_domain::permission::{Action, can, can_manage_user, can_see_customer, can_update_user};
use egec_domain::user::credentials::TotpSecret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use support::{PASSWORD, TestApp, json_of};
use uuid::Uuid;

/// What decides an endpoint's answer.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// No credentials needed: every caller gets the success status.
    Public,
    /// The way in: any active user with the right password.
    Login,
    /// The caller's own account: every authenticated role.
    SelfService,
    /// `can(role, action)`, else 403.
    Can(Action),
    /// Reading another user needs `UsersView`; reading oneself is self-service.
    UserRead,
    /// `can_manage_user(role, target's role)` (which includes `UsersManage`), else 403.
    ManageUser,
    /// `can_update_user(role, target's role, new role)`, else 403.
    UpdateUser,
    /// `CustomersView`, else 403; then `can_see_customer`, else 404; then the action, else 403.
    Customer(Option<Action>),
    /// A follow-up endpoint: the follow-up action, else 403; then, like [`Rule::Customer`],
    /// `CustomersView`, else 403, and `can_see_customer` of its customer, else 404.
    Followup(Action),
}

struct Endpoint {
    method: Method,
    path: &'static str,
    rule: Rule,
    success: u16,
}

const fn ep(method: Method, path: &'static str, rule: Rule, success: u16) -> Endpoint {
    Endpoint {
        method,
        path,
        rule,
        success,
    }
}

/// method | path | rule (action) | success status
const ENDPOINTS: &[Endpoint] = &[
    ep(Method::POST, "/api/auth/login", Rule::Login, 200),
    ep(Method::GET, "/api/auth/me", Rule::SelfService, 200),
    ep(Method::POST, "/api/auth/logout", Rule::SelfService, 204),
    ep(Method::POST, "/api/auth/logout-all", Rule::SelfService, 204),
    ep(Method::POST, "/api/auth/password", Rule::SelfService, 204),
    ep(Method::POST, "/api/auth/totp/setup", Rule::SelfService, 200),
    ep(
        Method::POST,
        "/api/auth/totp/enable",
        Rule::SelfService,
        200,
    ),
    ep(
        Method::POST,
        "/api/auth/totp/disable",
        Rule::SelfService,
        204,
    ),
    ep(
        Method::POST,
        "/api/customers",
        Rule::Can(Action::CustomersCreate),
        201,
    ),
    ep(
        Method::GET,
        "/api/customers",
        Rule::Can(Action::CustomersView),
        200,
    ),
    ep(
        Method::GET,
        "/api/customers/{id}",
        Rule::Customer(None),
        200,
    ),
    ep(
        Method::PATCH,
        "/api/customers/{id}",
        Rule::Customer(Some(Action::CustomersEdit)),
        200,
    ),
    ep(
        Method::GET,
        "/api/customers/{id}/history",
        Rule::Customer(None),
        200,
    ),
    ep(
        Method::GET,
        "/api/gdpr/customers/{id}/export",
        Rule::Can(Action::GdprExport),
        200,
    ),
    ep(
        Method::POST,
        "/api/gdpr/customers/{id}/erase",
        Rule::Can(Action::GdprErase),
        200,
    ),
    ep(
        Method::POST,
        "/api/customers/{id}/followups",
        Rule::Followup(Action::FollowupsEdit),
        201,
    ),
    ep(
        Method::GET,
        "/api/customers/{id}/followups",
        Rule::Followup(Action::FollowupsView),
        200,
    ),
    ep(
        Method::GET,
        "/api/followups",
        Rule::Can(Action::FollowupsView),
        200,
    ),
    ep(
        Method::GET,
        "/api/followups/{id}",
        Rule::Followup(Action::FollowupsView),
        200,
    ),
    ep(
        Method::POST,
        "/api/followups/{id}/complete",
        Rule::Followup(Action::FollowupsEdit),
        200,
    ),
    ep(
        Method::DELETE,
        "/api/customers/{id}",
        Rule::Customer(Some(Action::CustomersDelete)),
        204,
    ),
    ep(
        Method::PUT,
        "/api/customers/{id}/agents",
        Rule::Customer(Some(Action::CustomersEdit)),
        200,
    ),
    ep(
        Method::POST,
        "/api/customers/bulk",
        Rule::Can(Action::CustomersBulkEdit),
        200,
    ),
    ep(
        Method::POST,
        "/api/customers/bulk/{batch_id}/undo",
        Rule::Can(Action::CustomersBulkEdit),
        200,
    ),
    ep(
        Method::POST,
        "/api/customers/{id}/attachments",
        Rule::Customer(Some(Action::CustomersEdit)),
        201,
    ),
    ep(
        Method::GET,
        "/api/customers/{id}/attachments",
        Rule::Customer(None),
        200,
    ),
    ep(
        Method::GET,
        "/api/attachments/{id}",
        Rule::Customer(None),
        200,
    ),
    ep(
        Method::POST,
        "/api/customers/import",
        Rule::Can(Action::CustomersImport),
        200,
    ),
    ep(
        Method::GET,
        "/api/customers/export.csv",
        Rule::Can(Action::CustomersExport),
        200,
    ),
    ep(Method::POST, "/api/users", Rule::ManageUser, 201),
    ep(Method::GET, "/api/users", Rule::Can(Action::UsersView), 200),
    ep(Method::GET, "/api/users/{id}", Rule::UserRead, 200),
    ep(Method::PATCH, "/api/users/{id}", Rule::UpdateUser, 200),
    ep(
        Method::POST,
        "/api/users/{id}/unlock",
        Rule::ManageUser,
        204,
    ),
    ep(
        Method::POST,
        "/api/users/{id}/force-logout",
        Rule::ManageUser,
        204,
    ),
    ep(
        Method::POST,
        "/api/users/{id}/require-password-change",
        Rule::ManageUser,
        204,
    ),
    ep(
        Method::POST,
        "/api/api-keys",
        Rule::Can(Action::ApiKeysManage),
        201,
    ),
    ep(
        Method::GET,
        "/api/api-keys",
        Rule::Can(Action::ApiKeysManage),
        200,
    ),
    ep(
        Method::DELETE,
        "/api/api-keys/{id}",
        Rule::Can(Action::ApiKeysManage),
        204,
    ),
    ep(
        Method::POST,
        "/api/api-keys/{id}/rotate",
        Rule::Can(Action::ApiKeysManage),
        201,
    ),
    ep(Method::GET, "/api/audit", Rule::Can(Action::AuditView), 200),
    ep(
        Method::GET,
        "/api/audit/export.csv",
        Rule::Can(Action::AuditExport),
        200,
    ),
    ep(
        Method::GET,
        "/api/audit/verify",
        Rule::Can(Action::AuditView),
        200,
    ),
    ep(
        Method::GET,
        "/api/replay/streams/{stream_id}",
        Rule::Can(Action::AuditView),
        200,
    ),
    ep(Method::GET, "/api/openapi.json", Rule::Public, 200),
    ep(
        Method::GET,
        "/api/admin/rate-limits",
        Rule::Can(Action::RateLimitsView),
        200,
    ),
    ep(Method::GET, "/healthz", Rule::Public, 200),
    ep(Method::GET, "/readyz", Rule::Public, 200),
    ep(Method::GET, "/metrics", Rule::Public, 200),
];

fn endpoint(method: &Method, path: &str) -> &'static Endpoint {
    ENDPOINTS
        .iter()
        .find(|e| e.method == *method && e.path == path)
        .unwrap_or_else(|| panic!("{method} {path} is not in the table"))
}

/// A staff member of one role: who they are and a token reused where a call has no side
/// effect on the caller.
struct Actor {
    role: Role,
    id: Uuid,
    token: String,
}

/// The expected status of one call, given what it targets.
#[derive(Debug, Clone, Copy, Default)]
struct Target {
    /// The role of the target user (user-management endpoints).
    user_role: Option<Role>,
    /// The role a PATCH gives the target user.
    new_role: Option<Role>,
    /// The target user is the caller.
    is_self: bool,
    /// The customer's assigned agents include the caller.
    assigned_to_caller: bool,
}

fn expected(e: &Endpoint, role: Role, actor: Uuid, t: Target) -> u16 {
    let deny = |allowed: bool| if allowed { e.success } else { 403 };
    match e.rule {
        Rule::Public | Rule::Login | Rule::SelfService => e.success,
        Rule::Can(action) => deny(can(role, action)),
        Rule::UserRead => deny(t.is_self || can(role, Action::UsersView)),
        Rule::ManageUser => deny(can_manage_user(role, t.user_role.expect("target role"))),
        Rule::UpdateUser => deny(can_update_user(
            role,
            t.user_role.expect("target role"),
            t.new_role,
        )),
        Rule::Followup(action) => {
            let me = UserId::from_uuid(actor);
            let assigned = if t.assigned_to_caller {
                vec![me]
            } else {
                vec![UserId::from_uuid(Uuid::from_u128(u128::MAX))]
            };
            if !can(role, action) || !can(role, Action::CustomersView) {
                403
            } else if !can_see_customer(role, me, &assigned) {
                404
            } else {
                e.success
            }
        }
        Rule::Customer(then) => {
            let me = UserId::from_uuid(actor);
            let assigned = if t.assigned_to_caller {
                vec![me]
            } else {
                vec![UserId::from_uuid(Uuid::from_u128(u128::MAX))]
            };
            if !can(role, Action::CustomersView) {
                403
            } else if !can_see_customer(role, me, &assigned) {
                404
            } else {
                deny(then.is_none_or(|a| can(role, a)))
            }
        }
    }
}

/// The cells run so far and the ones that disagreed with the matrix.
#[derive(Default)]
struct Matrix {
    cells: usize,
    mismatches: Vec<String>,
    /// (caller, method, table path) of every cell run, to prove no row was skipped.
    covered: HashSet<(String, Method, &'static str)>,
}

impl Matrix {
    fn record(
        &mut self,
        who: &str,
        method: &Method,
        (template, path): (&str, &str),
        expected: u16,
        actual: StatusCode,
    ) {
        self.cells += 1;
        if actual.as_u16() != expected {
            let concrete = if template == path {
                String::new()
            } else {
                format!(" ({path})")
            };
            self.mismatches.push(format!(
                "{who:<18} {method:<6} {template}{concrete}: expected {expected}, got {}",
                actual.as_u16()
            ));
        }
    }
}

struct Ctx<'a> {
    app: &'a TestApp,
    root: String,
    matrix: Matrix,
}

impl Ctx<'_> {
    /// Sends one request and records the cell for `template` (the table's path).
    #[allow(
        clippy::too_many_arguments,
        reason = "one cell: caller, endpoint, request and expectation, named at each call"
    )]
    async fn call(
        &mut self,
        who: &str,
        template: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        expected: u16,
    ) -> reqwest::Response {
        let e = endpoint(&method, template);
        let caller = who.split(' ').next().unwrap_or(who).to_owned();
        self.matrix.covered.insert((caller, method.clone(), e.path));
        let r = self.app.request(method.clone(), path, token, body).await;
        self.matrix
            .record(who, &method, (e.path, path), expected, r.status());
        r
    }

    /// [`Ctx::call`] for an upload: a multipart body with one small PNG as `file`.
    async fn call_upload(
        &mut self,
        who: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        expected: u16,
    ) {
        let e = endpoint(&Method::POST, template);
        let caller = who.split(' ').next().unwrap_or(who).to_owned();
        self.matrix.covered.insert((caller, Method::POST, e.path));
        let r = self
            .app
            .upload(path, token, "matrix.png", "image/png", MATRIX_PNG)
            .await;
        self.matrix
            .record(who, &Method::POST, (e.path, path), expected, r.status());
    }

    /// An attachment on the customer, uploaded by the superadmin.
    async fn attachment(&self, customer: Uuid) -> Uuid {
        let r = self
            .app
            .upload(
                &format!("/api/customers/{customer}/attachments"),
                Some(&self.root),
                "matrix.png",
                "image/png",
                MATRIX_PNG,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Uuid::parse_str(json_of(r).await["id"].as_str().unwrap()).unwrap()
    }

    /// A fresh user of the role, logged in: for calls that change the caller.
    async fn fresh(&self, role: Role) -> (Uuid, String) {
        self.app.as_role(role).await
    }

    async fn fresh_user(&self, role: Role) -> Uuid {
        self.app
            .user(
                &format!("target-{}@egec.example", Uuid::now_v7().simple()),
                role,
            )
            .await
    }

    async fn customer(&self, assigned: &[Uuid]) -> Uuid {
        let r = self
            .app
            .post(
                "/api/customers",
                Some(&self.root),
                json!({ "name": "Grace Hopper", "assigned_agent_ids": assigned }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Uuid::parse_str(json_of(r).await["id"].as_str().unwrap()).unwrap()
    }

    /// A follow-up of the customer, scheduled by the superadmin.
    async fn followup(&self, customer: Uuid) -> Uuid {
        let r = self
            .app
            .post(
                &format!("/api/customers/{customer}/followups"),
                Some(&self.root),
                json!({ "due_at": "2030-01-01T09:00:00Z", "note": "matrix follow-up" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Uuid::parse_str(json_of(r).await["id"].as_str().unwrap()).unwrap()
    }

    async fn api_key(&self) -> Uuid {
        let r = self
            .app
            .post(
                "/api/api-keys",
                Some(&self.root),
                json!({ "name": "matrix key", "permissions": ["customers:view"] }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        Uuid::parse_str(json_of(r).await["id"].as_str().unwrap()).unwrap()
    }
}

fn totp_code(secret: &TotpSecret, offset_secs: i64) -> String {
    egec_api::auth::totp::code_at(
        secret,
        chrono::Utc::now() + chrono::Duration::seconds(offset_secs),
    )
    .unwrap()
}

fn new_user_body(role: Role) -> Value {
    json!({
        "email": format!("new-{}@egec.example", Uuid::now_v7().simple()),
        "name": "New Staff",
        "role": role.as_str(),
        "password": "orchard lantern 4417 meadow",
    })
}

/// The self-service endpoints, each on a fresh session or user so no cell breaks another.
async fn self_service(ctx: &mut Ctx<'_>, a: &Actor) {
    let who = a.role.as_str();
    let ok = |m: Method, p: &str| expected(endpoint(&m, p), a.role, a.id, Target::default());

    let email = format!("{who}-login-{}@egec.example", Uuid::now_v7().simple());
    ctx.app.user(&email, a.role).await;
    let r = ctx
        .call(
            who,
            "/api/auth/login",
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": email, "password": PASSWORD })),
            ok(Method::POST, "/api/auth/login"),
        )
        .await;
    let token = json_of(r).await["token"].as_str().map(str::to_owned);

    let p = "/api/auth/me";
    ctx.call(
        who,
        p,
        Method::GET,
        p,
        Some(&a.token),
        None,
        ok(Method::GET, p),
    )
    .await;

    for p in ["/api/auth/logout", "/api/auth/logout-all"] {
        let (_, t) = ctx.fresh(a.role).await;
        ctx.call(who, p, Method::POST, p, Some(&t), None, ok(Method::POST, p))
            .await;
    }

    let p = "/api/auth/password";
    let t = match token {
        Some(t) => t,
        None => ctx.fresh(a.role).await.1,
    };
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        Some(&t),
        Some(json!({ "current_password": PASSWORD, "new_password": "copper kettle 5521 lagoon" })),
        ok(Method::POST, p),
    )
    .await;

    // Enrol and disable two-factor authentication on one fresh user.
    let (_, t) = ctx.fresh(a.role).await;
    let p = "/api/auth/totp/setup";
    let r = ctx
        .call(
            who,
            p,
            Method::POST,
            p,
            Some(&t),
            Some(json!({})),
            ok(Method::POST, p),
        )
        .await;
    let secret = json_of(r).await["secret"]
        .as_str()
        .and_then(|s| TotpSecret::parse(s).ok());
    let Some(secret) = secret else {
        ctx.matrix
            .mismatches
            .push(format!("{who}: no TOTP secret, enable and disable not run"));
        return;
    };
    let p = "/api/auth/totp/enable";
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        Some(&t),
        Some(json!({ "code": totp_code(&secret, 0) })),
        ok(Method::POST, p),
    )
    .await;
    let p = "/api/auth/totp/disable";
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        Some(&t),
        Some(json!({ "password": PASSWORD, "code": totp_code(&secret, 30) })),
        ok(Method::POST, p),
    )
    .await;
}

async fn customers(ctx: &mut Ctx<'_>, a: &Actor, mine: Uuid, other: Uuid) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str, assigned: bool| {
        expected(
            endpoint(&m, p),
            a.role,
            a.id,
            Target {
                assigned_to_caller: assigned,
                ..Target::default()
            },
        )
    };
    let p = "/api/customers";
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        t,
        Some(json!({ "name": "Ada Lovelace", "country": "GB" })),
        exp(Method::POST, p, false),
    )
    .await;
    ctx.call(who, p, Method::GET, p, t, None, exp(Method::GET, p, false))
        .await;
    // A customer assigned to the caller (the agent's row-level view), and one assigned to
    // someone else (hidden from an agent: 404).
    for (id, assigned) in [(mine, true), (other, false)] {
        let who = format!("{who}{}", if assigned { "" } else { " (unassigned)" });
        let tp = "/api/customers/{id}";
        let path = format!("/api/customers/{id}");
        ctx.call(
            &who,
            tp,
            Method::GET,
            &path,
            t,
            None,
            exp(Method::GET, tp, assigned),
        )
        .await;
        ctx.call(
            &who,
            tp,
            Method::PATCH,
            &path,
            t,
            Some(json!({ "notes": format!("touched by {}", a.role.as_str()) })),
            exp(Method::PATCH, tp, assigned),
        )
        .await;
        let tp = "/api/customers/{id}/history";
        let path = format!("/api/customers/{id}/history");
        ctx.call(
            &who,
            tp,
            Method::GET,
            &path,
            t,
            None,
            exp(Method::GET, tp, assigned),
        )
        .await;
    }
}

/// The follow-up endpoints, on a customer assigned to the caller and on one that is not.
/// Each completion gets a fresh follow-up (a second completion is a conflict).
async fn followups(ctx: &mut Ctx<'_>, a: &Actor, mine: Uuid, other: Uuid) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str, assigned: bool| {
        expected(
            endpoint(&m, p),
            a.role,
            a.id,
            Target {
                assigned_to_caller: assigned,
                ..Target::default()
            },
        )
    };
    let p = "/api/followups";
    ctx.call(who, p, Method::GET, p, t, None, exp(Method::GET, p, false))
        .await;
    for (customer, assigned) in [(mine, true), (other, false)] {
        let who = format!("{who}{}", if assigned { "" } else { " (unassigned)" });
        let tp = "/api/customers/{id}/followups";
        let path = format!("/api/customers/{customer}/followups");
        // No assignee: it defaults to the caller, who may be given it whenever they may
        // create it (they hold the edit permission and see the customer).
        let body = json!({
            "due_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
            "note": "call back",
        });
        ctx.call(
            &who,
            tp,
            Method::POST,
            &path,
            t,
            Some(body),
            exp(Method::POST, tp, assigned),
        )
        .await;
        ctx.call(
            &who,
            tp,
            Method::GET,
            &path,
            t,
            None,
            exp(Method::GET, tp, assigned),
        )
        .await;
        let id = ctx.followup(customer).await;
        let tp = "/api/followups/{id}";
        ctx.call(
            &who,
            tp,
            Method::GET,
            &format!("/api/followups/{id}"),
            t,
            None,
            exp(Method::GET, tp, assigned),
        )
        .await;
        let tp = "/api/followups/{id}/complete";
        ctx.call(
            &who,
            tp,
            Method::POST,
            &format!("/api/followups/{id}/complete"),
            t,
            Some(json!({})),
            exp(Method::POST, tp, assigned),
        )
        .await;
    }
}

/// Deletion, assignment, bulk edit and undo change the customer they touch: each cell gets
/// fresh customers (assigned to the agent `agent`, or to nobody) and, for the undo, a fresh
/// batch made by the superadmin.
async fn customer_changes(ctx: &mut Ctx<'_>, a: &Actor, agent: Uuid) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str, assigned: bool| {
        expected(
            endpoint(&m, p),
            a.role,
            a.id,
            Target {
                assigned_to_caller: assigned,
                ..Target::default()
            },
        )
    };
    for assigned in [true, false] {
        let who = format!("{who}{}", if assigned { "" } else { " (unassigned)" });
        let owners: &[Uuid] = if assigned { &[agent] } else { &[] };
        let id = ctx.customer(owners).await;
        let tp = "/api/customers/{id}/agents";
        ctx.call(
            &who,
            tp,
            Method::PUT,
            &format!("/api/customers/{id}/agents"),
            t,
            Some(json!({ "agent_ids": owners })),
            exp(Method::PUT, tp, assigned),
        )
        .await;
        let tp = "/api/customers/{id}";
        ctx.call(
            &who,
            tp,
            Method::DELETE,
            &format!("/api/customers/{id}"),
            t,
            None,
            exp(Method::DELETE, tp, assigned),
        )
        .await;
    }
    let id = ctx.customer(&[]).await;
    let p = "/api/customers/bulk";
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        t,
        Some(json!({ "ids": [id], "set": { "status": "contacted" } })),
        exp(Method::POST, p, false),
    )
    .await;
    let id = ctx.customer(&[]).await;
    let r = ctx
        .app
        .post(
            p,
            Some(&ctx.root),
            json!({ "ids": [id], "set": { "status": "qualified" } }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let batch = json_of(r).await["batch_id"].as_str().unwrap().to_owned();
    let tp = "/api/customers/bulk/{batch_id}/undo";
    ctx.call(
        who,
        tp,
        Method::POST,
        &format!("/api/customers/bulk/{batch}/undo"),
        t,
        Some(json!({})),
        exp(Method::POST, tp, false),
    )
    .await;
}

/// The GDPR export and erasure, each on a fresh customer: an erasure cannot be undone, so no
/// call may find a customer another call already erased.
async fn gdpr(ctx: &mut Ctx<'_>, a: &Actor) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str| expected(endpoint(&m, p), a.role, a.id, Target::default());
    let id = ctx.customer(&[]).await;
    let tp = "/api/gdpr/customers/{id}/export";
    ctx.call(
        who,
        tp,
        Method::GET,
        &format!("/api/gdpr/customers/{id}/export"),
        t,
        None,
        exp(Method::GET, tp),
    )
    .await;
    let id = ctx.customer(&[]).await;
    let tp = "/api/gdpr/customers/{id}/erase";
    ctx.call(
        who,
        tp,
        Method::POST,
        &format!("/api/gdpr/customers/{id}/erase"),
        t,
        Some(json!({ "reason": "role matrix" })),
        exp(Method::POST, tp),
    )
    .await;
}

/// The PNG signature and a little more: enough for the magic-byte check.
const MATRIX_PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01";

/// Upload, list and download on a customer assigned to the caller and on one that is not;
/// `files` holds an attachment of each (same order as the customers).
async fn attachments(ctx: &mut Ctx<'_>, a: &Actor, customers: [Uuid; 2], files: [Uuid; 2]) {
    let t = Some(a.token.as_str());
    for ((id, file), assigned) in customers.into_iter().zip(files).zip([true, false]) {
        let who = format!(
            "{}{}",
            a.role.as_str(),
            if assigned { "" } else { " (unassigned)" }
        );
        let exp = |m: Method, p: &str| {
            expected(
                endpoint(&m, p),
                a.role,
                a.id,
                Target {
                    assigned_to_caller: assigned,
                    ..Target::default()
                },
            )
        };
        let tp = "/api/customers/{id}/attachments";
        let path = format!("/api/customers/{id}/attachments");
        ctx.call_upload(&who, tp, &path, t, exp(Method::POST, tp))
            .await;
        ctx.call(&who, tp, Method::GET, &path, t, None, exp(Method::GET, tp))
            .await;
        let tp = "/api/attachments/{id}";
        let path = format!("/api/attachments/{file}");
        ctx.call(&who, tp, Method::GET, &path, t, None, exp(Method::GET, tp))
            .await;
    }
}

/// Import (a CSV body, as a dry run so the table's customers stay as they are) and export.
async fn transfer(ctx: &mut Ctx<'_>, a: &Actor) {
    let who = a.role.as_str();
    let p = "/api/customers/import";
    let e = endpoint(&Method::POST, p);
    ctx.matrix
        .covered
        .insert((who.to_owned(), Method::POST, e.path));
    let r = ctx
        .app
        .client
        .post(format!("{}{p}?dry_run=true", ctx.app.base))
        .bearer_auth(&a.token)
        .header("content-type", "text/csv")
        .body("name,email\nAda Lovelace,ada@example.com\n")
        .send()
        .await
        .expect("request sent");
    let exp = expected(e, a.role, a.id, Target::default());
    ctx.matrix
        .record(who, &Method::POST, (e.path, p), exp, r.status());
    let p = "/api/customers/export.csv";
    let exp = expected(endpoint(&Method::GET, p), a.role, a.id, Target::default());
    ctx.call(who, p, Method::GET, p, Some(a.token.as_str()), None, exp)
        .await;
}

async fn users(ctx: &mut Ctx<'_>, a: &Actor, targets: &HashMap<Role, Uuid>) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str, target: Target| expected(endpoint(&m, p), a.role, a.id, target);
    let p = "/api/users";
    ctx.call(
        who,
        p,
        Method::GET,
        p,
        t,
        None,
        exp(Method::GET, p, Target::default()),
    )
    .await;
    let tp = "/api/users/{id}";
    let own = Target {
        is_self: true,
        ..Target::default()
    };
    ctx.call(
        &format!("{who} (self)"),
        tp,
        Method::GET,
        &format!("/api/users/{}", a.id),
        t,
        None,
        exp(Method::GET, tp, own),
    )
    .await;
    for target_role in Role::ALL {
        let target = Target {
            user_role: Some(target_role),
            ..Target::default()
        };
        let who = format!("{who} on {}", target_role.as_str());
        let id = targets[&target_role];
        ctx.call(
            &who,
            p,
            Method::POST,
            p,
            t,
            Some(new_user_body(target_role)),
            exp(Method::POST, p, target),
        )
        .await;
        ctx.call(
            &who,
            tp,
            Method::GET,
            &format!("/api/users/{id}"),
            t,
            None,
            exp(Method::GET, tp, target),
        )
        .await;
        ctx.call(
            &who,
            tp,
            Method::PATCH,
            &format!("/api/users/{id}"),
            t,
            Some(json!({ "name": format!("Renamed by {}", a.role.as_str()) })),
            exp(Method::PATCH, tp, target),
        )
        .await;
        // Deactivation ends the target's sessions: a fresh target per cell.
        let fresh = ctx.fresh_user(target_role).await;
        ctx.call(
            &format!("{who} (deactivate)"),
            tp,
            Method::PATCH,
            &format!("/api/users/{fresh}"),
            t,
            Some(json!({ "active": false })),
            exp(Method::PATCH, tp, target),
        )
        .await;
        for action in ["unlock", "force-logout", "require-password-change"] {
            let tp = format!("/api/users/{{id}}/{action}");
            ctx.call(
                &who,
                &tp,
                Method::POST,
                &format!("/api/users/{id}/{action}"),
                t,
                None,
                exp(Method::POST, &tp, target),
            )
            .await;
        }
    }
    // Role changes, each on a fresh agent: promoting to superagent needs the right to
    // manage both roles; promoting to admin only a superadmin may do.
    for new_role in [Role::Superagent, Role::Admin] {
        let fresh = ctx.fresh_user(Role::Agent).await;
        let target = Target {
            user_role: Some(Role::Agent),
            new_role: Some(new_role),
            ..Target::default()
        };
        ctx.call(
            &format!("{who} (agent to {})", new_role.as_str()),
            tp,
            Method::PATCH,
            &format!("/api/users/{fresh}"),
            t,
            Some(json!({ "role": new_role.as_str() })),
            exp(Method::PATCH, tp, target),
        )
        .await;
    }
}

async fn the_rest(ctx: &mut Ctx<'_>, a: &Actor) {
    let who = a.role.as_str();
    let t = Some(a.token.as_str());
    let exp = |m: Method, p: &str| expected(endpoint(&m, p), a.role, a.id, Target::default());
    let p = "/api/api-keys";
    ctx.call(
        who,
        p,
        Method::POST,
        p,
        t,
        Some(json!({ "name": format!("{who} key"), "permissions": ["customers:view"] })),
        exp(Method::POST, p),
    )
    .await;
    ctx.call(who, p, Method::GET, p, t, None, exp(Method::GET, p))
        .await;
    let key = ctx.api_key().await;
    let tp = "/api/api-keys/{id}/rotate";
    ctx.call(
        who,
        tp,
        Method::POST,
        &format!("/api/api-keys/{key}/rotate"),
        t,
        Some(json!({})),
        exp(Method::POST, tp),
    )
    .await;
    let tp = "/api/api-keys/{id}";
    ctx.call(
        who,
        tp,
        Method::DELETE,
        &format!("/api/api-keys/{key}"),
        t,
        None,
        exp(Method::DELETE, tp),
    )
    .await;
    for p in [
        "/api/audit",
        "/api/audit/export.csv",
        "/api/audit/verify",
        "/api/openapi.json",
        "/api/admin/rate-limits",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        ctx.call(who, p, Method::GET, p, t, None, exp(Method::GET, p))
            .await;
    }
    // The caller's own account stream: it exists for every staff actor.
    let tp = "/api/replay/streams/{stream_id}";
    ctx.call(
        who,
        tp,
        Method::GET,
        &format!("/api/replay/streams/user-{}", a.id),
        t,
        None,
        exp(Method::GET, tp),
    )
    .await;
}

/// Without credentials: 401 on every `/api` endpoint but login and the public ones.
async fn anonymous(ctx: &mut Ctx<'_>, customer: Uuid, user: Uuid, key: Uuid) {
    for e in ENDPOINTS {
        let expected = match e.rule {
            Rule::Login => continue,
            Rule::Public => e.success,
            _ => 401,
        };
        let path = e.path.replace("{batch_id}", &Uuid::nil().to_string());
        let path = path.replace(
            "{id}",
            &if e.path.starts_with("/api/customers") {
                customer
            } else if e.path.starts_with("/api/users") {
                user
            } else {
                key
            }
            .to_string(),
        );
        let body = (e.method != Method::GET && e.method != Method::DELETE).then(|| json!({}));
        ctx.call(
            "anonymous",
            e.path,
            e.method.clone(),
            &path,
            None,
            body,
            expected,
        )
        .await;
    }
}

/// Every row of the table was run for every role (and, but for login, without credentials).
fn every_row_was_run(matrix: &mut Matrix) {
    let callers = Role::ALL
        .iter()
        .map(|r| r.as_str())
        .chain(std::iter::once("anonymous"));
    for caller in callers {
        for e in ENDPOINTS {
            if caller == "anonymous" && matches!(e.rule, Rule::Login) {
                continue;
            }
            let key = (caller.to_owned(), e.method.clone(), e.path);
            if !matrix.covered.contains(&key) {
                matrix
                    .mismatches
                    .push(format!("{caller} {} {}: never run", e.method, e.path));
            }
        }
    }
}

/// Every endpoint in the OpenAPI document is in the table, so a new route cannot slip past.
async fn table_covers_the_openapi_document(ctx: &mut Ctx<'_>) {
    let doc = json_of(ctx.app.get("/api/openapi.json", None).await).await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "the OpenAPI document lists its paths");
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !ENDPOINTS.iter().any(|e| e.method == m && e.path == path) {
                ctx.matrix
                    .mismatches
                    .push(format!("{m} {path} is served but not in the role matrix"));
            }
        }
    }
}

both_backends!(
    every_role_gets_from_every_endpoint_the_status_the_permission_matrix_gives,
    |app: TestApp| async move {
        let (_, root) = app.as_role(Role::Superadmin).await;
        let mut actors = Vec::new();
        for role in Role::ALL {
            let (id, token) = app.as_role(role).await;
            actors.push(Actor { role, id, token });
        }
        let agent = actors.iter().find(|a| a.role == Role::Agent).unwrap().id;
        let mut ctx = Ctx {
            app: &app,
            root,
            matrix: Matrix::default(),
        };
        let mine = ctx.customer(&[agent]).await;
        let other = ctx.customer(&[]).await;
        let files = [ctx.attachment(mine).await, ctx.attachment(other).await];
        let mut targets = HashMap::new();
        for role in Role::ALL {
            targets.insert(role, ctx.fresh_user(role).await);
        }
        for a in &actors {
            self_service(&mut ctx, a).await;
            customers(&mut ctx, a, mine, other).await;
            followups(&mut ctx, a, mine, other).await;
            customer_changes(&mut ctx, a, agent).await;
            gdpr(&mut ctx, a).await;
            attachments(&mut ctx, a, [mine, other], files).await;
            transfer(&mut ctx, a).await;
            users(&mut ctx, a, &targets).await;
            the_rest(&mut ctx, a).await;
        }
        let key = ctx.api_key().await;
        anonymous(&mut ctx, mine, targets[&Role::Agent], key).await;
        table_covers_the_openapi_document(&mut ctx).await;
        every_row_was_run(&mut ctx.matrix);

        eprintln!(
            "role matrix on {:?}: {} cells, {} mismatches",
            app.backend,
            ctx.matrix.cells,
            ctx.matrix.mismatches.len()
        );
        assert!(
            ctx.matrix.mismatches.is_empty(),
            "{} of {} cells disagree with the permission matrix:\n{}",
            ctx.matrix.mismatches.len(),
            ctx.matrix.cells,
            ctx.matrix.mismatches.join("\n")
        );
    }
);

//! The OpenAPI document served at `/api/openapi.json`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Egec CRM", description = "Event-sourced CRM of a study-abroad consultancy. Errors are `{\"error\": {\"code\", \"message\", \"fields\"?}}`."),
    paths(
        crate::routes::auth::login,
        crate::routes::auth::me,
        crate::routes::auth::logout,
        crate::routes::auth::logout_all,
        crate::routes::customers::create,
        crate::routes::customers::get,
        crate::routes::customers::list,
        crate::routes::customers::patch,
        crate::routes::customers::history,
        crate::routes::gdpr::export,
        crate::routes::gdpr::erase,
        crate::routes::followups::create,
        crate::routes::followups::list_for_customer,
        crate::routes::followups::list,
        crate::routes::followups::get,
        crate::routes::followups::complete,
        crate::routes::customers::delete,
        crate::routes::customers::assign_agents,
        crate::routes::customer_bulk::bulk_edit,
        crate::routes::customer_bulk::undo,
        crate::routes::attachments::upload,
        crate::routes::attachments::list,
        crate::routes::attachments::download,
        crate::routes::customer_transfer::import,
        crate::routes::customer_transfer::export,
        crate::routes::users::create,
        crate::routes::users::list,
        crate::routes::users::get,
        crate::routes::users::unlock,
        crate::routes::users::patch,
        crate::routes::users::force_logout,
        crate::routes::admin::rate_limits,
        crate::routes::credentials::change_password,
        crate::routes::credentials::totp_setup,
        crate::routes::credentials::totp_enable,
        crate::routes::credentials::totp_disable,
        crate::routes::credentials::require_password_change,
        crate::routes::api_keys::create,
        crate::routes::api_keys::list,
        crate::routes::api_keys::revoke,
        crate::routes::api_keys::rotate,
        crate::routes::audit::list,
        crate::routes::audit::export_csv,
        crate::routes::audit::verify,
        crate::routes::replay::stream,
    ),
    components(schemas(
        crate::routes::customers::CreateCustomerBody,
        crate::routes::customers::PatchCustomerBody,
        crate::routes::customers::AssignAgentsBody,
        crate::routes::gdpr::EraseBody,
        crate::routes::gdpr::EraseResult,
        crate::views::gdpr::ErasureCertificate,
        crate::views::gdpr::CertificateActor,
        crate::views::gdpr::ChainHeadView,
        crate::routes::customer_bulk::BulkEditBody,
        crate::routes::customer_bulk::BulkSetBody,
        crate::routes::customer_bulk::BulkEditResult,
        crate::routes::customer_bulk::UndoResult,
        crate::routes::customer_bulk::SkippedField,
        crate::routes::customer_transfer::ImportReport,
        crate::routes::customer_transfer::RowError,
        crate::views::customer::CustomerView,
        crate::routes::followups::CreateFollowupBody,
        crate::views::followup::FollowupView,
        crate::routes::attachments::AttachmentView,
        crate::routes::auth::LoginBody,
        crate::routes::users::CreateUserBody,
        crate::routes::users::PatchUserBody,
        crate::rate_limit::PolicyStats,
        crate::routes::credentials::ChangePasswordBody,
        crate::routes::credentials::TotpEnableBody,
        crate::routes::credentials::TotpDisableBody,
        crate::routes::api_keys::CreateApiKeyBody,
        crate::routes::api_keys::RotateApiKeyBody,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("api_key" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
            c.add_security_scheme(
                "api_key",
                SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                    utoipa::openapi::security::ApiKeyValue::new("X-API-Key"),
                )),
            );
        }
    }
}

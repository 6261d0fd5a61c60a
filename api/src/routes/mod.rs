pub mod admin;
pub mod auth;
pub mod credentials;
pub mod customers;
pub mod login_factors;
pub mod meta;
pub mod ops;
pub mod users;

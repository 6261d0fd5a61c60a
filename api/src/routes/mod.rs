pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod customers;
pub mod meta;
pub mod ops;
pub mod users;

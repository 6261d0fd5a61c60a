//! The HTTP API and the `egec` binary's commands.

pub mod app;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod config_checks;
pub mod customer_csv;
pub mod denial;
pub mod error;
pub mod http_metrics;
pub mod huge_pages;
pub mod json;
pub mod keys;
pub mod logging;
pub mod net;
pub mod openapi;
pub mod rate_limit;
pub mod retention_task;
pub mod reveals;
pub mod routes;
pub mod security_headers;
pub mod signals;
pub mod state;
pub mod users;
pub mod views;

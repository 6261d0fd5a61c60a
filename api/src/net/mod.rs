//! Network trust: which address a request comes from, over which scheme, and the rules that
//! depend on it (admin IP allowlist, production transport rules).

pub mod admin_allowlist;
pub mod client_ip;
pub mod transport;

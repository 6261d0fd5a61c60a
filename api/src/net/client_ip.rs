//! The client's address and scheme, believed from `X-Forwarded-For` / `X-Forwarded-Proto`
//! only when the TCP peer is a trusted proxy (`EGEC_TRUSTED_PROXIES`).
//!
//! One middleware ([`resolve`]) computes a [`ClientContext`] per request and puts it in the
//! request's extensions; everything that needs the client address (event metadata, the admin
//! allowlist, rate limits) reads it from there through [`ClientContext::of`].

use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 address reached over an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// An entry of a CIDR list that is neither a network nor an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a CIDR or IP address")]
pub struct BadCidr;

/// Parses a comma-separated list of CIDRs (a bare address is a /32 or /128).
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, BadCidr> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadCidr)
        })
        .collect()
}

/// Where a request comes from, as far as it can be believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientContext {
    pub ip: IpAddr,
    /// Whether the client's connection is HTTPS (to us, or to the trusted proxy in front).
    pub https: bool,
}

impl ClientContext {
    /// The context [`resolve`] computed, else (a router used without it) the peer address.
    pub fn of(parts: &Parts) -> Option<ClientContext> {
        parts
            .extensions
            .get::<ClientContext>()
            .copied()
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| ClientContext {
                        ip: canonical(c.0.ip()),
                        https: false,
                    })
            })
    }
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Decides the client address and scheme from the peer and the forwarding headers.
///
/// From an untrusted peer the headers are ignored: anyone can write them. From a trusted
/// peer, `X-Forwarded-For` is read right to left (each proxy appends the address it saw), and
/// the first address that is not itself a trusted proxy is the client; anything to its left
/// was written by the client and is not believed. A malformed entry stops the walk at the
/// last believable address. `X-Forwarded-Proto` is taken from the right-most value (the one
/// our own proxy wrote).
pub fn decide(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientContext {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return ClientContext {
            ip: peer,
            https: false,
        };
    }
    let hops: Vec<&str> = header_values(headers, "x-forwarded-for").collect();
    let mut ip = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(addr) => {
                ip = canonical(addr);
                if !trusted.contains(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let https = header_values(headers, "x-forwarded-proto")
        .last()
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    ClientContext { ip, https }
}

/// Middleware: computes the [`ClientContext`] of every request once.
pub async fn resolve(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let ctx = decide(peer, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(ctx);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted(list: &str) -> TrustedProxies {
        TrustedProxies(parse_cidrs(list).unwrap())
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = decide(ip("203.0.113.9"), &h, &trusted("10.0.0.0/8"));
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert!(!c.https);
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        // The client wrote "6.6.6.6" itself; the proxies appended 198.51.100.7 and 10.0.0.2.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]);
        let c = decide(ip("10.0.0.1"), &h, &trusted("10.0.0.0/8"));
        assert_eq!(c.ip, ip("198.51.100.7"));
    }

    #[test]
    fn several_forwarded_for_headers_are_one_list() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        let c = decide(ip("10.0.0.1"), &h, &trusted("10.0.0.0/8"));
        assert_eq!(c.ip, ip("198.51.100.7"));
    }

    #[test]
    fn a_malformed_hop_stops_at_the_last_believable_address() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        let c = decide(ip("10.0.0.1"), &h, &trusted("10.0.0.0/8"));
        assert_eq!(c.ip, ip("10.0.0.1"));
    }

    #[test]
    fn the_scheme_comes_from_the_trusted_proxy_only() {
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(decide(ip("10.0.0.1"), &h, &trusted("10.0.0.0/8")).https);
        let h = headers(&[("x-forwarded-proto", "https, http")]);
        assert!(!decide(ip("10.0.0.1"), &h, &trusted("10.0.0.0/8")).https);
    }

    #[test]
    fn an_ipv4_mapped_peer_matches_an_ipv4_range() {
        let c = decide(
            ip("::ffff:10.0.0.1"),
            &headers(&[("x-forwarded-for", "198.51.100.7")]),
            &trusted("10.0.0.0/8"),
        );
        assert_eq!(c.ip, ip("198.51.100.7"));
    }

    #[test]
    fn cidr_lists_accept_bare_addresses_and_refuse_garbage() {
        assert_eq!(parse_cidrs("10.0.0.0/8, 127.0.0.1 ,::1").unwrap().len(), 3);
        assert!(parse_cidrs("10.0.0.0/8, nope").is_err());
    }
}

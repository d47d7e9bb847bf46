//! The client's IP address, as the key checks (`allow_ips`, `deny_ips`) see it.
//!
//! The socket peer is the client unless it is a configured trusted proxy. Then
//! `X-Forwarded-For` is walked from right to left — each proxy appends the address it
//! received the request from, so the right-most entries are the ones our own proxies
//! wrote — and:
//!
//! - an entry that is not a trusted proxy is the client (the walk ends there);
//! - a trusted entry is a hop of our own: the walk goes on to the entry on its left;
//! - an entry that does not parse **stops the walk**: the last trusted hop seen (the
//!   one that handed us that entry) is the client. It is never skipped, because
//!   everything left of it may have been written by the client: skipping
//!   `1.2.3.4, garbage` would let a client choose `1.2.3.4` through a proxy that
//!   appends nothing (or appends something we cannot read);
//! - when every entry is a trusted hop, the left-most one is the client.
//!
//! Entries are IPv4 or IPv6 addresses, optionally with a port (`1.2.3.4:5678`,
//! `[2001:db8::1]:443`, `[2001:db8::1]`), as proxies write them. Without trusted proxies
//! the header is ignored, so a client cannot spoof its address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// IPv4 clients of a dual-stack listener appear as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let bracketed = entry.strip_prefix('[')?.strip_suffix(']')?;
    bracketed
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(|v6| canonical(IpAddr::V6(v6)))
}

pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    // Header lines in order, then entries in order; a line that is not text is one
    // unreadable entry (it stops the walk like any other).
    let lines: Vec<Option<&str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    let mut client = peer;
    for line in lines.iter().rev() {
        let Some(line) = line else { return Some(client) };
        for entry in line.rsplit(',') {
            match parse_entry(entry) {
                None => return Some(client),
                Some(ip) if !is_trusted(&ip) => return Some(ip),
                Some(hop) => client = hop,
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let got = client_ip(ip("8.8.8.8"), &headers("10.0.0.1"), &[]);
        assert_eq!(got, ip("8.8.8.8"));
        let got = client_ip(ip("8.8.8.8"), &headers("1.2.3.4"), &trusted());
        assert_eq!(got, ip("8.8.8.8"));
        assert_eq!(client_ip(None, &headers("1.2.3.4"), &trusted()), None);
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let got = client_ip(ip("::ffff:10.0.0.5"), &headers("1.2.3.4"), &trusted());
        assert_eq!(got, ip("1.2.3.4"));
        let got = client_ip(ip("::ffff:8.8.8.8"), &HeaderMap::new(), &[]);
        assert_eq!(got, ip("8.8.8.8"));
    }

    /// (X-Forwarded-For through the trusted peer 10.0.0.5, expected client).
    #[test]
    fn the_walk_through_trusted_hops() {
        let table: &[(&str, &str)] = &[
            // The right-most untrusted entry is the client.
            ("1.1.1.1, 2.2.2.2, 10.0.0.7", "2.2.2.2"),
            ("2.2.2.2", "2.2.2.2"),
            // Ports, as some proxies write them.
            ("1.1.1.1, 2.2.2.2:5678", "2.2.2.2"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("2.2.2.2, [fd00::7]:80, 10.0.0.7:9000", "2.2.2.2"),
            ("[::ffff:2.2.2.2]:80", "2.2.2.2"),
            // Only trusted hops: the left-most is the client.
            ("10.0.0.9, 10.0.0.7", "10.0.0.9"),
            // An unreadable entry stops the walk: the hop that handed it over is the
            // client, never an address written further left (by the client itself).
            ("garbage", "10.0.0.5"),
            ("1.2.3.4, garbage", "10.0.0.5"),
            ("1.2.3.4, garbage, 10.0.0.7", "10.0.0.7"),
            ("1.2.3.4, , 10.0.0.7", "10.0.0.7"),
            ("1.2.3.4, unknown", "10.0.0.5"),
            ("1.2.3.4, 2.2.2.2:port", "10.0.0.5"),
            ("1.2.3.4, [2001:db8::1", "10.0.0.5"),
            // Garbage left of the client does not matter.
            ("garbage, 2.2.2.2", "2.2.2.2"),
        ];
        for (xff, expected) in table {
            let got = client_ip(ip("10.0.0.5"), &headers(xff), &trusted());
            assert_eq!(got, ip(expected), "X-Forwarded-For: {xff}");
        }
        let got = client_ip(ip("10.0.0.5"), &HeaderMap::new(), &trusted());
        assert_eq!(got, ip("10.0.0.5"), "no header: the trusted peer");
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4, garbage"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &trusted()), ip("10.0.0.7"));

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("3.3.3.3"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &trusted()), ip("3.3.3.3"));

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(
            client_ip(ip("10.0.0.5"), &h, &trusted()),
            ip("10.0.0.5"),
            "a line that is not text stops the walk"
        );
    }
}

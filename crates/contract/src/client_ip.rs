//! The client's IP address, as the key checks (`allow_ips`, `deny_ips`) see it.
//!
//! The socket peer is the client unless it is a configured trusted proxy; then the
//! right-most `X-Forwarded-For` entry that is not itself a trusted proxy is the client.
//! Without trusted proxies the header is ignored, so a client cannot spoof its address.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// IPv4 clients of a dual-stack listener appear as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .map(canonical)
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let ip = client_ip(Some("8.8.8.8".parse().unwrap()), &headers("10.0.0.1"), &[]);
        assert_eq!(ip, Some("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip(
            Some("::ffff:10.0.0.5".parse().unwrap()),
            &headers("1.2.3.4"),
            &trusted,
        );
        assert_eq!(ip, Some("1.2.3.4".parse().unwrap()));
        let ip = client_ip(Some("::ffff:8.8.8.8".parse().unwrap()), &HeaderMap::new(), &[]);
        assert_eq!(ip, Some("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn trusted_proxy_forwards_the_rightmost_untrusted_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = client_ip(
            Some("10.0.0.5".parse().unwrap()),
            &headers("1.1.1.1, 2.2.2.2, 10.0.0.7"),
            &trusted,
        );
        assert_eq!(ip, Some("2.2.2.2".parse().unwrap()));
        let ip = client_ip(Some("10.0.0.5".parse().unwrap()), &HeaderMap::new(), &trusted);
        assert_eq!(ip, Some("10.0.0.5".parse().unwrap()));
        let ip = client_ip(Some("10.0.0.5".parse().unwrap()), &headers("garbage"), &trusted);
        assert_eq!(ip, Some("10.0.0.5".parse().unwrap()));
    }
}

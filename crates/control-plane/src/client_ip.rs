//! The client's IP address: the shared rule lives in `ez_contract::client_ip`; here is
//! only how axum hands over the socket peer.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;

pub use ez_contract::client_ip::client_ip;

pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

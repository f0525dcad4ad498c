//! Which network addresses webhooks may be sent to.
//!
//! Outside `--dev`, a webhook must never reach the operator's own network:
//! loopback, private, link-local (cloud metadata lives there), unique-local,
//! multicast and reserved ranges are refused. The check runs in the HTTP
//! client's resolver, on the very addresses it then connects to, so a DNS
//! answer that changes between a check and the connection (DNS rebinding)
//! cannot slip through.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The address of a URL whose host is an IP literal (such hosts never pass
/// through the resolver, so they are checked on their own).
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(v4.into()),
        url::Host::Ipv6(v6) => Some(v6.into()),
        url::Host::Domain(_) => None,
    }
}

/// True when the address is one a public webhook must not reach.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, including 169.254.169.254 metadata
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, Alibaba metadata
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_blocked_v4(v4);
    }
    let segments = ip.segments();
    // The IPv4 address carried in two 16-bit segments.
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] {
        return is_blocked_v4(embedded(segments[6], segments[7]));
    }
    // 6to4 (2002::/16) carries an IPv4 address in bits 16..48.
    if segments[0] == 0x2002 {
        return is_blocked_v4(embedded(segments[1], segments[2]));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] == 0x2001 && segments[1] == 0) // Teredo tunnels
        || (segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1) // local-use NAT64
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 metadata
        || (segments[0] & 0xffc0) == 0xfe80 // link local
        || (segments[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
}

/// The target resolved only to refused addresses.
#[derive(Debug)]
pub struct BlockedTarget {
    pub host: String,
    pub addresses: Vec<IpAddr>,
}

impl fmt::Display for BlockedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to private or reserved addresses ({:?}); refused outside --dev",
            self.host, self.addresses
        )
    }
}

impl StdError for BlockedTarget {}

/// The name could not be resolved.
#[derive(Debug)]
pub struct DnsFailure {
    pub host: String,
    pub reason: String,
}

impl fmt::Display for DnsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.reason)
    }
}

impl StdError for DnsFailure {}

/// The HTTP client's resolver: the system resolver, then (unless
/// `allow_private`) the address filter.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let lookup = tokio::net::lookup_host((host.clone(), 0)).await;
            let resolved: Vec<SocketAddr> = match lookup {
                Ok(addresses) => addresses.collect(),
                Err(error) => {
                    return Err(Box::new(DnsFailure {
                        host,
                        reason: error.to_string(),
                    }) as Box<dyn StdError + Send + Sync>);
                }
            };
            if resolved.is_empty() {
                return Err(Box::new(DnsFailure {
                    host,
                    reason: "no addresses".into(),
                }) as Box<dyn StdError + Send + Sync>);
            }
            let allowed: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|address| allow_private || !is_blocked(address.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(BlockedTarget {
                    host,
                    addresses: resolved.iter().map(SocketAddr::ip).collect(),
                }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(text: &str) -> bool {
        is_blocked(text.parse().unwrap())
    }

    #[test]
    fn internal_and_reserved_addresses_are_blocked() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "64:ff9b:1::1",
        ] {
            assert!(blocked(address), "{address} should be blocked");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert!(!blocked(address), "{address} should be allowed");
        }
    }
}

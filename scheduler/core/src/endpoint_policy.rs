//! Which addresses outbound notifications may reach. Pure.
//!
//! A notification is an HTTP POST the server makes on behalf of whoever applied it; without a
//! rule it could reach what only the server can (a cloud metadata service, a Docker socket on
//! TCP, an admin port on loopback). So loopback, link-local, private, shared (CGNAT), unspecified,
//! multicast and reserved addresses are refused unless the operator lists them
//! (`batchctl server --notification-allow-cidr`). The check is made on every address a name
//! resolves to, at each send, so a name that later resolves elsewhere gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Networks allowed although internal.
    allowed: Vec<IpNet>,
}

impl EndpointPolicy {
    pub fn new(allowed: Vec<IpNet>) -> EndpointPolicy {
        EndpointPolicy { allowed }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|network| network.contains(&ip)) || !is_internal(ip)
    }
}

fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT (and some clouds' internal services).
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, IETF protocol assignments; 198.18.0.0/15, benchmarking; 240/4 reserved.
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_need_the_operators_leave() {
        let default = EndpointPolicy::default();
        let cases = [
            ("93.184.215.14", true),
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", true),
            ("127.0.0.1", false),
            ("127.8.9.10", false),
            ("::1", false),
            ("169.254.169.254", false), // cloud metadata
            ("fd00:ec2::254", false),   // AWS metadata over IPv6
            ("10.1.2.3", false),
            ("172.17.0.1", false), // the Docker bridge
            ("192.168.1.1", false),
            ("100.100.100.200", false), // Alibaba metadata, CGNAT range
            ("0.0.0.0", false),
            ("::", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false), // IPv4-mapped loopback
            ("::ffff:8.8.8.8", true),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
        ];
        for (ip, allowed) in cases {
            assert_eq!(default.allows(ip.parse().unwrap()), allowed, "{ip}");
        }
        let loopback = EndpointPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(loopback.allows("127.0.0.1".parse().unwrap()));
        assert!(loopback.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!loopback.allows("10.0.0.1".parse().unwrap()));
    }
}

//! Where webhooks may go: a public address, unless `WEBHOOK_ALLOW_PRIVATE`. A URL naming a
//! loopback, link-local, private (RFC 1918, unique local), shared (RFC 6598), unspecified or
//! multicast address is refused when created; a host name is resolved at each connection and
//! only its public addresses are used ([`PublicResolver`]), so a name that points inside the
//! network later is not delivered to either. Redirects are not followed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether deliveries may go to `ip`.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || shared
        || a == 0)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// Why `url` cannot be a webhook's, if it cannot: not http(s), no host, or (unless
/// `allow_private`) a host that is an address that is not public, or `localhost`.
pub(crate) fn refused(url: &str, allow_private: bool) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return Some(format!("not a URL ({e})")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some(format!(
            "the scheme is {:?}; expected http or https",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("a webhook URL carries no user name nor password".into());
    }
    let host = match parsed.host() {
        Some(host) => host,
        None => return Some("the URL has no host".into()),
    };
    if allow_private {
        return None;
    }
    let ip = match host {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Some(private_refusal(&name));
            }
            return None;
        }
    };
    (!is_public(ip)).then(|| private_refusal(&ip.to_string()))
}

fn private_refusal(host: &str) -> String {
    format!(
        "{host} is a loopback, link-local or private address; webhooks go to public addresses unless WEBHOOK_ALLOW_PRIVATE=true"
    )
}

/// Resolves names as the system does and keeps only the public addresses (all of them with
/// `allow_private`); a name with none is an error that says so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicResolver {
    pub allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (WEBHOOK_ALLOW_PRIVATE is off)"
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

impl PublicResolver {
    pub(crate) fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn private_loopback_and_link_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_refused_with_the_reason() {
        let refusal = |url| refused(url, false);
        assert!(refusal("https://hooks.example.com/in").is_none());
        assert!(
            refusal("http://127.0.0.1:9000/")
                .unwrap()
                .contains("WEBHOOK_ALLOW_PRIVATE")
        );
        assert!(
            refusal("http://[::1]/")
                .unwrap()
                .contains("WEBHOOK_ALLOW_PRIVATE")
        );
        assert!(
            refusal("http://localhost:8080/")
                .unwrap()
                .contains("WEBHOOK_ALLOW_PRIVATE")
        );
        assert!(refusal("http://169.254.169.254/latest").is_some());
        assert!(refusal("ftp://example.com/").unwrap().contains("scheme"));
        assert!(
            refusal("https://u:p@example.com/")
                .unwrap()
                .contains("password")
        );
        assert!(refusal("not a url").unwrap().contains("not a URL"));
        assert!(refused("http://127.0.0.1:9000/", true).is_none());
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_inside_is_not_delivered_to() {
        let resolve = |allow_private| {
            PublicResolver { allow_private }.resolve(Name::from_str("localhost").unwrap())
        };
        let error = resolve(false).await.err().unwrap().to_string();
        assert!(error.contains("no public address"), "{error}");
        let found: Vec<SocketAddr> = resolve(true).await.unwrap().collect();
        assert!(found.iter().all(|a| a.ip().is_loopback()) && !found.is_empty());
    }
}

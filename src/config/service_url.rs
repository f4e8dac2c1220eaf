//! URLs of the services the roles connect to, parsed once and shown without their passwords.

use std::fmt;

use url::Url;

use super::Misconfigured;
use crate::tls::CaFile;

/// A URL of a service we connect to. `Display` hides the password, so it is safe in logs and
/// error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl(Url);

impl ServiceUrl {
    /// Parses `raw` and checks its scheme is one of `schemes`.
    pub fn parse(raw: &str, schemes: &[&str]) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| {
            format!(
                "expected a URL such as {}://host:port/... ({e})",
                schemes[0]
            )
        })?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!(
                "expected a URL starting with {}, got scheme `{}`",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("expected a URL with a host".into());
        }
        Ok(Self(url))
    }

    /// The full URL, password included: only for handing to a client library.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceUrl({self})")
    }
}

pub(crate) fn postgres_url(raw: &str) -> Result<ServiceUrl, String> {
    let url = ServiceUrl::parse(raw, &["postgres", "postgresql"])?;
    if url.url().path().trim_start_matches('/').is_empty() {
        return Err("expected a database name in the path, e.g. postgres://postgres@127.0.0.1:5433/influencer_analytics".into());
    }
    Ok(url)
}

pub(super) fn amqp_url(raw: &str) -> Result<BrokerUrls, String> {
    BrokerUrls::parse(raw)
}

/// `AMQP_URL`: one RabbitMQ node, or the nodes of a cluster, comma-separated and tried in
/// order (a connection goes to the first that answers, and a role whose node goes reconnects
/// the same way, so it lands on the next). After the first, an address may be `host:port`
/// alone: it takes the first URL's scheme, user, password and virtual host.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<ServiceUrl>);

impl BrokerUrls {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = raw.split(',').map(str::trim);
        let first = ServiceUrl::parse(parts.next().unwrap_or_default(), &["amqp", "amqps"])?;
        let mut nodes = vec![first.clone()];
        for (i, part) in parts.enumerate() {
            let n = i + 2;
            if part.is_empty() {
                return Err(format!("address {n} of the comma-separated list is empty"));
            }
            let node = if part.contains("://") {
                ServiceUrl::parse(part, &["amqp", "amqps"])
            } else {
                Self::like(&first, part)
            }
            .map_err(|e| format!("address {n} ({part}): {e}"))?;
            if node.url().scheme() != first.url().scheme() {
                return Err(format!(
                    "address {n} uses {}:// where the first uses {}://: every node of a cluster is reached the same way",
                    node.url().scheme(),
                    first.url().scheme()
                ));
            }
            nodes.push(node);
        }
        Ok(Self(nodes))
    }

    /// `host:port` with everything else from `first`.
    fn like(first: &ServiceUrl, host_port: &str) -> Result<ServiceUrl, String> {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("expected host:port, `{port}` is not a port"))?;
                (host, Some(port))
            }
            None => (host_port, None),
        };
        let mut url = first.url().clone();
        url.set_host(Some(host))
            .map_err(|e| format!("expected host:port ({e})"))?;
        url.set_port(port)
            .map_err(|()| "expected host:port".to_string())?;
        ServiceUrl::parse(url.as_str(), &["amqp", "amqps"])
    }

    /// The nodes, in the order they are tried.
    pub fn nodes(&self) -> &[ServiceUrl] {
        &self.0
    }

    /// The first node: the scheme and credentials every node shares.
    pub fn first(&self) -> &ServiceUrl {
        &self.0[0]
    }

    /// The full list, passwords included, as AMQP_URL spells it: only for handing to a
    /// client library or a child process.
    pub fn expose(&self) -> String {
        self.0
            .iter()
            .map(ServiceUrl::expose)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl From<ServiceUrl> for BrokerUrls {
    fn from(url: ServiceUrl) -> Self {
        Self(vec![url])
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrls({self})")
    }
}

pub(super) fn http_url(raw: &str) -> Result<ServiceUrl, String> {
    ServiceUrl::parse(raw, &["http", "https"])
}

/// A CA file is read only by a TLS connection: one beside a URL of another scheme is a
/// mistake (the operator meant TLS, or left the file from an earlier setup), named with both
/// settings. `use_tls` says how to switch the URL to TLS.
pub(super) fn ca_file_for<'a>(
    ca: Option<&'a CaFile>,
    ca_setting: &str,
    url: &ServiceUrl,
    url_setting: &str,
    tls_scheme: &str,
    use_tls: &str,
) -> Result<Option<&'a CaFile>, Misconfigured> {
    match ca {
        Some(ca) if url.url().scheme() != tls_scheme => Err(Misconfigured(format!(
            "{ca_setting}={} is set, but {url_setting} {url} does not use TLS: {use_tls}, or unset {ca_setting}",
            ca.path().display()
        ))),
        ca => Ok(ca),
    }
}

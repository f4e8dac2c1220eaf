//! URLs of the services the roles connect to, parsed once and shown without their passwords.

use std::fmt;

use url::Url;

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

pub(super) fn postgres_url(raw: &str) -> Result<ServiceUrl, String> {
    let url = ServiceUrl::parse(raw, &["postgres", "postgresql"])?;
    if url.url().path().trim_start_matches('/').is_empty() {
        return Err("expected a database name in the path, e.g. postgres://postgres@127.0.0.1:5433/influencer_analytics".into());
    }
    Ok(url)
}

pub(super) fn amqp_url(raw: &str) -> Result<ServiceUrl, String> {
    ServiceUrl::parse(raw, &["amqp", "amqps"])
}

pub(super) fn http_url(raw: &str) -> Result<ServiceUrl, String> {
    ServiceUrl::parse(raw, &["http", "https"])
}

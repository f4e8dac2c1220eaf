//! How webhooks are delivered (`WebhookSettings`): where they may go, how long one attempt
//! may take, and how retries back off until an endpoint is disabled.

use std::time::Duration;

use clap::{ArgAction, Args};

use super::duration;

/// How webhooks are delivered (with the minutely jobs, in `run` and `sink`) and checked (in
/// the API).
#[derive(Args, Debug, Clone)]
pub struct WebhookSettings {
    /// Allow webhook URLs on loopback, link-local and private addresses (true or false); off,
    /// such a URL is refused when created and a name that resolves only to such addresses is
    /// not delivered to. For tests and closed networks.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value = "false", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", value_parser = flag)]
    pub webhook_allow_private: bool,
    /// How long one delivery may take, from connecting to the end of the answer's head.
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub webhook_timeout: Duration,
    /// The wait after an endpoint's first failed attempt; each failure in a row doubles it,
    /// up to WEBHOOK_RETRY_MAX.
    #[arg(long, env = "WEBHOOK_RETRY_FIRST", default_value = "5s", value_parser = duration)]
    pub webhook_retry_first: Duration,
    /// The longest wait between two attempts at a failing endpoint (so that one that comes
    /// back is sent its backlog within this).
    #[arg(long, env = "WEBHOOK_RETRY_MAX", default_value = "5m", value_parser = duration)]
    pub webhook_retry_max: Duration,
    /// An endpoint whose deliveries have failed for this long is disabled (it keeps its
    /// place in the log; `POST /webhooks/{id}/enable` resumes it).
    #[arg(long, env = "WEBHOOK_RETRY_FOR", default_value = "1day", value_parser = duration)]
    pub webhook_retry_for: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            webhook_allow_private: false,
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_first: Duration::from_secs(5),
            webhook_retry_max: Duration::from_secs(300),
            webhook_retry_for: Duration::from_secs(86_400),
        }
    }
}

/// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub(crate) fn flag(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_true_or_false_in_the_usual_spellings() {
        for raw in ["true", "1", "YES", " on "] {
            assert_eq!(flag(raw), Ok(true), "{raw}");
        }
        for raw in ["false", "0", "no", "Off"] {
            assert_eq!(flag(raw), Ok(false), "{raw}");
        }
        assert!(flag("maybe").unwrap_err().contains("true or false"));
    }
}

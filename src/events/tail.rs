//! `influencer-analytics events tail`: follows an API's `GET /events` stream and prints each
//! event as one line of JSON, reconnecting after a dropped connection from the last event it
//! printed (`Last-Event-ID`), so nothing is printed twice or missed.

use std::{io::Write, time::Duration};

use anyhow::Context;
use clap::Args;

use crate::retry::Backoff;

/// Between reconnections: 1 s after the first failure, doubling up to 30 s.
const RECONNECT: Backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30));

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The API's base URL.
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// One of the API's `API_KEYS`, when it has any.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Only these types, comma-separated (e.g. spike,milestone).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Only events about members of this watchlist.
    #[arg(long)]
    pub watchlist: Option<String>,
    /// Start after this event id (0: from the oldest kept); without it, from now on.
    #[arg(long)]
    pub after: Option<i64>,
    /// Stop after printing this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// One event read from a stream: its id and its JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Received {
    pub id: Option<i64>,
    pub data: String,
}

/// Reads Server-Sent Events from bytes as they come: `feed` a chunk, take the events it
/// completed. Comments (heartbeats) and fields other than `id` and `data` are skipped.
#[derive(Debug, Default)]
pub(crate) struct SseReader {
    buffer: String,
    id: Option<i64>,
    data: Vec<String>,
}

impl SseReader {
    pub(crate) fn feed(&mut self, chunk: &str) -> Vec<Received> {
        self.buffer.push_str(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(Received {
                        id: self.id,
                        data: self.data.join("\n"),
                    });
                }
                self.data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.id = value.parse().ok(),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

/// Follows the stream until `--count` events are printed (or for ever).
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let http = crate::tls::http_client_builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let mut url = url::Url::parse(&format!("{}/events", args.api.trim_end_matches('/')))
        .with_context(|| format!("--api {}: not a URL", args.api))?;
    if let Some(kind) = &args.kind {
        url.query_pairs_mut().append_pair("type", kind);
    }
    if let Some(watchlist) = &args.watchlist {
        url.query_pairs_mut().append_pair("watchlist", watchlist);
    }
    let mut last = args.after;
    let mut printed = 0u64;
    let mut failures = 0u32;
    let stdout = std::io::stdout();
    loop {
        let mut request = http.get(url.clone()).header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        if let Some(key) = &args.key {
            request = request.bearer_auth(key);
        }
        let outcome = async {
            let mut response = request.send().await?;
            let status = response.status();
            if status.is_client_error() {
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!("the API refused the stream: HTTP {status}: {body}");
            }
            anyhow::ensure!(status.is_success(), "HTTP {status}");
            let mut reader = SseReader::default();
            while let Some(chunk) = response.chunk().await? {
                let text = std::str::from_utf8(&chunk).context("a stream that is not UTF-8")?;
                for event in reader.feed(text) {
                    writeln!(stdout.lock(), "{}", event.data)?;
                    last = event.id.or(last);
                    printed += 1;
                    failures = 0;
                    if args.count.is_some_and(|count| printed >= count) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        }
        .await;
        match outcome {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::info!("the event stream ended; reconnecting"),
            Err(e) if e.to_string().contains("refused the stream") => return Err(e),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "the event stream broke; reconnecting"
            ),
        }
        failures += 1;
        tokio::time::sleep(RECONNECT.wait(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_chunks_and_heartbeats_skipped() {
        let mut reader = SseReader::default();
        assert!(
            reader
                .feed(": heartbeat\n\nid: 7\nevent: spike\nda")
                .is_empty()
        );
        let read = reader.feed("ta: {\"id\":7}\n\nid: 8\r\ndata: a\ndata: b\r\n\r\n");
        assert_eq!(
            read,
            vec![
                Received {
                    id: Some(7),
                    data: "{\"id\":7}".into()
                },
                Received {
                    id: Some(8),
                    data: "a\nb".into()
                },
            ]
        );
    }
}

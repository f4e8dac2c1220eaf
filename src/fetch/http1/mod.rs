//! A lean HTTP/1.1 client for the upstream: one request at a time on each keep-alive
//! connection, idle connections kept in a pool, each answer read whole.
//!
//! The poller makes about 16,700 requests a second at 1,000,000 influencers, every one a small
//! GET to one address. A general client (reqwest over hyper) spent about 44 µs of CPU on each:
//! the URL parsed again, a task per connection woken through a channel, tower's layers. Here
//! the request's own future writes the request and reads the answer on a connection it checked
//! out of the pool, so a fetch is one `write` and (usually) one `read`.
//!
//! What it speaks: `http://` and `https://` (rustls, the system's roots plus
//! `MOCKSTAGRAM_CA_FILE`), answers with `Content-Length`, chunked or closed-delimited bodies,
//! `Connection: close`, informational (1xx) heads skipped. What it does not: proxies, redirects,
//! compression, pipelining. A pooled connection the server closed while it idled (the real
//! server closes after 5 s) is noticed when the request meets the close before any byte of an
//! answer, and the request is sent again on a new connection.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::Instant,
};

use crate::tls::CaFile;

/// How long a pooled connection may idle and still be used: the real server closes idle
/// connections after 5 s, so ours are let go first and rarely race its close.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long a new connection (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The most an answer's status line and headers may take.
const MAX_HEAD: usize = 16 * 1024;

/// The most an answer's body may take (the upstream's are about 90 bytes).
const MAX_BODY: usize = 1 << 20;

/// An answer, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot connect to {address}: {error}")]
    Connect { address: String, error: io::Error },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an HTTP/1.1 answer: {0}")]
    Protocol(String),
}

impl HttpError {
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Timeout(_))
            || matches!(self, HttpError::Connect { error, .. } if error.kind() == io::ErrorKind::TimedOut)
    }
}

/// Where requests go: the base URL's scheme, host, port and path prefix, read once.
struct Endpoint {
    host: String,
    port: u16,
    /// The `Host` header: the host, and the port when it is not the scheme's.
    host_header: String,
    /// The base URL's path without its trailing `/` (usually empty).
    prefix: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    fn parse(base: &str, ca: Option<&CaFile>) -> anyhow::Result<Self> {
        let url = url::Url::parse(base)?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => anyhow::bail!("scheme {other}: use http:// or https://"),
        };
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default().expect("http(s) has a port");
        let host_header = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().expect("checked")),
            None => url.host_str().expect("checked").to_string(),
        };
        let tls = if https {
            let name = ServerName::try_from(host.clone())?;
            Some((tokio_rustls::TlsConnector::from(client_config(ca)?), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            host_header,
            prefix: url.path().trim_end_matches('/').to_string(),
            tls,
        })
    }

    /// `method path` with the headers every request carries, and `json` as its body.
    fn request(&self, method: &str, path: &str, json: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + json.map_or(0, <[u8]>::len));
        for part in [method, " ", &self.prefix, path, " HTTP/1.1\r\nHost: "] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(self.host_header.as_bytes());
        out.extend_from_slice(b"\r\nAccept: application/json\r\n");
        if let Some(json) = json {
            out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            out.extend_from_slice(json.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(json);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    async fn connect(&self) -> Result<Conn, HttpError> {
        let address = format!("{}:{}", self.host, self.port);
        let failed = |error| HttpError::Connect {
            address: address.clone(),
            error,
        };
        let connecting = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            Ok(match &self.tls {
                None => Stream::Plain(tcp),
                Some((connector, name)) => {
                    Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
                }
            })
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| failed(io::ErrorKind::TimedOut.into()))?
            .map_err(failed)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            idle_since: Instant::now(),
        })
    }
}

/// The system's trusted roots and the CA file's certificates, for `https://`.
fn client_config(ca: Option<&CaFile>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    crate::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as other clients skip it.
        let _ = roots.add(certificate);
    }
    for certificate in ca.map(CaFile::certificates).unwrap_or_default() {
        roots.add(certificate.clone())?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP connection, with TLS or without.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One keep-alive connection and the bytes read from it.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    idle_since: Instant,
}

/// How a round trip failed: before any byte of an answer (the request may be sent again on
/// another connection when this one came from the pool) or after.
enum Failed {
    Unanswered(HttpError),
    Broken(HttpError),
}

/// The head of an answer, as far as this client reads it.
struct Head {
    status: u16,
    length: usize,
    retry_after: Option<Duration>,
    content_length: Option<usize>,
    chunked: bool,
    keep_alive: bool,
}

impl Conn {
    /// Sends `request` and reads the answer; whether the connection can serve another.
    async fn round_trip(&mut self, request: &[u8]) -> Result<(Answer, bool), Failed> {
        self.buf.clear();
        if let Err(e) = self.stream.write_all(request).await {
            return Err(Failed::Unanswered(e.into()));
        }
        let head = loop {
            let head = self.read_head().await?;
            if (100..200).contains(&head.status) {
                self.buf.drain(..head.length);
                continue;
            }
            break head;
        };
        let broken = Failed::Broken;
        let (body, mut keep_alive) = if head.status == 204 || head.status == 304 {
            (Vec::new(), head.keep_alive)
        } else if head.chunked {
            (
                self.read_chunked(head.length).await.map_err(broken)?,
                head.keep_alive,
            )
        } else if let Some(length) = head.content_length {
            (
                self.read_exact_body(head.length, length)
                    .await
                    .map_err(broken)?,
                head.keep_alive,
            )
        } else {
            (
                self.read_to_close(head.length).await.map_err(broken)?,
                false,
            )
        };
        // Bytes after the answer: the server sent what was not asked for.
        keep_alive &= self.buf.is_empty();
        Ok((
            Answer {
                status: head.status,
                retry_after: head.retry_after,
                body,
            },
            keep_alive,
        ))
    }

    /// Reads more of the answer into `buf`; 0 at the end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(4096);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    async fn read_head(&mut self) -> Result<Head, Failed> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) = parse_head(&self.buf).map_err(Failed::Broken)?
            {
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Failed::Broken(protocol("a head over 16 KiB")));
            }
            let before = self.buf.len();
            match self.read_more().await {
                Ok(0) if before == 0 => {
                    return Err(Failed::Unanswered(
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the connection closed before an answer",
                        )
                        .into(),
                    ));
                }
                Ok(0) => return Err(Failed::Broken(protocol("the connection closed in a head"))),
                Ok(_) => {}
                Err(e) if before == 0 => return Err(Failed::Unanswered(e.into())),
                Err(e) => return Err(Failed::Broken(e.into())),
            }
        }
    }

    async fn read_exact_body(&mut self, start: usize, length: usize) -> Result<Vec<u8>, HttpError> {
        if length > MAX_BODY {
            return Err(protocol("a body over 1 MiB"));
        }
        while self.buf.len() < start + length {
            if self.read_more().await? == 0 {
                return Err(protocol("the connection closed in a body"));
            }
        }
        let body = self.buf[start..start + length].to_vec();
        self.buf.drain(..start + length);
        Ok(body)
    }

    async fn read_to_close(&mut self, start: usize) -> Result<Vec<u8>, HttpError> {
        while self.read_more().await? > 0 {
            if self.buf.len() - start > MAX_BODY {
                return Err(protocol("a body over 1 MiB"));
            }
        }
        let body = self.buf[start..].to_vec();
        self.buf.clear();
        Ok(body)
    }

    /// A chunked body from `buf[start..]` on: each chunk's size in hex on a line, its bytes and
    /// a line end; a chunk of size 0, trailers (skipped) and an empty line end it.
    async fn read_chunked(&mut self, start: usize) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let line_end = self.line_end(at).await?;
            let line = std::str::from_utf8(&self.buf[at..line_end])
                .map_err(|_| protocol("a chunk size that is not text"))?;
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| protocol(&format!("chunk size {hex:?}")))?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, each a line, until an empty line.
                loop {
                    let end = self.line_end(at).await?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        self.buf.drain(..at);
                        return Ok(body);
                    }
                }
            }
            if body.len() + size > MAX_BODY {
                return Err(protocol("a body over 1 MiB"));
            }
            while self.buf.len() < at + size + 2 {
                if self.read_more().await? == 0 {
                    return Err(protocol("the connection closed in a chunk"));
                }
            }
            if &self.buf[at + size..at + size + 2] != b"\r\n" {
                return Err(protocol("a chunk not followed by a line end"));
            }
            body.extend_from_slice(&self.buf[at..at + size]);
            at += size + 2;
        }
    }

    /// Where the line starting at `at` ends (the index of its `\r\n`), reading as needed.
    async fn line_end(&mut self, at: usize) -> Result<usize, HttpError> {
        loop {
            if let Some(i) = self.buf[at..].windows(2).position(|w| w == b"\r\n") {
                return Ok(at + i);
            }
            if self.buf.len() - at > 4096 {
                return Err(protocol("a chunk line over 4 KiB"));
            }
            if self.read_more().await? == 0 {
                return Err(protocol("the connection closed in a chunked body"));
            }
        }
    }
}

fn protocol(what: &str) -> HttpError {
    HttpError::Protocol(what.to_string())
}

/// The head at the start of `buf`, when it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(protocol(&e.to_string())),
    };
    let mut head = Head {
        status: response.code.expect("complete"),
        length,
        retry_after: None,
        content_length: None,
        chunked: false,
        // HTTP/1.1 keeps the connection unless told otherwise; 1.0 only when told.
        keep_alive: response.version == Some(1),
    };
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or("").trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse()
                .map_err(|_| protocol(&format!("Content-Length {value:?}")))?;
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                head.keep_alive = false;
            } else if value.contains("keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value.parse().ok().map(Duration::from_secs);
        }
    }
    Ok(Some(head))
}

/// Requests to one base URL over pooled keep-alive connections.
#[derive(Clone)]
pub(crate) struct Http1Client {
    endpoint: Arc<Endpoint>,
    idle: Arc<Mutex<Vec<Conn>>>,
    max_idle: usize,
}

impl Http1Client {
    /// A client of `base` (`http://host:port` or `https://…`, a path prefix allowed) keeping
    /// up to `max_idle` idle connections.
    pub(crate) fn new(base: &str, ca: Option<&CaFile>, max_idle: usize) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: Arc::new(Endpoint::parse(base, ca)?),
            idle: Arc::default(),
            max_idle,
        })
    }

    /// `GET path`, answered within `timeout`.
    pub(crate) async fn get(&self, path: &str, timeout: Duration) -> Result<Answer, HttpError> {
        let request = self.endpoint.request("GET", path, None);
        self.send(&request, timeout).await
    }

    /// `POST path` with a JSON body, answered within `timeout`.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        json: &[u8],
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let request = self.endpoint.request("POST", path, Some(json));
        self.send(&request, timeout).await
    }

    async fn send(&self, request: &[u8], timeout: Duration) -> Result<Answer, HttpError> {
        tokio::time::timeout(timeout, async {
            loop {
                let (mut conn, pooled) = match self.checkout() {
                    Some(conn) => (conn, true),
                    None => (self.endpoint.connect().await?, false),
                };
                match conn.round_trip(request).await {
                    Ok((answer, keep_alive)) => {
                        if keep_alive {
                            self.checkin(conn);
                        }
                        return Ok(answer);
                    }
                    // Closed by the server while it idled in the pool: again on another.
                    Err(Failed::Unanswered(_)) if pooled => continue,
                    Err(Failed::Unanswered(e) | Failed::Broken(e)) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
    }

    /// The most recently used idle connection that has not idled too long.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("not poisoned");
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
            // The rest idled longer still (the pool is used last in, first out).
            idle.clear();
        }
        None
    }

    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("not poisoned");
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Idle connections in the pool (for tests).
    #[cfg(test)]
    fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests;

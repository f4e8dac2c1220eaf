//! The lean client against a stand-in server whose answers each test writes byte by byte.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;

use super::*;

/// What the stand-in does with one request: answer with these pieces (written apart, a
/// moment between them), answer then close, close without answering, or never answer.
#[derive(Clone)]
enum Act {
    Answer(Vec<&'static str>),
    AnswerThenClose(Vec<&'static str>),
    Close,
    Hang,
}

/// A stand-in server: `act(connection, request)` says what to do with the request-th request
/// of the connection-th connection (both from 0). Keeps the requests it read.
struct StandIn {
    base: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn stand_in(act: impl Fn(usize, usize) -> Act + Send + Sync + 'static) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let act = Arc::new(act);
    let (counted, kept) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let connection = counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket, connection, act.clone(), kept.clone()));
        }
    });
    StandIn {
        base,
        connections,
        requests,
    }
}

async fn serve(
    mut socket: TcpStream,
    connection: usize,
    act: Arc<dyn Fn(usize, usize) -> Act + Send + Sync>,
    kept: Arc<Mutex<Vec<String>>>,
) {
    for request in 0.. {
        let Some(text) = read_request(&mut socket).await else {
            return;
        };
        kept.lock().unwrap().push(text);
        let (pieces, close) = match act(connection, request) {
            Act::Answer(pieces) => (pieces, false),
            Act::AnswerThenClose(pieces) => (pieces, true),
            Act::Close => return,
            Act::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
        };
        for piece in pieces {
            socket.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if close {
            return;
        }
    }
}

/// One request, head and (with Content-Length) body, as text.
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse::<usize>().unwrap());
            if buf.len() >= end + 4 + length {
                return Some(text);
            }
        }
    }
}

const OK: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":1}\n";

fn client(base: &str) -> Http1Client {
    Http1Client::new(base, None, 8).unwrap()
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_keep_alive_connection_serves_one_request_after_another() {
    let server = stand_in(|_, _| Act::Answer(vec![OK])).await;
    let client = client(&format!("{}/prefix/", server.base));
    for _ in 0..3 {
        let answer = client.get("/api/v1/influencers/7", SECOND).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"{\"a\":1}\n");
        assert_eq!(answer.retry_after, None);
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(client.idle_connections(), 1);
    let requests = server.requests.lock().unwrap();
    let host = server.base.trim_start_matches("http://");
    assert_eq!(
        requests[0],
        format!(
            "GET /prefix/api/v1/influencers/7 HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n"
        )
    );
}

#[tokio::test]
async fn a_chunked_body_is_joined_across_reads_with_extensions_and_trailers() {
    let server = stand_in(|_, _| {
        Act::Answer(vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"a\"",
            "\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n",
            "\r\n",
        ])
    })
    .await;
    let client = client(&server.base);
    for _ in 0..2 {
        let answer = client.get("/x", SECOND).await.unwrap();
        assert_eq!(answer.body, b"{\"a\":1}");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "kept alive");
}

#[tokio::test]
async fn connection_close_and_a_body_that_ends_with_the_connection_are_not_pooled() {
    let server = stand_in(|connection, _| match connection {
        0 => Act::AnswerThenClose(vec![
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
        ]),
        _ => Act::AnswerThenClose(vec!["HTTP/1.1 503 Busy\r\nRetry-After: 7\r\n\r\n", "later"]),
    })
    .await;
    let client = client(&server.base);
    let first = client.get("/x", SECOND).await.unwrap();
    assert_eq!((first.status, first.body.as_slice()), (200, &b"hi"[..]));
    assert_eq!(client.idle_connections(), 0);
    let second = client.get("/x", SECOND).await.unwrap();
    assert_eq!(second.status, 503);
    assert_eq!(second.body, b"later");
    assert_eq!(second.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(client.idle_connections(), 0);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced_without_an_error() {
    // The first connection answers once, then closes when the next request comes (as a
    // server does whose idle time-out fell between the two).
    let server = stand_in(|connection, request| match (connection, request) {
        (0, 0) => Act::Answer(vec![OK]),
        (0, _) => Act::Close,
        _ => Act::Answer(vec![OK]),
    })
    .await;
    let client = client(&server.base);
    client.get("/x", SECOND).await.unwrap();
    let again = client.get("/x", SECOND).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_new_connection_that_closes_unanswered_is_an_error_not_a_loop() {
    let server = stand_in(|_, _| Act::Close).await;
    let error = client(&server.base).get("/x", SECOND).await.unwrap_err();
    assert!(matches!(error, HttpError::Io(_)), "{error}");
    assert!(
        error.to_string().contains("closed before an answer"),
        "{error}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_idle_too_long_is_not_used_again() {
    let server = stand_in(|_, _| Act::Answer(vec![OK])).await;
    let client = client(&server.base);
    client.get("/x", SECOND).await.unwrap();
    for conn in client.idle.lock().unwrap().iter_mut() {
        conn.idle_since = Instant::now() - IDLE_TIMEOUT;
    }
    client.get("/x", SECOND).await.unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(client.idle_connections(), 1, "the old one dropped");
}

#[tokio::test]
async fn an_answer_that_never_comes_times_out() {
    let server = stand_in(|_, _| Act::Hang).await;
    let error = client(&server.base)
        .get("/x", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
}

#[tokio::test]
async fn informational_heads_are_skipped_and_a_post_carries_its_json() {
    let server = stand_in(|_, _| Act::Answer(vec!["HTTP/1.1 100 Continue\r\n\r\n", OK])).await;
    let client = client(&server.base);
    let answer = client
        .post_json("/api/v1/influencers/is_suspicious", b"{\"pk\":1}", SECOND)
        .await
        .unwrap();
    assert_eq!(answer.body, b"{\"a\":1}\n");
    let request = server.requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("POST /api/v1/influencers/is_suspicious HTTP/1.1\r\n"));
    assert!(
        request.contains("Content-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"pk\":1}")
    );
}

#[tokio::test]
async fn what_is_not_http_is_an_error_and_the_connection_is_dropped() {
    let server = stand_in(|connection, _| match connection {
        0 => Act::Answer(vec!["SSH-2.0-OpenSSH\r\n\r\n"]),
        1 => Act::Answer(vec!["HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"]),
        2 => Act::Answer(vec![
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]),
        _ => Act::Answer(vec![OK]),
    })
    .await;
    let client = client(&server.base);
    for expected in ["not an HTTP/1.1 answer", "Content-Length", "chunk size"] {
        let error = client.get("/x", SECOND).await.unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(client.idle_connections(), 0);
    }
    assert_eq!(client.get("/x", SECOND).await.unwrap().status, 200);
}

#[test]
fn a_base_url_gives_the_host_header_and_the_prefix() {
    let endpoint = Endpoint::parse("http://example.test:8080/base/", None).unwrap();
    assert_eq!(
        (
            endpoint.host.as_str(),
            endpoint.port,
            endpoint.host_header.as_str()
        ),
        ("example.test", 8080, "example.test:8080")
    );
    assert_eq!(endpoint.prefix, "/base");
    let https = Endpoint::parse("https://[::1]", None).unwrap();
    assert_eq!((https.host.as_str(), https.port), ("::1", 443));
    assert_eq!(https.host_header, "[::1]");
    assert!(https.tls.is_some());
    let ftp = Endpoint::parse("ftp://example.test", None).err().unwrap();
    assert!(ftp.to_string().contains("use http:// or https://"), "{ftp}");
}

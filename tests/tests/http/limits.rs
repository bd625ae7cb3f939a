//! Bad input and bad clients: a body or headers over the limits, a
//! malformed request line, slow header senders, too many connections. The
//! server refuses each and keeps answering.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hyperkit_obs::http::{HEADER_TIMEOUT, HttpOptions, MAX_CONNECTIONS, router_with};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::{assert_still_answers, client, read_until_closed, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_with_413_and_the_server_keeps_answering() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;

    let resp = client()
        .post(format!("{base}/metrics"))
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .expect("the server answers a 1 MB body");

    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_still_answers(&base, "a 1 MB body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_server_keeps_answering() {
    let (_server, base) = start(router_with(HttpOptions::default())).await;
    let mut headers = HeaderMap::new();
    let filler = HeaderValue::from_str(&"a".repeat(1000)).unwrap();
    for i in 0..200 {
        let name = HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).unwrap();
        headers.insert(name, filler.clone());
    }

    let result = client()
        .get(format!("{base}/health/live"))
        .headers(headers)
        .send()
        .await;

    match result {
        Ok(resp) => assert_eq!(
            resp.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "200 KB of headers"
        ),
        // The server may close the connection instead of answering.
        Err(e) => assert!(!e.is_timeout(), "refused at once, not left hanging: {e}"),
    }
    assert_still_answers(&base, "200 KB of headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_line_gets_400_or_a_close_and_the_server_keeps_answering() {
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();

    stream.write_all(b"GARBAGE\r\n\r\n").await.unwrap();

    let answer = read_until_closed(&mut stream, Duration::from_secs(3), "GARBAGE").await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
        "a 400 or nothing: {answer:?}"
    );
    assert_still_answers(&base, "a malformed request line").await;
}

/// A slowloris client: sends part of a request line, then one more byte of
/// the head per second (never finishing it) for at most 8 s. Returns how
/// long after it connected the server closed the connection, or `None` if
/// the server still held it open at `HEADER_TIMEOUT + 3 s`.
async fn slow_client(addr: SocketAddr, opened: mpsc::Sender<()>) -> Option<Duration> {
    const TRICKLE: &[u8] = b"ve HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaa";
    let stream = TcpStream::connect(addr)
        .await
        .expect("a slow client connects");
    let started = tokio::time::Instant::now();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"GET /health/li")
        .await
        .expect("the first bytes are sent");
    let _ = opened.send(()).await;
    let give_up = started + HEADER_TIMEOUT + Duration::from_secs(3);
    let stop_trickling = started + Duration::from_secs(8);
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut rest = TRICKLE.iter();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            r = read.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                // Whatever the server says (a 408, say), it must then close.
                Ok(_) => {}
            },
            now = tick.tick() => {
                if let Some(byte) = rest.next().filter(|_| now < stop_trickling)
                    && write.write_all(std::slice::from_ref(byte)).await.is_err()
                {
                    return Some(started.elapsed());
                }
            }
            () = tokio::time::sleep_until(give_up) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_senders_do_not_block_others_and_are_cut_off_after_the_header_timeout() {
    const SLOW: usize = 50;
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let (opened, mut open) = mpsc::channel(SLOW);
    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(slow_client(server.local_addr(), opened.clone())))
        .collect();
    drop(opened);
    for i in 0..SLOW {
        tokio::time::timeout(Duration::from_secs(5), open.recv())
            .await
            .unwrap_or_else(|_| panic!("only {i} of {SLOW} slow clients connected within 5 s"))
            .expect("a slow client failed to connect");
    }

    let started = Instant::now();
    let resp = client()
        .get(format!("{base}/health/live"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .expect("a normal client is served while 50 slow ones are open");
    let took = started.elapsed();

    assert_eq!(resp.status(), StatusCode::OK);
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    let mut closed_after = Vec::new();
    for task in slow {
        closed_after.push(task.await.expect("a slow client task"));
    }
    let still_open = closed_after.iter().filter(|c| c.is_none()).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {SLOW} slow connections still open {:?} after they connected",
        HEADER_TIMEOUT + Duration::from_secs(3)
    );
    let earliest = closed_after.iter().flatten().min().copied().unwrap();
    assert!(
        earliest >= HEADER_TIMEOUT / 2,
        "cut off by the header deadline, not at once: first closed after {earliest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once_and_idle_ones_time_out() {
    let (server, base) = start(router_with(HttpOptions::default())).await;
    let addr = server.local_addr();
    let mut idle = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.expect("an idle connection"));
    }
    let started = Instant::now();
    let mut extra = TcpStream::connect(addr).await.unwrap();

    let answer = read_until_closed(
        &mut extra,
        Duration::from_secs(2),
        "connection past the limit",
    )
    .await;

    assert!(answer.is_empty(), "closed without an answer: {answer:?}");
    let reads: Vec<_> = idle
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let deadline = HEADER_TIMEOUT + Duration::from_secs(3);
                loop {
                    match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => return true,
                        Ok(Ok(_)) => {}
                        Err(_) => return false,
                    }
                }
            })
        })
        .collect();
    let mut still_open = 0;
    for read in reads {
        still_open += usize::from(!read.await.unwrap());
    }
    assert_eq!(
        still_open,
        0,
        "idle connections (no byte sent) still open {:?} after the limit was reached",
        started.elapsed()
    );
    assert_still_answers(&base, "the idle connections timed out").await;
}

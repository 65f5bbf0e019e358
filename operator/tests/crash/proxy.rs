//! The project's own fault proxy, one per upstream, switched by the driver: added latency
//! (on answers only, so no request ever reaches the upstream later than sent), connections
//! reset, connections accepted and never answered again (so the operator's call timeouts
//! fire), and, for moto, an HTTP 503 instead of forwarding.
//!
//! moto's proxy works per HTTP/1.1 request: a reset hits either before the request is
//! forwarded (not applied) or after its answer came back (applied, answer lost). It also
//! gives RunInstances the ClientToken idempotency real EC2 has and moto lacks
//! (TOOLING-NOTES): a repeated token gets the first launch's answer instead of a second
//! instance, so an SDK retry after a lost answer is not mistaken for a double launch.
//! The CA's proxy works on TCP (the CA speaks TLS with client certificates end to end).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a blackholed connection is held before the proxy lets go of it.
const HOLD: Duration = Duration::from_secs(60);

/// What the proxy does to the traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Healthy,
    /// Forward, each answer (chunk) this much later.
    Latency(Duration),
    /// Reset connections (TCP RST).
    Reset,
    /// Accept, never answer: the connection is held silent.
    Blackhole,
    /// Answer HTTP 503 without forwarding (moto only; the CA's proxy resets instead).
    Unavailable,
}

/// What a proxy did, for the figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Requests (moto) or connections (CA) forwarded.
    pub forwarded: u64,
    /// Connections reset.
    pub reset: u64,
    /// Requests (moto) or connections (CA) blackholed.
    pub blackholed: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// RunInstances answered from the ClientToken cache.
    pub token_replays: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} forwarded, {} reset, {} blackholed, {} answered 503, {} RunInstances replayed by ClientToken",
            self.forwarded, self.reset, self.blackholed, self.unavailable, self.token_replays
        )
    }
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    reset: AtomicU64,
    blackholed: AtomicU64,
    unavailable: AtomicU64,
    token_replays: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    counters: Counters,
    /// RunInstances answers by ClientToken; the lock also makes launches one at a time.
    tokens: tokio::sync::Mutex<HashMap<String, Vec<u8>>>,
    /// Alternates resets before and after forwarding.
    resets: AtomicU64,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }
}

/// A running proxy.
#[derive(Clone)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// An HTTP/1.1 proxy in front of moto.
    pub async fn http(upstream: SocketAddr) -> io::Result<Self> {
        Self::start(upstream, true).await
    }

    /// A TCP proxy (in front of the CA).
    pub async fn tcp(upstream: SocketAddr) -> io::Result<Self> {
        Self::start(upstream, false).await
    }

    async fn start(upstream: SocketAddr, http: bool) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(Fault::Healthy),
            counters: Counters::default(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            resets: AtomicU64::new(0),
        });
        let proxy = Self {
            addr: listener.local_addr()?,
            shared: shared.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if http {
                        http_connection(&shared, client).await;
                    } else {
                        tcp_connection(&shared, client).await;
                    }
                });
            }
        });
        Ok(proxy)
    }

    /// Switches the fault (existing connections feel it on their next request or chunk).
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
    }

    /// What it did so far.
    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            forwarded: get(&c.forwarded),
            reset: get(&c.reset),
            blackholed: get(&c.blackholed),
            unavailable: get(&c.unavailable),
            token_replays: get(&c.token_replays),
        }
    }
}

/// Closes `stream` with a TCP RST.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads and discards until the peer closes or [`HOLD`] passed.
async fn hold(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(HOLD, async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

// ------------------------------------------------------------------ HTTP (moto)

/// A buffered reader of HTTP/1.1 messages on one stream.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed mid-message")
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Up to and including `pat`; `None` when the peer closed before sending a byte.
    async fn until(&mut self, pat: &[u8]) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = find(&self.buf, pat) {
                return Ok(Some(self.buf.drain(..i + pat.len()).collect()));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(eof())
                };
            }
        }
    }

    async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(eof());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn rest(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// The raw bytes of a chunked body, trailers included.
    async fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let line = self.until(b"\r\n").await?.ok_or_else(eof)?;
            out.extend_from_slice(&line);
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.trim().split(';').next())
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            if size == 0 {
                loop {
                    let trailer = self.until(b"\r\n").await?.ok_or_else(eof)?;
                    out.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(out);
                    }
                }
            }
            out.extend(self.exact(size + 2).await?);
        }
    }
}

/// A parsed message head.
struct Head {
    raw: Vec<u8>,
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: Vec<u8>) -> Self {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Self {
            raw,
            first,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || self.first.starts_with("HTTP/1.0")
    }

    /// The head without an `Expect: 100-continue` (the proxy answers that itself).
    fn without_expect(&self) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        let kept: Vec<&str> = text
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("expect:"))
            .collect();
        kept.join("\r\n").into_bytes()
    }
}

/// One request with its body; `None` when the client closed between requests.
async fn read_request(client: &mut Conn) -> io::Result<Option<(Head, Vec<u8>)>> {
    let Some(raw) = client.until(b"\r\n\r\n").await? else {
        return Ok(None);
    };
    let head = Head::parse(raw);
    if head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        client
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await?;
    }
    let body = if head.chunked() {
        client.chunked().await?
    } else {
        client.exact(head.length().unwrap_or(0)).await?
    };
    Ok(Some((head, body)))
}

/// One response to a request of `method`; also whether the upstream closes after it.
async fn read_response(upstream: &mut Conn, method: &str) -> io::Result<(Vec<u8>, bool)> {
    loop {
        let raw = upstream.until(b"\r\n\r\n").await?.ok_or_else(eof)?;
        let head = Head::parse(raw);
        let code: u16 = head
            .first
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // An interim 100 Continue (the proxy already sent its own).
        if (100..200).contains(&code) {
            continue;
        }
        let mut out = head.raw.clone();
        let mut closes = head.closes();
        let bodiless = method == "HEAD" || code == 204 || code == 304;
        if bodiless {
            return Ok((out, closes));
        }
        if head.chunked() {
            out.extend(upstream.chunked().await?);
        } else if let Some(n) = head.length() {
            out.extend(upstream.exact(n).await?);
        } else {
            out.extend(upstream.rest().await?);
            closes = true;
        }
        return Ok((out, closes));
    }
}

/// The ClientToken of a RunInstances request body, if it is one.
fn run_instances_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut params = text.split('&').filter_map(|p| p.split_once('='));
    let pairs: Vec<(&str, &str)> = params.by_ref().collect();
    pairs
        .iter()
        .find(|(k, v)| *k == "Action" && *v == "RunInstances")?;
    pairs
        .iter()
        .find(|(k, _)| *k == "ClientToken")
        .map(|(_, v)| v.to_string())
}

const UNAVAILABLE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
<Code>ServiceUnavailable</Code><Message>fault proxy: service unavailable</Message></Error>\
</Errors><RequestID>fault-proxy</RequestID></Response>";

async fn http_connection(shared: &Shared, client: TcpStream) {
    let _ = client.set_nodelay(true);
    let mut client = Conn::new(client);
    let mut upstream: Option<Conn> = None;
    loop {
        let (head, body) = match read_request(&mut client).await {
            Ok(Some(request)) => request,
            _ => return,
        };
        let method = head.first.split(' ').next().unwrap_or_default().to_string();
        match shared.fault() {
            Fault::Blackhole => {
                bump(&shared.counters.blackholed);
                hold(client.stream).await;
                return;
            }
            Fault::Unavailable => {
                bump(&shared.counters.unavailable);
                let answer = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{UNAVAILABLE}",
                    UNAVAILABLE.len()
                );
                if client.stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Fault::Reset
                if shared
                    .resets
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(2) =>
            {
                // Before forwarding: the request is never applied.
                bump(&shared.counters.reset);
                reset(client.stream);
                return;
            }
            Fault::Reset | Fault::Healthy | Fault::Latency(_) => {}
        }
        let mut request = head.without_expect();
        request.extend_from_slice(&body);
        let token = run_instances_token(&body);
        let mut tokens = match &token {
            Some(_) => Some(shared.tokens.lock().await),
            None => None,
        };
        let cached = match (&token, &tokens) {
            (Some(t), Some(cache)) => cache.get(t).cloned(),
            _ => None,
        };
        let (answer, closes) = match cached {
            Some(answer) => {
                bump(&shared.counters.token_replays);
                (answer, false)
            }
            None => match forward(shared, &mut upstream, &request, &method).await {
                Ok(answered) => answered,
                Err(_) => {
                    reset(client.stream);
                    return;
                }
            },
        };
        if let (Some(t), Some(cache)) = (&token, &mut tokens) {
            if answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200") {
                cache.entry(t.clone()).or_insert_with(|| answer.clone());
            }
        }
        drop(tokens);
        if closes {
            upstream = None;
        }
        bump(&shared.counters.forwarded);
        match shared.fault() {
            // After forwarding: applied, the answer lost.
            Fault::Reset => {
                bump(&shared.counters.reset);
                reset(client.stream);
                return;
            }
            Fault::Blackhole => {
                bump(&shared.counters.blackholed);
                hold(client.stream).await;
                return;
            }
            Fault::Latency(delay) => tokio::time::sleep(delay).await,
            Fault::Healthy | Fault::Unavailable => {}
        }
        if client.stream.write_all(&answer).await.is_err() || closes {
            return;
        }
    }
}

/// Sends `request` upstream (connecting when needed; once more on a stale keep-alive
/// connection) and reads its answer.
async fn forward(
    shared: &Shared,
    upstream: &mut Option<Conn>,
    request: &[u8],
    method: &str,
) -> io::Result<(Vec<u8>, bool)> {
    for attempt in 0..2 {
        let reused = upstream.is_some();
        let conn = match upstream {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(shared.upstream).await?;
                let _ = stream.set_nodelay(true);
                upstream.insert(Conn::new(stream))
            }
        };
        let sent = conn.stream.write_all(request).await;
        let answer = match sent {
            Ok(()) => read_response(conn, method).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(answered) => return Ok(answered),
            Err(e) => {
                *upstream = None;
                // Only a reused connection may have been closed by the upstream meanwhile.
                if !reused || attempt == 1 {
                    return Err(e);
                }
            }
        }
    }
    Err(eof())
}

// ------------------------------------------------------------------ TCP (the CA)

enum Ended {
    Closed,
    Reset,
}

/// Copies `from` to `to`; `answers` is the upstream-to-client direction (the one latency
/// delays). A reset fault resets both sockets; a blackhole stops forwarding for good.
async fn pump(
    shared: &Shared,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    answers: bool,
) -> Ended {
    let mut buf = vec![0u8; 16 * 1024];
    let mut holed = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Ended::Closed;
            }
            Ok(n) => n,
        };
        if holed {
            continue;
        }
        match shared.fault() {
            Fault::Reset | Fault::Unavailable => {
                let _ = from.as_ref().set_zero_linger();
                let _ = to.as_ref().set_zero_linger();
                return Ended::Reset;
            }
            Fault::Blackhole => {
                holed = true;
                continue;
            }
            Fault::Latency(delay) if answers => tokio::time::sleep(delay).await,
            Fault::Latency(_) | Fault::Healthy => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Ended::Closed;
        }
    }
}

async fn tcp_connection(shared: &Shared, client: TcpStream) {
    match shared.fault() {
        Fault::Reset | Fault::Unavailable => {
            bump(&shared.counters.reset);
            reset(client);
            return;
        }
        Fault::Blackhole => {
            bump(&shared.counters.blackholed);
            hold(client).await;
            return;
        }
        Fault::Healthy | Fault::Latency(_) => {}
    }
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(client);
        return;
    };
    bump(&shared.counters.forwarded);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let requests = pump(shared, client_read, upstream_write, false);
    let answers = pump(shared, upstream_read, client_write, true);
    tokio::pin!(requests, answers);
    let other = tokio::select! {
        ended = &mut requests => match ended {
            Ended::Reset => None,
            Ended::Closed => Some(true),
        },
        ended = &mut answers => match ended {
            Ended::Reset => None,
            Ended::Closed => Some(false),
        },
    };
    match other {
        // Dropping both pumps closes all four halves: an RST, their linger being zero.
        None => bump(&shared.counters.reset),
        Some(requests_done) => {
            let rest = async {
                if requests_done {
                    (&mut answers).await
                } else {
                    (&mut requests).await
                }
            };
            if let Ok(Ended::Reset) = tokio::time::timeout(HOLD, rest).await {
                bump(&shared.counters.reset);
            }
        }
    }
}

//! The admin HTTP endpoint (default 127.0.0.1:9930): `/metrics` (Prometheus text format from the
//! registry passed in), `/healthz` (the process is alive) and `/readyz` (the caller's readiness
//! check). Everything else is 404. HTTP is hyper's; this module owns routing and the bounds that
//! keep a slow or hostile client from holding the endpoint.
//!
//! Bounds: request bodies are never read; header size and count are hyper's defaults; a client
//! must send its request head within [`Limits::header_read_timeout`]; a connection lives at most
//! [`Limits::connection_lifetime`]; at most [`Limits::max_connections`] are served at once, and
//! connections beyond that are closed at accept. Like [`crate::run`], the caller binds the
//! listener and passes a shutdown future, so tests bind port 0.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Whether pgward should receive traffic: the listener is accepting, at least one backend is
/// reachable, and it is not draining. Called on every `/readyz` request from the HTTP task, so it
/// must be cheap and must not block (read flags and counters the rest of pgward keeps).
pub trait Readiness: Send + Sync {
    /// `Ok` when ready; otherwise why not, which `/readyz` returns with a 503. The reason is
    /// shown to whoever can reach the admin port: no secrets in it.
    fn ready(&self) -> Result<(), String>;
}

impl<F> Readiness for F
where
    F: Fn() -> Result<(), String> + Send + Sync,
{
    fn ready(&self) -> Result<(), String> {
        self()
    }
}

/// Resource bounds of the admin listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; more are closed at accept. Scrapers and probes need a few.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (also while idle between requests).
    pub header_read_timeout: Duration,
    /// The longest a connection is kept, keep-alive included; then it is closed gracefully
    /// (a request in flight finishes). A scraper simply reconnects.
    pub connection_lifetime: Duration,
    /// How long a connection asked to close (lifetime reached, shutdown) may take to finish its
    /// request before it is dropped.
    pub close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the admin endpoint on `listener` with the default [`Limits`] until `shutdown`
/// completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    serve_with_limits(listener, registry, readiness, Limits::default(), shutdown).await;
}

/// Like [`serve`], with explicit bounds. On shutdown it stops accepting, asks open connections
/// to close, and returns once they have (at most [`Limits::close_grace`] later).
pub async fn serve_with_limits(
    listener: TcpListener,
    registry: Registry,
    readiness: Arc<dyn Readiness>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(State {
        registry,
        readiness,
    });
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tasks = TaskTracker::new();
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the limit, close at once rather than queue: a stuck client cannot make
                // probes wait behind it, and the prober sees a prompt failure.
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::debug!(%peer, "admin connection limit reached");
                    continue;
                };
                tasks.spawn(serve_connection(
                    stream,
                    Arc::clone(&state),
                    Arc::clone(&limits),
                    closing.clone(),
                    permit,
                ));
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    closing.cancel();
    tasks.close();
    // Each connection bounds its own close; this is a second fence.
    let fence = limits.close_grace + Duration::from_secs(1);
    if tokio::time::timeout(fence, tasks.wait()).await.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "admin connections still open after shutdown"
        );
    }
}

struct State {
    registry: Registry,
    readiness: Arc<dyn Readiness>,
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<State>,
    limits: Arc<Limits>,
    closing: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        // Answered without touching the body. Afterwards hyper discards whatever part of it
        // has already arrived and, if more is announced, closes the connection instead of
        // waiting for it: a body can neither be buffered here nor keep the connection busy.
        let response = respond(&req, &state.registry, state.readiness.as_ref());
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.connection_lifetime);
    tokio::pin!(deadline);
    let mut asked_to_close = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    // Timeouts, resets and malformed requests: the client's problem, not ours.
                    tracing::debug!(error = %e, "admin connection ended");
                }
                return;
            }
            _ = &mut deadline => {
                if asked_to_close {
                    return;
                }
                asked_to_close = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + limits.close_grace);
            }
            _ = closing.cancelled(), if !asked_to_close => {
                asked_to_close = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + limits.close_grace);
            }
        }
    }
}

/// Routes one request. Generic over the body because the body is never looked at.
fn respond<B>(
    req: &Request<B>,
    registry: &Registry,
    readiness: &dyn Readiness,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    // HEAD is answered like GET; hyper leaves the body out.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match crate::metrics::encode_text(registry) {
            Ok(body) => {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(prometheus::TEXT_FORMAT),
                );
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        },
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => match readiness.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // Probe answers are about this instant; no cache in between should keep them.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    struct Server {
        addr: std::net::SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        async fn start(readiness: Arc<dyn Readiness>, limits: Limits) -> (Server, Metrics) {
            let metrics = Metrics::new();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve_with_limits(
                listener,
                metrics.registry().clone(),
                readiness,
                limits,
                async move {
                    let _ = stopped.await;
                },
            ));
            let server = Server {
                addr,
                stop: Some(stop),
                task,
            };
            (server, metrics)
        }

        async fn stop(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("serve returns after shutdown")
                .unwrap();
        }
    }

    /// Sends `request` raw and returns everything the server sends until it closes.
    async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server answers and closes")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    fn always_ready() -> Arc<dyn Readiness> {
        Arc::new(|| Ok(()))
    }

    #[tokio::test]
    async fn healthz_readyz_and_404() {
        let draining = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&draining);
        let readiness: Arc<dyn Readiness> = Arc::new(move || {
            if d.load(Ordering::Relaxed) {
                Err("draining".to_owned())
            } else {
                Ok(())
            }
        });
        let (server, _metrics) = Server::start(readiness, Limits::default()).await;
        let a = server.addr;

        let r = get(a, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");

        let r = get(a, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        draining.store(true, Ordering::Relaxed);
        let r = get(a, "/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\ndraining\n"), "{r}");

        for path in ["/", "/metrics/", "/admin", "/healthz/x", "/../metrics"] {
            let r = get(a, path).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {r}");
        }
        // The query string is not part of the path.
        let r = get(a, "/healthz?verbose=1").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        server.stop().await;
    }

    #[tokio::test]
    async fn metrics_is_the_registry_passed_in() {
        let (server, metrics) = Server::start(always_ready(), Limits::default()).await;
        metrics.pool("appdb/app_rw").transaction();
        let r = get(server.addr, "/metrics").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{r}"
        );
        assert!(
            r.contains(r#"pgward_transactions_total{pool="appdb/app_rw"} 1"#),
            "{r}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn other_methods_and_bodies() {
        let (server, _metrics) = Server::start(always_ready(), Limits::default()).await;
        let a = server.addr;
        let r = raw(
            a,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");

        // A body announced on a GET is not waited for: the answer comes without it.
        let r = raw(
            a,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");

        let r = raw(
            a,
            "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "no body for HEAD: {r}");

        let r = raw(a, "GARBAGE\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");

        server.stop().await;
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off() {
        let limits = Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(300),
            connection_lifetime: Duration::from_secs(60),
            close_grace: Duration::from_secs(1),
        };
        let (server, _metrics) = Server::start(always_ready(), limits).await;
        let a = server.addr;

        // Holds the only slot with half a request.
        let mut slow = TcpStream::connect(a).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Over the limit: closed without an answer (EOF, or a reset as the request is unread).
        let mut over = TcpStream::connect(a).await.unwrap();
        let _ = over
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), over.read_to_end(&mut out))
            .await
            .expect("closed at once");
        assert!(read.is_err() || out.is_empty(), "{out:?}");

        // The slow client is dropped at the header read timeout ...
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest))
            .await
            .expect("slow client is disconnected")
            .ok();
        // ... which frees its slot.
        let mut answered = false;
        for _ in 0..50 {
            if get(a, "/healthz").await.starts_with("HTTP/1.1 200 OK") {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered);
        server.stop().await;
    }

    #[tokio::test]
    async fn silent_and_idle_clients_hit_the_header_read_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            connection_lifetime: Duration::from_secs(600),
            ..Limits::default()
        };
        let (server, _metrics) = Server::start(always_ready(), limits).await;
        // Connects and never sends a byte.
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut out))
            .await
            .expect("a silent client is disconnected")
            .ok();
        // Sends one request, keeps the connection and goes quiet.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut out))
            .await
            .expect("an idle keep-alive client is disconnected")
            .ok();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 OK"));
        server.stop().await;
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_end_at_their_lifetime_and_on_shutdown() {
        let limits = Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(60),
            connection_lifetime: Duration::from_millis(300),
            close_grace: Duration::from_millis(300),
        };
        let (server, _metrics) = Server::start(always_ready(), limits.clone()).await;
        // A keep-alive connection that sends one request and then nothing.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("closed at its lifetime")
            .ok();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 OK"));
        server.stop().await;

        // Shutdown closes idle connections too, and serve returns.
        let limits = Limits {
            connection_lifetime: Duration::from_secs(600),
            ..limits
        };
        let (server, _metrics) = Server::start(always_ready(), limits).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        server.stop().await;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("closed on shutdown")
            .ok();
    }
}

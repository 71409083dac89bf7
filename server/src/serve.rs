//! Accepting connections: plain or TLS, bounded in number, with header-read
//! timeouts, and a graceful shutdown that lets in-flight transfers finish
//! within a deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Per-connection buffer limit of HTTP/1 (request head and queued body chunks).
const MAX_BUF: usize = 128 * 1024;

/// Connection-level settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// Most connections served at once; further ones wait in the kernel's
    /// accept queue.
    pub max_connections: usize,
    /// A client must finish sending request headers (and a TLS handshake)
    /// within this time.
    pub header_timeout: Duration,
    /// A connection whose writes cannot proceed for this long (a reader that
    /// stopped reading) is closed.
    pub io_idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    pub tls: Option<TlsAcceptor>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            io_idle_timeout: Duration::from_secs(120),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting
/// and waits up to `shutdown_grace` for open requests to complete.
///
/// Long on purpose: connection limits, timeouts, TLS and graceful shutdown
/// are enforced here, in one place, in the order a connection meets them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true)
        // Bounds each connection's read buffer and queued response chunks
        // (hyper's default is about 400 KiB): under a fan-out of hundreds of
        // downloads this is most of the server's memory.
        .max_buf_size(MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // A write that cannot proceed for this long means a reader that
        // stopped reading. (No read timeout here: hyper keeps a read pending
        // while it streams a response, so one would cut long downloads; stalled
        // uploads are bounded by the body idle timeout instead.)
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(options.io_idle_timeout));
        let stream = Box::pin(stream);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = options.tls.clone();
        let handshake_timeout = options.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result =
                match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        open_connections = graceful.count(),
        grace_seconds = options.shutdown_grace.as_secs(),
        "shutting down: no new connections, waiting for open requests"
    );
    match tokio::time::timeout(options.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all requests finished"),
        Err(_) => tracing::warn!("shutdown grace period ended with requests still open"),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

//! A TCP relay that counts what it carries: between pods it stands where a
//! Service's proxy would, so a test can tell how many bytes one pod served
//! the others (e.g. a Spark driver's file server to its executors).
//! It also keeps the start of what clients sent (request heads), so a test
//! can tell which headers reached the upstream (e.g. that no bearer token
//! went to a store along with a signed URL). And it can cut one response
//! short ([`CountingRelay::cut_once`]), as a network that drops a transfer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of one read from a client is recorded (a request head fits).
const RECORDED_PER_READ: usize = 8 * 1024;
/// How much is recorded in all.
const RECORDED_MAX: usize = 32 * 1024 * 1024;

/// Relays every connection to `listen` on to `upstream`, both ways.
pub struct CountingRelay {
    /// Bytes from the upstream to the clients (what the upstream served).
    pub served: Arc<AtomicU64>,
    /// Bytes from the clients to the upstream.
    pub received: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    /// The first [`RECORDED_PER_READ`] bytes of each read from a client,
    /// up to [`RECORDED_MAX`] in all: request heads, rarely whole bodies.
    recorded: Arc<Mutex<Vec<u8>>>,
    /// A cut to make: the next request whose bytes hold the text gets its
    /// response ended after that many bytes.
    cut: Arc<Mutex<Option<(String, u64)>>>,
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

/// Bytes a connection's response may still carry before it is cut;
/// `u64::MAX` while no cut is armed on it.
type Armed = Arc<AtomicU64>;

impl CountingRelay {
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(listen).unwrap_or_else(|e| panic!("relay: bind {listen}: {e}"));
        let addr = listener.local_addr().expect("relay address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let served = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(Mutex::new(None));
        let (s, r, c, st, rec, cu) = (
            served.clone(),
            received.clone(),
            connections.clone(),
            stop.clone(),
            recorded.clone(),
            cut.clone(),
        );
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) =
                            TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        c.fetch_add(1, Ordering::SeqCst);
                        let _ = client.set_nonblocking(false);
                        let armed: Armed = Arc::new(AtomicU64::new(u64::MAX));
                        pipe(&server, &client, s.clone(), Side::Response(armed.clone()));
                        pipe(
                            &client,
                            &server,
                            r.clone(),
                            Side::Request {
                                record: rec.clone(),
                                cut: cu.clone(),
                                armed,
                            },
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            served,
            received,
            connections,
            recorded,
            cut,
            stop,
            addr,
        }
    }

    /// Cuts the response to the next request that holds `needle` (in its
    /// request line or headers) after `after` bytes: the connection is
    /// closed both ways, as a dropped transfer. Once.
    pub fn cut_once(&self, needle: &str, after: u64) {
        *self.cut.lock().unwrap_or_else(|e| e.into_inner()) = Some((needle.to_owned(), after));
    }

    /// The head (request line and headers, `\r\n`-separated) of every
    /// request clients sent whose request line starts with `method`.
    pub fn request_heads(&self, method: &str) -> Vec<String> {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&recorded);
        let start = format!("{method} /");
        text.match_indices(&start)
            .filter(|(at, _)| *at == 0 || text[..*at].ends_with('\n'))
            .map(|(at, _)| {
                let rest = &text[at..];
                rest[..rest.find("\r\n\r\n").unwrap_or(rest.len())].to_owned()
            })
            .collect()
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Which way a [`pipe`] carries bytes, and what it does on the way.
enum Side {
    /// Client to upstream: recorded, and arms a pending cut when a request
    /// holds its text.
    Request {
        record: Arc<Mutex<Vec<u8>>>,
        cut: Arc<Mutex<Option<(String, u64)>>>,
        armed: Armed,
    },
    /// Upstream to client: ends the connection once an armed cut runs out.
    Response(Armed),
}

/// Copies `from` into `to` on a thread, counting, until either side ends.
fn pipe(from: &TcpStream, to: &TcpStream, count: Arc<AtomicU64>, side: Side) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone socket"),
        to.try_clone().expect("clone socket"),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            count.fetch_add(n as u64, Ordering::SeqCst);
            let mut take = n;
            match &side {
                Side::Request { record, cut, armed } => {
                    let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
                    let room = RECORDED_MAX.saturating_sub(record.len());
                    record.extend_from_slice(&buf[..n.min(RECORDED_PER_READ).min(room)]);
                    let mut cut = cut.lock().unwrap_or_else(|e| e.into_inner());
                    let text = String::from_utf8_lossy(&buf[..n.min(RECORDED_PER_READ)]);
                    if let Some((_, after)) = cut.take_if(|(needle, _)| text.contains(&**needle)) {
                        armed.store(after, Ordering::SeqCst);
                    }
                }
                Side::Response(armed) => {
                    let left = armed.load(Ordering::SeqCst);
                    if left != u64::MAX {
                        take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                        armed.store(left - take as u64, Ordering::SeqCst);
                    }
                }
            }
            if to.write_all(&buf[..take]).is_err() {
                break;
            }
            if take < n || matches!(&side, Side::Response(a) if a.load(Ordering::SeqCst) == 0) {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

//! A TCP relay that counts what it carries: between pods it stands where a
//! Service's proxy would, so a test can tell how many bytes one pod served
//! the others (e.g. a Spark driver's file server to its executors).
//! It also keeps the start of what clients sent (request heads), so a test
//! can tell which headers reached the upstream (e.g. that no bearer token
//! went to a store along with a signed URL).

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
    stop: Arc<AtomicBool>,
    pub addr: SocketAddr,
}

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
        let (s, r, c, st, rec) = (
            served.clone(),
            received.clone(),
            connections.clone(),
            stop.clone(),
            recorded.clone(),
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
                        pipe(&server, &client, s.clone(), None);
                        pipe(&client, &server, r.clone(), Some(rec.clone()));
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
            stop,
            addr,
        }
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

/// Copies `from` into `to` on a thread, counting, until either side ends.
fn pipe(
    from: &TcpStream,
    to: &TcpStream,
    count: Arc<AtomicU64>,
    record: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let (mut from, mut to) = (
        from.try_clone().expect("clone socket"),
        to.try_clone().expect("clone socket"),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    count.fetch_add(n as u64, Ordering::SeqCst);
                    if let Some(record) = &record {
                        let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
                        let room = RECORDED_MAX.saturating_sub(record.len());
                        record.extend_from_slice(&buf[..n.min(RECORDED_PER_READ).min(room)]);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

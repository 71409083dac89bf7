//! A TCP relay that counts what it carries: between pods it stands where a
//! Service's proxy would, so a test can tell how many bytes one pod served
//! the others (e.g. a Spark driver's file server to its executors).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Relays every connection to `listen` on to `upstream`, both ways.
pub struct CountingRelay {
    /// Bytes from the upstream to the clients (what the upstream served).
    pub served: Arc<AtomicU64>,
    /// Bytes from the clients to the upstream.
    pub received: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
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
        let (s, r, c, st) = (
            served.clone(),
            received.clone(),
            connections.clone(),
            stop.clone(),
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
                        pipe(&server, &client, s.clone());
                        pipe(&client, &server, r.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            served,
            received,
            connections,
            stop,
            addr,
        }
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
fn pipe(from: &TcpStream, to: &TcpStream, count: Arc<AtomicU64>) {
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
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

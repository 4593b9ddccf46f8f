//! Accepting TCP connections: every one bounded before it is authenticated. A client
//! must send its request headers (the WebSocket handshake included) within
//! `http_timeout`, and one IP address may hold at most `max_connections_per_address`
//! sockets, counted for the socket's whole life (a WebSocket's too), so strangers cannot
//! exhaust descriptors with idle or trickling connections. Each address's connections
//! share one read budget ([`AddressBudget`]), handed to the WebSocket handler with each
//! request, and kept for a second after its last socket closes, so reconnecting does
//! not refill it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::budget::AddressBudget;

use crate::config::ServerConfig;

/// Serves `router` on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: &ServerConfig,
    refused: Counter,
) -> std::io::Result<()> {
    let open = Arc::new(OpenPerAddress {
        max: config.max_connections_per_address.max(1),
        rate: config.address_rate(),
        addresses: Mutex::default(),
    });
    let header_timeout = config.http_timeout();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: keep
                // serving; the sockets already open will close and free descriptors.
                tracing::warn!(%error, "accept failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = OpenPerAddress::claim(&open, peer) else {
            refused.inc();
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue; // dropping `tcp` closes it
        };
        // Small frames must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let budget = slot.budget.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request| {
            if let Some(budget) = &budget {
                request.extensions_mut().insert(budget.clone());
            }
            router.clone().call(request)
        });
        tokio::spawn(async move {
            let io = TokioIo::new(Counted { tcp, slot });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(io, service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Sockets open per client address, and each address's read budget.
struct OpenPerAddress {
    max: usize,
    rate: Option<crate::budget::Rate>,
    addresses: Mutex<Addresses>,
}

#[derive(Default)]
struct Addresses {
    open: HashMap<IpAddr, Address>,
    last_pruned: Option<Instant>,
}

struct Address {
    sockets: usize,
    budget: Option<AddressBudget>,
    /// When its last socket closed, if none is open.
    idle_since: Option<Instant>,
}

/// How long an address's budget outlives its last socket: a full refill, after which a
/// fresh budget is the same as the old one.
const BUDGET_KEPT: Duration = Duration::from_secs(1);

impl OpenPerAddress {
    fn claim(this: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let now = Instant::now();
        let mut addresses = this.addresses.lock();
        // Addresses idle for longer than a refill are forgotten, at most once a second:
        // the map holds the addresses seen in about the last second, not every one ever.
        if addresses
            .last_pruned
            .is_none_or(|pruned| now - pruned >= BUDGET_KEPT)
        {
            addresses.last_pruned = Some(now);
            addresses.open.retain(|_, address| {
                address
                    .idle_since
                    .is_none_or(|idle| now - idle < BUDGET_KEPT)
            });
        }
        let address = addresses.open.entry(peer.ip()).or_insert_with(|| Address {
            sockets: 0,
            budget: this.rate.map(AddressBudget::new),
            idle_since: None,
        });
        if address.sockets >= this.max {
            return None;
        }
        address.sockets += 1;
        address.idle_since = None;
        Some(Slot {
            open: this.clone(),
            address: peer.ip(),
            budget: address.budget.clone(),
        })
    }
}

/// One open socket of an address; released when the socket is dropped.
pub(crate) struct Slot {
    open: Arc<OpenPerAddress>,
    address: IpAddr,
    budget: Option<AddressBudget>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut addresses = self.open.addresses.lock();
        if let Some(address) = addresses.open.get_mut(&self.address) {
            address.sockets -= 1;
            if address.sockets == 0 {
                address.idle_since = Some(Instant::now());
            }
        }
    }
}

/// A socket that holds its address's slot for as long as it lives, through a WebSocket
/// upgrade too (hyper hands this same object to the upgraded connection).
pub(crate) struct Counted {
    tcp: TcpStream,
    slot: Slot,
}

impl Counted {
    /// The socket, and the slot it must hold for as long as it is open.
    pub(crate) fn into_parts(self) -> (TcpStream, Slot) {
        (self.tcp, self.slot)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Raises this process's descriptor limit to its hard limit: every WebSocket is one
/// descriptor, and the usual soft limit (1,024) is far below what a node can serve.
pub fn raise_descriptor_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                let soft = limit.rlim_cur;
                limit.rlim_cur = limit.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    tracing::debug!(
                        from = soft,
                        to = limit.rlim_max,
                        "raised the descriptor limit"
                    );
                }
            }
        }
    }
}

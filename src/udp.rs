//! The UDP listener: hushd's own socket loop instead of hickory-server's.
//!
//! hickory-server spawns a task per datagram and wraps every reply in a reporting handler; for
//! a cache hit or a blocked name that costs more than answering. Here each worker is a thread
//! that owns one `SO_REUSEPORT` socket (the kernel spreads clients over them), takes datagrams
//! in batches (`recvmmsg`), answers what it can (refused, blocked, cached) inline in its loop
//! and hands the replies back in one `sendmmsg`; only a query that must go upstream becomes a
//! task on the async runtime. A plain query is read in place and a cache hit answered from the
//! cache's wire form (`hit_path`); everything else is decoded and encoded by hickory
//! (`Request::from_bytes`, `MessageResponse::destructive_emit`). Admission and the reply path
//! are the handler's, shared with TCP.
//!
//! Why a thread and a blocking socket rather than a task on the runtime: the thread sleeps in
//! `recvmmsg` itself, so an idle moment costs no `epoll_wait`, no readiness bookkeeping and no
//! `recvmmsg` that finds the queue empty. At an office's rate (a few queries per wake-up) that
//! was a tenth of hushd's CPU time per cache-hot query (`bench/run.sh --only cpu`, see
//! docs/architecture.md).

use std::{
    io::{self, IoSlice, IoSliceMut},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Duration,
};

use hickory_net::xfer::Protocol;
use hickory_server::server::Request;
use nix::{
    errno::Errno,
    sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto},
};
use tokio::{runtime::Handle, sync::OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::{
    evidence::querylog::{Answers, Trace},
    handler::{
        Admission, Answered, QueryHandler, Step, cached_reply, encode, slip_reply, write_hit,
    },
    hit_path, listener,
    metrics::Outcome,
    wire::EDNS_PAYLOAD,
};

/// Larger than any query hushd will answer; a bigger datagram is cut and fails to decode.
const RECV_BUFFER: usize = 4096;
/// Datagrams taken from the kernel, and replies handed back, per system call (`recvmmsg`,
/// `sendmmsg`). Under load the socket queue holds many; at a trickle a batch is one datagram.
const BATCH: usize = 32;
/// How often an idle worker looks whether hushd is stopping, and the longest a full send
/// buffer may hold up replies before they are dropped.
const WAKE_EVERY: Duration = Duration::from_millis(200);
/// A forwarded query's reply that meets a full send buffer is tried again after this.
const SEND_RETRY: Duration = Duration::from_millis(5);

/// Binds `workers` sockets on `addr` and serves each from a thread of its own. Queries that
/// must go upstream become tasks on the runtime `serve` is called from.
pub fn serve(
    addr: SocketAddr,
    workers: usize,
    handler: Arc<QueryHandler>,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let runtime = Handle::current();
    let sockets = (0..workers.max(1))
        .map(|_| listener::bind_udp(addr, WAKE_EVERY).map(Arc::new))
        .collect::<io::Result<Vec<_>>>()?;
    for (i, socket) in sockets.into_iter().enumerate() {
        let (handler, shutdown, runtime) = (handler.clone(), shutdown.clone(), runtime.clone());
        let name = format!("udp-{i}");
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                keep_running(&name, || worker(&socket, &handler, &shutdown, &runtime));
            })?;
    }
    Ok(())
}

/// Runs `body` until it returns, and again each time it panics; returns how many times it
/// panicked. A worker thread that ended on a panic would leave its socket open with no one
/// reading it: the kernel goes on handing that socket its share of the clients, who get no
/// answer while the rest of hushd (TCP, metrics, the health name) looks well. What a panic
/// costs instead is the batch it was in.
fn keep_running(name: &str, mut body: impl FnMut()) -> usize {
    let mut panics = 0;
    loop {
        match catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(()) => return panics,
            Err(payload) => {
                panics += 1;
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(thread = name, panic = %message, "UDP worker panicked; it goes on with the next datagrams");
            }
        }
    }
}

fn worker(
    socket: &Arc<UdpSocket>,
    handler: &Arc<QueryHandler>,
    shutdown: &CancellationToken,
    runtime: &Handle,
) {
    let mut batch = Batch::new();
    while !shutdown.is_cancelled() {
        if let Err(e) = batch.receive(socket) {
            // Nothing in WAKE_EVERY, or a signal for another part of hushd: not worth a line.
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                tracing::debug!(error = %e, "udp receive error");
            }
            continue;
        }
        batch.dests.clear();
        for (buf, &(len, src)) in batch.bufs.iter().zip(&batch.received) {
            let Some(out) = batch.outs.get_mut(batch.dests.len()) else {
                break;
            };
            match process(handler, &buf[..len], src, out) {
                Action::Drop => {}
                Action::Send => batch.dests.push(src),
                Action::Forward(request, permit, mut trace) => {
                    let (socket, handler) = (socket.clone(), handler.clone());
                    runtime.spawn(async move {
                        let answered: Answered =
                            handler.forward(&request, permit, &mut trace).await;
                        handler.count(&request, &answered);
                        let mut out = Vec::with_capacity(512);
                        encode(&request, &answered.reply, &mut out);
                        handler.log_answered(trace, answered);
                        send_forwarded(&socket, &out, src).await;
                    });
                }
            }
        }
        batch.send(socket);
    }
}

/// What a worker thread reuses from one batch to the next: the datagrams, the replies, and the
/// kernel's message headers for `recvmmsg` and `sendmmsg` (making them zeroes 6 KB). The
/// headers hold raw pointers, so they live on the thread. nix leaves in each receive header the
/// source-address length the kernel wrote last; a worker's socket has one address family, so
/// that length always fits the next datagram's source.
struct Batch {
    bufs: Box<[[u8; RECV_BUFFER]]>,
    /// Each datagram's length and source, in `bufs` order.
    received: Vec<(usize, SocketAddr)>,
    /// The replies made, `outs[i]` to `dests[i]`.
    outs: Vec<Vec<u8>>,
    dests: Vec<SocketAddr>,
    receive_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bufs: vec![[0u8; RECV_BUFFER]; BATCH].into_boxed_slice(),
            received: Vec::with_capacity(BATCH),
            outs: (0..BATCH)
                .map(|_| Vec::with_capacity(usize::from(EDNS_PAYLOAD)))
                .collect(),
            dests: Vec::with_capacity(BATCH),
            receive_headers: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// One `recvmmsg`: waits for a datagram, then takes those queued behind it (up to `BATCH`)
    /// into `bufs`, their lengths and sources into `received`. `WouldBlock` when none came in
    /// `WAKE_EVERY`.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<()> {
        self.received.clear();
        let mut bufs = self.bufs.iter_mut();
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                bufs.next().map_or(&mut [][..], |b| &mut b[..]),
            )]
        });
        let messages = recvmmsg(
            socket.as_raw_fd(),
            &mut self.receive_headers,
            slices.iter_mut(),
            MsgFlags::MSG_WAITFORONE,
            None,
        )?;
        for m in messages {
            // A datagram with no usable source cannot be answered: kept as port 0, which
            // `process` drops, so buffers and results stay in step.
            let src = m
                .address
                .as_ref()
                .and_then(socket_addr)
                .unwrap_or(UNANSWERABLE);
            self.received.push((m.bytes.min(RECV_BUFFER), src));
        }
        Ok(())
    }

    /// Sends `outs[i]` to `dests[i]` with as few `sendmmsg` calls as the kernel allows. A reply
    /// the kernel refuses (an unreachable client, say) is skipped, not retried; a send buffer
    /// still full after `WAKE_EVERY` drops the rest.
    fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.dests.len() {
            let (outs, dests) = (&self.outs[sent..self.dests.len()], &self.dests[sent..]);
            match send_some(socket, &mut self.send_headers, outs, dests) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dropped = self.dests.len() - sent;
                    tracing::debug!(dropped, "udp send buffer stayed full");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %self.dests[sent], "udp send error");
                    sent += 1;
                }
            }
        }
    }
}

const UNANSWERABLE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        storage
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

fn send_some(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    outs: &[Vec<u8>],
    dests: &[SocketAddr],
) -> io::Result<usize> {
    let n = dests.len().min(outs.len()).min(BATCH);
    let slices: [[IoSlice<'_>; 1]; BATCH] =
        std::array::from_fn(|i| [IoSlice::new(outs.get(i).map_or(&[][..], |o| &o[..]))]);
    let addrs: [Option<SockaddrStorage>; BATCH] =
        std::array::from_fn(|i| dests.get(i).map(|&d| SockaddrStorage::from(d)));
    let sent = sendmmsg(
        socket.as_raw_fd(),
        headers,
        &slices[..n],
        &addrs[..n],
        [],
        MsgFlags::empty(),
    )?;
    Ok(sent.count())
}

/// Sends a forwarded query's reply from its task. The socket blocks (it is the worker's), so the
/// send does not: a full send buffer is tried again every `SEND_RETRY`, for up to `WAKE_EVERY`.
async fn send_forwarded(socket: &UdpSocket, reply: &[u8], dest: SocketAddr) {
    let to = SockaddrStorage::from(dest);
    let mut waited = Duration::ZERO;
    loop {
        match sendto(socket.as_raw_fd(), reply, &to, MsgFlags::MSG_DONTWAIT) {
            Ok(_) => return,
            Err(Errno::EAGAIN) if waited < WAKE_EVERY => {
                tokio::time::sleep(SEND_RETRY).await;
                waited += SEND_RETRY;
            }
            Err(e) => {
                tracing::debug!(error = %e, %dest, "udp send error");
                return;
            }
        }
    }
}

/// What the socket loop does with one datagram.
pub enum Action {
    /// Nothing: not a query to answer, or shed.
    Drop,
    /// Send `out` back to the client.
    Send,
    /// Ask upstream (in a task of its own, holding the permit), with the query's line for the
    /// query log.
    Forward(Box<Request>, OwnedSemaphorePermit, Trace),
}

/// Everything hushd does with a datagram before any waiting, in this order: admission
/// (`QueryHandler::admit`: header, rate limit, decoding, `allow_clients`), then the local
/// answer (validation, policy, cache), then a place among the queries waiting for upstream.
/// A plain query takes the hit path, which keeps the same order without decoding the whole
/// message. The reply, if one is ready, is written to `out`. No I/O, so the request path is
/// fuzzed through this very function.
pub fn process(
    handler: &QueryHandler,
    datagram: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Action {
    if src.port() == 0 {
        return Action::Drop; // cannot be answered; a spoofed or broken source
    }
    if let Some(action) = hit_path::answer(handler, datagram, src, out) {
        return action;
    }
    process_full(handler, datagram, src, out)
}

/// `process` for a datagram the hit path left: decoded whole into hickory's `Request`.
pub fn process_full(
    handler: &QueryHandler,
    datagram: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> Action {
    let request = match handler.admit(datagram, src, Protocol::Udp) {
        Admission::Drop => return Action::Drop,
        Admission::Formerr(reply) => {
            *out = reply;
            return Action::Send;
        }
        Admission::Slip(request) => {
            encode(
                &request,
                &slip_reply(&request.metadata, request.edns.as_ref()),
                out,
            );
            return Action::Send;
        }
        Admission::Refuse(request) => {
            let trace = handler.trace_request(&request);
            let answered = handler.refused(&request);
            handler.count(&request, &answered);
            encode(&request, &answered.reply, out);
            handler.log_answered(trace, answered);
            return Action::Send;
        }
        Admission::Query(request) => request,
    };
    let mut trace = handler.trace_request(&request);
    let step = handler.answer_locally(&request, &mut trace);
    respond(handler, request, step, out, trace)
}

/// What to do with an admitted query once the handler has taken its first `step`.
pub(crate) fn respond(
    handler: &QueryHandler,
    request: Box<Request>,
    step: Step,
    out: &mut Vec<u8>,
    trace: Trace,
) -> Action {
    let answered = match step {
        Step::Cached(hit, qtype) => {
            let question = request.queries.as_bytes();
            if write_hit(
                &hit,
                &request.metadata,
                request.edns.as_ref(),
                question,
                out,
            ) {
                handler.count_parts(&request, qtype, Outcome::Cached, hit.rcode());
                handler.log(trace, Outcome::Cached, hit.rcode(), Answers::Hit(hit));
                return Action::Send;
            }
            cached_reply(&request, &hit, qtype)
        }
        Step::Answered(answered) => answered,
        Step::Blocked(blocked) => blocked.into_answered(),
        Step::Forward => match handler.reserve_upstream(&request) {
            Ok(permit) => return Action::Forward(request, permit, trace),
            Err(overloaded) => *overloaded,
        },
    };
    handler.count(&request, &answered);
    encode(&request, &answered.reply, out);
    handler.log_answered(trace, answered);
    Action::Send
}

#[cfg(test)]
mod tests {
    use super::keep_running;

    #[test]
    fn a_worker_that_panics_is_started_again_until_it_returns() {
        let mut runs = 0;
        let panics = keep_running("udp-test", || {
            runs += 1;
            assert!(runs > 2, "a bad datagram, run {runs}");
        });
        assert_eq!((runs, panics), (3, 2));
    }
}

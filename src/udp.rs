//! The UDP listener: hushd's own socket loop instead of hickory-server's.
//!
//! hickory-server spawns a task per datagram and wraps every reply in a reporting handler; for
//! a cache hit or a blocked name that costs more than answering. Here each worker owns one
//! `SO_REUSEPORT` socket (the kernel spreads clients over them), takes datagrams in batches
//! (`recvmmsg`), answers what it can (refused, blocked, cached) inline in its loop and hands the
//! replies back in one `sendmmsg`; only a query that must go upstream gets a task. A plain
//! query is read in place and a cache hit answered from the cache's wire form (`hit_path`);
//! everything else is decoded and encoded by hickory (`Request::from_bytes`,
//! `MessageResponse::destructive_emit`). Admission and the reply path are the handler's, shared
//! with TCP.

use std::{
    cell::RefCell,
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::Arc,
};

use hickory_net::xfer::Protocol;
use hickory_server::server::Request;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::{io::Interest, net::UdpSocket, sync::OwnedSemaphorePermit};
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

/// Binds `workers` sockets on `addr` and serves each from its own task.
pub fn serve(
    addr: SocketAddr,
    workers: usize,
    handler: Arc<QueryHandler>,
    shutdown: &CancellationToken,
) -> io::Result<()> {
    let sockets = (0..workers.max(1))
        .map(|_| listener::bind_udp(addr, true).map(Arc::new))
        .collect::<io::Result<Vec<_>>>()?;
    for socket in sockets {
        tokio::spawn(worker(socket, handler.clone(), shutdown.clone()));
    }
    Ok(())
}

async fn worker(socket: Arc<UdpSocket>, handler: Arc<QueryHandler>, shutdown: CancellationToken) {
    let mut bufs = vec![[0u8; RECV_BUFFER]; BATCH].into_boxed_slice();
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut outs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(usize::from(EDNS_PAYLOAD)))
        .collect();
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(BATCH);
    loop {
        let batch = tokio::select! {
            r = socket.async_io(Interest::READABLE, || receive_batch(&socket, &mut bufs, &mut received)) => r,
            () = shutdown.cancelled() => return,
        };
        if let Err(e) = batch {
            // ICMP errors from earlier sends surface here; the socket is still fine.
            tracing::debug!(error = %e, "udp receive error");
            continue;
        }
        dests.clear();
        for (buf, &(len, src)) in bufs.iter().zip(&received) {
            let Some(out) = outs.get_mut(dests.len()) else {
                break;
            };
            match process(&handler, &buf[..len], src, out) {
                Action::Drop => {}
                Action::Send => dests.push(src),
                Action::Forward(request, permit, mut trace) => {
                    let (socket, handler) = (socket.clone(), handler.clone());
                    tokio::spawn(async move {
                        let answered: Answered =
                            handler.forward(&request, permit, &mut trace).await;
                        handler.count(&request, &answered);
                        let mut out = Vec::with_capacity(512);
                        encode(&request, &answered.reply, &mut out);
                        handler.log_answered(trace, answered);
                        if let Err(e) = socket.send_to(&out, src).await {
                            tracing::debug!(error = %e, %src, "udp send error");
                        }
                    });
                }
            }
        }
        send_batch(&socket, &outs, &dests).await;
    }
}

thread_local! {
    /// The kernel's message headers for `sendmmsg`, made once per worker thread and reused:
    /// they hold raw pointers, so they cannot live in the (`Send`) worker future. `sendmmsg`
    /// sets every field it uses on each call. `recvmmsg` gets fresh headers each batch: nix
    /// does not reset the address length the kernel wrote into them, and one thread serves
    /// both IPv4 and IPv6 sockets.
    static SEND_HEADERS: RefCell<MultiHeaders<SockaddrStorage>> =
        RefCell::new(MultiHeaders::preallocate(BATCH, None));
}

/// One `recvmmsg`: up to `BATCH` datagrams into `bufs`, their lengths and sources into
/// `received`. `WouldBlock` when there are none (tokio then waits for readiness).
fn receive_batch(
    socket: &UdpSocket,
    bufs: &mut [[u8; RECV_BUFFER]],
    received: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    received.clear();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut bufs = bufs.iter_mut();
    let mut slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
        [IoSliceMut::new(
            bufs.next().map_or(&mut [][..], |b| &mut b[..]),
        )]
    });
    let messages = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
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
        received.push((m.bytes.min(RECV_BUFFER), src));
    }
    Ok(())
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

/// Sends `outs[i]` to `dests[i]` with as few `sendmmsg` calls as the kernel allows. A reply the
/// kernel refuses (an unreachable client, say) is skipped, not retried.
async fn send_batch(socket: &UdpSocket, outs: &[Vec<u8>], dests: &[SocketAddr]) {
    let mut sent = 0;
    while sent < dests.len() {
        let attempt = socket
            .async_io(Interest::WRITABLE, || {
                send_some(socket, &outs[sent..dests.len()], &dests[sent..])
            })
            .await;
        match attempt {
            Ok(n) => sent += n.max(1),
            Err(e) => {
                tracing::debug!(error = %e, dest = %dests[sent], "udp send error");
                sent += 1;
            }
        }
    }
}

fn send_some(socket: &UdpSocket, outs: &[Vec<u8>], dests: &[SocketAddr]) -> io::Result<usize> {
    let n = dests.len().min(outs.len()).min(BATCH);
    let slices: [[IoSlice<'_>; 1]; BATCH] =
        std::array::from_fn(|i| [IoSlice::new(outs.get(i).map_or(&[][..], |o| &o[..]))]);
    let addrs: [Option<SockaddrStorage>; BATCH] =
        std::array::from_fn(|i| dests.get(i).map(|&d| SockaddrStorage::from(d)));
    SEND_HEADERS.with_borrow_mut(|headers| {
        let sent = sendmmsg(
            socket.as_raw_fd(),
            headers,
            &slices[..n],
            &addrs[..n],
            [],
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(sent.count())
    })
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

//! The UDP listener: hushd's own socket loop instead of hickory-server's.
//!
//! hickory-server spawns a task per datagram and wraps every reply in a reporting handler; for
//! a cache hit or a blocked name that costs more than answering. Here each worker owns one
//! `SO_REUSEPORT` socket (the kernel spreads clients over them), takes datagrams in batches
//! (`recvmmsg`), answers what it can (refused, blocked, cached) inline in its loop and hands the
//! replies back in one `sendmmsg`; only a query that must go upstream gets a task. A plain
//! query the cache answers is read in place and answered from the cache's wire form
//! (`hit_path`); everything else is decoded and encoded by hickory (`Request::from_bytes`,
//! `MessageResponse::destructive_emit`).
//! TCP stays on hickory-server.

use std::{
    cell::RefCell,
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::Arc,
};

use hickory_net::xfer::Protocol;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, ResponseCode},
    serialize::binary::{BinEncodable, BinEncoder},
};
use hickory_server::{
    server::Request,
    zone_handler::{MessageResponseBuilder, Queries},
};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::{io::Interest, net::UdpSocket, sync::OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::{
    handler::{Answered, QueryHandler, Step, cached_reply},
    hit_path,
    limits::Admit,
    listener,
    metrics::Outcome,
    reply::{Reply, response_edns, response_metadata},
    wire::{EDNS_PAYLOAD, formerr_for, question_is_plain},
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
                Action::Forward(request, permit) => {
                    let (socket, handler) = (socket.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        let answered: Answered = handler.forward(&request).await;
                        handler.count(&request, &answered);
                        let mut out = Vec::with_capacity(512);
                        encode(&request.queries, answered.reply, &mut out);
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
    /// Ask upstream (in a task of its own, holding the permit).
    Forward(Box<Request>, OwnedSemaphorePermit),
}

/// Everything hushd does with a datagram before any waiting: decode, rate limit, policy,
/// cache; the reply, if one is ready, is written to `out`. No I/O, so the request path is
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
    let Ok(request) = Request::from_bytes(datagram.to_vec(), src, Protocol::Udp) else {
        return match formerr_for(datagram) {
            Some(reply) => {
                *out = reply;
                Action::Send
            }
            None => Action::Drop,
        };
    };
    if request.metadata.message_type == hickory_proto::op::MessageType::Response {
        return Action::Drop; // never answer an answer: that is how reflection loops start
    }
    if !question_is_plain(request.queries.as_bytes()) {
        // Replies echo the question's raw bytes; a pointer in them would point into our own
        // header and make the reply undecodable. Answer FORMERR without the question.
        return match formerr_for(datagram) {
            Some(reply) => {
                *out = reply;
                Action::Send
            }
            None => Action::Drop,
        };
    }
    match handler.limiter.admit(src.ip()) {
        Admit::Yes => {}
        Admit::Drop => {
            handler.metrics.limited("ratelimit");
            return Action::Drop;
        }
        Admit::Slip => {
            handler.metrics.limited("ratelimit");
            slip(&request, out);
            return Action::Send;
        }
    }
    let step = handler.answer_locally(&request);
    respond(handler, request, step, out)
}

/// The reply to a client the rate limiter let through with TC=1: come back over TCP.
pub(crate) fn slip(request: &Request, out: &mut Vec<u8>) {
    encode(
        &request.queries,
        slip_reply(&request.metadata, request.edns.as_ref()),
        out,
    );
}

pub(crate) fn slip_reply(metadata: &Metadata, edns: Option<&Edns>) -> Reply {
    let mut reply = Reply::new(metadata, edns, ResponseCode::NoError);
    reply.metadata.truncation = true;
    reply
}

/// What to do with an admitted query once the handler has taken its first `step`.
pub(crate) fn respond(
    handler: &QueryHandler,
    request: Request,
    step: Step,
    out: &mut Vec<u8>,
) -> Action {
    match step {
        Step::Cached(hit, qtype) => {
            let edns = request.edns.as_ref().map(response_edns);
            let max = edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
            let metadata = response_metadata(&request.metadata, hit.rcode());
            let question = request.queries.as_bytes();
            let sent_fast = hit.write_wire(metadata, question, edns.as_ref(), max, out);
            if sent_fast {
                handler.count_parts(&request, qtype, Outcome::Cached, hit.rcode());
            } else {
                let answered = cached_reply(&request, &hit, qtype);
                handler.count(&request, &answered);
                encode(&request.queries, answered.reply, out);
            }
            Action::Send
        }
        Step::Answered(answered) => {
            handler.count(&request, &answered);
            encode(&request.queries, answered.reply, out);
            Action::Send
        }
        Step::Forward => match handler.inflight.clone().try_acquire_owned() {
            Ok(permit) => Action::Forward(Box::new(request), permit),
            Err(_) => {
                // upstream is saturated: shed, the client will retry
                handler.metrics.limited("overload");
                Action::Drop
            }
        },
    }
}

/// Encodes `reply` to the question `queries` into `out`, truncated (TC=1) to what the client
/// can take over UDP: its EDNS size as capped by hushd, or 512 bytes without EDNS (RFC 1035
/// §4.2.1).
pub(crate) fn encode(queries: &Queries, reply: Reply, out: &mut Vec<u8>) {
    out.clear();
    let max_size = reply.edns.as_ref().map_or(512, |e| e.max_payload());
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(edns) = &reply.edns {
        builder.edns(edns);
    }
    let metadata = reply.metadata;
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        [],
        reply.additionals.iter(),
    );
    let mut encoder = BinEncoder::new(out);
    encoder.set_max_size(max_size);
    if response.destructive_emit(&mut encoder).is_err() {
        // Could not encode even a truncated reply: tell the client the server failed.
        out.clear();
        let mut metadata = metadata;
        metadata.response_code = ResponseCode::ServFail;
        let header = Header {
            metadata,
            counts: HeaderCounts::default(),
        };
        let mut encoder = BinEncoder::new(out);
        let _ = header.emit(&mut encoder);
    }
}

//! Binding the DNS sockets. Done with socket2 so IPv6 sockets are v6-only (listening on both
//! `0.0.0.0:53` and `[::]:53` then works) and buffers are sized for bursts.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Bigger than the default so a burst of queries is queued, not dropped, while workers are busy.
const UDP_RECV_BUFFER: usize = 4 << 20;
const TCP_BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A UDP socket for a worker thread of its own (`udp::serve`): blocking, so the thread sleeps in
/// `recvmmsg` itself rather than in an event loop, with timeouts so it looks at shutdown every
/// `timeout` and a full send buffer cannot stop it for longer.
pub fn bind_udp(addr: SocketAddr, timeout: std::time::Duration) -> io::Result<std::net::UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.set_write_timeout(Some(timeout))?;
    Ok(socket.into())
}

pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.bind(&addr.into())?;
    socket.listen(TCP_BACKLOG)?;
    tokio::net::TcpListener::from_std(socket.into())
}

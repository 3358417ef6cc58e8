//! udp-floor ADDR:PORT — a trivial tokio UDP DNS responder, the benchmark's floor.
//!
//! One current-thread runtime, one socket, one task: receive, answer, send. No cache, no lists,
//! no upstream, no name parsing beyond finding the end of the question. Names under
//! `example-allowed.test` get NOERROR with one A (or AAAA) record, like the upstream would
//! give; every other name gets NXDOMAIN, like a blocked name. Whatever hushd does per query
//! beyond this costs its own time, so the floor's row shows what the machine and the
//! harness allow at best.

use std::net::SocketAddr;
use tokio::net::UdpSocket;

const ALLOWED_ZONE: &[u8] = b"\x0fexample-allowed\x04test\x00";
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Turns the query in `buf[..len]` into its answer in place and returns the answer's length
/// (0: drop the packet).
fn answer(buf: &mut [u8], len: usize) -> usize {
    if len < 12 || buf[2] & 0x80 != 0 {
        return 0; // too short, or a response
    }
    // Walk the question name to find its end (uncompressed labels, as clients send them).
    let mut end = 12;
    while end < len && buf[end] != 0 {
        end += buf[end] as usize + 1;
    }
    let question_end = end + 5; // root label, QTYPE, QCLASS
    if question_end > len {
        return 0;
    }
    let qtype = u16::from_be_bytes([buf[end + 1], buf[end + 2]]);
    let allowed = buf[12..end + 1].ends_with(ALLOWED_ZONE);

    buf[2] = 0x80 | (buf[2] & 0x79); // QR, keep opcode and RD
    buf[3] = 0x80 | if allowed { 0 } else { 3 }; // RA, NOERROR or NXDOMAIN
    buf[6..12].fill(0); // no answer/authority/additional yet (drops any EDNS OPT record)
    let mut n = question_end;
    if allowed && (qtype == TYPE_A || qtype == TYPE_AAAA) {
        let rdata: &[u8] = if qtype == TYPE_A {
            &[192, 0, 2, 1]
        } else {
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        };
        let rr_len = 12 + rdata.len();
        if n + rr_len <= buf.len() {
            let rr = &mut buf[n..n + rr_len];
            rr[..2].copy_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
            rr[2..4].copy_from_slice(&qtype.to_be_bytes());
            rr[4..10].copy_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]); // class IN, TTL 3600
            rr[10..12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
            rr[12..].copy_from_slice(rdata);
            buf[7] = 1; // ANCOUNT = 1
            n += rr_len;
        }
    }
    n
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.53.5:5353".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let sock = UdpSocket::bind(addr).await?;
        let mut buf = [0u8; 1500];
        loop {
            // A failed receive or send (e.g. ICMP from a client that went away) is not fatal.
            let Ok((len, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let n = answer(&mut buf, len);
            if n > 0 {
                let _ = sock.send_to(&buf[..n], peer).await;
            }
        }
    })
}

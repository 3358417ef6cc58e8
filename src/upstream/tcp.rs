//! TCP exchanges with one upstream server, for answers that did not fit UDP: one connection
//! per query (truncation is rare, and a fresh connection needs no multiplexing or idle
//! handling), RFC 1035 §4.2.2 framing (a two-byte length before each message), and the whole
//! exchange, connect included, bounded by the caller's timeout.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::op::{Message, Query};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::exchange::{ExchangeError, query_message, random_id};

pub struct TcpExchange {
    server: SocketAddr,
    edns_payload: u16,
}

impl TcpExchange {
    pub fn new(server: SocketAddr, edns_payload: u16) -> Self {
        Self {
            server,
            edns_payload,
        }
    }

    /// Sends one query on a new connection and waits up to `timeout` for its answer.
    pub async fn exchange(
        &self,
        query: &Query,
        checking_disabled: bool,
        timeout: Duration,
    ) -> Result<Message, ExchangeError> {
        let id = random_id();
        let bytes = query_message(id, query, self.edns_payload, checking_disabled)
            .to_vec()
            .map_err(|e| ExchangeError::Encode(e.to_string()))?;
        let frame = framed(&bytes).ok_or_else(|| ExchangeError::Encode("query too long".into()))?;
        let reply = tokio::time::timeout(timeout, self.send_and_receive(&frame))
            .await
            .map_err(|_| ExchangeError::Timeout(timeout))??;
        let reply = Message::from_vec(&reply)
            .map_err(|e| ExchangeError::Garbled(format!("does not decode: {e}")))?;
        if reply.metadata.id != id {
            return Err(ExchangeError::Garbled("reply with another ID".into()));
        }
        Ok(reply)
    }

    async fn send_and_receive(&self, frame: &[u8]) -> Result<Vec<u8>, ExchangeError> {
        let mut stream = TcpStream::connect(self.server).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ExchangeError::Unreachable
            } else {
                ExchangeError::Io(e)
            }
        })?;
        stream.set_nodelay(true)?;
        stream.write_all(frame).await?;
        let len = stream.read_u16().await?;
        let mut reply = vec![0; usize::from(len)];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }
}

/// `message` behind its two-byte length; `None` if it does not fit the length field.
fn framed(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    Some(frame)
}

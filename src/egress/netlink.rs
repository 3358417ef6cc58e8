//! nftables over netlink, for the two things hushd does with an admin's sets: read a set's
//! definition, and write elements into sets in one transaction. Messages are built and read with
//! `netlink-packet-netfilter`; this module only frames the exchange (sequence numbers, batch
//! begin/end, acknowledgements).

use std::{io, net::IpAddr};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nftables::{
        DataAttribute, ListAttribute, NfTablesMessage, SetAttribute, SetElementAttribute,
        SetElementList, SetElementMessage, SetFlags, SetMessage,
    },
    none::ControlMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::SetRef;

/// `res_id` of a batch's begin and end messages: the subsystem the batch is for.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// nft's data type ids for a set's key (`nftables/include/datatype.h`).
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;

/// A set's definition as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetInfo {
    pub key_type: u32,
    pub key_len: u32,
    pub flags: SetFlags,
}

/// Which elements one set receives in a transaction, with their timeouts in seconds.
#[derive(Debug, Clone)]
pub struct SetWrite<'a> {
    pub set: &'a SetRef,
    pub elements: &'a [(IpAddr, u32)],
}

/// How a re-added element gets its new timeout. Linux 6.12 made re-adding an element update
/// its timeout and expiry (both are sent: with the timeout alone, an unchanged timeout leaves
/// the expiry counting down); before that a re-add of an existing element is silently ignored, so the element
/// is added (in case it is absent), deleted and added again, in the same transaction: the
/// commit is atomic, so a packet never sees the address missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    Readd,
    DeleteReadd,
}

impl Refresh {
    /// What the running kernel needs, from its release (`uname -r`).
    pub fn for_kernel(release: &str) -> Self {
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        if (major, minor) >= (6, 12) {
            Self::Readd
        } else {
            Self::DeleteReadd
        }
    }
}

/// A transaction stays well under the socket's default send buffer (`net.core.wmem_default`,
/// usually 208 KiB): the kernel takes a batch only whole, in one `send`.
const MAX_TRANSACTION_BYTES: usize = 96 * 1024;
/// Elements per message, so a message stays small too.
const MAX_ELEMENTS_PER_MESSAGE: usize = 256;

/// A netlink socket to nftables. Not shared: the writer's thread owns one, a check opens its own.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors carry only the failed message's header, not the whole message back.
        socket.set_cap_ack(true)?;
        // The kernel answers a request before `send` returns, so a reply is either queued
        // already or never coming: reads never wait.
        socket.set_non_blocking(true)?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The definition of one set; `ENOENT` when the table or the set does not exist.
    pub fn get_set(&mut self, set: &SetRef) -> io::Result<SetInfo> {
        let seq = self.next_seq();
        let msg = message(
            nf_family(&set.family),
            NfTablesMessage::GetSet(SetMessage {
                attributes: vec![
                    SetAttribute::Table(set.table.clone()),
                    SetAttribute::Name(set.set.clone()),
                ],
            }),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
        );
        let mut out = Vec::new();
        append(&mut out, msg);
        self.send(&out)?;
        let mut info = None;
        let mut error = None;
        self.drain(|reply_seq, reply| {
            if reply_seq != seq {
                return;
            }
            match reply {
                Reply::Ack(Some(e)) => error = Some(e),
                Reply::Ack(None) => {}
                Reply::Set(attributes) => info = Some(set_info(&attributes)),
            }
        })?;
        match (error, info) {
            (Some(e), _) => Err(e),
            (None, Some(info)) => Ok(info),
            (None, None) => Err(io::Error::other(
                "the kernel sent no description of the set",
            )),
        }
    }

    /// Writes every set's elements in as few transactions as fit a send buffer (one, for a
    /// batch of a thousand addresses). Returns, for each write that failed, its index in
    /// `writes` and the kernel's error; a failed transaction applies none of its elements.
    pub fn write(&mut self, writes: &[SetWrite<'_>], refresh: Refresh) -> Vec<(usize, io::Error)> {
        let mut failed = Vec::new();
        let mut tx = Transaction::new(self.next_seq());
        for (index, write) in writes.iter().enumerate() {
            let family = nf_family(&write.set.family);
            for chunk in write.elements.chunks(MAX_ELEMENTS_PER_MESSAGE) {
                let steps: &[Step] = match refresh {
                    Refresh::Readd => &[Step::Add],
                    Refresh::DeleteReadd => &[Step::Add, Step::Delete, Step::Add],
                };
                let msgs: Vec<_> = steps
                    .iter()
                    .map(|step| element_message(family, write.set, chunk, *step))
                    .collect();
                let size: usize = msgs.iter().map(|(m, _)| m.buffer_len()).sum();
                if !tx.is_empty() && tx.bytes.len() + size > MAX_TRANSACTION_BYTES {
                    let full = std::mem::replace(&mut tx, Transaction::new(self.next_seq()));
                    failed.extend(self.commit(full));
                }
                for (msg, flags) in msgs {
                    let seq = self.next_seq();
                    tx.push(msg, flags, seq, index);
                }
            }
        }
        if !tx.is_empty() {
            failed.extend(self.commit(tx));
        }
        failed.sort_by_key(|(i, _)| *i);
        failed.dedup_by_key(|(i, _)| *i);
        failed
    }

    /// Sends one transaction and reads what the kernel said about each of its messages.
    fn commit(&mut self, tx: Transaction) -> Vec<(usize, io::Error)> {
        let end_seq = self.next_seq();
        let mut bytes = tx.bytes;
        append(
            &mut bytes,
            message(
                NetfilterProtoFamily::Unspec,
                ControlMessage::BatchEnd,
                NLM_F_REQUEST,
                end_seq,
            ),
        );
        let everything = |e: io::Error| {
            let mut writes: Vec<usize> = tx.owners.iter().map(|(_, w)| *w).collect();
            writes.dedup();
            writes
                .into_iter()
                .map(|w| (w, io::Error::new(e.kind(), e.to_string())))
                .collect::<Vec<_>>()
        };
        if let Err(e) = self.send(&bytes) {
            return everything(e);
        }
        let mut acked = 0;
        let mut failed = Vec::new();
        let mut whole: Option<io::Error> = None;
        let drained = self.drain(|seq, reply| {
            let Reply::Ack(code) = reply else { return };
            if seq == tx.seq {
                // the batch itself failed (in its commit, or it was malformed)
                whole = code.or_else(|| Some(io::Error::other("batch refused")));
                return;
            }
            if let Some((_, write)) = tx.owners.iter().find(|(s, _)| *s == seq) {
                acked += 1;
                if let Some(e) = code {
                    failed.push((*write, e));
                }
            }
        });
        if let Err(e) = drained {
            return everything(e);
        }
        if let Some(e) = whole {
            return everything(e);
        }
        if !failed.is_empty() {
            // One bad message aborts the whole transaction: the others are not applied either.
            let mut all = everything(io::Error::other(
                "not applied: another set in the same transaction failed",
            ));
            for (w, e) in failed {
                if let Some(slot) = all.iter_mut().find(|(i, _)| *i == w) {
                    slot.1 = e;
                }
            }
            return all;
        }
        if acked < tx.owners.len() {
            return everything(io::Error::other("the kernel did not acknowledge the batch"));
        }
        Vec::new()
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let sent = self.socket.send(bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::other("netlink message sent in part"));
        }
        Ok(())
    }

    /// Reads every reply queued on the socket, handing each to `f` with its sequence number.
    fn drain(&mut self, mut f: impl FnMut(u32, Reply)) -> io::Result<()> {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut rest = &self.buf[..];
            while rest.len() >= 16 {
                let len = NetlinkBuffer::new(rest).length() as usize;
                if len < 16 || len > rest.len() {
                    return Err(io::Error::other("garbled netlink reply"));
                }
                let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&rest[..len])
                    .map_err(|e| io::Error::other(format!("garbled netlink reply: {e}")))?;
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        // The error echoes the request's header: its sequence number says
                        // which message it is about.
                        let seq = if e.header.len() >= 16 {
                            NetlinkBuffer::new(&e.header[..]).sequence_number()
                        } else {
                            msg.header.sequence_number
                        };
                        let code = e.code.map(|_| e.to_io());
                        f(seq, Reply::Ack(code));
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewSet(set)),
                        ..
                    }) => f(msg.header.sequence_number, Reply::Set(set.attributes)),
                    _ => {}
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }
}

enum Reply {
    /// An acknowledgement, or the error the message failed with.
    Ack(Option<io::Error>),
    Set(Vec<SetAttribute>),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Add,
    Delete,
}

/// Messages between a batch begin and end, and which write each one carries.
struct Transaction {
    seq: u32,
    bytes: Vec<u8>,
    /// (sequence number, index of the write) of every message that asks for an ack.
    owners: Vec<(u32, usize)>,
}

impl Transaction {
    fn new(seq: u32) -> Self {
        let mut bytes = Vec::with_capacity(MAX_TRANSACTION_BYTES);
        append(
            &mut bytes,
            message(
                NetfilterProtoFamily::Unspec,
                ControlMessage::BatchBegin,
                NLM_F_REQUEST,
                seq,
            ),
        );
        Self {
            seq,
            bytes,
            owners: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    fn push(
        &mut self,
        mut msg: NetlinkMessage<NetfilterMessage>,
        flags: u16,
        seq: u32,
        write: usize,
    ) {
        msg.header.flags = flags;
        msg.header.sequence_number = seq;
        append(&mut self.bytes, msg);
        self.owners.push((seq, write));
    }
}

fn element_message(
    family: NetfilterProtoFamily,
    set: &SetRef,
    elements: &[(IpAddr, u32)],
    step: Step,
) -> (NetlinkMessage<NetfilterMessage>, u16) {
    let list = elements
        .iter()
        .map(|(addr, timeout_secs)| {
            let key = match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
            if matches!(step, Step::Add) {
                // Both: from 6.12 a re-add with an unchanged timeout leaves the expiry where it
                // was, unless the expiration is given too (as `nft add element ... expires`).
                let ms = u64::from(*timeout_secs) * 1000;
                attrs.push(SetElementAttribute::Timeout(ms));
                attrs.push(SetElementAttribute::Expiration(ms));
            }
            ListAttribute::Element(attrs)
        })
        .collect();
    let body = SetElementMessage {
        attributes: vec![
            SetElementList::Table(set.table.clone()),
            SetElementList::Set(set.set.clone()),
            SetElementList::Elements(list),
        ],
    };
    let (inner, flags) = match step {
        // no NLM_F_EXCL: an element that exists is not an error
        Step::Add => (
            NfTablesMessage::NewSetElement(body),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        ),
        Step::Delete => (
            NfTablesMessage::DeleteSetElement(body),
            NLM_F_REQUEST | NLM_F_ACK,
        ),
    };
    (message(family, inner, flags, 0), flags)
}

fn message(
    family: NetfilterProtoFamily,
    inner: impl Into<NetfilterMessageInner>,
    flags: u16,
    seq: u32,
) -> NetlinkMessage<NetfilterMessage> {
    let res_id = match family {
        NetfilterProtoFamily::Unspec => NFNL_SUBSYS_NFTABLES,
        _ => 0,
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, res_id),
            inner.into(),
        )),
    );
    msg.finalize();
    msg
}

/// Appends a message, padded to netlink's 4-byte alignment.
fn append(out: &mut Vec<u8>, mut msg: NetlinkMessage<NetfilterMessage>) {
    msg.finalize();
    let start = out.len();
    let len = msg.buffer_len();
    out.resize(start + len.next_multiple_of(4), 0);
    msg.serialize(&mut out[start..start + len]);
}

fn nf_family(family: &str) -> NetfilterProtoFamily {
    match family {
        "ip" => NetfilterProtoFamily::IPv4,
        "ip6" => NetfilterProtoFamily::IPv6,
        "bridge" => NetfilterProtoFamily::Bridge,
        "netdev" => NetfilterProtoFamily::NetDev,
        // SetRef::parse admits only these five families
        _ => NetfilterProtoFamily::Inet,
    }
}

fn set_info(attributes: &[SetAttribute]) -> SetInfo {
    let mut info = SetInfo {
        key_type: 0,
        key_len: 0,
        flags: SetFlags::empty(),
    };
    for a in attributes {
        match a {
            SetAttribute::KeyType(t) => info.key_type = *t,
            SetAttribute::KeyLen(l) => info.key_len = *l,
            SetAttribute::Flags(f) => info.flags = *f,
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_from_6_12_refresh_on_readd() {
        assert_eq!(Refresh::for_kernel("6.18.44-fc-v1098"), Refresh::Readd);
        assert_eq!(Refresh::for_kernel("6.12.0"), Refresh::Readd);
        assert_eq!(Refresh::for_kernel("7.0.0-30-generic"), Refresh::Readd);
        assert_eq!(Refresh::for_kernel("6.11.9"), Refresh::DeleteReadd);
        assert_eq!(Refresh::for_kernel("6.1.0-28-amd64"), Refresh::DeleteReadd);
        assert_eq!(Refresh::for_kernel("5.15.0"), Refresh::DeleteReadd);
        assert_eq!(Refresh::for_kernel("garbage"), Refresh::DeleteReadd);
    }

    #[test]
    fn element_messages_carry_key_and_timeout_in_milliseconds() {
        let set = SetRef::parse("inet hushd x4").unwrap();
        let (msg, flags) = element_message(
            NetfilterProtoFamily::Inet,
            &set,
            &[("192.0.2.1".parse().unwrap(), 300)],
            Step::Add,
        );
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(body)),
            ..
        }) = msg.payload
        else {
            panic!("not a new-element message: {msg:?}");
        };
        assert!(
            body.attributes
                .contains(&SetElementList::Elements(vec![ListAttribute::Element(
                    vec![
                        SetElementAttribute::Key(DataAttribute::Value(vec![192, 0, 2, 1])),
                        SetElementAttribute::Timeout(300_000),
                        SetElementAttribute::Expiration(300_000),
                    ]
                )]))
        );
    }
}

//! `QueryHandler`: what hushd does with a query, whichever transport brought it. Every query
//! takes the same straight path:
//!
//! 0. **admit** (`admit`): a header that is a query, the source's rate limit, decoding (FORMERR
//!    only to an allowed source), `allow_clients` (REFUSED); nothing goes back before the rate
//!    limit has counted the source.
//! 1. **validate**: one question, a standard query, EDNS version 0, class IN; else FORMERR,
//!    NOTIMP or BADVERS, before any work is spent on it.
//! 2. **policy** (`Policy::decide`): hushd's own answers to bypass probes (the Firefox canary,
//!    iCloud Private Relay, `resolver.arpa`), then the lists. It comes before the cache so that
//!    a list edit applies to the very next query even for names already cached, and so the
//!    cache never needs flushing on reload.
//! 3. **cache**: answers upstream gave earlier, TTLs counted down.
//! 4. **upstream**: a place among `max_inflight` (else SERVFAIL), then forward, with failover
//!    and one deadline; SERVFAIL when it runs out.
//! 5. **reply**: built by `reply.rs`, encoded by `encode` for either transport (UDP truncated
//!    with TC=1).
//!
//! Nothing here panics: every failure becomes an RCODE and a count.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use hickory_net::xfer::Protocol;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, LowerName, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    server::Request,
    zone_handler::{MessageResponseBuilder, Queries},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    audit::AuditLimiter,
    cache::{Cache, Hit, replaces_stale},
    config::Config,
    destinations::{Destinations, DestinationsRef},
    egress::nft::NftWriter,
    evidence::querylog::{Answers, QueryLog, Trace},
    evidence::{Event, EvidenceSink},
    inflight::Resolved,
    inflight::{Finish, Joined, LookupKey, Lookups},
    limits::{Admit, RateLimiter, Transport},
    metrics::{Metrics, Outcome},
    policy::{
        Action, AnswerMatch, ListMeta, Match, Policy, Verdict, Via, access::Client, groups::Group,
        matcher::NameKey,
    },
    reply::{Reply, dnssec_ok, gives_ad, response_edns, response_metadata},
    upstream::{Upstream, UpstreamSetupError},
    wire::{formerr_for, question_is_plain},
};

#[derive(Clone)]
pub struct QueryHandler {
    pub policy: Arc<ArcSwap<Policy>>,
    /// Resized and re-bounded in place on reload (`Cache::reconfigure`).
    pub cache: Arc<Cache>,
    /// Swapped whole when `[upstream]` changes on reload; a lookup loads it once and holds its
    /// `Arc`, so a lookup in flight finishes on the servers it started with.
    pub upstream: Arc<ArcSwap<Upstream>>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    /// `max_inflight`: one permit per client query waiting for upstream, taken by the listener;
    /// a client that starts an upstream lookup hands its permit on to it (see `forward`).
    pub inflight: Arc<Semaphore>,
    /// Upstream lookups running, one per question, shared by the clients that wait for it.
    pub lookups: Arc<Lookups>,
    /// Which audit matches are logged (the metric counts them all).
    pub audit: Arc<AuditLimiter>,
    /// Feeds the nftables sets lists and groups name (`None`: no firewall, as in unit tests).
    pub nft: Option<NftWriter>,
    /// Records every list match in the evidence store (`None`: `[evidence] enabled = false`,
    /// and then a match costs nothing more). Swapped on reload when `[evidence]` changes.
    pub evidence: Arc<ArcSwapOption<EvidenceSink>>,
    /// `[querylog]`, when it is on. Swapped on reload when `[querylog]` changes.
    pub querylog: Arc<ArcSwapOption<QueryLog>>,
    /// Set on SIGTERM for `[server] drain_secs`: the health name is then REFUSED so a load
    /// balancer moves clients away while every other query is still answered.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Block replies the UDP hit path sent, by request, for sending again (`block_replies`).
    pub block_replies: Arc<crate::block_replies::BlockReplies>,
}

/// What admission makes of a message before any answering work, the same for UDP and TCP.
/// The order is the defence: nothing goes back to a source before its rate is checked, and a
/// source outside `allow_clients` gets nothing but REFUSED to a well-formed query, so neither
/// a spoofed source nor an outsider can make hushd reflect unmetered traffic.
pub enum Admission {
    /// Nothing goes back: no header, a response, over the rate limit, or not a well-formed query
    /// from outside `allow_clients`.
    Drop,
    /// A header-only FORMERR, for an admitted client whose message does not decode.
    Formerr(Vec<u8>),
    /// Over the rate limit, and this one gets an empty TC=1 answer (UDP only).
    Slip(Box<Request>),
    /// A well-formed query from outside `allow_clients`: REFUSED, counted as `refused`.
    Refuse(Box<Request>),
    /// Admitted: to be answered.
    Query(Box<Request>),
}

impl QueryHandler {
    /// Admission, in this order: (1) a header that is a query, else silence (never answer an
    /// answer: that is how reflection loops start); (2) the source's rate limit; (3) decoding,
    /// FORMERR only to an allowed source; (4) `allow_clients`. No I/O, no list or cache work.
    pub fn admit(&self, message: &[u8], src: SocketAddr, protocol: Protocol) -> Admission {
        if src.port() == 0 {
            return Admission::Drop; // cannot be answered: a spoofed or broken source
        }
        let Ok(header) = Header::read(&mut BinDecoder::new(message)) else {
            return Admission::Drop;
        };
        if header.metadata.message_type == MessageType::Response {
            return Admission::Drop;
        }

        let transport = if protocol == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let rate = self.limiter.admit(src.ip(), transport);
        if rate != Admit::Yes {
            self.metrics.limited("ratelimit");
        }
        // Over TCP the source is proven by the handshake and TC=1 would only send the client
        // back to TCP: a limited TCP query is dropped like a limited datagram.
        if rate == Admit::Drop || (rate == Admit::Slip && protocol != Protocol::Udp) {
            return Admission::Drop;
        }

        let allowed = self.policy.load().allows(src.ip());
        let decoded = Request::from_bytes(message.to_vec(), src, protocol)
            .ok()
            // a reply echoes the question's bytes; see wire::question_is_plain
            .filter(|r| question_is_plain(r.queries.as_bytes()));
        let Some(request) = decoded else {
            if !allowed || rate == Admit::Slip {
                return Admission::Drop;
            }
            return match formerr_for(message) {
                Some(reply) => {
                    self.metrics
                        .query(protocol, RecordType::Unknown(0), Outcome::Formerr);
                    self.metrics.response(ResponseCode::FormErr);
                    Admission::Formerr(reply)
                }
                None => Admission::Drop,
            };
        };
        let request = Box::new(request);
        if rate == Admit::Slip {
            return Admission::Slip(request);
        }
        if !allowed {
            let well_formed =
                request.metadata.op_code == OpCode::Query && request.queries.len() == 1;
            return if well_formed {
                Admission::Refuse(request)
            } else {
                Admission::Drop
            };
        }
        Admission::Query(request)
    }

    /// REFUSED, for a query `admit` found outside `allow_clients`.
    pub fn refused(&self, request: &Request) -> Answered {
        let qtype = request
            .request_info()
            .map_or(RecordType::Unknown(0), |i| i.query.query_type());
        Answered {
            reply: Reply::new(
                &request.metadata,
                request.edns.as_ref(),
                ResponseCode::Refused,
            ),
            outcome: Outcome::Refused,
            qtype,
        }
    }

    /// A place among the `max_inflight` queries waiting for upstream, or, when they are all
    /// taken, the SERVFAIL the client gets instead (counted as `overload`).
    ///
    /// One behaviour for UDP and TCP, and SERVFAIL rather than silence: the queue is full
    /// because upstream is slow or down, and a client that hears nothing retries the same
    /// query after its timeout, adding load just when there is the most; SERVFAIL sends a stub
    /// to its next server at once. It is no bigger than the query and only goes to a source
    /// that passed admission (rate limit and `allow_clients`), so it reflects nothing; over TCP
    /// silence would leave the query hanging on the connection.
    pub fn reserve_upstream(
        &self,
        request: &Request,
    ) -> Result<OwnedSemaphorePermit, Box<Answered>> {
        self.inflight.clone().try_acquire_owned().map_err(|_| {
            self.metrics.limited("overload");
            let qtype = request
                .request_info()
                .map_or(RecordType::Unknown(0), |i| i.query.query_type());
            Box::new(Answered {
                reply: Reply::new(
                    &request.metadata,
                    request.edns.as_ref(),
                    ResponseCode::ServFail,
                ),
                outcome: Outcome::Servfail,
                qtype,
            })
        })
    }
}

/// The empty TC=1 answer a rate-limited client gets every `slip`-th time, so a real client
/// retries over TCP while a spoofed flood gains nothing.
pub fn slip_reply(request: &Metadata, edns: Option<&Edns>) -> Reply {
    let mut reply = Reply::new(request, edns, ResponseCode::NoError);
    reply.metadata.truncation = true;
    reply
}

/// Who asked what: the client, what the policy knows of it, and the question; what a match is
/// counted and logged with.
struct Asker<'q> {
    client: IpAddr,
    who: Client<'q>,
    group: &'q Group,
    qname: &'q LowerName,
    qtype: RecordType,
}

/// A finished answer: the reply and how the query ended, for the metrics.
pub struct Answered {
    pub reply: Reply,
    pub outcome: Outcome,
    pub qtype: RecordType,
}

/// The first, synchronous part of answering: either done, or the query must go upstream.
pub enum Step {
    Answered(Answered),
    /// Answered from the cache; the transport may send the pre-encoded form (`Hit::write_wire`).
    Cached(Hit, RecordType),
    /// A list blocked the question's name; the reply is made when it is needed (the UDP hit path
    /// may send the one it kept for the same request, `block_replies`).
    Blocked(Box<Blocked>),
    Forward,
}

/// What a name's block reply is made of.
pub struct Blocked {
    pub decided: crate::block_replies::Decided,
    request: Metadata,
    /// The request's OPT as far as the reply reads it (`response_edns`: payload size and DO),
    /// so the client's options (a cookie, say) are not copied for every blocked query.
    request_edns: Option<Edns>,
    qname: LowerName,
    pub qtype: RecordType,
    mode: crate::config::BlockResponse,
    list: Arc<str>,
    ttl: u32,
}

impl Blocked {
    pub fn rcode(&self) -> ResponseCode {
        Reply::block_rcode(self.mode)
    }

    pub fn into_answered(self) -> Answered {
        Answered {
            reply: Reply::blocked(
                &self.request,
                self.request_edns.as_ref(),
                &self.qname,
                self.qtype,
                self.mode,
                &self.list,
                self.ttl,
            ),
            outcome: Outcome::Blocked,
            qtype: self.qtype,
        }
    }
}

/// Writes a cache hit's reply to a client that asked with `request` and `request_edns` from
/// the entry's wire form (`Hit::write_wire`): the form with or without DNSSEC records by the
/// client's DO, AD by `reply::gives_ad`, the OPT as `reply::response_edns` makes it. The one
/// place both UDP paths decide these for a hit; false when the reply must be built record by
/// record (`cached_reply`) to be truncated.
pub fn write_hit(
    hit: &Hit,
    request: &Metadata,
    request_edns: Option<&Edns>,
    question: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let edns = request_edns.map(response_edns);
    let max = edns.as_ref().map_or(512, |e| usize::from(e.max_payload()));
    let mut metadata = response_metadata(request, hit.rcode());
    metadata.authentic_data = gives_ad(request, request_edns, hit.authentic_data());
    let dnssec_ok = dnssec_ok(request_edns);
    hit.write_wire(metadata, question, edns.as_ref(), dnssec_ok, max, out)
}

/// A cache hit as a reply built record by record (TCP, or a UDP reply that needs truncating).
pub fn cached_reply(request: &Request, hit: &Hit, qtype: RecordType) -> Answered {
    let reply = Reply::forwarded(
        &request.metadata,
        request.edns.as_ref(),
        qtype,
        hit.answer(),
    );
    Answered {
        reply,
        outcome: Outcome::Cached,
        qtype,
    }
}

impl QueryHandler {
    /// Builds the parts a query passes through (cache, upstream, limits) from `config`, around
    /// the shared, reloadable `policy`.
    pub async fn new(
        config: &Config,
        policy: Arc<ArcSwap<Policy>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamSetupError> {
        let upstream = Upstream::new(&config.upstream, &metrics).await?;
        Ok(Self {
            policy,
            cache: Arc::new(Cache::new(&config.cache)),
            upstream: Arc::new(ArcSwap::from_pointee(upstream)),
            limiter: Arc::new(RateLimiter::new(
                config.limits.client_qps,
                config.limits.slip,
                config.limits.exempt_clients.clone(),
            )),
            inflight: Arc::new(Semaphore::new(config.limits.max_inflight)),
            lookups: Arc::new(Lookups::new()),
            audit: Arc::new(AuditLimiter::with_defaults()),
            metrics,
            nft: None,
            evidence: Arc::default(),
            querylog: Arc::default(),
            draining: Arc::default(),
            block_replies: Arc::default(),
        })
    }

    /// A `Trace` for the query log's line about a query for `qname`: `Trace::OFF` (no
    /// allocation, no clock read) when the log is off.
    #[inline]
    pub fn trace(
        &self,
        client: IpAddr,
        protocol: Protocol,
        qname: &LowerName,
        qtype: RecordType,
    ) -> Trace {
        match *self.querylog.load() {
            None => Trace::OFF,
            Some(_) => QueryLog::trace(client, protocol, Some(qname.clone()), qtype),
        }
    }

    /// `trace` for a decoded request (its one question, if it has one).
    #[inline]
    pub fn trace_request(&self, request: &Request) -> Trace {
        match *self.querylog.load() {
            None => Trace::OFF,
            Some(_) => {
                let (qname, qtype) = match request.request_info() {
                    Ok(info) => (Some(info.query.name().clone()), info.query.query_type()),
                    Err(_) => (None, RecordType::Unknown(0)),
                };
                QueryLog::trace(request.src().ip(), request.protocol(), qname, qtype)
            }
        }
    }

    /// `log` for a reply built record by record.
    #[inline]
    pub fn log_answered(&self, trace: Trace, answered: Answered) {
        let rcode = answered.reply.metadata.response_code;
        self.log(
            trace,
            answered.outcome,
            rcode,
            Answers::Reply(answered.reply),
        );
    }

    /// Hands a finished query's line to the query log: how it ended and what was answered.
    /// Every transport calls it where it counts the query in the metrics.
    #[inline]
    pub fn log(&self, trace: Trace, outcome: Outcome, rcode: ResponseCode, answers: Answers) {
        if let Some(record) = trace.into_record()
            && let Some(log) = &*self.querylog.load()
        {
            log.write(record, outcome, rcode, answers);
        }
    }

    /// Everything that needs no waiting: validation, policy, cache. Transports call this inline
    /// and only pay for a task when the query must go upstream.
    pub fn answer_locally(&self, request: &Request, trace: &mut Trace) -> Step {
        let meta = &request.metadata;
        let edns = request.edns.as_ref();
        let done = |reply, outcome, qtype| {
            Step::Answered(Answered {
                reply,
                outcome,
                qtype,
            })
        };
        let error = |rcode, outcome, qtype| done(Reply::new(meta, edns, rcode), outcome, qtype);

        if meta.op_code != OpCode::Query {
            return error(
                ResponseCode::NotImp,
                Outcome::Notimp,
                RecordType::Unknown(0),
            );
        }
        let Ok(info) = request.request_info() else {
            // zero or several questions
            return error(
                ResponseCode::FormErr,
                Outcome::Formerr,
                RecordType::Unknown(0),
            );
        };
        let query = info.query;
        let qtype = query.query_type();
        if edns.is_some_and(|e| e.version() > 0) {
            return error(ResponseCode::BADVERS, Outcome::Formerr, qtype);
        }
        if query.query_class() != DNSClass::IN {
            return error(ResponseCode::NotImp, Outcome::Notimp, qtype);
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT) {
            return error(ResponseCode::NotImp, Outcome::Notimp, qtype);
        }
        self.answer_question(meta, edns, info.src.ip(), query.name(), qtype, trace)
    }

    /// The part of `answer_locally` after validation: policy, ANY, cache. The UDP hit path
    /// (`hit_path`) calls it with the question it read in place, without a `Request`.
    pub fn answer_question(
        &self,
        meta: &Metadata,
        edns: Option<&Edns>,
        client: IpAddr,
        qname: &LowerName,
        qtype: RecordType,
        trace: &mut Trace,
    ) -> Step {
        let done = |reply, outcome, qtype| {
            Step::Answered(Answered {
                reply,
                outcome,
                qtype,
            })
        };
        let error = |rcode, outcome, qtype| done(Reply::new(meta, edns, rcode), outcome, qtype);
        let policy = self.policy.load();
        let who = policy.client(client);
        if !who.allowed {
            return error(ResponseCode::Refused, Outcome::Refused, qtype);
        }
        let asker = Asker {
            client,
            who,
            group: policy.group(&who),
            qname,
            qtype,
        };
        trace.asked(asker.who.name, &asker.group.name);
        // a load balancer's health check: hushd's own answer, which says whether it is stopping
        if policy.health_name.as_ref() == Some(qname) {
            let rcode = if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                ResponseCode::Refused
            } else {
                ResponseCode::NoError
            };
            return error(rcode, Outcome::Local, qtype);
        }
        // hushd's own answer to a bypass probe comes before every list (Policy::decide's order)
        let bypass = policy.bypass(qname);
        let found = match bypass {
            Some(_) => None,
            None => policy.name_match(asker.group, &NameKey::new(qname), Via::Name),
        };
        let verdict = match bypass {
            Some(answer) => Verdict::Bypass(answer),
            None => Policy::verdict(found),
        };
        match verdict {
            Verdict::Refuse => return error(ResponseCode::Refused, Outcome::Refused, qtype),
            Verdict::Bypass(answer) => {
                self.metrics.bypass_answer(answer);
                tracing::debug!(%client, %qname, %qtype, toggle = answer.toggle(), "bypass defence answer");
                let ttl = policy.block_ttl;
                // with encrypted listeners, `_dns.resolver.arpa` SVCB names them (DDR)
                let reply = match policy.designation().answer(qname, qtype) {
                    Some(records) => Reply::designated(meta, edns, qname, records, ttl),
                    None => Reply::bypass(meta, edns, qname, answer, ttl),
                };
                return done(reply, Outcome::Bypass, qtype);
            }
            Verdict::Block(m) => {
                self.note_match(&m, &asker, "-", trace);
                return Step::Blocked(Box::new(Blocked {
                    decided: policy.decided_by(m.list),
                    request: *meta,
                    request_edns: edns.map(response_edns),
                    qname: qname.clone(),
                    qtype,
                    mode: m.list.block_response,
                    list: m.list.name.clone(),
                    ttl: policy.block_ttl,
                }));
            }
            Verdict::Forward(Some(m)) => self.note_match(&m, &asker, "-", trace),
            Verdict::Forward(None) => {}
        }

        if qtype == RecordType::ANY {
            return done(Reply::minimal_any(meta, edns, qname), Outcome::Local, qtype);
        }

        if let Some(hit) = self.cache.get(qname, qtype, meta.checking_disabled) {
            self.metrics.cache_hits.inc();
            // The policy of now applies to where a cached answer leads: a list edit covers
            // answers cached before it.
            let screened = policy.answer_match(asker.group, found, hit.destinations());
            let via_answer = screened.as_ref().map(|s| s.matched.list);
            if let Some(reply) =
                self.answer_screened(screened, meta, edns, &asker, policy.block_ttl, trace)
            {
                return done(reply, Outcome::Blocked, qtype);
            }
            // A hit refreshes the set elements too, so they outlive the answer while the name
            // is in use (the offer skips an address it gave moments ago).
            if policy.feeds_sets() {
                let decided = found.map(|m| m.list).or(via_answer);
                self.feed_sets(asker.group, decided, || hit.addresses());
            }
            return Step::Cached(hit, qtype);
        }
        self.metrics.cache_misses.inc();
        Step::Forward
    }

    /// Acts on what an answer's destinations matched: counts and logs it, and for a block gives
    /// the block reply for the question, its EDE text naming the list and what matched
    /// (`blocked by list tiktok (CNAME x.tiktokv.com)`).
    fn answer_screened(
        &self,
        screened: Option<AnswerMatch<'_>>,
        meta: &Metadata,
        edns: Option<&Edns>,
        asker: &Asker<'_>,
        block_ttl: u32,
        trace: &mut Trace,
    ) -> Option<Reply> {
        let AnswerMatch { matched, what } = screened?;
        self.note_match(&matched, asker, &what, trace);
        (matched.action == Action::Block).then(|| {
            Reply::blocked(
                meta,
                edns,
                asker.qname,
                asker.qtype,
                matched.list.block_response,
                &format!("{} ({what})", matched.list.name),
                block_ttl,
            )
        })
    }

    /// `answer_question`'s screening of a cached answer, for an answer `forward` got: the
    /// client's group and the question's own match are looked up again (off the hot path).
    fn screen_forwarded(
        &self,
        request: &Request,
        qname: &LowerName,
        qtype: RecordType,
        destinations: DestinationsRef<'_>,
        trace: &mut Trace,
    ) -> Option<Reply> {
        if destinations.is_empty() {
            return None;
        }
        let (meta, edns, client) = (&request.metadata, request.edns.as_ref(), request.src().ip());
        let policy = self.policy.load();
        let who = policy.client(client);
        let asker = Asker {
            client,
            who,
            group: policy.group(&who),
            qname,
            qtype,
        };
        let asked = policy.name_match(asker.group, &NameKey::new(qname), Via::Name);
        let screened = policy.answer_match(asker.group, asked, destinations);
        let via_answer = screened.as_ref().map(|s| s.matched.list);
        let blocked = self.answer_screened(screened, meta, edns, &asker, policy.block_ttl, trace);
        if blocked.is_none() && policy.feeds_sets() {
            let decided = asked.map(|m| m.list).or(via_answer);
            self.feed_sets(asker.group, decided, || destinations.addresses());
        }
        blocked
    }

    /// Hands an answer's addresses to the firewall: to the sets of the list that decided its
    /// name (`decided`), and to the client's group's `egress_set`. Never waits (a full queue
    /// drops and counts).
    fn feed_sets<I: Iterator<Item = (IpAddr, u32)>>(
        &self,
        group: &Group,
        decided: Option<&ListMeta>,
        addresses: impl Fn() -> I,
    ) {
        let Some(nft) = &self.nft else { return };
        if let Some(list) = decided {
            nft.offer_answer(&list.sets, addresses());
        }
        nft.offer_answer(&group.egress, addresses());
    }

    /// Counts a list match, hands it to the evidence store (a queue: never a wait) and, for an
    /// audit (`log`) match, writes the audit record an admin gathers before deciding to block:
    /// rate-limited per (client, list) in audit.rs, while the metric counts every match. `matched` says what matched when it was not the name
    /// asked ("-"): `CNAME x.tiktokv.com`, `IP 192.0.2.7, country CN`. A block is logged at
    /// debug level only: it is answered, and counted.
    fn note_match(&self, m: &Match<'_>, asker: &Asker<'_>, matched: &str, trace: &mut Trace) {
        m.count(&self.metrics);
        if let Some(evidence) = &*self.evidence.load() {
            evidence.record(Event {
                at: std::time::SystemTime::now(),
                client: asker.client,
                client_name: asker.who.name.cloned(),
                group: asker.group.name.clone(),
                list: m.list.name.clone(),
                name: asker.qname.clone(),
                qtype: asker.qtype,
                action: m.action,
                via: m.via,
            });
        }
        trace.matched(m);
        let Asker {
            client,
            qname,
            qtype,
            ..
        } = asker;
        let (list, via, group) = (&m.list.name, m.via.as_str(), &asker.group.name);
        // "-" for a client without a name, so every line has the same fields.
        let client_name = asker.who.name.map_or("-", |n| n);
        match m.action {
            Action::Block => {
                tracing::debug!(%client, %client_name, %group, %qname, %qtype, %list, via, matched, action = "block", "list match");
            }
            Action::Log => {
                if let Some(suppressed) = self.audit.admit(*client, list) {
                    tracing::info!(target: "hushd::audit", %client, %client_name, %group, %qname, %qtype, %list, via, matched, action = "log", suppressed, "list match");
                }
            }
            Action::Allow => {}
        }
    }

    /// The second part, for a query `answer_locally` passed on: ask upstream, cache, reply.
    /// Clients asking the same question at once share one upstream lookup (`lookups`). With an
    /// expired answer at hand, serve it when upstream fails or is slow (RFC 8767).
    ///
    /// `permit` is this client's `max_inflight` permit, taken by the listener. A client that
    /// starts a lookup hands it to the lookup, which keeps it until it ends, even after the
    /// client has been given a stale answer; a client that joins a running lookup holds its own
    /// while it waits. So a unique miss counts once, as before lookups were shared; a refresh
    /// that outlives its client stays counted; a flood of one name holds at most `max_inflight`
    /// waiting clients (the rest are shed) and costs one upstream query; and the map of lookups
    /// never holds more than `max_inflight` entries.
    pub async fn forward(
        &self,
        request: &Request,
        permit: OwnedSemaphorePermit,
        trace: &mut Trace,
    ) -> Answered {
        let meta = &request.metadata;
        let edns = request.edns.as_ref();
        let Ok(info) = request.request_info() else {
            let reply = Reply::new(meta, edns, ResponseCode::FormErr);
            return Answered {
                reply,
                outcome: Outcome::Formerr,
                qtype: RecordType::Unknown(0),
            };
        };
        let (qname, qtype) = (info.query.name(), info.query.query_type());
        let done = |reply, outcome| Answered {
            reply,
            outcome,
            qtype,
        };
        let screen = |destinations: DestinationsRef<'_>, trace: &mut Trace| {
            self.screen_forwarded(request, qname, qtype, destinations, trace)
        };
        let cd = meta.checking_disabled;
        let stale = self.cache.get_stale(qname, qtype, cd);
        if let Some(hit) = &stale {
            if let Some(blocked) = screen(hit.destinations(), trace) {
                return done(blocked, Outcome::Blocked);
            }
            if !hit.is_stale() {
                // a lookup that ended since `answer_locally` missed has cached it
                return done(
                    Reply::forwarded(meta, edns, qtype, hit.answer()),
                    Outcome::Cached,
                );
            }
            if hit.rechecking() {
                // a refresh failed moments ago: upstream is not asked again yet (RFC 8767 §4)
                return done(
                    Reply::forwarded(meta, edns, qtype, hit.answer()),
                    Outcome::Stale,
                );
            }
        }
        let key = LookupKey {
            name: qname.clone(),
            qtype,
            cd,
        };
        let (mut lookup, _waiting) = match self.lookups.join(key) {
            Joined::Follower(lookup) => (lookup, Some(permit)),
            Joined::Leader(lookup, finish) => {
                // Its own task: no waiter's going away can cancel it.
                tokio::spawn(self.clone().resolve_and_cache(finish, permit));
                (lookup, None)
            }
        };
        let answer = match &stale {
            None => lookup.result().await.flatten(),
            // RFC 8767: with an expired answer at hand, wait for upstream only about as long as
            // the client will, counted from the lookup's start so that clients joining it late
            // do not each wait the whole period again.
            Some(_) => {
                let deadline = lookup.started() + self.cache.stale_after();
                tokio::time::timeout_at(deadline.into(), lookup.result())
                    .await
                    .ok()
                    .flatten()
                    .flatten()
            }
        };
        match (answer, stale) {
            (Some(resolved), stale) if stale.is_none() || replaces_stale(&resolved.0) => {
                trace.answered_by(resolved.2);
                if let Some(blocked) = screen(resolved.1.view(), trace) {
                    return done(blocked, Outcome::Blocked);
                }
                let (answer, ..) = Arc::unwrap_or_clone(resolved);
                // a resolution failure (RFC 9520) reaches the client as the SERVFAIL it is
                let outcome = if answer.is_resolution_failure() {
                    Outcome::Servfail
                } else {
                    Outcome::Forwarded
                };
                done(Reply::forwarded(meta, edns, qtype, answer), outcome)
            }
            (_, Some(stale)) => done(
                Reply::forwarded(meta, edns, qtype, stale.answer()),
                Outcome::Stale,
            ),
            _ => done(
                Reply::new(meta, edns, ResponseCode::ServFail),
                Outcome::Servfail,
            ),
        }
    }

    /// The lookup `finish` stands for, run in a task of its own holding `_permit`: asks
    /// upstream, caches what it says and hands it to every waiter. When no upstream answers
    /// (logged), an expired answer for the question enters its failure-recheck period.
    async fn resolve_and_cache(
        self,
        finish: Finish<LookupKey, Option<Arc<Resolved>>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let LookupKey { name, qtype, cd } = finish.key().clone();
        // loaded once: a reload that swaps the upstreams meanwhile does not cut this lookup
        let upstream = self.upstream.load_full();
        let answer = match upstream.resolve(&name, qtype, cd).await {
            Ok((answer, server)) => {
                // Worked out once, for the cache and every waiter's screening.
                let destinations = Destinations::of(&name, &answer);
                if !replaces_stale(&answer) && self.cache.get_stale(&name, qtype, cd).is_some() {
                    // a failure must not replace an answer that can still be served stale
                    self.cache.refresh_failed(&name, qtype, cd);
                } else {
                    self.cache
                        .insert_inspected(name, qtype, cd, &answer, &destinations);
                }
                Some(Arc::new((answer, destinations, server)))
            }
            Err(e) => {
                tracing::debug!(qname = %name, %qtype, error = %e, "no upstream answer");
                self.cache.refresh_failed(&name, qtype, cd);
                None
            }
        };
        finish.publish(answer);
    }

    pub fn count(&self, request: &Request, answered: &Answered) {
        let rcode = answered.reply.metadata.response_code;
        self.count_parts(request, answered.qtype, answered.outcome, rcode);
    }

    pub fn count_parts(
        &self,
        request: &Request,
        qtype: RecordType,
        outcome: Outcome,
        rcode: ResponseCode,
    ) {
        self.metrics.query(request.protocol(), qtype, outcome);
        self.metrics.response(rcode);
    }
}

/// Encodes `reply` into `out`: the one reply path of both transports. Over UDP it is
/// truncated (TC=1) to what the client can take: its EDNS size as capped by hushd, or 512
/// bytes without EDNS (RFC 1035 §4.2.1); over TCP only the 64 KiB frame limits it.
pub fn encode(request: &Request, reply: &Reply, out: &mut Vec<u8>) {
    encode_for(&request.queries, request.protocol(), reply, out);
}

/// `encode` for a reply to the question `queries` (all of a request the encoder needs), as the
/// UDP hit path has it without a whole `Request`.
pub fn encode_for(queries: &Queries, protocol: Protocol, reply: &Reply, out: &mut Vec<u8>) {
    out.clear();
    let max_size = match protocol {
        Protocol::Udp => reply.edns.as_ref().map_or(512, |e| e.max_payload()),
        _ => u16::MAX,
    };
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

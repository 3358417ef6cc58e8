//! `QueryHandler`: hushd's one `RequestHandler`. Every query takes the same straight path:
//!
//! 1. **validate**: one question, a standard query, EDNS version 0, class IN; else FORMERR,
//!    NOTIMP or BADVERS, before any work is spent on it.
//! 2. **policy** (`Policy::decide`): client access, then the lists. It comes before the cache so
//!    that a list edit applies to the very next query even for names already cached, and so the
//!    cache never needs flushing on reload.
//! 3. **cache**: answers upstream gave earlier, TTLs counted down.
//! 4. **upstream**: forward, with failover and one deadline; SERVFAIL when it runs out.
//! 5. **reply**: built by `answer`, sent by hickory (which truncates UDP with TC=1).
//!
//! Nothing here returns an error to hickory or panics: every failure becomes an RCODE and a count.

use std::{net::IpAddr, sync::Arc};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_net::runtime::Time;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{DNSClass, LowerName, RecordType},
};
use hickory_server::{
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::sync::Semaphore;

use crate::{
    answer::Answer,
    cache::{Cache, Hit},
    config::Config,
    limits::RateLimiter,
    metrics::{Metrics, Outcome},
    policy::{Action, Policy, Verdict},
    reply::Reply,
    upstream::{Upstream, UpstreamSetupError},
};

#[derive(Clone)]
pub struct QueryHandler {
    pub policy: Arc<ArcSwap<Policy>>,
    pub cache: Arc<Cache>,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    /// One permit per query waiting for upstream (`max_inflight`).
    pub inflight: Arc<Semaphore>,
}

#[async_trait]
impl RequestHandler for QueryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if !crate::wire::question_is_plain(request.queries.as_bytes()) {
            // see wire::question_is_plain: no reply could echo this question; drop it
            self.metrics
                .query(request.protocol(), RecordType::Unknown(0), Outcome::Formerr);
            return ResponseInfo::from(Header {
                metadata: crate::reply::response_metadata(&request.metadata, ResponseCode::FormErr),
                counts: HeaderCounts::default(),
            });
        }
        let answered = match self.answer_locally(request) {
            Step::Answered(answered) => answered,
            Step::Cached(hit, qtype) => cached_reply(request, &hit, qtype),
            Step::Forward => match self.inflight.clone().try_acquire_owned() {
                Ok(_permit) => self.forward(request).await,
                Err(_) => {
                    // TCP clients do not retry quickly, so tell them now rather than drop
                    self.metrics.limited("overload");
                    let reply = Reply::new(
                        &request.metadata,
                        request.edns.as_ref(),
                        ResponseCode::ServFail,
                    );
                    Answered {
                        reply,
                        outcome: Outcome::Servfail,
                        qtype: RecordType::Unknown(0),
                    }
                }
            },
        };
        self.count(request, &answered);
        send(request, response_handle, answered.reply).await
    }
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
    Forward,
}

/// A cache hit as a reply built record by record (TCP, or a UDP reply that needs truncating).
pub fn cached_reply(request: &Request, hit: &Hit, qtype: RecordType) -> Answered {
    let reply = Reply::forwarded(&request.metadata, request.edns.as_ref(), hit.answer());
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
            upstream: Arc::new(upstream),
            limiter: Arc::new(RateLimiter::new(
                config.limits.client_qps,
                config.limits.slip,
                config.limits.exempt_clients.clone(),
            )),
            inflight: Arc::new(Semaphore::new(config.limits.max_inflight)),
            metrics,
        })
    }

    /// Everything that needs no waiting: validation, policy, cache. Transports call this inline
    /// and only pay for a task when the query must go upstream.
    pub fn answer_locally(&self, request: &Request) -> Step {
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
        self.answer_question(meta, edns, info.src.ip(), query.name(), qtype)
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
        match policy.decide(client, qname) {
            Verdict::Refuse => return error(ResponseCode::Refused, Outcome::Refused, qtype),
            Verdict::Block(list) => {
                list.count_match(&self.metrics);
                tracing::debug!(%client, %qname, %qtype, list = %list.name, action = "block", "list match");
                let reply = Reply::blocked(
                    meta,
                    edns,
                    qname,
                    qtype,
                    list.block_response,
                    &list.name,
                    policy.block_ttl,
                );
                return done(reply, Outcome::Blocked, qtype);
            }
            Verdict::Forward(Some(list)) => {
                list.count_match(&self.metrics);
                if list.action == Action::Log {
                    // The audit record: one event per match, the evidence an admin gathers
                    // before deciding to block.
                    tracing::info!(target: "hushd::audit", %client, %qname, %qtype, list = %list.name, action = "log", "list match");
                }
            }
            Verdict::Forward(None) => {}
        }
        drop(policy);

        if qtype == RecordType::ANY {
            return done(Reply::minimal_any(meta, edns, qname), Outcome::Local, qtype);
        }

        if let Some(hit) = self.cache.get(qname, qtype) {
            self.metrics.cache_hits.inc();
            return Step::Cached(hit, qtype);
        }
        self.metrics.cache_misses.inc();
        Step::Forward
    }

    /// The second part, for a query `answer_locally` passed on: ask upstream, cache, reply.
    pub async fn forward(&self, request: &Request) -> Answered {
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
        let Some(stale) = self.cache.get_stale(qname, qtype) else {
            return match self.resolve_and_cache(qname.clone(), qtype).await {
                Ok(answer) => done(Reply::forwarded(meta, edns, answer), Outcome::Forwarded),
                Err(()) => done(
                    Reply::new(meta, edns, ResponseCode::ServFail),
                    Outcome::Servfail,
                ),
            };
        };
        // RFC 8767: with an expired answer at hand, wait for upstream only about as long as the
        // client will; past that, or if upstream fails, serve the stale answer. The lookup goes
        // on in its own task, so its answer still refreshes the cache.
        let refresh = tokio::spawn({
            let handler = self.clone();
            let qname = qname.clone();
            async move { handler.resolve_and_cache(qname, qtype).await }
        });
        match tokio::time::timeout(self.cache.stale_after(), refresh).await {
            Ok(Ok(Ok(answer))) => done(Reply::forwarded(meta, edns, answer), Outcome::Forwarded),
            _ => done(Reply::forwarded(meta, edns, stale.answer()), Outcome::Stale),
        }
    }

    /// Asks upstream and caches what it says; `Err` (logged) when no upstream answered.
    async fn resolve_and_cache(&self, qname: LowerName, qtype: RecordType) -> Result<Answer, ()> {
        match self.upstream.resolve(&qname, qtype).await {
            Ok(answer) => {
                self.cache.insert(qname, qtype, &answer);
                Ok(answer)
            }
            Err(e) => {
                tracing::debug!(%qname, %qtype, error = %e, "no upstream answer");
                Err(())
            }
        }
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

async fn send<R: ResponseHandler>(
    request: &Request,
    mut response_handle: R,
    reply: Reply,
) -> ResponseInfo {
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &reply.edns {
        builder.edns(edns);
    }
    let response = builder.build(
        reply.metadata,
        reply.answers.iter(),
        reply.authorities.iter(),
        [],
        reply.additionals.iter(),
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(error = %e, src = %request.src(), "cannot send response");
            let mut metadata = reply.metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

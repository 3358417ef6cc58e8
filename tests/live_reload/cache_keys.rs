//! `[cache]` keys changed by a reload, one test each: the TTL bounds (`min_ttl`,
//! `negative_max_ttl`), how long a resolution failure is kept (`servfail_ttl`), serving stale
//! (`serve_stale_secs`, `stale_after_ms`) and the byte budget (`max_bytes`). Each shows the old
//! value in force, saves the new one, and shows the new one in force on the running daemon,
//! with what was cached before still answered from the cache.

use std::time::{Duration, Instant};

use hickory_proto::{
    op::{DnsResponse, ResponseCode},
    rr::RecordType,
};

use crate::support::{Setup, query, udp_client, upstream::Upstream, wait_until};
use crate::{ask, reload};

/// The TTL of the answer's first record, or of the SOA of a negative answer.
fn ttl(r: &DnsResponse) -> u32 {
    r.answers
        .first()
        .or(r.authorities.first())
        .unwrap_or_else(|| panic!("no record in {r:?}"))
        .ttl
}

/// `Setup` whose upstream lookups wait `ms` for a silent server, in one attempt.
fn setup_with_upstream_timeout(up: &Upstream, ms: u64) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let replaced = config.replace(
        "timeout_ms = 2000\nattempt_timeout_ms = 1000\n",
        &format!("timeout_ms = {ms}\nattempt_timeout_ms = {ms}\n"),
    );
    assert_ne!(config, replaced, "the support config changed shape");
    std::fs::write(setup.config_path(), replaced).unwrap();
    setup
}

/// `[cache] min_ttl` raised: an answer upstream gives with a TTL of 2 s is served and kept with
/// the new floor, and what was cached before the reload is still answered from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_min_ttl_keeps_short_answers_longer() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nmin_ttl = 0");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    query(&mut client, "kept.example.", RecordType::A).await;
    query(&mut client, "ttl-2.before.example.", RecordType::A).await;
    let cached = query(&mut client, "ttl-2.before.example.", RecordType::A).await;
    assert!(ttl(&cached) <= 2, "{}", ttl(&cached));
    assert_eq!(up.seen.count("ttl-2.before.example"), 1);

    reload(&setup, &hushd, |c| c.replace("min_ttl = 0", "min_ttl = 60"));
    let stored = Instant::now();
    query(&mut client, "ttl-2.after.example.", RecordType::A).await;
    let cached = query(&mut client, "ttl-2.after.example.", RecordType::A).await;
    assert!((50..=60).contains(&ttl(&cached)), "{}", ttl(&cached));
    // and kept that long: past its own 2 s, still answered from the cache
    tokio::time::sleep_until((stored + Duration::from_millis(3000)).into()).await;
    let later = query(&mut client, "ttl-2.after.example.", RecordType::A).await;
    assert_eq!(later.response_code, ResponseCode::NoError);
    assert_eq!(
        up.seen.count("ttl-2.after.example"),
        1,
        "asked upstream again"
    );
    // the reload flushed nothing
    query(&mut client, "kept.example.", RecordType::A).await;
    assert_eq!(up.seen.count("kept.example"), 1, "the cache was flushed");
}

/// `[cache] negative_max_ttl` lowered: an NXDOMAIN and a NODATA whose SOA allows 60 s are cached
/// for the new cap from then on; a negative answer cached before keeps its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_negative_max_ttl_caps_the_next_negative_answers() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nnegative_max_ttl = 3600");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    // the fixture's SOA: TTL 300, minimum 60, so a negative TTL of 60 s (RFC 2308)
    query(&mut client, "nx.before.example.", RecordType::A).await;
    let cached = query(&mut client, "nx.before.example.", RecordType::A).await;
    assert_eq!(cached.response_code, ResponseCode::NXDomain);
    assert!(ttl(&cached) > 30, "{}", ttl(&cached));

    reload(&setup, &hushd, |c| {
        c.replace("negative_max_ttl = 3600", "negative_max_ttl = 5")
    });
    for (name, qtype, rcode) in [
        ("nx.after.example.", RecordType::A, ResponseCode::NXDomain),
        (
            "nodata.after.example.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
    ] {
        query(&mut client, name, qtype).await;
        let cached = query(&mut client, name, qtype).await;
        assert_eq!(cached.response_code, rcode, "{name}");
        assert!(cached.answers.is_empty(), "{name}");
        assert!(ttl(&cached) <= 5, "{name}: {}", ttl(&cached));
        assert_eq!(up.seen.count(name.trim_end_matches('.')), 1, "{name}");
    }
    // cached before the reload: kept, with the TTL it was stored with
    let kept = query(&mut client, "nx.before.example.", RecordType::A).await;
    assert!(ttl(&kept) > 30, "{}", ttl(&kept));
    assert_eq!(
        up.seen.count("nx.before.example"),
        1,
        "the cache was flushed"
    );
}

/// `[cache] servfail_ttl` raised: a name upstream fails to resolve is answered SERVFAIL from
/// the cache, without asking upstream, for the new time (1 s before the reload, 4 s after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_servfail_ttl_sets_how_long_a_failure_is_kept() {
    let up = Upstream::start().await;
    up.answer_with(Some(ResponseCode::ServFail));
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nservfail_ttl = 1");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let fails = |r: DnsResponse| assert_eq!(r.response_code, ResponseCode::ServFail);

    let stored = Instant::now();
    fails(query(&mut client, "fail-a.example.", RecordType::A).await);
    let asked = up.seen.count("fail-a.example");
    fails(query(&mut client, "fail-a.example.", RecordType::A).await);
    assert_eq!(up.seen.count("fail-a.example"), asked, "not kept at all");
    tokio::time::sleep_until((stored + Duration::from_millis(1600)).into()).await;
    fails(query(&mut client, "fail-a.example.", RecordType::A).await);
    assert!(up.seen.count("fail-a.example") > asked, "kept past 1 s");

    reload(&setup, &hushd, |c| {
        c.replace("servfail_ttl = 1", "servfail_ttl = 4")
    });
    let stored = Instant::now();
    fails(query(&mut client, "fail-b.example.", RecordType::A).await);
    let asked = up.seen.count("fail-b.example");
    tokio::time::sleep_until((stored + Duration::from_millis(2000)).into()).await;
    fails(query(&mut client, "fail-b.example.", RecordType::A).await);
    assert_eq!(
        up.seen.count("fail-b.example"),
        asked,
        "not kept past the old 1 s"
    );
    // bounded: until 8 s after it was stored
    while up.seen.count("fail-b.example") == asked && stored.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fails(query(&mut client, "fail-b.example.", RecordType::A).await);
    }
    let kept = stored.elapsed();
    assert!(
        up.seen.count("fail-b.example") > asked,
        "still kept after {kept:?}"
    );
    assert!(kept >= Duration::from_millis(3000), "kept only {kept:?}");
}

/// `[cache] serve_stale_secs` set to 0: with upstream gone, an expired answer was served stale
/// before the reload; after it, the client gets SERVFAIL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stale_secs_zero_stops_serving_stale() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nserve_stale_secs = 60");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let stored = Instant::now();
    for name in ["ttl-1.a.example.", "ttl-1.b.example."] {
        let r = query(&mut client, name, RecordType::A).await;
        assert_eq!(ttl(&r), 1, "{name}");
    }
    up.stop();
    tokio::time::sleep_until((stored + Duration::from_millis(1500)).into()).await;
    let stale = query(&mut client, "ttl-1.a.example.", RecordType::A).await;
    assert_eq!(stale.response_code, ResponseCode::NoError);
    assert_eq!(ttl(&stale), 30, "not the stale answer");

    reload(&setup, &hushd, |c| {
        c.replace("serve_stale_secs = 60", "serve_stale_secs = 0")
    });
    // one never asked since it expired, and the one just served stale (in its failure recheck)
    for name in ["ttl-1.b.example.", "ttl-1.a.example."] {
        let r = query(&mut client, name, RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::ServFail, "{name}");
        assert!(r.answers.is_empty(), "{name}");
    }
}

/// `[cache] stale_after_ms` lowered: with an expired answer at hand and a silent upstream, the
/// stale answer comes after the old wait (2.5 s) before the reload and after the new one (0.3 s)
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stale_after_ms_sets_the_wait_for_a_stale_answer() {
    let up = Upstream::start().await;
    // the lookups outlast both waits: the stale answer is served for being slow, not failed
    let setup = setup_with_upstream_timeout(&up, 8000);
    setup.append_config("[cache]\nstale_after_ms = 2500");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let stored = Instant::now();
    for name in ["ttl-1.a.example.", "ttl-1.b.example."] {
        query(&mut client, name, RecordType::A).await;
    }
    up.set_silent(true);
    tokio::time::sleep_until((stored + Duration::from_millis(1500)).into()).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stale_in = |r: Option<hickory_proto::op::Message>, started: Instant| {
        let r = r.expect("no answer at all");
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers[0].ttl, 30, "not the stale answer");
        started.elapsed()
    };

    let started = Instant::now();
    let r = ask(
        &socket,
        hushd.dns,
        "ttl-1.a.example.",
        1,
        Duration::from_secs(6),
    )
    .await;
    let waited = stale_in(r, started);
    assert!(waited >= Duration::from_millis(2000), "after {waited:?}");

    reload(&setup, &hushd, |c| {
        c.replace("stale_after_ms = 2500", "stale_after_ms = 300")
    });
    let started = Instant::now();
    let r = ask(
        &socket,
        hushd.dns,
        "ttl-1.b.example.",
        2,
        Duration::from_secs(6),
    )
    .await;
    let waited = stale_in(r, started);
    assert!(waited < Duration::from_millis(1500), "after {waited:?}");
    assert!(up.seen.count("ttl-1.b.example") >= 2, "no refresh asked");
}

/// `[cache] max_bytes` lowered to its least (64 KiB): `hushd_cache_bytes` falls within it,
/// the coldest answers evicted and the rest kept, not the whole cache flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_max_bytes_evicts_down_to_the_new_budget() {
    const NAMES: usize = 600;
    const NEW: f64 = 65_536.0;
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // one shard (1 MiB) before and after: the budget is exact
    setup.append_config("[cache]\nsize = 10000\nmax_bytes = 1048576");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let names: Vec<String> = (0..NAMES).map(|i| format!("b{i}.bytes.example.")).collect();
    for name in &names {
        query(&mut client, name, RecordType::A).await;
    }
    // the gauges are set every 5 s
    let bytes = || hushd.metric("hushd_cache_bytes ").unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(7), || bytes() >= 2.0 * NEW),
        "{} bytes cached under the old budget",
        bytes()
    );
    let before = bytes();

    reload(&setup, &hushd, |c| {
        c.replace("max_bytes = 1048576", "max_bytes = 65536")
    });
    assert!(
        wait_until(Duration::from_secs(7), || bytes() <= NEW),
        "{} bytes cached under a budget of {NEW}",
        bytes()
    );
    assert!(bytes() >= NEW / 2.0, "{} bytes left", bytes());
    let entries = hushd.metric("hushd_cache_entries ").unwrap();
    eprintln!(
        "{before} bytes before, {} bytes in {entries} answers after",
        bytes()
    );
    assert!(
        (50.0..NAMES as f64 / 2.0).contains(&entries),
        "{entries} of {NAMES} answers kept"
    );
    // answers still cached are answered from the cache: newest first, those are the ones kept
    // (a miss is cached too, and may evict one)
    let mut from_cache = 0;
    for name in names.iter().rev().take(100) {
        let asked = name.trim_end_matches('.');
        let before = up.seen.count(asked);
        query(&mut client, name, RecordType::A).await;
        from_cache += usize::from(up.seen.count(asked) == before);
    }
    assert!(
        from_cache >= 1,
        "none of the newest 100 answered from the cache"
    );
}

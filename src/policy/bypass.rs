//! Bypass defence: the answers hushd gives itself to the names a device asks before it decides
//! to stop using the network's DNS. Without them a filter is only as strong as the devices'
//! goodwill: Firefox turns on DNS over HTTPS by default, an iPhone with iCloud+ sends its
//! lookups through Private Relay, and a stub that finds a designated encrypted resolver
//! (RFC 9462) moves to it, all past hushd. Each answer is a `[server]` toggle
//! (`config::BypassDefence`), on by default.
//!
//! `bypass_answer` is the whole decision: a pure function of the toggles and the name, asked
//! after `allow_clients` and before the cache and the lists (an allow list cannot undo it; the
//! toggle can). With encrypted listeners on (`[server] tls_listen`, `https_listen`), the
//! `_dns.resolver.arpa` SVCB query is answered with them (`Designation`, RFC 9462 DDR), so a
//! device looking for encrypted DNS finds hushd's; every other name and type in the zone stays
//! NODATA.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        Name, RecordType,
        rdata::{
            A, AAAA,
            svcb::{Alpn, IpHint, SVCB, SvcParamKey, SvcParamValue, Unknown},
        },
    },
};

pub use crate::config::BypassDefence;

/// Which answer hushd gives itself, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassAnswer {
    /// `use-application-dns.net`: NXDOMAIN.
    FirefoxCanary,
    /// `mask.icloud.com`, `mask-h2.icloud.com`: NXDOMAIN.
    IcloudPrivateRelay,
    /// `resolver.arpa` and every name under it: NODATA.
    ResolverArpa,
}

impl BypassAnswer {
    pub const ALL: [Self; 3] = [
        Self::FirefoxCanary,
        Self::IcloudPrivateRelay,
        Self::ResolverArpa,
    ];

    /// The `[server]` key that turns this answer off; also the `toggle` label of
    /// `hushd_bypass_answers_total`, so a count names what to change.
    pub fn toggle(self) -> &'static str {
        match self {
            Self::FirefoxCanary => "firefox_canary",
            Self::IcloudPrivateRelay => "icloud_private_relay",
            Self::ResolverArpa => "resolver_arpa",
        }
    }

    /// NXDOMAIN for the two canaries (Mozilla and Apple both name it; Apple also accepts an
    /// empty answer, but NXDOMAIN is what both share); NOERROR with no records for
    /// `resolver.arpa` (RFC 9462 §4: a resolver without designated resolvers "SHOULD return
    /// NODATA" for the zone).
    pub fn rcode(self) -> ResponseCode {
        match self {
            Self::FirefoxCanary | Self::IcloudPrivateRelay => ResponseCode::NXDomain,
            Self::ResolverArpa => ResponseCode::NoError,
        }
    }

    /// What the answer does, for `hushd explain`.
    pub fn why(self) -> &'static str {
        match self {
            Self::FirefoxCanary => {
                "Firefox's DNS-over-HTTPS canary: hushd answers NXDOMAIN so Firefox keeps using \
                 this network's DNS ([server] firefox_canary)"
            }
            Self::IcloudPrivateRelay => {
                "iCloud Private Relay: hushd answers NXDOMAIN so Apple devices keep their \
                 lookups on this network ([server] icloud_private_relay)"
            }
            Self::ResolverArpa => {
                "RFC 9462 discovery of designated resolvers: hushd answers NODATA so no \
                 encrypted resolver upstream is designated to clients ([server] resolver_arpa)"
            }
        }
    }
}

/// The answer hushd gives itself to `qname` under `defence`, if any. Names compare
/// case-insensitively, with or without the final dot.
///
/// The canary is `use-application-dns.net` alone: Mozilla names that one domain, and a name
/// under it is an ordinary name. Apple names `mask.icloud.com` and `mask-h2.icloud.com` alone
/// (other `icloud.com` names are iCloud itself). RFC 9462 makes the whole `resolver.arpa`
/// zone special-use, so every name in it, the apex too, is answered here and never forwarded.
pub fn bypass_answer(defence: &BypassDefence, qname: &Name) -> Option<BypassAnswer> {
    // From the top label down: for most names the first comparison settles it.
    let mut labels = qname.iter().rev();
    let top = labels.next()?;
    let (second, third, fourth) = (labels.next(), labels.next(), labels.next());
    let is = |label: Option<&[u8]>, want: &str| {
        label.is_some_and(|l| l.eq_ignore_ascii_case(want.as_bytes()))
    };
    let top = Some(top);
    if is(top, "net") && is(second, "use-application-dns") && third.is_none() {
        defence
            .firefox_canary
            .then_some(BypassAnswer::FirefoxCanary)
    } else if is(top, "com")
        && is(second, "icloud")
        && (is(third, "mask") || is(third, "mask-h2"))
        && fourth.is_none()
    {
        defence
            .icloud_private_relay
            .then_some(BypassAnswer::IcloudPrivateRelay)
    } else if is(top, "arpa") && is(second, "resolver") {
        defence.resolver_arpa.then_some(BypassAnswer::ResolverArpa)
    } else {
        None
    }
}

/// RFC 9461 §5: the `dohpath` SvcParamKey.
const DOHPATH_KEY: u16 = 7;

/// hushd's own encrypted listeners as DDR designates them (RFC 9462 §4): one SVCB record per
/// protocol and port, naming the certificate's name as the target, with the listeners'
/// addresses as hints where they are not unspecified (`0.0.0.0`, `::` say nothing a client can
/// use; it then connects to the address it asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Designation {
    records: Vec<SVCB>,
}

impl Designation {
    /// `target`: the name in the listeners' certificate (`.` when it has none: the owner name).
    pub fn new(target: &Name, tls_listen: &[SocketAddr], https_listen: &[SocketAddr]) -> Self {
        let mut records = Vec::new();
        let mut priority = 1;
        for (listen, alpn, dohpath) in [
            (tls_listen, "dot", None),
            (https_listen, "h2", Some("/dns-query{?dns}")),
        ] {
            let mut ports: Vec<u16> = listen.iter().map(SocketAddr::port).collect();
            ports.sort_unstable();
            ports.dedup();
            for port in ports {
                let at_port = || listen.iter().filter(move |a| a.port() == port);
                let mut params = vec![
                    (
                        SvcParamKey::Alpn,
                        SvcParamValue::Alpn(Alpn(vec![alpn.to_string()])),
                    ),
                    (SvcParamKey::Port, SvcParamValue::Port(port)),
                ];
                let v4: Vec<A> = at_port()
                    .filter_map(|a| match a.ip() {
                        IpAddr::V4(ip) if !ip.is_unspecified() => Some(A(ip)),
                        _ => None,
                    })
                    .collect();
                if !v4.is_empty() {
                    params.push((SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(v4))));
                }
                let v6: Vec<AAAA> = at_port()
                    .filter_map(|a| match a.ip() {
                        IpAddr::V6(ip) if !ip.is_unspecified() => Some(AAAA(ip)),
                        _ => None,
                    })
                    .collect();
                if !v6.is_empty() {
                    params.push((SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(IpHint(v6))));
                }
                if let Some(path) = dohpath {
                    params.push((
                        SvcParamKey::Unknown(DOHPATH_KEY),
                        SvcParamValue::Unknown(Unknown(path.as_bytes().to_vec())),
                    ));
                }
                records.push(SVCB::new(priority, target.clone(), params));
                priority += 1;
            }
        }
        Self { records }
    }

    /// The SVCB records answering `qname` / `qtype`: only `_dns.resolver.arpa` SVCB, and only
    /// when there are encrypted listeners.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Option<&[SVCB]> {
        if self.records.is_empty() || qtype != RecordType::SVCB {
            return None;
        }
        let mut labels = qname.iter();
        let is = |label: Option<&[u8]>, want: &str| {
            label.is_some_and(|l| l.eq_ignore_ascii_case(want.as_bytes()))
        };
        let ddr = is(labels.next(), "_dns")
            && is(labels.next(), "resolver")
            && is(labels.next(), "arpa")
            && labels.next().is_none();
        ddr.then_some(self.records.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(defence: &BypassDefence, name: &str) -> Option<BypassAnswer> {
        bypass_answer(defence, &Name::from_ascii(name).unwrap())
    }

    const ON: BypassDefence = BypassDefence {
        firefox_canary: true,
        icloud_private_relay: true,
        resolver_arpa: true,
    };

    #[test]
    fn each_name_gets_its_answer_whatever_its_case_or_final_dot() {
        use BypassAnswer::*;
        for (name, expected) in [
            ("use-application-dns.net.", FirefoxCanary),
            ("USE-Application-DNS.NET", FirefoxCanary),
            ("mask.icloud.com.", IcloudPrivateRelay),
            ("mask-h2.icloud.com.", IcloudPrivateRelay),
            ("Mask-H2.iCloud.com", IcloudPrivateRelay),
            ("_dns.resolver.arpa.", ResolverArpa),
            ("resolver.arpa.", ResolverArpa),
            ("_dns.RESOLVER.arpa", ResolverArpa),
            ("a.b._dns.resolver.arpa.", ResolverArpa),
        ] {
            assert_eq!(answer(&ON, name), Some(expected), "{name}");
        }
        assert_eq!(FirefoxCanary.rcode(), ResponseCode::NXDomain);
        assert_eq!(IcloudPrivateRelay.rcode(), ResponseCode::NXDomain);
        assert_eq!(ResolverArpa.rcode(), ResponseCode::NoError);
    }

    #[test]
    fn neighbours_of_the_names_are_ordinary_names() {
        for name in [
            // Mozilla's canary is that one name; names under it are not the canary
            "www.use-application-dns.net.",
            "application-dns.net.",
            "use-application-dns.com.",
            "net.",
            // other iCloud names are iCloud itself
            "icloud.com.",
            "www.icloud.com.",
            "a.mask.icloud.com.",
            "mask-api.icloud.com.",
            "mask.icloud.com.example.",
            "mask.icloud.net.",
            // only the resolver.arpa zone
            "arpa.",
            "in-addr.arpa.",
            "1.0.0.127.in-addr.arpa.",
            "xresolver.arpa.",
            "resolver.arpa.example.",
            ".",
        ] {
            assert_eq!(answer(&ON, name), None, "{name}");
        }
    }

    #[test]
    fn each_toggle_turns_off_its_own_answer_only() {
        let names = [
            "use-application-dns.net.",
            "mask.icloud.com.",
            "_dns.resolver.arpa.",
        ];
        for (i, off) in BypassAnswer::ALL.into_iter().enumerate() {
            let defence = BypassDefence {
                firefox_canary: off != BypassAnswer::FirefoxCanary,
                icloud_private_relay: off != BypassAnswer::IcloudPrivateRelay,
                resolver_arpa: off != BypassAnswer::ResolverArpa,
            };
            for (j, name) in names.iter().enumerate() {
                let expected = (i != j).then_some(BypassAnswer::ALL[j]);
                assert_eq!(
                    answer(&defence, name),
                    expected,
                    "{} off, {name}",
                    off.toggle()
                );
            }
        }
    }
}

#[cfg(test)]
mod designation_tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn params(svcb: &SVCB) -> Vec<String> {
        svcb.svc_params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn each_listener_port_is_one_record_with_its_alpn_port_hints_and_dohpath() {
        let target = Name::from_ascii("dns.office.example.").unwrap();
        let d = Designation::new(
            &target,
            &addrs(&["192.0.2.53:853", "[2001:db8::53]:853", "0.0.0.0:8853"]),
            &addrs(&["0.0.0.0:443", "[::]:443"]),
        );
        let ddr = Name::from_ascii("_DNS.resolver.arpa.").unwrap();
        let records = d.answer(&ddr, RecordType::SVCB).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].svc_priority, 1);
        assert_eq!(&records[0].target_name, &target);
        let first = params(&records[0]);
        assert!(
            first[0].starts_with("alpn=") && first[0].contains("dot"),
            "{first:?}"
        );
        assert_eq!(first[1], "port=853");
        assert!(first[2].contains("192.0.2.53"), "{first:?}");
        assert!(first[3].contains("2001:db8::53"), "{first:?}");
        // an unspecified address gives no hint
        assert_eq!(params(&records[1]).len(), 2);
        let doh = &records[2];
        assert!(params(doh)[0].contains("h2"));
        assert_eq!(params(doh)[1], "port=443");
        assert!(
            doh.svc_params
                .iter()
                .any(|(k, v)| u16::from(*k) == DOHPATH_KEY
                    && *v == SvcParamValue::Unknown(Unknown(b"/dns-query{?dns}".to_vec())))
        );
    }

    #[test]
    fn only_the_ddr_svcb_query_is_answered_and_only_with_listeners() {
        let target = Name::root();
        let d = Designation::new(&target, &addrs(&["127.0.0.1:853"]), &[]);
        let name = |n: &str| Name::from_ascii(n).unwrap();
        assert!(
            d.answer(&name("_dns.resolver.arpa."), RecordType::SVCB)
                .is_some()
        );
        assert!(
            d.answer(&name("_dns.resolver.arpa."), RecordType::A)
                .is_none()
        );
        assert!(
            d.answer(&name("resolver.arpa."), RecordType::SVCB)
                .is_none()
        );
        assert!(
            d.answer(&name("x._dns.resolver.arpa."), RecordType::SVCB)
                .is_none()
        );
        let none = Designation::new(&target, &[], &[]);
        assert!(
            none.answer(&name("_dns.resolver.arpa."), RecordType::SVCB)
                .is_none()
        );
    }
}

//! Bypass defence: the answers hushd gives itself to the names a device asks before it decides
//! to stop using the network's DNS. Without them a filter is only as strong as the devices'
//! goodwill: Firefox turns on DNS over HTTPS by default, an iPhone with iCloud+ sends its
//! lookups through Private Relay, and a stub that finds a designated encrypted resolver
//! (RFC 9462) moves to it, all past hushd. Each answer is a `[server]` toggle
//! (`config::BypassDefence`), on by default.
//!
//! `bypass_answer` is the whole decision: a pure function of the toggles and the name, asked
//! after `allow_clients` and before the cache and the lists (an allow list cannot undo it; the
//! toggle can). When hushd gets encrypted listeners of its own, `ResolverArpa` is where it will
//! answer `_dns.resolver.arpa` SVCB with them instead of NODATA.

use hickory_proto::{op::ResponseCode, rr::Name};

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

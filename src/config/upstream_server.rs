//! One `[upstream] servers` entry: a plain DNS server (`9.9.9.9`, `9.9.9.9:53`), DNS over TLS
//! (`tls://9.9.9.9:853#dns.quad9.net`, RFC 7858) or DNS over HTTPS
//! (`https://9.9.9.9/dns-query#dns.quad9.net`, RFC 8484). An encrypted server is given by its
//! address, never a host name: hushd would need a resolver to find it, and that resolver is
//! itself. The name after `#` is the one its certificate must hold; without it, the address.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

/// RFC 7858 §3.1.
pub const DOT_PORT: u16 = 853;
pub const DOH_PORT: u16 = 443;
/// RFC 8484 §3's example path, and what most resolvers serve.
pub const DOH_PATH: &str = "/dns-query";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamServer {
    pub addr: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// UDP, and TCP for truncated answers.
    Plain,
    /// DNS over TLS; `name` is checked in the certificate (`None`: the address is).
    Tls { name: Option<String> },
    /// DNS over HTTPS (HTTP/2, POST) at `path`; `name` as for TLS, and sent as the authority.
    Https { name: Option<String>, path: String },
}

impl UpstreamServer {
    /// DoT or DoH: the path to the server is authenticated and private, so what it says (its AD
    /// bit, say) cannot have been changed on the way.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self.transport, Transport::Plain)
    }

    /// The name the server's certificate must hold: the one after `#`, else the address.
    pub fn tls_name(&self) -> String {
        match &self.transport {
            Transport::Tls { name: Some(name) }
            | Transport::Https {
                name: Some(name), ..
            } => name.clone(),
            _ => self.addr.ip().to_string(),
        }
    }

    /// Parses one entry of `[upstream] servers`; the error says what is wrong and what to write.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tls://") {
            let (hostport, name) = split_name(s, rest)?;
            if hostport.contains('/') {
                return Err(format!(
                    "{s:?}: a tls:// server has no path (write tls://9.9.9.9:853#dns.quad9.net)"
                ));
            }
            let addr = parse_addr(s, hostport, DOT_PORT)?;
            return Ok(Self {
                addr,
                transport: Transport::Tls { name },
            });
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let (url, name) = split_name(s, rest)?;
            let (hostport, path) = match url.find('/') {
                Some(i) => url.split_at(i),
                None => (url, DOH_PATH),
            };
            if path.contains(['?', ' ']) {
                return Err(format!(
                    "{s:?}: the path takes no query string (hushd sends POST requests)"
                ));
            }
            let addr = parse_addr(s, hostport, DOH_PORT)?;
            return Ok(Self {
                addr,
                transport: Transport::Https {
                    name,
                    path: path.to_string(),
                },
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "{s:?}: unknown scheme {scheme:?} (write 9.9.9.9, tls://9.9.9.9:853#dns.quad9.net or https://9.9.9.9/dns-query#dns.quad9.net)"
            ));
        }
        if s.parse::<SocketAddr>().is_err() && s.parse::<IpAddr>().is_err() {
            return Err(format!(
                "{s:?} is not an address (write 1.2.3.4, 1.2.3.4:53 or [2001:db8::1]:53; tls:// or https:// for an encrypted server)"
            ));
        }
        Ok(Self {
            addr: parse_addr(s, s, 53)?,
            transport: Transport::Plain,
        })
    }
}

/// `host[:port]#name` -> (`host[:port]`, the name if given and valid for a certificate).
fn split_name<'a>(whole: &str, rest: &'a str) -> Result<(&'a str, Option<String>), String> {
    let Some((before, name)) = rest.split_once('#') else {
        return Ok((rest, None));
    };
    if name.is_empty() {
        return Err(format!(
            "{whole:?}: nothing after '#' (give the name the server's certificate holds, or leave out the '#')"
        ));
    }
    let name = name.trim_end_matches('.');
    if rustls::pki_types::ServerName::try_from(name).is_err() {
        return Err(format!(
            "{whole:?}: {name:?} is not a host name a certificate can hold"
        ));
    }
    Ok((before, Some(name.to_ascii_lowercase())))
}

/// `1.2.3.4`, `1.2.3.4:853`, `[2001:db8::1]` or `[2001:db8::1]:853`; anything else, a host name
/// included, is an error naming the whole entry.
fn parse_addr(whole: &str, hostport: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = hostport
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(hostport);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!(
        "{whole:?}: {hostport:?} is not an address; give the server's IP address and its name after '#' (tls://9.9.9.9:853#dns.quad9.net), since hushd cannot look a name up before it has an upstream"
    ))
}

/// The form the entry was written in, normalised (port and path filled in): how logs and the
/// `server` label of the upstream metrics name it. A plain server keeps its bare `addr:port`.
impl fmt::Display for UpstreamServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name =
            |name: &Option<String>| name.as_ref().map(|n| format!("#{n}")).unwrap_or_default();
        match &self.transport {
            Transport::Plain => write!(f, "{}", self.addr),
            Transport::Tls { name: n } => write!(f, "tls://{}{}", self.addr, name(n)),
            Transport::Https { name: n, path } => {
                write!(f, "https://{}{path}{}", self.addr, name(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> UpstreamServer {
        UpstreamServer::parse(s).unwrap()
    }

    fn err(s: &str) -> String {
        UpstreamServer::parse(s).unwrap_err()
    }

    #[test]
    fn plain_servers_keep_their_old_forms_and_label() {
        let s = ok("192.0.2.1");
        assert_eq!(s.addr, "192.0.2.1:53".parse().unwrap());
        assert_eq!(s.transport, Transport::Plain);
        assert!(!s.is_encrypted());
        assert_eq!(s.to_string(), "192.0.2.1:53");
        assert_eq!(ok("[2001:db8::1]:5300").to_string(), "[2001:db8::1]:5300");
        assert_eq!(ok("2001:db8::1").addr.port(), 53);
    }

    #[test]
    fn tls_servers_take_an_address_a_port_and_a_certificate_name() {
        let s = ok("tls://9.9.9.9#dns.quad9.net");
        assert_eq!(s.addr, "9.9.9.9:853".parse().unwrap());
        assert!(s.is_encrypted());
        assert_eq!(s.tls_name(), "dns.quad9.net");
        assert_eq!(s.to_string(), "tls://9.9.9.9:853#dns.quad9.net");
        let s = ok("tls://[2620:fe::fe]:8853#DNS.Quad9.net.");
        assert_eq!(s.addr, "[2620:fe::fe]:8853".parse().unwrap());
        assert_eq!(s.tls_name(), "dns.quad9.net");
        // without a name, the address is what the certificate must hold
        let s = ok("tls://127.0.0.1:8853");
        assert_eq!(s.tls_name(), "127.0.0.1");
        assert_eq!(s.to_string(), "tls://127.0.0.1:8853");
    }

    #[test]
    fn https_servers_keep_their_path_and_default_to_443_and_dns_query() {
        let s = ok("https://9.9.9.9/dns-query#dns.quad9.net");
        assert_eq!(s.addr, "9.9.9.9:443".parse().unwrap());
        assert_eq!(
            s.transport,
            Transport::Https {
                name: Some("dns.quad9.net".into()),
                path: "/dns-query".into()
            }
        );
        assert_eq!(s.to_string(), "https://9.9.9.9:443/dns-query#dns.quad9.net");
        let s = ok("https://[::1]:8443/resolve");
        assert_eq!(s.addr, "[::1]:8443".parse().unwrap());
        assert_eq!(s.to_string(), "https://[::1]:8443/resolve");
        let s = ok("https://192.0.2.1#doh.example");
        assert_eq!(s.to_string(), "https://192.0.2.1:443/dns-query#doh.example");
    }

    #[test]
    fn bad_forms_say_what_to_write() {
        assert!(err("tls://dns.quad9.net").contains("is not an address"));
        assert!(err("https://dns.quad9.net/dns-query").contains("give the server's IP"));
        assert!(err("quic://9.9.9.9").contains("unknown scheme"));
        assert!(err("tls://9.9.9.9#").contains("nothing after '#'"));
        assert!(err("tls://9.9.9.9#bad name!").contains("not a host name"));
        assert!(err("tls://9.9.9.9/dns-query").contains("no path"));
        assert!(err("https://9.9.9.9/dns-query?dns=x").contains("query string"));
        assert!(err("nope").contains("is not an address"));
        assert!(err("tls://9.9.9.9:99999").contains("is not an address"));
    }
}

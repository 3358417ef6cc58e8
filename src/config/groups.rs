//! `[clients]` (names for devices) and `[[groups]]` (which lists apply to which clients): parsed
//! and checked here; the lists a group names are checked against the blocklist folder when the
//! policy is built, since only then are they known.

use std::{collections::BTreeMap, net::IpAddr, ops::Range};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use super::{Action, parse_network};
use crate::egress::SetRef;

/// The implicit group of clients in no `[[groups]]`: every list, each with its own action.
pub const DEFAULT_GROUP: &str = "default";

/// A device's name and its addresses (`[clients] "reception-tv" = "192.168.1.40"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// One `[[groups]]` entry, its client names already turned into host routes.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub clients: Vec<IpNetwork>,
    /// The lists that apply to members; `None`: every list.
    pub lists: Option<Vec<String>>,
    /// Per-group override of a list's own action.
    pub actions: Vec<(String, Action)>,
    /// Strict egress: every address answered to a member goes into these sets (one per address
    /// family is usual: `egress_set` takes one set or a list).
    pub egress_set: Vec<SetRef>,
}

pub(super) mod raw {
    use super::*;

    /// `"reception-tv" = "192.168.1.40"` or `"ceo-phone" = ["192.168.1.23", "2001:db8::23"]`.
    /// (No spans inside: serde's untagged enums cannot carry them; errors point at the name.)
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Addresses {
        One(String),
        Many(Vec<String>),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Group {
        pub name: Spanned<String>,
        #[serde(default)]
        pub clients: Vec<Spanned<String>>,
        pub lists: Option<Vec<Spanned<String>>>,
        #[serde(default)]
        pub actions: BTreeMap<String, Action>,
        pub egress_set: Option<Sets>,
    }

    /// `egress_set = "inet hushd iot4"` or `["inet hushd iot4", "inet hushd iot6"]`.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Sets {
        One(String),
        Many(Vec<String>),
    }
}

/// Checks `[clients]`: each name printable and not an address, each address an address, and no
/// address under two names (a log line would not know which device it was).
pub(super) fn client_names(
    raw: &BTreeMap<Spanned<String>, raw::Addresses>,
    err_at: &mut impl FnMut(Range<usize>, String),
) -> Vec<ClientName> {
    let mut owner_of: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut names = Vec::with_capacity(raw.len());
    for (name, addresses) in raw {
        if let Err(why) = check_name(name.get_ref()) {
            err_at(
                name.span(),
                format!("client name {:?}: {why}", name.get_ref()),
            );
            continue;
        }
        let values = match addresses {
            raw::Addresses::One(a) => std::slice::from_ref(a),
            raw::Addresses::Many(many) => many.as_slice(),
        };
        if values.is_empty() {
            err_at(
                name.span(),
                format!("client {:?} has no address", name.get_ref()),
            );
        }
        let mut parsed = Vec::with_capacity(values.len());
        for v in values {
            let Ok(addr) = v.trim().parse::<IpAddr>() else {
                err_at(
                    name.span(),
                    format!(
                        "client {:?}: {v:?} is not an address (a client name stands for addresses, such as \"192.168.1.40\" or \"2001:db8::23\")",
                        name.get_ref()
                    ),
                );
                continue;
            };
            let addr = addr.to_canonical();
            match owner_of.get(&addr) {
                Some(other) if other != name.get_ref() => err_at(
                    name.span(),
                    format!(
                        "client {:?}: {addr} is already the address of client {other:?}",
                        name.get_ref()
                    ),
                ),
                _ => {
                    owner_of.insert(addr, name.get_ref().clone());
                    parsed.push(addr);
                }
            }
        }
        names.push(ClientName {
            name: name.get_ref().clone(),
            addresses: parsed,
        });
    }
    names
}

/// A client or group name: shown in logs and reports, so printable, and never something that
/// reads as an address (a group's `clients` entry must mean one thing).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if name.chars().any(|c| c.is_control() || c == '"') {
        return Err("must not hold control characters or quotes".into());
    }
    if name.parse::<IpNetwork>().is_ok() || name.parse::<IpAddr>().is_ok() {
        return Err("reads as an address; give the device a name".into());
    }
    Ok(())
}

/// Checks `[[groups]]`: names unique and not `default`, each client entry a network or a client
/// name, and no network in two groups (a client must fall in exactly one: the most specific
/// entry decides, so only an identical entry is a tie).
pub(super) fn groups(
    raw: &[raw::Group],
    names: &[ClientName],
    err_at: &mut impl FnMut(Range<usize>, String),
) -> Vec<GroupConfig> {
    let mut group_of: BTreeMap<IpNetwork, String> = BTreeMap::new();
    let mut out: Vec<GroupConfig> = Vec::with_capacity(raw.len());
    for g in raw {
        let name = g.name.get_ref();
        if let Err(why) = check_name(name) {
            err_at(g.name.span(), format!("group name {name:?}: {why}"));
        }
        if name == DEFAULT_GROUP {
            err_at(
                g.name.span(),
                format!(
                    "{DEFAULT_GROUP:?} is the implicit group of clients in no group; name this one otherwise"
                ),
            );
        }
        if out.iter().any(|o| &o.name == name) {
            err_at(g.name.span(), format!("a second group named {name:?}"));
        }
        let mut clients = Vec::new();
        for entry in &g.clients {
            let text = entry.get_ref().trim();
            let nets: Vec<IpNetwork> = match names.iter().find(|c| c.name == text) {
                Some(c) => c.addresses.iter().map(|&a| IpNetwork::from(a)).collect(),
                None => match parse_network(text) {
                    Ok(net) => vec![canonical(net)],
                    Err(why) if text.contains(['.', ':']) => {
                        err_at(entry.span(), why);
                        continue;
                    }
                    Err(_) => {
                        err_at(
                            entry.span(),
                            format!(
                                "{text:?} is neither a network nor a client named in [clients]"
                            ),
                        );
                        continue;
                    }
                },
            };
            for net in nets {
                match group_of.get(&net) {
                    Some(other) if other != name => err_at(
                        entry.span(),
                        format!(
                            "{net} is also a client of group {other:?}; a client must fall in one group (give one of them a more specific entry)"
                        ),
                    ),
                    _ => {
                        group_of.insert(net, name.clone());
                        clients.push(net);
                    }
                }
            }
        }
        let sets = match &g.egress_set {
            None => &[][..],
            Some(raw::Sets::One(one)) => std::slice::from_ref(one),
            Some(raw::Sets::Many(many)) => many.as_slice(),
        };
        let egress_set = sets
            .iter()
            .filter_map(|s| {
                SetRef::parse(s)
                    .map_err(|why| {
                        err_at(g.name.span(), format!("group {name:?} egress_set: {why}"))
                    })
                    .ok()
            })
            .collect();
        out.push(GroupConfig {
            name: name.clone(),
            clients,
            lists: g
                .lists
                .as_ref()
                .map(|l| l.iter().map(|n| n.get_ref().clone()).collect()),
            actions: g.actions.iter().map(|(l, a)| (l.clone(), *a)).collect(),
            egress_set,
        });
    }
    out
}

/// An IPv4-mapped network as the IPv4 network it is, so `::ffff:10.0.0.1` and `10.0.0.1` are
/// one entry (and a tie between groups is seen).
fn canonical(net: IpNetwork) -> IpNetwork {
    match net {
        IpNetwork::V6(n) if n.prefix() >= 96 => match n.ip().to_ipv4_mapped() {
            Some(v4) => IpNetwork::new(IpAddr::V4(v4), n.prefix() - 96).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

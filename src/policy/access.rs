//! Who a client is: whether `allow_clients` serves it, its group and its name. The policy's part
//! of the client prefix table (`clients::ClientTable`), so it reloads with the policy, and one
//! longest-prefix lookup answers all three.

use std::{net::IpAddr, sync::Arc};

use ipnetwork::IpNetwork;

use super::groups::GroupId;
use crate::{
    clients::{ClientMarks, ClientTable},
    config::Config,
};

#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    table: ClientTable,
    /// `[clients]` names, indexed by `ClientMarks::name`.
    names: Vec<Arc<str>>,
}

/// What the policy knows of one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client<'p> {
    pub allowed: bool,
    pub group: GroupId,
    /// Shared, so a match handed to the evidence store costs a reference count, not a copy.
    pub name: Option<&'p Arc<str>>,
}

impl ClientAccess {
    pub fn new(allowed: Vec<IpNetwork>) -> Self {
        Self {
            table: ClientTable::builder()
                .mark(&allowed, ClientMarks::ALLOWED)
                .build(),
            names: Vec::new(),
        }
    }

    /// The table of `config`'s `allow_clients`, `[clients]` names and `[[groups]]`; group ids
    /// are 1 + the group's place in the config (0 is the default group).
    pub fn from_config(config: &Config) -> Self {
        let mut builder =
            ClientTable::builder().mark(&config.server.allow_clients, ClientMarks::ALLOWED);
        for (i, g) in config.groups.iter().enumerate() {
            let id = GroupId::try_from(i + 1).unwrap_or(GroupId::MAX);
            builder = builder.mark(&g.clients, ClientMarks::in_group(id));
        }
        let mut names = Vec::with_capacity(config.clients.len());
        for c in &config.clients {
            let hosts: Vec<IpNetwork> = c.addresses.iter().map(|&a| IpNetwork::from(a)).collect();
            builder = builder.mark(&hosts, ClientMarks::named(names.len() as u32));
            names.push(c.name.as_str().into());
        }
        Self {
            table: builder.build(),
            names,
        }
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        self.table.lookup(client).allowed
    }

    pub fn lookup(&self, client: IpAddr) -> Client<'_> {
        let marks = self.table.lookup(client);
        Client {
            allowed: marks.allowed,
            group: marks.group.unwrap_or(0),
            name: marks.name.and_then(|n| self.names.get(n as usize)),
        }
    }
}

//! `allow_clients`: which source addresses are served at all. The policy's part of the client
//! prefix table (`clients::ClientTable`), so it reloads with the policy.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::clients::{ClientMarks, ClientTable};

#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    table: ClientTable,
}

impl ClientAccess {
    pub fn new(allowed: Vec<IpNetwork>) -> Self {
        Self {
            table: ClientTable::builder()
                .mark(&allowed, ClientMarks::ALLOWED)
                .build(),
        }
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        self.table.lookup(client).allowed
    }
}

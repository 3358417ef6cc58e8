//! `allow_clients`: which source addresses are served at all.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    allowed: Vec<IpNetwork>,
}

impl ClientAccess {
    pub fn new(allowed: Vec<IpNetwork>) -> Self {
        Self { allowed }
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        // A v4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        self.allowed.iter().any(|net| net.contains(client))
    }
}

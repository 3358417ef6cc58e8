//! Egress: where the addresses hushd answers go beyond DNS. The names of the nftables sets that
//! lists and groups feed (`SetRef`, here), the writer that feeds them (`nft`) and its netlink
//! messages (`netlink`).

pub mod netlink;
pub mod nft;

use std::fmt;

/// An nftables set as an admin writes it in a list's `nft_sets` or a group's `egress_set`:
/// `"family table set"`, e.g. `"inet hushd xiaomi4"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetRef {
    pub family: String,
    pub table: String,
    pub set: String,
}

/// Families whose sets can hold IP addresses (`arp` sets cannot).
const FAMILIES: [&str; 5] = ["ip", "ip6", "inet", "bridge", "netdev"];

impl SetRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [family, table, set] = words[..] else {
            return Err(format!(
                "{s:?}: write an nftables set as \"family table set\", e.g. \"inet hushd xiaomi4\""
            ));
        };
        if !FAMILIES.contains(&family) {
            return Err(format!(
                "{s:?}: family {family:?} is not one of {}",
                FAMILIES.join(", ")
            ));
        }
        for (what, name) in [("table", table), ("set", set)] {
            if !is_identifier(name) {
                return Err(format!(
                    "{s:?}: {what} name {name:?} is not an nftables identifier (a letter or _, then letters, digits, _ . /)"
                ));
            }
        }
        Ok(Self {
            family: family.into(),
            table: table.into(),
            set: set.into(),
        })
    }
}

impl fmt::Display for SetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.family, self.table, self.set)
    }
}

/// nft's identifier rule (`[a-zA-Z_][a-zA-Z0-9_/\.]*`, at most 255 bytes), which also keeps
/// anything that could be read as nft syntax out of a batch hushd writes.
fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && s.len() <= 255
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_refs_parse_and_print() {
        let s = SetRef::parse("inet  hushd xiaomi4").unwrap();
        assert_eq!(s.to_string(), "inet hushd xiaomi4");
        assert!(SetRef::parse("inet hushd").is_err());
        assert!(SetRef::parse("arp hushd x").is_err());
        assert!(SetRef::parse("inet hushd x;flush").is_err());
        assert!(SetRef::parse("inet 1table x").is_err());
    }
}

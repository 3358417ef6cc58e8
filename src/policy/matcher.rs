//! `DomainSet`: the compact, immutable set of listed names that every query is matched against.
//!
//! A listed name matches itself and every subdomain, label-aligned: `mistat.xiaomi.com` matches
//! `a.b.mistat.xiaomi.com` but not `xmistat.xiaomi.com`. A query is matched by looking up each of
//! its label-aligned suffixes, most specific first, so the cost is a handful of hash probes
//! whatever the size of the lists.
//!
//! Memory: names live back to back in one byte arena (`[len][tag:u16][name]`), indexed by an
//! open-addressing table of `u32` offsets. That is the name's bytes plus about 10 bytes per
//! entry, instead of the ~80 bytes of a `HashSet<String>` entry, so million-entry lists stay small.

use std::hash::Hasher;

use hickory_proto::rr::Name;
use rustc_hash::FxHasher;

/// A name's longest wire form is 255 bytes; its text form without the final dot is at most 253.
const MAX_NAME: usize = 255;
/// The table is grown when it is more than this full (in 1/16ths), to keep probe runs short.
const MAX_LOAD_16THS: usize = 10;
const HEADER: usize = 3;

/// A tag carried by each entry: the index of the list it came from.
pub type Tag = u16;

#[derive(Debug, Clone)]
pub struct DomainSet {
    arena: Vec<u8>,
    /// Offset + 1 of the entry in `arena`; 0 is an empty slot.
    slots: Box<[u32]>,
    len: usize,
}

/// What `DomainSetBuilder::insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The name was there already with this tag, which was kept.
    Kept(Tag),
    /// The name was there already with this tag, which the new one replaced.
    Replaced(Tag),
}

impl Default for DomainSet {
    fn default() -> Self {
        DomainSetBuilder::with_capacity(0).build()
    }
}

impl DomainSet {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, for the memory figures in the docs and benchmarks.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.slots.len() * 4
    }

    /// The tag of exactly this (normalised, lower-case, no final dot) name.
    pub fn get(&self, name: &[u8]) -> Option<Tag> {
        find(&self.arena, &self.slots, name)
            .ok()
            .map(|(_, off)| tag_at(&self.arena, off))
    }

    /// Tags of every listed name that covers `key`, from the most specific (the name itself)
    /// to the least (its top-level label).
    pub fn matches<'a>(&'a self, key: &'a NameKey) -> impl Iterator<Item = Tag> + 'a {
        (0..key.labels).filter_map(move |i| self.get(key.suffix(i)))
    }
}

pub struct DomainSetBuilder {
    arena: Vec<u8>,
    slots: Vec<u32>,
    len: usize,
}

impl DomainSetBuilder {
    pub fn with_capacity(entries: usize) -> Self {
        let slots = slots_for(entries);
        Self {
            arena: Vec::with_capacity(entries * 24),
            slots: vec![0; slots],
            len: 0,
        }
    }

    /// Adds `name` (already normalised: lower-case ASCII, no final dot, at most 253 bytes) with
    /// `tag`. If the name is there already, `prefer_new(existing)` decides which tag it keeps.
    pub fn insert(
        &mut self,
        name: &[u8],
        tag: Tag,
        prefer_new: impl FnOnce(Tag) -> bool,
    ) -> Inserted {
        debug_assert!(!name.is_empty() && name.len() < MAX_NAME);
        match find(&self.arena, &self.slots, name) {
            Ok((_, off)) => {
                let old = tag_at(&self.arena, off);
                if old != tag && prefer_new(old) {
                    self.arena[off + 1..off + HEADER].copy_from_slice(&tag.to_le_bytes());
                    Inserted::Replaced(old)
                } else {
                    Inserted::Kept(old)
                }
            }
            Err(slot) => {
                let off = self.arena.len();
                self.arena.push(name.len() as u8);
                self.arena.extend_from_slice(&tag.to_le_bytes());
                self.arena.extend_from_slice(name);
                self.slots[slot] = off as u32 + 1;
                self.len += 1;
                if self.len * 16 > self.slots.len() * MAX_LOAD_16THS {
                    self.grow();
                }
                Inserted::New
            }
        }
    }

    pub fn build(mut self) -> DomainSet {
        self.arena.shrink_to_fit();
        DomainSet {
            arena: self.arena,
            slots: self.slots.into_boxed_slice(),
            len: self.len,
        }
    }

    fn grow(&mut self) {
        let mut slots = vec![0u32; self.slots.len() * 2];
        let mask = slots.len() - 1;
        for &s in self.slots.iter().filter(|&&s| s != 0) {
            let name = name_at(&self.arena, s as usize - 1);
            let mut i = hash(name) & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = s;
        }
        self.slots = slots;
    }
}

fn slots_for(entries: usize) -> usize {
    (entries * 16 / MAX_LOAD_16THS + 1)
        .next_power_of_two()
        .max(16)
}

fn hash(bytes: &[u8]) -> usize {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish() as usize
}

fn name_at(arena: &[u8], off: usize) -> &[u8] {
    let len = arena[off] as usize;
    &arena[off + HEADER..off + HEADER + len]
}

fn tag_at(arena: &[u8], off: usize) -> Tag {
    Tag::from_le_bytes([arena[off + 1], arena[off + 2]])
}

/// `Ok((slot, offset))` where `name` is stored, or `Err(slot)` of the empty slot it would take.
fn find(arena: &[u8], slots: &[u32], name: &[u8]) -> Result<(usize, usize), usize> {
    let mask = slots.len() - 1;
    let mut i = hash(name) & mask;
    loop {
        match slots[i] {
            0 => return Err(i),
            s => {
                let off = s as usize - 1;
                if name_at(arena, off) == name {
                    return Ok((i, off));
                }
            }
        }
        i = (i + 1) & mask;
    }
}

/// A query name in the form the set stores (lower-case text, no final dot) with the offsets of
/// its labels, built on the stack so matching allocates nothing.
pub struct NameKey {
    buf: [u8; MAX_NAME],
    len: usize,
    starts: [u8; 128],
    labels: usize,
}

impl NameKey {
    pub fn new(name: &Name) -> Self {
        let mut key = Self {
            buf: [0; MAX_NAME],
            len: 0,
            starts: [0; 128],
            labels: 0,
        };
        for label in name.iter() {
            let sep = usize::from(key.len > 0);
            if key.len + sep + label.len() > MAX_NAME || key.labels == key.starts.len() {
                break; // cannot happen for a decoded name; stop rather than panic
            }
            if sep == 1 {
                key.buf[key.len] = b'.';
                key.len += 1;
            }
            key.starts[key.labels] = key.len as u8;
            key.labels += 1;
            for &b in label {
                key.buf[key.len] = b.to_ascii_lowercase();
                key.len += 1;
            }
        }
        key
    }

    /// The suffix starting at label `i` (0 is the whole name).
    fn suffix(&self, i: usize) -> &[u8] {
        &self.buf[usize::from(self.starts[i])..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[(&str, Tag)]) -> DomainSet {
        let mut b = DomainSetBuilder::with_capacity(names.len());
        for (n, t) in names {
            b.insert(n.as_bytes(), *t, |_| false);
        }
        b.build()
    }

    fn matches(s: &DomainSet, q: &str) -> Vec<Tag> {
        let name = Name::from_ascii(q).unwrap();
        s.matches(&NameKey::new(&name)).collect()
    }

    #[test]
    fn matches_name_and_subdomains_label_aligned() {
        let s = set(&[("mistat.xiaomi.com", 1), ("tracking.miui.com", 2)]);
        assert_eq!(matches(&s, "mistat.xiaomi.com"), vec![1]);
        assert_eq!(matches(&s, "a.b.mistat.xiaomi.com"), vec![1]);
        assert_eq!(matches(&s, "xmistat.xiaomi.com"), Vec::<Tag>::new());
        assert_eq!(matches(&s, "xiaomi.com"), Vec::<Tag>::new());
        assert_eq!(
            matches(&s, "mistat.xiaomi.com.evil.example"),
            Vec::<Tag>::new()
        );
    }

    #[test]
    fn case_and_final_dot_do_not_matter() {
        let s = set(&[("tracking.miui.com", 7)]);
        assert_eq!(matches(&s, "TRACKING.Miui.COM."), vec![7]);
        assert_eq!(matches(&s, "tracking.miui.com"), vec![7]);
        assert_eq!(matches(&s, "X.Tracking.MIUI.com."), vec![7]);
    }

    #[test]
    fn reports_every_covering_entry_most_specific_first() {
        let s = set(&[("xiaomi.com", 1), ("api.xiaomi.com", 2)]);
        assert_eq!(matches(&s, "a.api.xiaomi.com"), vec![2, 1]);
    }

    #[test]
    fn duplicates_keep_one_entry_and_ask_which_tag_wins() {
        let mut b = DomainSetBuilder::with_capacity(1);
        assert_eq!(b.insert(b"a.example", 1, |_| unreachable!()), Inserted::New);
        assert_eq!(b.insert(b"a.example", 1, |_| true), Inserted::Kept(1));
        assert_eq!(b.insert(b"a.example", 2, |_| false), Inserted::Kept(1));
        assert_eq!(
            b.insert(b"a.example", 3, |old| old == 1),
            Inserted::Replaced(1)
        );
        let s = b.build();
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(b"a.example"), Some(3));
    }

    #[test]
    fn grows_past_its_first_capacity_and_finds_everything() {
        let mut b = DomainSetBuilder::with_capacity(0);
        for i in 0..50_000u32 {
            b.insert(
                format!("host{i}.example{}.net", i % 97).as_bytes(),
                (i % 500) as Tag,
                |_| false,
            );
        }
        let s = b.build();
        assert_eq!(s.len(), 50_000);
        for i in (0..50_000u32).step_by(7) {
            assert_eq!(
                s.get(format!("host{i}.example{}.net", i % 97).as_bytes()),
                Some((i % 500) as Tag)
            );
        }
        assert_eq!(s.get(b"host1.example2.net"), None);
        // well under the ~80+ bytes per entry of a HashSet<String>
        assert!(
            s.heap_bytes() / s.len() < 48,
            "{} bytes per entry",
            s.heap_bytes() / s.len()
        );
    }

    #[test]
    fn empty_set_and_root_query() {
        let s = DomainSet::default();
        assert_eq!(s.len(), 0);
        assert_eq!(matches(&s, "."), Vec::<Tag>::new());
        assert_eq!(matches(&s, "com"), Vec::<Tag>::new());
    }
}

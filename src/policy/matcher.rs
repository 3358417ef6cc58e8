//! `DomainSet`: the compact, immutable set of listed names that every query is matched against.
//!
//! A listed name matches itself and every subdomain, label-aligned: `mistat.xiaomi.com` matches
//! `a.b.mistat.xiaomi.com` but not `xmistat.xiaomi.com`; an `Exact` entry matches itself only.
//! One name may be held twice, as an exact and as a subdomain entry (and once more per list
//! that excepts it): the copies sit in the same probe run, so a lookup finds them all at once. A query is matched by looking up each of
//! its label-aligned suffixes, most specific first, so the cost is a handful of hash probes
//! whatever the size of the lists.
//!
//! Memory: entries live back to back in one byte arena, indexed by an open-addressing table of
//! `u32` offsets, and each entry stores only its first label plus the id of its (shared) parent
//! name, its header in variable-length integers. A million-name list costs about 20 MiB, not the
//! ~100 bytes per name of a `HashSet<String>`, so the old and the new policy fit side by side
//! during a reload (where the daemon's peak memory is: see `Slots` and `ENTRY_HEADER`).

use std::hash::Hasher;

use hickory_proto::rr::Name;
use rustc_hash::FxHasher;

/// A name's longest wire form is 255 bytes; its text form without the final dot is at most 253.
const MAX_NAME: usize = 255;
/// A table is grown when it is more than this full (in 1/16ths), to keep probe runs short.
const MAX_LOAD_16THS: usize = 10;
/// Entry layout: `[label length][tag field: varint][parent id + 1: varint][first label]`
/// (LEB128 varints; parent id + 1 is 0 for a one-label name). Fixed `u16` and `u32` fields
/// took 7 bytes a name; most names have a tag under 32 and a parent stored early (a list's
/// names share few parents), so the header is mostly 3 or 4 bytes: with 1M names, 17 -> 14 MiB
/// of entries, held twice while a reload builds the new set beside the old one.
const ENTRY_HEADER: usize = 1 + 3 + 5;

/// A tag carried by each entry: the index of the list it came from.
pub type Tag = u16;

/// The highest tag: an entry's tag field is `tag << 2 | kind`, at most 16 bits, so telling
/// exact from subdomain entries costs no memory.
pub const MAX_TAG: Tag = 0x3fff;
const KIND_BITS: u32 = 2;

pub use crate::lists::formats::Kind;

fn kind_bits(kind: Kind) -> u16 {
    match kind {
        Kind::Subdomains => 0,
        Kind::Exact => 1,
        Kind::Except => 2,
    }
}

fn kind_of(field: u16) -> Kind {
    match field & ((1 << KIND_BITS) - 1) {
        1 => Kind::Exact,
        2 => Kind::Except,
        _ => Kind::Subdomains,
    }
}

fn tag_of(field: u16) -> Tag {
    field >> KIND_BITS
}

fn field_of(tag: Tag, kind: Kind) -> u16 {
    tag << KIND_BITS | kind_bits(kind)
}

/// Writes `value` as a LEB128 varint (7 bits a byte, low first; the high bit says another
/// follows) at the start of `out` (5 bytes are always enough), and returns its length.
fn put_varint(value: u32, out: &mut [u8]) -> usize {
    let (mut v, mut n) = (value, 0);
    loop {
        let more = v >= 0x80;
        out[n] = (v as u8 & 0x7f) | if more { 0x80 } else { 0 };
        n += 1;
        v >>= 7;
        if !more {
            return n;
        }
    }
}

/// The varint at the start of `bytes` and its length. Only reads what `put_varint` wrote.
fn get_varint(bytes: &[u8]) -> (u32, usize) {
    let (mut v, mut n) = (0u32, 0);
    while let Some(&b) = bytes.get(n) {
        v |= u32::from(b & 0x7f) << (7 * n);
        n += 1;
        if b < 0x80 || n == 5 {
            break;
        }
    }
    (v, n)
}

/// Zeroed memory for the matcher's big tables, mapped straight from the kernel instead of taken
/// from malloc, so that dropping the old policy after a reload gives its pages back at once.
/// Measured with 1M names: through glibc's malloc, peak RSS crept from 62 to 89 MiB over six
/// reloads (after the first big free glibc raises its mmap threshold, later tables come from
/// the heap, and freed heap pages mostly stay); mapped, it stays at the first reload's peak.
/// Falls back to the heap if the kernel refuses a mapping.
enum Block {
    Mapped(memmap2::MmapMut),
    Heap(Box<[u8]>),
}

impl Block {
    fn zeroed(len: usize) -> Self {
        match memmap2::MmapMut::map_anon(len.max(1)) {
            Ok(map) => Self::Mapped(map),
            Err(_) => Self::Heap(vec![0; len].into_boxed_slice()),
        }
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Heap(h) => h,
        }
    }
}

impl std::ops::DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Heap(h) => h,
        }
    }
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} bytes)", self.len())
    }
}

/// An open-addressing table of `u32`, in a `Block`, linear probing. A slot holds an offset + 1
/// (0 is empty) in its low `OFFSET_BITS` and a few bits of the hash of the name stored there
/// above them. Its length is what the entries need at `MAX_LOAD_16THS`, not rounded up to a
/// power of two (a hash is mapped onto it by multiply-shift): with 1M names, 1.6M slots
/// (6.1 MiB) where the next power of two took 8 MiB, twice over during a reload. The fuller table
/// has longer probe runs, but the hash bits let a probe skip 7 in 8 of the other names' slots
/// without reading their entry (a cache miss each, most of a lookup's cost), so a lookup reads
/// fewer entries than the emptier table without them did.
#[derive(Debug)]
struct Slots {
    block: Block,
    len: usize,
}

impl Slots {
    fn new(len: usize) -> Self {
        Self {
            block: Block::zeroed(len * 4),
            len,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> u32 {
        let b = &self.block[i * 4..i * 4 + 4];
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    fn set(&mut self, i: usize, value: u32) {
        self.block[i * 4..i * 4 + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// The slot where probing for `hash` (32 bits) starts.
    fn home(&self, hash: usize) -> usize {
        ((hash as u64 * self.len as u64) >> 32) as usize
    }

    /// The slot after `i`, wrapping around.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.len { 0 } else { i + 1 }
    }
}

/// Bits of a slot for the offset + 1; the rest hold hash bits. Arenas are limited to the
/// offsets these bits can address (512 MiB, some 30 million names).
const OFFSET_BITS: u32 = 29;
const OFFSET_MASK: u32 = (1 << OFFSET_BITS) - 1;

/// What a slot holds for the record at `off` whose name hashes to `hash`.
fn slot_value(off: u32, hash: usize) -> u32 {
    (hash as u32) << OFFSET_BITS | (off + 1)
}

/// The offset of the record a (non-empty) slot holds.
fn slot_offset(slot: u32) -> usize {
    (slot & OFFSET_MASK) as usize - 1
}

/// Whether the name in a (non-empty) slot may be one that hashes to `hash` (if not, it surely
/// is another name, and its entry need not be read).
fn slot_may_be(slot: u32, hash: usize) -> bool {
    (slot ^ (hash as u32) << OFFSET_BITS) <= OFFSET_MASK
}

/// Byte storage in fixed 1 MiB chunks. A chunk never moves or grows once allocated, so
/// building a big set never copies it (a growing `Vec` would, briefly doubling its memory while
/// the old policy is still alive). Pages of a chunk that are never written take no memory.
#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Chunk>,
}

#[derive(Debug)]
struct Chunk {
    block: Block,
    len: usize,
}

const CHUNK_BITS: u32 = 20;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Offsets are stored + 1 in `OFFSET_BITS`, so the last chunk index must leave room.
const MAX_CHUNKS: usize = (1 << (OFFSET_BITS - CHUNK_BITS)) - 1;

impl Arena {
    /// Appends `parts` as one record; `None` when the arena is full (`MAX_CHUNKS`).
    fn push(&mut self, parts: &[&[u8]]) -> Option<u32> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let room = self.chunks.last().map_or(0, |c| CHUNK - c.len);
        if room < len {
            if self.chunks.len() >= MAX_CHUNKS {
                return None;
            }
            self.chunks.push(Chunk {
                block: Block::zeroed(CHUNK),
                len: 0,
            });
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let off = (index << CHUNK_BITS) | chunk.len;
        for part in parts {
            chunk.block[chunk.len..chunk.len + part.len()].copy_from_slice(part);
            chunk.len += part.len();
        }
        Some(off as u32)
    }

    /// The bytes from `off` to the end of its chunk's records.
    fn at(&self, off: usize) -> &[u8] {
        let chunk = &self.chunks[off >> CHUNK_BITS];
        &chunk.block[off & (CHUNK - 1)..chunk.len]
    }

    fn at_mut(&mut self, off: usize) -> &mut [u8] {
        let chunk = &mut self.chunks[off >> CHUNK_BITS];
        &mut chunk.block[off & (CHUNK - 1)..chunk.len]
    }

    /// Bytes in use (the untouched tail of the last chunk takes no memory).
    fn bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

/// Each entry stores its first label and the id of its parent name (everything after the first
/// label), and each distinct parent is stored once. Big lists are mostly many names under few
/// parents (`t1.tracker.example`, `t2.tracker.example`, ...), so this halves their size.
#[derive(Debug)]
pub struct DomainSet {
    entries: Arena,
    /// Distinct parent names, `[length][bytes]`; an entry's parent id is an offset here.
    parents: Arena,
    /// Offset + 1 of an entry in `entries`; 0 is an empty slot.
    slots: Slots,
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

    /// Bytes held, for the memory figures in logs and docs.
    pub fn heap_bytes(&self) -> usize {
        self.entries.bytes() + self.parents.bytes() + self.slots.len() * 4
    }

    /// The tag of the subdomain entry of exactly this (normalised, lower-case, no final dot)
    /// name, or else of its exact entry.
    pub fn get(&self, name: &[u8]) -> Option<Tag> {
        let mut found = None;
        self.visit_name(name, |tag, kind| match (kind, found) {
            (Kind::Subdomains, None | Some((_, Kind::Exact))) => found = Some((tag, kind)),
            (Kind::Exact, None) => found = Some((tag, kind)),
            _ => {}
        });
        found.map(|(tag, _)| tag)
    }

    /// Tags of every listed name that covers `key` (exceptions left out), from the most
    /// specific (the name itself) to the least (its top-level label).
    pub fn matches(&self, key: &NameKey) -> impl Iterator<Item = Tag> + use<> {
        let mut tags = Vec::new();
        self.visit(key, |tag, kind| {
            if kind != Kind::Except {
                tags.push(tag);
            }
        });
        tags.into_iter()
    }

    /// Calls `f(tag, kind)` for every entry that covers `key`, most specific first: the name's
    /// own entries of every kind, then the subdomain and exception entries of its parents.
    /// Allocates nothing (the hot path).
    pub fn visit(&self, key: &NameKey, mut f: impl FnMut(Tag, Kind)) {
        for i in 0..key.labels {
            self.visit_name(key.suffix(i), |tag, kind| {
                if i == 0 || kind != Kind::Exact {
                    f(tag, kind);
                }
            });
        }
    }

    fn visit_name(&self, name: &[u8], mut f: impl FnMut(Tag, Kind)) {
        let hash = hash(name);
        let mut i = self.slots.home(hash);
        loop {
            match self.slots.get(i) {
                0 => return,
                s if slot_may_be(s, hash) => {
                    let entry = entry_at(&self.entries, slot_offset(s));
                    if entry.is(&self.parents, name) {
                        f(tag_of(entry.field), kind_of(entry.field));
                    }
                }
                _ => {}
            }
            i = self.slots.next(i);
        }
    }
}

pub struct DomainSetBuilder {
    entries: Arena,
    parents: Arena,
    /// Offset + 1 of a parent in `parents`, to store each parent once; dropped by `build`.
    parent_slots: Slots,
    parent_count: usize,
    slots: Slots,
    len: usize,
}

impl DomainSetBuilder {
    pub fn with_capacity(entries: usize) -> Self {
        Self {
            entries: Arena::default(),
            parents: Arena::default(),
            parent_slots: Slots::new(slots_for(entries / 8)),
            parent_count: 0,
            slots: Slots::new(slots_for(entries)),
            len: 0,
        }
    }

    /// Adds `name` as a subdomain entry: see `insert_kind`.
    pub fn insert(
        &mut self,
        name: &[u8],
        tag: Tag,
        prefer_new: impl FnOnce(Tag) -> bool,
    ) -> Option<Inserted> {
        self.insert_kind(name, Kind::Subdomains, tag, |_| true, prefer_new)
    }

    /// Adds `name` (already normalised: lower-case ASCII, no final dot, at most 253 bytes) of
    /// `kind` with `tag` (at most `MAX_TAG`). If the name is there already as that kind with a
    /// tag it `shares_with`, `prefer_new(existing)` decides which tag the one entry keeps;
    /// otherwise each keeps its own entry. Exceptions are never shared (each cancels only its
    /// own list), nor are the entries of a list that has exceptions (cancelling it must not
    /// cancel another list's entry). `None` only when the set is full (512 MiB of names).
    pub fn insert_kind(
        &mut self,
        name: &[u8],
        kind: Kind,
        tag: Tag,
        shares_with: impl Fn(Tag) -> bool,
        prefer_new: impl FnOnce(Tag) -> bool,
    ) -> Option<Inserted> {
        debug_assert!(!name.is_empty() && name.len() < MAX_NAME);
        debug_assert!(tag <= MAX_TAG);
        let field = field_of(tag, kind);
        let same = |entry: &EntryRef<'_>| {
            kind_of(entry.field) == kind
                && (entry.field == field
                    || kind != Kind::Except && shares_with(tag_of(entry.field)))
        };
        let (entries, parents) = (&self.entries, &self.parents);
        let hash = hash(name);
        let found = probe(&self.slots, hash, |off| {
            let entry = entry_at(entries, off);
            entry.is(parents, name) && same(&entry)
        });
        match found {
            Ok((slot, off)) => {
                let old = tag_of(entry_at(&self.entries, off).field);
                if old != tag && prefer_new(old) {
                    self.retag(slot, off, hash, field)?;
                    Some(Inserted::Replaced(old))
                } else {
                    Some(Inserted::Kept(old))
                }
            }
            Err(slot) => {
                let (label, parent) = match name.iter().position(|&b| b == b'.') {
                    Some(dot) => (&name[..dot], self.intern_parent(&name[dot + 1..])? + 1),
                    None => (name, 0),
                };
                let off = self.push_entry(label, field, parent)?;
                self.slots.set(slot, slot_value(off, hash));
                self.len += 1;
                if self.len * 16 > self.slots.len() * MAX_LOAD_16THS {
                    self.grow();
                }
                Some(Inserted::New)
            }
        }
    }

    /// Appends an entry: `parent` is the parent's id + 1, or 0 for none.
    fn push_entry(&mut self, label: &[u8], field: u16, parent: u32) -> Option<u32> {
        let mut header = [0u8; ENTRY_HEADER];
        header[0] = label.len() as u8;
        let mut n = 1;
        n += put_varint(u32::from(field), &mut header[n..]);
        n += put_varint(parent, &mut header[n..]);
        self.entries.push(&[&header[..n], label])
    }

    /// Gives the entry at `off` (held in `slot`) the tag field `field`: in place when its varint
    /// is as long as the old one, else as a copy of the entry that `slot` then points to (the
    /// old bytes stay unused: rare, a name in two lists whose tags differ in length).
    fn retag(&mut self, slot: usize, off: usize, hash: usize, field: u16) -> Option<()> {
        let mut buf = [0; 5];
        let len = put_varint(u32::from(field), &mut buf);
        let new = &buf[..len];
        let entry = entry_at(&self.entries, off);
        if new.len() == entry.field_len {
            self.entries.at_mut(off)[1..1 + new.len()].copy_from_slice(new);
            return Some(());
        }
        let (mut label, len, parent) = ([0u8; MAX_NAME], entry.label.len(), entry.parent);
        label[..len].copy_from_slice(entry.label);
        let moved = self.push_entry(&label[..len], field, parent)?;
        self.slots.set(slot, slot_value(moved, hash));
        Some(())
    }

    /// Loads into the CPU cache what inserting `names` will read: each name's first slot, then
    /// the entry that slot points to. Done for a batch at a time, the cache misses overlap
    /// instead of queueing up one by one inside `insert`; a 1M-name build spends most of its
    /// time in those misses.
    pub fn warm<'n>(&self, names: impl Iterator<Item = &'n [u8]>) {
        const MAX: usize = 32;
        let mut first = [0u32; MAX];
        let mut n = 0;
        for (slot, name) in first.iter_mut().zip(names) {
            *slot = self.slots.get(self.slots.home(hash(name)));
            n += 1;
        }
        let mut touched = 0u32;
        for &s in first[..n].iter().filter(|&&s| s != 0) {
            touched = touched.wrapping_add(u32::from(self.entries.at(slot_offset(s))[0]));
        }
        std::hint::black_box(touched);
    }

    pub fn build(self) -> DomainSet {
        DomainSet {
            entries: self.entries,
            parents: self.parents,
            slots: self.slots,
            len: self.len,
        }
    }

    fn intern_parent(&mut self, parent: &[u8]) -> Option<u32> {
        let parent_hash = hash(parent);
        let found = probe(&self.parent_slots, parent_hash, |off| {
            parent_at(&self.parents, off) == parent
        });
        match found {
            Ok((_, off)) => Some(off as u32),
            Err(slot) => {
                let off = self.parents.push(&[&[parent.len() as u8], parent])?;
                self.parent_slots.set(slot, slot_value(off, parent_hash));
                self.parent_count += 1;
                if self.parent_count * 16 > self.parent_slots.len() * MAX_LOAD_16THS {
                    let parents = &self.parents;
                    self.parent_slots =
                        rehash(&self.parent_slots, |off| hash(parent_at(parents, off)));
                }
                Some(off)
            }
        }
    }

    fn grow(&mut self) {
        let (entries, parents) = (&self.entries, &self.parents);
        self.slots = rehash(&self.slots, |off| {
            let mut buf = [0u8; MAX_NAME];
            hash(full_name(entries, parents, off, &mut buf))
        });
    }
}

/// A table twice the size of `slots` holding the same offsets.
fn rehash(slots: &Slots, hash_of: impl Fn(usize) -> usize) -> Slots {
    let mut grown = Slots::new(slots.len() * 2);
    for s in slots.iter().filter(|&s| s != 0) {
        let mut i = grown.home(hash_of(slot_offset(s)));
        while grown.get(i) != 0 {
            i = grown.next(i);
        }
        grown.set(i, s);
    }
    grown
}

/// Slots for `entries` at the highest load allowed (plus one, so that a table is never full).
fn slots_for(entries: usize) -> usize {
    (entries * 16 / MAX_LOAD_16THS + 1).max(16)
}

fn hash(bytes: &[u8]) -> usize {
    let mut h = FxHasher::default();
    h.write(bytes);
    // Fx leaves similar names ("t1.x", "t2.x") close in the low bits the table indexes by;
    // a final multiply spreads them, keeping linear probe runs short.
    (h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

/// Linear probing from `hash`: `Ok((slot, offset))` of the entry `eq` accepts, or `Err(slot)`
/// of the empty slot where it would go.
fn probe(
    slots: &Slots,
    hash: usize,
    mut eq: impl FnMut(usize) -> bool,
) -> Result<(usize, usize), usize> {
    let mut i = slots.home(hash);
    loop {
        match slots.get(i) {
            0 => return Err(i),
            s if slot_may_be(s, hash) && eq(slot_offset(s)) => return Ok((i, slot_offset(s))),
            _ => i = slots.next(i),
        }
    }
}

/// An entry, decoded (see `ENTRY_HEADER`).
struct EntryRef<'a> {
    /// `tag << 2 | kind`.
    field: u16,
    /// Bytes of `field`'s varint (it starts right after the label length).
    field_len: usize,
    /// The parent's id + 1; 0 for none.
    parent: u32,
    label: &'a [u8],
}

fn entry_at(entries: &Arena, off: usize) -> EntryRef<'_> {
    let e = entries.at(off);
    let (field, field_len) = get_varint(&e[1..]);
    let (parent, parent_len) = get_varint(&e[1 + field_len..]);
    let start = 1 + field_len + parent_len;
    EntryRef {
        field: field as u16,
        field_len,
        parent,
        label: &e[start..start + usize::from(e[0])],
    }
}

impl EntryRef<'_> {
    fn parent<'p>(&self, parents: &'p Arena) -> Option<&'p [u8]> {
        (self.parent != 0).then(|| parent_at(parents, self.parent as usize - 1))
    }

    /// Whether this entry is `name`.
    fn is(&self, parents: &Arena, name: &[u8]) -> bool {
        let l = self.label.len();
        match self.parent(parents) {
            None => name == self.label,
            Some(parent) => {
                name.len() == l + 1 + parent.len()
                    && name[..l] == *self.label
                    && name[l] == b'.'
                    && name[l + 1..] == *parent
            }
        }
    }
}

fn parent_at(parents: &Arena, off: usize) -> &[u8] {
    let p = parents.at(off);
    &p[1..1 + p[0] as usize]
}

fn full_name<'b>(
    entries: &Arena,
    parents: &Arena,
    off: usize,
    buf: &'b mut [u8; MAX_NAME],
) -> &'b [u8] {
    let entry = entry_at(entries, off);
    let label = entry.label;
    buf[..label.len()].copy_from_slice(label);
    let mut len = label.len();
    if let Some(parent) = entry.parent(parents) {
        buf[len] = b'.';
        buf[len + 1..len + 1 + parent.len()].copy_from_slice(parent);
        len += 1 + parent.len();
    }
    &buf[..len]
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
                // A dot inside a label (`a\.b`) is not a label boundary; as a byte no listed
                // name can hold, it keeps `a\.b.com` from matching a listed `a.b.com`.
                key.buf[key.len] = if b == b'.' { 0 } else { b.to_ascii_lowercase() };
                key.len += 1;
            }
        }
        key
    }

    /// The key `new` made, from its `as_bytes()`, without the `Name`: how names recorded in
    /// wire-free form (a cached answer's CNAME targets, see `destinations`) are matched. A `.`
    /// in those bytes is always a label boundary, since `new` stores a dot inside a label as 0.
    pub fn from_key_bytes(bytes: &[u8]) -> Self {
        let mut key = Self {
            buf: [0; MAX_NAME],
            len: 0,
            starts: [0; 128],
            labels: 0,
        };
        let bytes = &bytes[..bytes.len().min(MAX_NAME)];
        key.buf[..bytes.len()].copy_from_slice(bytes);
        key.len = bytes.len();
        if !bytes.is_empty() {
            key.labels = 1; // the first label starts at 0; the root has none
            for (i, &b) in bytes.iter().enumerate() {
                if b == b'.' && key.labels < key.starts.len() {
                    key.starts[key.labels] = (i + 1) as u8; // i < MAX_NAME
                    key.labels += 1;
                }
            }
        }
        key
    }

    /// The whole name as matched: lower-case, no final dot (what patterns see).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
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
            b.insert(n.as_bytes(), *t, |_| false).unwrap();
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
        assert_eq!(
            b.insert(b"a.example", 1, |_| unreachable!()),
            Some(Inserted::New)
        );
        assert_eq!(b.insert(b"a.example", 1, |_| true), Some(Inserted::Kept(1)));
        assert_eq!(
            b.insert(b"a.example", 2, |_| false),
            Some(Inserted::Kept(1))
        );
        assert_eq!(
            b.insert(b"a.example", 3, |old| old == 1),
            Some(Inserted::Replaced(1))
        );
        let s = b.build();
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(b"a.example"), Some(3));
    }

    #[test]
    fn a_new_tag_of_another_length_moves_the_entry_and_keeps_it_findable() {
        let mut b = DomainSetBuilder::with_capacity(2);
        b.insert(b"a.example", 5, |_| false).unwrap();
        b.insert(b"b.example", 6, |_| false).unwrap();
        // 5 and 6 take one varint byte, 4000 two and MAX_TAG three
        for (new, old) in [(4000, 5), (MAX_TAG, 4000), (7, MAX_TAG)] {
            assert_eq!(
                b.insert(b"a.example", new, |_| true),
                Some(Inserted::Replaced(old))
            );
        }
        let s = b.build();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(b"a.example"), Some(7));
        assert_eq!(s.get(b"b.example"), Some(6));
        assert_eq!(matches(&s, "x.a.example"), vec![7]);
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            0xfffe,
            1 << 27,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let mut buf = [0u8; 6];
            let n = put_varint(v, &mut buf);
            assert_eq!(get_varint(&buf), (v, n), "{v:#x}");
        }
    }

    #[test]
    fn grows_past_its_first_capacity_and_finds_everything() {
        let mut b = DomainSetBuilder::with_capacity(0);
        for i in 0..50_000u32 {
            b.insert(
                format!("host{i}.example{}.net", i % 97).as_bytes(),
                (i % 500) as Tag,
                |_| false,
            )
            .unwrap();
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
    fn an_escaped_dot_is_not_a_label_boundary() {
        let s = set(&[("a.b.com", 1), ("b.com", 2)]);
        // one label "a.b", then "com": not the listed a.b.com, nor under b.com
        assert_eq!(matches(&s, "a\\.b.com."), Vec::<Tag>::new());
        assert_eq!(matches(&s, "x.a\\.b.com."), Vec::<Tag>::new());
        assert_eq!(matches(&s, "a.b.com."), vec![1, 2]);
    }

    fn kinds(s: &DomainSet, q: &str) -> Vec<(Tag, Kind)> {
        let mut got = Vec::new();
        s.visit(&NameKey::new(&Name::from_ascii(q).unwrap()), |t, k| {
            got.push((t, k))
        });
        got
    }

    #[test]
    fn exact_entries_match_only_the_name_and_share_it_with_other_kinds() {
        let mut b = DomainSetBuilder::with_capacity(4);
        let all = |_| true;
        for (kind, tag) in [
            (Kind::Exact, 1),
            (Kind::Subdomains, 2),
            (Kind::Except, 3),
            (Kind::Except, 4),
        ] {
            b.insert_kind(b"a.example", kind, tag, all, |_| false)
                .unwrap();
        }
        // the same kind again is the same entry, unless a list keeps its own
        assert_eq!(
            b.insert_kind(b"a.example", Kind::Exact, MAX_TAG, all, |_| true),
            Some(Inserted::Replaced(1))
        );
        assert_eq!(
            b.insert_kind(b"a.example", Kind::Subdomains, 5, |_| false, |_| true),
            Some(Inserted::New)
        );
        let s = b.build();
        assert_eq!(s.len(), 5);
        let mut own = kinds(&s, "a.example");
        own.sort_by_key(|(t, _)| *t);
        assert_eq!(
            own,
            [
                (2, Kind::Subdomains),
                (3, Kind::Except),
                (4, Kind::Except),
                (5, Kind::Subdomains),
                (MAX_TAG, Kind::Exact)
            ]
        );
        let mut under = kinds(&s, "x.a.example");
        under.sort_by_key(|(t, _)| *t);
        assert_eq!(
            under,
            [
                (2, Kind::Subdomains),
                (3, Kind::Except),
                (4, Kind::Except),
                (5, Kind::Subdomains)
            ]
        );
        assert_eq!(s.get(b"a.example"), Some(2));
    }

    #[test]
    fn empty_set_and_root_query() {
        let s = DomainSet::default();
        assert_eq!(s.len(), 0);
        assert_eq!(matches(&s, "."), Vec::<Tag>::new());
        assert_eq!(matches(&s, "com"), Vec::<Tag>::new());
    }
}

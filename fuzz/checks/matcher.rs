//! `DomainSet` against a reference model: a `HashMap` from listed name to tag.
//!
//! Input: lines (at most 64). A line `name` or `name=TAG` is normalised with `normalize_domain`
//! and, if accepted, inserted with TAG (default: the line's index); on a duplicate the higher tag
//! wins. A line `?query` is only looked up. Every line is also looked up as a query name, made
//! both with `Name::from_ascii` (escapes allowed) and from its raw dot-separated labels (as a
//! name off the wire can be); forms that are not a valid name are skipped. Each inserted name is
//! also looked up as written, upper-cased, with a final dot and with a subdomain label in front.
//! If the first line is `#bulk`, 16,000 generated names with 63-byte first labels (over 1 MiB of
//! entries) are inserted first, so the entries that follow land past the set's first arena
//! chunk; the model knows those names by their pattern instead of storing them.
//!
//! Checked: `insert`'s outcome, `len`, `get` of every inserted name, and that `matches` returns
//! exactly the model's tags, most specific first. An entry E covers a query whose labels are E's
//! labels or end with them, ignoring ASCII case; for names without escaped dots that is "query ==
//! E or query ends with '.' + E".

use std::{
    collections::{HashMap, HashSet},
    sync::OnceLock,
};

use hickory_proto::rr::Name;
use hushd::{
    lists::normalize_domain,
    policy::matcher::{DomainSet, DomainSetBuilder, Inserted, MAX_TAG, NameKey, Tag},
};

const MAX_LINES: usize = 64;
const BULK: u32 = 16_000;
const BULK_TAG: Tag = 9999;

struct Model {
    entries: HashMap<String, Tag>,
    tags: HashSet<Tag>,
    bulk: bool,
}

impl Model {
    fn get(&self, name: &str) -> Option<Tag> {
        let bulk = self.bulk && is_bulk(name);
        self.entries.get(name).copied().or(bulk.then_some(BULK_TAG))
    }

    fn len(&self) -> usize {
        let listed_bulk = self.entries.keys().filter(|n| is_bulk(n)).count();
        self.entries.len()
            + if self.bulk {
                BULK as usize - listed_bulk
            } else {
                0
            }
    }
}

fn bulk_name(i: u32) -> String {
    format!("{:b<58}{i:05}.bulk{}", "", i % 16)
}

/// Made once per process: formatting them for every input would be most of the bulk cost.
fn bulk_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| (0..BULK).map(bulk_name).collect())
}

fn is_bulk(name: &str) -> bool {
    let Some((label, parent)) = name.split_once('.') else {
        return false;
    };
    label.len() == 63
        && label.as_bytes()[..58].iter().all(|&b| b == b'b')
        && label.as_bytes()[58..].iter().all(u8::is_ascii_digit)
        && label[58..]
            .parse::<u32>()
            .is_ok_and(|i| i < BULK && parent == format!("bulk{}", i % 16))
}

/// One input: panics if hushd breaks a promise the module comment lists.
pub fn run(data: &[u8]) {
    let bulk = data.starts_with(b"#bulk");
    let mut inserts: Vec<(String, Tag)> = Vec::new();
    let mut queries: Vec<&str> = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').take(MAX_LINES).enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(q) = line.strip_prefix('?') {
            queries.push(q);
            continue;
        }
        let (name, tag) = match line.rsplit_once('=') {
            // a tag is at most MAX_TAG: an entry's tag field keeps two bits for its kind
            Some((n, t)) => match t.parse::<Tag>() {
                Ok(t) => (n, t & MAX_TAG),
                Err(_) => (line, i as Tag),
            },
            None => (line, i as Tag),
        };
        queries.push(name);
        if let Ok(n) = normalize_domain(name) {
            inserts.push((n, tag));
        }
    }

    let mut model = Model {
        entries: HashMap::new(),
        tags: inserts.iter().map(|&(_, t)| t).collect(),
        bulk,
    };
    // A small first capacity, so that most inputs make the tables grow.
    let mut builder = if bulk {
        DomainSetBuilder::with_capacity(BULK as usize + inserts.len())
    } else {
        DomainSetBuilder::with_capacity(inserts.len() / 4)
    };
    if bulk {
        model.tags.insert(BULK_TAG);
        for name in bulk_names() {
            let got = builder.insert(name.as_bytes(), BULK_TAG, |_| false);
            assert_eq!(got, Some(Inserted::New), "bulk insert {name}");
        }
    }
    for (name, tag) in &inserts {
        let tag = *tag;
        let want = match model.get(name) {
            None => Inserted::New,
            Some(old) if old != tag && tag > old => Inserted::Replaced(old),
            Some(old) => Inserted::Kept(old),
        };
        let got = builder.insert(name.as_bytes(), tag, |old| tag > old);
        assert_eq!(got, Some(want), "insert({name:?}, {tag})");
        if !matches!(want, Inserted::Kept(_)) {
            model.entries.insert(name.clone(), tag);
        }
    }
    let set = builder.build();
    assert_eq!(set.len(), model.len());
    assert_eq!(set.is_empty(), model.len() == 0);

    for (name, _) in &inserts {
        let tag = model.get(name).expect("inserted");
        assert_eq!(set.get(name.as_bytes()), Some(tag), "get({name:?})");
        let own =
            wire_name(name).unwrap_or_else(|| panic!("normalised {name:?} is not a DNS name"));
        let got = check_query(&set, &model, &own);
        assert_eq!(got.first(), Some(&tag), "{name:?} is not matched by itself");
        for q in [
            name.to_ascii_uppercase(),
            format!("{name}."),
            format!("x.{name}"),
        ]
        .into_iter()
        .filter(|q| q.trim_end_matches('.').len() <= 253)
        {
            let q = wire_name(&q).unwrap_or_else(|| panic!("{q:?} is not a DNS name"));
            assert!(!check_query(&set, &model, &q).is_empty(), "{q} unmatched");
        }
    }
    if bulk {
        for i in (0..BULK).step_by(97) {
            let name = bulk_name(i);
            assert!(is_bulk(&name), "{name}");
            assert_eq!(set.get(name.as_bytes()), model.get(&name), "get({name:?})");
        }
    }
    for q in queries {
        // As a client could type it (escapes such as `\.` and `\065` allowed)...
        if let Ok(q) = Name::from_ascii(q) {
            check_query(&set, &model, &q);
        }
        // ...and as it could arrive on the wire: labels of any bytes.
        if let Some(q) = wire_name(q) {
            check_query(&set, &model, &q);
        }
        assert_eq!(set.get(q.as_bytes()), model.get(q), "get({q:?})");
    }
}

/// Looks `query` up in the set and in the model, checks they agree, and returns the tags.
fn check_query(set: &DomainSet, model: &Model, query: &Name) -> Vec<Tag> {
    let got: Vec<Tag> = set.matches(&NameKey::new(query)).collect();
    for t in &got {
        assert!(
            model.tags.contains(t),
            "{query}: tag {t} was never inserted"
        );
    }
    let labels: Vec<&[u8]> = query.iter().collect();
    if labels.iter().any(|l| l.contains(&b'.')) && !strict_labels() {
        // A label holding a '.' byte (`a\.b.com`) is matched by its text, dots and all; see
        // README.md ("Known behaviour"). Only the tags are checked for such names by default.
        return got;
    }
    // Label-aligned suffixes, whole name first. A listed name has no '.' inside a label, so no
    // suffix that includes such a label can equal one.
    let want: Vec<Tag> = (0..labels.len())
        .filter(|&i| !labels[i..].iter().any(|l| l.contains(&b'.')))
        .filter_map(|i| {
            let suffix = labels[i..].join(&b'.').to_ascii_lowercase();
            let suffix = String::from_utf8(suffix).ok()?;
            model.get(&suffix)
        })
        .collect();
    assert_eq!(got, want, "matches({query})");
    got
}

/// `text` split at its dots into raw labels, as a name decoded from a query packet can have them
/// (hickory's `Name::from_ascii` rejects some of those, such as a label starting with '-').
fn wire_name(text: &str) -> Option<Name> {
    let text = text.strip_suffix('.').unwrap_or(text);
    if text.is_empty() {
        return Some(Name::root());
    }
    Name::from_labels(text.split('.').map(str::as_bytes)).ok()
}

/// `HUSHD_FUZZ_STRICT_LABELS=1` holds names with escaped dots to the label-wise model too.
fn strict_labels() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("HUSHD_FUZZ_STRICT_LABELS").is_some_and(|v| v == "1"))
}

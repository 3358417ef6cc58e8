//! Where an answer address lies: its country and its network (autonomous system), read from the
//! MaxMind DB files `[egress] country_db` and `asn_db` name, and which lists' `countries` and
//! `asns` that place is in.
//!
//! Layouts read: GeoLite2 / GeoIP2 and DB-IP (`country.iso_code`; `autonomous_system_number`,
//! `autonomous_system_organization`) and ip-location-db's (the iptoasn-derived and others:
//! a top-level `country_code`; the same ASN fields). Which country field a database uses is
//! decided once, when it is opened, from its first records; a database with neither (an ASN
//! database given as `country_db`, say) is an error then, not a silent no-op.
//!
//! A database is read whole into an anonymous read-only mapping rather than mapped from its
//! file. Mapping the file would need `unsafe` (the crate forbids it) for a real reason: an admin
//! refreshing the file in place (`curl -o`, `cp`) would change or truncate memory hushd reads,
//! which ends in SIGBUS, a crash of the network's DNS. A private copy costs the file's size
//! (GeoLite2-Country ~9 MB, iptoasn-country ~5 MB) and goes back to the kernel when the last
//! policy holding it is dropped. A reload whose databases have not changed (same file, size,
//! mtime and ctime) shares the copy the running policy holds instead of reading it again, so a
//! list edit costs neither the read nor a second copy.
//!
//! Each policy holds its databases by `Arc`: a query that loaded a policy keeps that policy's
//! readers to its end, whatever a reload swaps in meanwhile.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use maxminddb::{PathElement, Reader, WithinOptions};
use serde::de::IgnoredAny;

use super::{Via, matcher::Tag};
use crate::{config::EgressConfig, diagnostic::LoadError, lists::ListFile};

/// An ISO 3166-1 alpha-2 code, upper-case, as the databases and the lists write it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, either case; anything else (a database's `"--"`) is not a country.
    pub fn parse(code: &str) -> Option<Self> {
        match *code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Two ASCII letters, checked in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a database says of an address, as far as lists can match it: the lists' part of a
/// lookup, small and `Copy` so it can be kept beside a cached answer (valid while
/// `Geo::generation` is the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<CountryCode>,
    pub asn: Option<u32>,
}

/// What the databases say of an address, for `explain` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Place {
    pub country: Option<CountryCode>,
    pub asn: Option<u32>,
    pub org: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.country {
            Some(c) => write!(f, "country {c}")?,
            None => f.write_str("country unknown")?,
        }
        match (self.asn, &self.org) {
            (Some(n), Some(org)) => write!(f, ", AS{n} ({org})"),
            (Some(n), None) => write!(f, ", AS{n}"),
            (None, _) => f.write_str(", network unknown"),
        }
    }
}

/// Which database a path was given as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Country,
    Asn,
}

impl DbKind {
    fn key(self) -> &'static str {
        match self {
            Self::Country => "country_db",
            Self::Asn => "asn_db",
        }
    }
}

/// Where a country database keeps the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CountryField {
    /// GeoLite2 / GeoIP2 / DB-IP: `country.iso_code`.
    IsoCode,
    /// ip-location-db: `country_code`.
    CountryCode,
}

const ISO_CODE: [PathElement<'static>; 2] =
    [PathElement::Key("country"), PathElement::Key("iso_code")];
const COUNTRY_CODE: [PathElement<'static>; 1] = [PathElement::Key("country_code")];
const ASN: [PathElement<'static>; 1] = [PathElement::Key("autonomous_system_number")];
const ORG: [PathElement<'static>; 1] = [PathElement::Key("autonomous_system_organization")];

/// Records looked at when a database is opened to learn its layout.
const SAMPLE: usize = 64;

/// A file's identity: a database whose file still has the same one is not read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One opened, checked database.
pub struct GeoDb {
    path: PathBuf,
    kind: DbKind,
    identity: FileIdentity,
    /// Unique per opening, for `Geo::generation`.
    id: u64,
    /// Where a country database keeps the code (`None` in an ASN database).
    field: Option<CountryField>,
    reader: Reader<memmap2::Mmap>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("type", &self.reader.metadata().database_type)
            .finish_non_exhaustive()
    }
}

/// Databases some policy still holds, so a reload can share an unchanged one.
static OPEN: Mutex<Vec<Weak<GeoDb>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl GeoDb {
    /// Opens `path` as a `kind` database, or shares the copy a living policy holds if the file
    /// has not changed since. Errors name the file and the `[egress]` key.
    pub fn open(path: &Path, kind: DbKind) -> Result<Arc<Self>, LoadError> {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let identity = FileIdentity::of(&meta);
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|w| w.strong_count() > 0);
        let shared = open
            .iter()
            .filter_map(Weak::upgrade)
            .find(|db| db.path == path && db.kind == kind && db.identity == identity);
        if let Some(db) = shared {
            return Ok(db);
        }
        let db = Arc::new(Self::read(path, kind, identity)?);
        open.push(Arc::downgrade(&db));
        Ok(db)
    }

    fn read(path: &Path, kind: DbKind, identity: FileIdentity) -> Result<Self, LoadError> {
        use std::io::Read;

        let error = |message: String| LoadError::File {
            path: path.to_path_buf(),
            message: format!("[egress] {}: {message}", kind.key()),
        };
        let read_error = |source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = usize::try_from(identity.len).map_err(|_| error("too large".into()))?;
        if len == 0 {
            return Err(error("an empty file, not a MaxMind DB".into()));
        }
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let mut copy = memmap2::MmapMut::map_anon(len).map_err(read_error)?;
        file.read_exact(&mut copy).map_err(read_error)?;
        let now = file.metadata().map_err(read_error)?;
        if FileIdentity::of(&now) != identity {
            // Being written: the write's end is one more change, which reloads again.
            return Err(error(
                "the file changed while it was read; it is read again on its next change".into(),
            ));
        }
        let copy = copy.make_read_only().map_err(read_error)?;
        let reader = Reader::from_source(copy)
            .map_err(|e| error(format!("not a readable MaxMind DB: {e}")))?;
        let field = check(&reader, kind).map_err(error)?;
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            identity,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            field,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `[egress]` key it was given as: `country_db` or `asn_db`.
    pub fn key(&self) -> &'static str {
        self.kind.key()
    }

    /// The database's own type (`GeoLite2-Country`, `DBIP-Country-Lite`, ...).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Which field holds the country (for `hushd check`), or `None` for an ASN database.
    pub fn country_field(&self) -> Option<&'static str> {
        self.field.map(|field| match field {
            CountryField::IsoCode => "country.iso_code",
            CountryField::CountryCode => "country_code",
        })
    }

    fn country(&self, addr: IpAddr) -> Option<CountryCode> {
        // An error is an IPv6 address in an IPv4-only database: that database knows nothing of it.
        let found = self.reader.lookup(addr).ok()?;
        let code: Option<&str> = match self.field? {
            CountryField::IsoCode => found.decode_path(&ISO_CODE),
            CountryField::CountryCode => found.decode_path(&COUNTRY_CODE),
        }
        .ok()
        .flatten();
        code.and_then(CountryCode::parse)
    }

    fn asn(&self, addr: IpAddr) -> Option<u32> {
        let found = self.reader.lookup(addr).ok()?;
        found.decode_path(&ASN).ok().flatten()
    }

    fn org(&self, addr: IpAddr) -> Option<String> {
        let found = self.reader.lookup(addr).ok()?;
        found.decode_path(&ORG).ok().flatten()
    }
}

/// Walks the whole database once: every network's record is read (so a damaged tree or data
/// section is an error now, not addresses silently unknown later), and the first records with
/// data tell what it holds: an error if none holds what `kind` needs (the wrong database for
/// the key). The crate's own `verify` is stricter than the format and rejects real databases
/// (ip-location-db's have an empty `description`), so it is not used.
fn check(reader: &Reader<memmap2::Mmap>, kind: DbKind) -> Result<Option<CountryField>, String> {
    let damaged = |e: maxminddb::MaxMindDbError| format!("a damaged MaxMind DB: {e}");
    let (mut iso, mut code, mut asn) = (false, false, false);
    let mut sampled = 0;
    let mut records = std::collections::HashSet::new();
    // A tree of n nodes has at most n + 1 leaves; more means a cycle.
    let most = (reader.metadata().node_count as usize).saturating_mul(2) + 2;
    let networks = reader
        .networks(WithinOptions::default().include_networks_without_data())
        .map_err(damaged)?;
    for (i, found) in networks.enumerate() {
        if i > most {
            return Err("a damaged MaxMind DB: its search tree has a cycle".into());
        }
        let found = found.map_err(damaged)?;
        let Some(offset) = found.offset() else {
            continue;
        };
        if !records.insert(offset) {
            continue;
        }
        found.decode::<IgnoredAny>().map_err(damaged)?;
        if sampled < SAMPLE {
            sampled += 1;
            let has = |path: &[PathElement<'_>]| {
                matches!(found.decode_path::<IgnoredAny>(path), Ok(Some(_)))
            };
            iso |= has(&ISO_CODE);
            code |= has(&COUNTRY_CODE);
            asn |= has(&ASN);
        }
    }
    let database_type = &reader.metadata().database_type;
    match kind {
        DbKind::Country if iso => Ok(Some(CountryField::IsoCode)),
        DbKind::Country if code => Ok(Some(CountryField::CountryCode)),
        DbKind::Country => Err(format!(
            "not a country database: its records have no country.iso_code or country_code (its type is {database_type:?})"
        )),
        DbKind::Asn if asn => Ok(None),
        DbKind::Asn => Err(format!(
            "not an ASN database: its records have no autonomous_system_number (its type is {database_type:?})"
        )),
    }
}

/// The databases and the lists' `countries` and `asns`: which lists an address's place is in.
#[derive(Debug, Default)]
pub struct Geo {
    country: Option<Arc<GeoDb>>,
    asn: Option<Arc<GeoDb>>,
    /// Sorted, so a country's lists are one range.
    by_country: Vec<(CountryCode, Tag)>,
    by_asn: Vec<(u32, Tag)>,
}

/// Collects the lists' `countries` and `asns`; `build` opens the databases they need.
#[derive(Debug, Default)]
pub struct GeoBuilder {
    by_country: Vec<(CountryCode, Tag)>,
    by_asn: Vec<(u32, Tag)>,
    /// Lists with `countries`, and with `asns`, for the error when no database is configured.
    with_countries: Vec<PathBuf>,
    with_asns: Vec<PathBuf>,
}

impl GeoBuilder {
    pub fn add_list(&mut self, tag: Tag, list: &ListFile) {
        let countries = list.countries.iter().filter_map(|c| CountryCode::parse(c));
        self.by_country.extend(countries.map(|c| (c, tag)));
        self.by_asn.extend(list.asns.iter().map(|&n| (n, tag)));
        if !list.countries.is_empty() {
            self.with_countries.push(list.path.clone());
        }
        if !list.asns.is_empty() {
            self.with_asns.push(list.path.clone());
        }
    }

    /// Opens the configured databases. Every configured database must open and hold what its
    /// key says, used or not; a list with `countries` (`asns`) needs `country_db` (`asn_db`).
    pub fn build(mut self, egress: &EgressConfig, config: &Path) -> Result<Geo, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut open = |path: &Option<PathBuf>, kind, lists: &[PathBuf], what: &str| {
            let Some(path) = path else {
                for list in lists {
                    errors.push(LoadError::File {
                        path: list.clone(),
                        message: format!(
                            "{what} needs [egress] {} in {}: without a database this list's {what} would never match",
                            DbKind::key(kind),
                            config.display()
                        ),
                    });
                }
                return None;
            };
            GeoDb::open(path, kind).map_err(|e| errors.push(e)).ok()
        };
        let country = open(
            &egress.country_db,
            DbKind::Country,
            &self.with_countries,
            "countries",
        );
        let asn = open(&egress.asn_db, DbKind::Asn, &self.with_asns, "asns");
        if !errors.is_empty() {
            return Err(errors);
        }
        self.by_asn.sort_unstable();
        self.by_asn.dedup();
        self.by_country.sort_unstable();
        self.by_country.dedup();
        Ok(Geo {
            country,
            asn,
            by_country: self.by_country,
            by_asn: self.by_asn,
        })
    }
}

/// The tags of the entries keyed `key` in a table sorted by key.
fn tags_of<K: Ord + Copy>(table: &[(K, Tag)], key: K) -> impl Iterator<Item = Tag> + '_ {
    let from = table.partition_point(|(k, _)| *k < key);
    table
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(move |(k, _)| *k == key)
        .map(|(_, t)| *t)
}

impl Geo {
    /// Whether no list has `countries` or `asns`: then `visit` finds nothing and looks nothing up.
    pub fn is_empty(&self) -> bool {
        self.by_country.is_empty() && self.by_asn.is_empty()
    }

    /// Calls `f` with each list whose `countries` hold `addr`'s country (`Via::Country`) or
    /// whose `asns` hold its network (`Via::Asn`). Looks up only the databases some list needs.
    pub fn visit(&self, addr: IpAddr, mut f: impl FnMut(Tag, Via)) {
        let addr = addr.to_canonical();
        if !self.by_country.is_empty()
            && let Some(c) = self.country.as_ref().and_then(|db| db.country(addr))
        {
            tags_of(&self.by_country, c).for_each(|t| f(t, Via::Country));
        }
        if !self.by_asn.is_empty()
            && let Some(n) = self.asn.as_ref().and_then(|db| db.asn(addr))
        {
            tags_of(&self.by_asn, n).for_each(|t| f(t, Via::Asn));
        }
    }

    /// The database half of `visit`: `addr`'s country and network from every configured
    /// database, to keep (with `generation`) and match later with `visit_location`.
    pub fn locate(&self, addr: IpAddr) -> Location {
        let addr = addr.to_canonical();
        Location {
            country: self.country.as_ref().and_then(|db| db.country(addr)),
            asn: self.asn.as_ref().and_then(|db| db.asn(addr)),
        }
    }

    /// The list half of `visit`, for a `Location` from `locate`.
    pub fn visit_location(&self, location: Location, mut f: impl FnMut(Tag, Via)) {
        if let Some(c) = location.country {
            tags_of(&self.by_country, c).for_each(|t| f(t, Via::Country));
        }
        if let Some(n) = location.asn {
            tags_of(&self.by_asn, n).for_each(|t| f(t, Via::Asn));
        }
    }

    /// Which databases a `Location` came from: it stays true while this is the same, across
    /// reloads that keep the databases (list edits) and not across one that changes them.
    pub fn generation(&self) -> u64 {
        let id = |db: &Option<Arc<GeoDb>>| db.as_ref().map_or(0, |db| db.id);
        id(&self.country) << 32 ^ id(&self.asn)
    }

    /// Everything the databases say of `addr`, for `explain` and the logs (allocates the
    /// network's name: not for the query path).
    pub fn place(&self, addr: IpAddr) -> Place {
        let addr = addr.to_canonical();
        let Location { country, asn } = self.locate(addr);
        Place {
            country,
            asn,
            org: self.asn.as_ref().and_then(|db| db.org(addr)),
        }
    }

    /// The configured databases, country first.
    pub fn databases(&self) -> impl Iterator<Item = &GeoDb> {
        self.country.iter().chain(&self.asn).map(|db| &**db)
    }

    /// The countries the list `tag` matches.
    pub fn countries(&self, tag: Tag) -> impl Iterator<Item = CountryCode> + '_ {
        self.by_country
            .iter()
            .filter(move |(_, t)| *t == tag)
            .map(|(c, _)| *c)
    }

    /// The AS numbers the list `tag` matches.
    pub fn asns(&self, tag: Tag) -> impl Iterator<Item = u32> + '_ {
        self.by_asn
            .iter()
            .filter(move |(_, t)| *t == tag)
            .map(|(n, _)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::Action;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mmdb")
            .join(name)
    }

    fn egress(country: Option<&str>, asn: Option<&str>) -> EgressConfig {
        EgressConfig {
            country_db: country.map(fixture),
            asn_db: asn.map(fixture),
            min_timeout_secs: 300,
        }
    }

    fn list(name: &str, countries: &[&str], asns: &[u32]) -> ListFile {
        let mut l = ListFile::inline(PathBuf::from(format!("/l/{name}.toml")), Action::Log, &[]);
        l.countries = countries.iter().map(ToString::to_string).collect();
        l.asns = asns.to_vec();
        l
    }

    fn geo(egress: &EgressConfig, lists: &[ListFile]) -> Result<Geo, String> {
        let mut b = GeoBuilder::default();
        for (tag, l) in lists.iter().enumerate() {
            b.add_list(tag as Tag, l);
        }
        b.build(egress, Path::new("/etc/hushd/hushd.toml"))
            .map_err(|e| {
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    fn visited(g: &Geo, addr: &str) -> Vec<String> {
        let mut out = Vec::new();
        g.visit(addr.parse().unwrap(), |tag, via| {
            out.push(format!("{tag}:{}", via.as_str()))
        });
        out
    }

    fn country(g: &Geo, addr: &str) -> Option<String> {
        g.locate(addr.parse().unwrap())
            .country
            .map(|c| c.to_string())
    }

    #[test]
    fn both_country_layouts_and_the_asn_fields_are_read() {
        for db in ["country.mmdb", "country-code.mmdb"] {
            let g = geo(&egress(Some(db), None), &[]).unwrap();
            assert_eq!(country(&g, "192.0.2.7").as_deref(), Some("CN"), "{db}");
            assert_eq!(country(&g, "198.51.100.1").as_deref(), Some("US"), "{db}");
            assert_eq!(country(&g, "2001:db8:1::5").as_deref(), Some("CN"), "{db}");
            assert_eq!(country(&g, "2001:db8:2::5").as_deref(), Some("US"), "{db}");
            // an IPv4-mapped address is its IPv4 address (these databases do not alias it)
            assert_eq!(
                country(&g, "::ffff:192.0.2.7").as_deref(),
                Some("CN"),
                "{db}"
            );
            assert_eq!(country(&g, "203.0.113.1"), None, "{db}");
            assert_eq!(country(&g, "2001:db8:3::1"), None, "{db}");
        }
        let g = geo(&egress(Some("country-code.mmdb"), Some("asn.mmdb")), &[]).unwrap();
        assert_eq!(
            g.place("192.0.2.7".parse().unwrap()).to_string(),
            "country CN, AS64500 (Example Net A)"
        );
        assert_eq!(
            g.place("2001:db8:2::1".parse().unwrap()).to_string(),
            "country US, AS64501 (Example Net B)"
        );
        assert_eq!(
            g.place("203.0.113.1".parse().unwrap()).to_string(),
            "country unknown, network unknown"
        );
        let fields: Vec<_> = g.databases().map(GeoDb::country_field).collect();
        assert_eq!(fields, [Some("country_code"), None]);
        assert_eq!(
            g.databases().next().unwrap().database_type(),
            "hushd-Test-Country-Code"
        );
    }

    #[test]
    fn an_ipv4_only_database_knows_nothing_of_ipv6() {
        let g = geo(
            &egress(Some("country-code-v4.mmdb"), None),
            &[list("cn", &["CN"], &[])],
        )
        .unwrap();
        assert_eq!(visited(&g, "192.0.2.7"), ["0:country"]);
        assert_eq!(visited(&g, "::ffff:192.0.2.7"), ["0:country"]);
        assert_eq!(visited(&g, "2001:db8:1::5"), Vec::<String>::new());
    }

    #[test]
    fn lists_are_visited_by_country_and_by_network() {
        let g = geo(
            &egress(Some("country.mmdb"), Some("asn.mmdb")),
            &[
                list("cn", &["CN"], &[]),
                list("both", &["CN", "US"], &[64501]),
                list("net", &[], &[64500, 64501]),
            ],
        )
        .unwrap();
        assert_eq!(
            visited(&g, "192.0.2.7"),
            ["0:country", "1:country", "2:asn"]
        );
        assert_eq!(visited(&g, "198.51.100.1"), ["1:country", "1:asn", "2:asn"]);
        assert_eq!(
            visited(&g, "2001:db8:1::1"),
            ["0:country", "1:country", "2:asn"]
        );
        assert_eq!(visited(&g, "203.0.113.1"), Vec::<String>::new());
        // the two halves of `visit`, as a cache would use them
        let loc = g.locate("198.51.100.1".parse().unwrap());
        assert_eq!(loc.asn, Some(64501));
        let mut halves = Vec::new();
        g.visit_location(loc, |t, v| halves.push(format!("{t}:{}", v.as_str())));
        assert_eq!(halves, ["1:country", "1:asn", "2:asn"]);
        assert_eq!(
            g.countries(1).map(|c| c.to_string()).collect::<Vec<_>>(),
            ["CN", "US"]
        );
        assert_eq!(g.asns(2).collect::<Vec<_>>(), [64500, 64501]);
        assert!(!g.is_empty());
        assert!(Geo::default().is_empty());
    }

    #[test]
    fn countries_or_asns_without_their_database_are_an_error() {
        let err = geo(
            &egress(None, Some("asn.mmdb")),
            &[list("cn", &["CN"], &[]), list("net", &[], &[64500])],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "/l/cn.toml: countries needs [egress] country_db in /etc/hushd/hushd.toml: without a database this list's countries would never match"
        );
        let err = geo(
            &egress(Some("country.mmdb"), None),
            &[list("net", &[], &[64500])],
        )
        .unwrap_err();
        assert!(
            err.starts_with("/l/net.toml: asns needs [egress] asn_db in"),
            "{err}"
        );
        // a database configured but used by no list is still opened and checked
        let err = geo(&egress(Some("asn.mmdb"), None), &[]).unwrap_err();
        assert!(
            err.ends_with("asn.mmdb: [egress] country_db: not a country database: its records have no country.iso_code or country_code (its type is \"hushd-Test-ASN\")"),
            "{err}"
        );
        let err = geo(&egress(None, Some("country.mmdb")), &[]).unwrap_err();
        assert!(err.contains("asn_db: not an ASN database"), "{err}");
    }

    #[test]
    fn a_missing_damaged_or_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(fixture("country.mmdb")).unwrap();
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("empty", Vec::new(), "an empty file, not a MaxMind DB"),
            (
                "text",
                b"CN,192.0.2.0/24\n".to_vec(),
                "not a readable MaxMind DB",
            ),
            // cut short: the metadata at the end is gone
            (
                "cut",
                good[..good.len() / 2].to_vec(),
                "not a readable MaxMind DB",
            ),
            // the search tree points into nowhere
            (
                "scrambled",
                {
                    let mut b = good.clone();
                    for byte in &mut b[..64] {
                        *byte = 0xff;
                    }
                    b
                },
                "a damaged MaxMind DB",
            ),
        ];
        for (name, bytes, want) in cases {
            let path = dir.path().join(format!("{name}.mmdb"));
            std::fs::write(&path, bytes).unwrap();
            let e = EgressConfig {
                country_db: Some(path.clone()),
                asn_db: None,
                min_timeout_secs: 300,
            };
            let err = geo(&e, &[]).unwrap_err();
            assert!(
                err.starts_with(&format!("{}: [egress] country_db: {want}", path.display())),
                "{name}: {err}"
            );
        }
        let e = EgressConfig {
            country_db: Some(dir.path().join("none.mmdb")),
            asn_db: None,
            min_timeout_secs: 300,
        };
        assert!(geo(&e, &[]).unwrap_err().contains("none.mmdb: cannot read"));
    }

    #[test]
    fn an_unchanged_file_is_shared_and_a_changed_one_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-Country.mmdb");
        std::fs::copy(fixture("country.mmdb"), &path).unwrap();
        let e = EgressConfig {
            country_db: Some(path.clone()),
            asn_db: None,
            min_timeout_secs: 300,
        };
        let first = geo(&e, &[list("cn", &["CN"], &[])]).unwrap();
        let second = geo(&e, &[]).unwrap();
        assert_eq!(first.generation(), second.generation());
        assert!(Arc::ptr_eq(
            first.country.as_ref().unwrap(),
            second.country.as_ref().unwrap()
        ));
        // replaced the way updaters do (a new file renamed over), with another layout
        let tmp = dir.path().join("new.mmdb");
        std::fs::copy(fixture("country-code.mmdb"), &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let third = geo(&e, &[]).unwrap();
        assert_ne!(third.generation(), first.generation());
        assert_eq!(
            third.databases().next().unwrap().country_field(),
            Some("country_code")
        );
        // the old policy still answers from its own copy
        assert_eq!(country(&first, "192.0.2.1").as_deref(), Some("CN"));
        // with no policy left holding it, a database is read again even if unchanged
        let generation = third.generation();
        drop((first, second, third));
        assert_ne!(geo(&e, &[]).unwrap().generation(), generation);
    }

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::parse("cn").unwrap().as_str(), "CN");
        assert_eq!(CountryCode::parse("US").unwrap().to_string(), "US");
        for bad in ["", "C", "CHN", "--", "C1", "é"] {
            assert!(CountryCode::parse(bad).is_none(), "{bad}");
        }
    }

    /// Cost of one lookup per database, release build, on a real database if given
    /// (`HUSHD_BENCH_COUNTRY_DB`, `HUSHD_BENCH_ASN_DB`), else on the fixtures:
    /// `cargo test --release --lib geo::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost() {
        let env = |key: &str, fallback: &str| {
            std::env::var_os(key).map_or_else(|| fixture(fallback), PathBuf::from)
        };
        let e = EgressConfig {
            country_db: Some(env("HUSHD_BENCH_COUNTRY_DB", "country.mmdb")),
            asn_db: Some(env("HUSHD_BENCH_ASN_DB", "asn.mmdb")),
            min_timeout_secs: 300,
        };
        let started = std::time::Instant::now();
        let g = geo(&e, &[list("cn", &["CN"], &[64500])]).unwrap();
        println!("opened and verified in {:?}", started.elapsed());
        let mut rng = fastrand::Rng::with_seed(7);
        let probes: Vec<IpAddr> = (0..100_000)
            .map(|i| match i % 4 {
                0 => IpAddr::V6((rng.u128(..) >> 3 | 0x2 << 125).into()),
                _ => IpAddr::V4(rng.u32(..).into()),
            })
            .collect();
        let time = |what: &str, f: &dyn Fn(IpAddr) -> usize| {
            let started = std::time::Instant::now();
            let mut n = 0;
            for _ in 0..10 {
                for &p in &probes {
                    n += f(std::hint::black_box(p));
                }
            }
            let ns = started.elapsed().as_nanos() as f64 / (10 * probes.len()) as f64;
            println!("{what}: {ns:.0} ns a lookup ({n} found)");
        };
        time("country", &|a| {
            usize::from(g.country.as_ref().unwrap().country(a).is_some())
        });
        time("asn", &|a| {
            usize::from(g.asn.as_ref().unwrap().asn(a).is_some())
        });
        time("visit (both)", &|a| {
            let mut n = 0;
            g.visit(a, |_, _| n += 1);
            n
        });
        let loc = g.locate("192.0.2.1".parse().unwrap());
        time("visit_location", &|_| {
            let mut n = 0;
            g.visit_location(std::hint::black_box(loc), |_, _| n += 1);
            n
        });
    }
}

//! What a report covers: its time window (`--since`, `--until`) and which matches it keeps
//! (`--list`, `--group`, `--client`), parsed from what an admin types and applied to store rows.

use std::{
    net::IpAddr,
    str::FromStr,
    time::{Duration, SystemTime},
};

use ipnetwork::IpNetwork;
use thiserror::Error;

use super::StoredRow;

const DAY: Duration = Duration::from_secs(86_400);

/// A point in time as typed: `7d` (that long before now), `2026-12-01` (a UTC day), an RFC 3339
/// time (`2026-12-01T08:00:00Z`, `2026-12-01T09:00:00+01:00`), or `all` (no limit, `--since`
/// only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Ago(Duration),
    /// Midnight (UTC) starting the day.
    Day(SystemTime),
    At(SystemTime),
    All,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WhenError {
    #[error(
        "`{0}` is not a time: give a duration before now (`7d`, `24h`), a day (`2026-12-01`), an RFC 3339 time (`2026-12-01T08:00:00Z`) or `all`"
    )]
    Unreadable(String),
    #[error("`--until all` means nothing: leave --until out to report up to now")]
    UntilAll,
    #[error("the window is empty: --since ({since}) is after --until ({until})")]
    Empty { since: String, until: String },
}

impl FromStr for When {
    type Err = WhenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let unreadable = || WhenError::Unreadable(s.to_string());
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) && s.len() == 10 && s.as_bytes()[4] == b'-' {
            return humantime::parse_rfc3339_weak(&format!("{s} 00:00:00"))
                .map(Self::Day)
                .map_err(|_| unreadable());
        }
        if s.len() >= 19 && s.as_bytes()[4] == b'-' && s.is_char_boundary(19) {
            return parse_time(s).map(Self::At).ok_or_else(unreadable);
        }
        humantime::parse_duration(s)
            .map(Self::Ago)
            .map_err(|_| unreadable())
    }
}

/// An RFC 3339 time, with `Z`, no zone (read as UTC) or a numeric offset (humantime takes only
/// UTC, so an offset is taken off here).
fn parse_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let offset_at = s.len().checked_sub(6)?;
    let has_offset = s.len() > 19
        && matches!(b[offset_at], b'+' | b'-')
        && b[offset_at + 3] == b':'
        && s.is_char_boundary(offset_at);
    if !has_offset {
        return humantime::parse_rfc3339_weak(s).ok();
    }
    let (local, zone) = s.split_at(offset_at);
    let hours: u64 = zone.get(1..3)?.parse().ok()?;
    let minutes: u64 = zone.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let offset = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    // local time = UTC + offset
    if zone.starts_with('+') {
        local.checked_sub(offset)
    } else {
        local.checked_add(offset)
    }
}

/// The times a report covers: matches seen from `since` (none: from the start) up to `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Option<SystemTime>,
    pub until: SystemTime,
}

impl Window {
    /// `since` and `until` as typed, against `now`. A day given to `--until` counts whole.
    pub fn new(since: When, until: Option<When>, now: SystemTime) -> Result<Self, WhenError> {
        let since = match since {
            When::All => None,
            When::Ago(d) => Some(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)),
            When::Day(t) | When::At(t) => Some(t),
        };
        let until = match until {
            None => now,
            Some(When::All) => return Err(WhenError::UntilAll),
            Some(When::Ago(d)) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            Some(When::At(t)) => t,
            // the last millisecond of that day: timestamps in the store have milliseconds
            Some(When::Day(t)) => t + DAY - Duration::from_millis(1),
        };
        match since {
            Some(s) if s > until => Err(WhenError::Empty {
                since: timestamp(s),
                until: timestamp(until),
            }),
            _ => Ok(Self { since, until }),
        }
    }

    /// `since` as the store writes times ('' when the window has no start: before any time).
    pub fn since_text(&self) -> String {
        self.since.map(timestamp).unwrap_or_default()
    }

    pub fn until_text(&self) -> String {
        timestamp(self.until)
    }

    /// The UTC days the window touches, first to last, as the store's `day` column writes them.
    /// Without a start, from `first` (the earliest day with data).
    pub fn days(&self, first: Option<&str>) -> Vec<String> {
        let start = match (self.since, first) {
            (Some(t), _) => t,
            (None, Some(day)) => match humantime::parse_rfc3339_weak(&format!("{day} 00:00:00")) {
                Ok(t) => t,
                Err(_) => return Vec::new(),
            },
            (None, None) => return Vec::new(),
        };
        let last = day_of(self.until);
        let mut out = Vec::new();
        let mut t = start;
        // bounded: a window of more than ten years is cut there rather than drawn
        while out.len() < 3660 {
            let day = day_of(t);
            if day > last {
                break;
            }
            out.push(day);
            t += DAY;
        }
        out
    }
}

/// A time as the store writes it: RFC 3339, UTC, milliseconds (so text order is time order).
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The UTC day of `t`, `YYYY-MM-DD`.
pub fn day_of(t: SystemTime) -> String {
    let mut s = timestamp(t);
    s.truncate(10);
    s
}

/// `--client`: a device's `[clients]` name, or the addresses it may have had (an address or a
/// CIDR, which also finds addresses the store keeps truncated by `[querylog] anonymize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFilter {
    Name(String),
    Net(IpNetwork),
}

impl FromStr for ClientFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty client: give a client name, an address or a CIDR".into());
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self::Net(IpNetwork::from(addr)));
        }
        match s.split_once('/') {
            Some((addr, _)) if addr.parse::<IpAddr>().is_ok() => s
                .parse::<IpNetwork>()
                .map(Self::Net)
                .map_err(|e| format!("`{s}` is not a CIDR: {e}")),
            _ => Ok(Self::Name(s.to_string())),
        }
    }
}

impl std::fmt::Display for ClientFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Net(net) if net.prefix() == max_prefix(net) => write!(f, "{}", net.ip()),
            Self::Net(net) => write!(f, "{net}"),
        }
    }
}

fn max_prefix(net: &IpNetwork) -> u8 {
    match net {
        IpNetwork::V4(_) => 32,
        IpNetwork::V6(_) => 128,
    }
}

/// Everything `hushd report` and `/api/evidence` were asked to cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub window: Window,
    pub list: Option<String>,
    pub group: Option<String>,
    pub client: Option<ClientFilter>,
    /// One row per name, not only per device and list.
    pub by_name: bool,
}

impl Selection {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            list: None,
            group: None,
            client: None,
            by_name: false,
        }
    }

    /// Does the report count this row? A row is one day's matches: it counts whole when any
    /// of them fall in the window (the store keeps no finer times than first and last seen).
    pub fn keeps(&self, row: &StoredRow) -> bool {
        let window = row.last_seen.as_str() >= self.window.since_text().as_str()
            && row.first_seen <= self.window.until_text();
        window
            && self.list.as_ref().is_none_or(|l| *l == row.list)
            && self.group.as_ref().is_none_or(|g| *g == row.client_group)
            && self.client.as_ref().is_none_or(|c| match c {
                ClientFilter::Name(n) => *n == row.client_name,
                ClientFilter::Net(net) => row
                    .client
                    .parse::<IpAddr>()
                    .is_ok_and(|a| net.contains(unmapped(a))),
            })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, as the policy treats it.
fn unmapped(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn durations_days_and_times_are_read() {
        assert_eq!(
            "7d".parse::<When>(),
            Ok(When::Ago(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            "24h".parse::<When>(),
            Ok(When::Ago(Duration::from_secs(86_400)))
        );
        assert_eq!(
            "2026-12-01".parse::<When>(),
            Ok(When::Day(at("2026-12-01T00:00:00Z")))
        );
        assert_eq!(
            "2026-12-01T08:30:00Z".parse::<When>(),
            Ok(When::At(at("2026-12-01T08:30:00Z")))
        );
        assert_eq!(
            "2026-12-01T09:30:00+01:00".parse::<When>(),
            Ok(When::At(at("2026-12-01T08:30:00Z")))
        );
        assert_eq!(
            "2026-12-01T06:00:00.5-02:30".parse::<When>(),
            Ok(When::At(at("2026-12-01T08:30:00.5Z")))
        );
        assert_eq!("ALL".parse::<When>(), Ok(When::All));
        for bad in [
            "",
            "7x",
            "yesterday",
            "2026-13-01",
            "2026-12-01T25:00:00Z",
            "2026-12-01T08:00:00+25:00",
            "-7d",
        ] {
            assert!(
                matches!(bad.parse::<When>(), Err(WhenError::Unreadable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn windows_count_from_now_and_take_a_whole_until_day() {
        let now = at("2026-12-03T10:00:00Z");
        let w = Window::new(When::Ago(Duration::from_secs(7 * 86_400)), None, now).unwrap();
        assert_eq!(w.since_text(), "2026-11-26T10:00:00.000Z");
        assert_eq!(w.until_text(), "2026-12-03T10:00:00.000Z");
        let w = Window::new(
            When::Day(at("2026-11-01T00:00:00Z")),
            Some(When::Day(at("2026-11-30T00:00:00Z"))),
            now,
        )
        .unwrap();
        assert_eq!(w.since_text(), "2026-11-01T00:00:00.000Z");
        assert_eq!(w.until_text(), "2026-11-30T23:59:59.999Z");
        let w = Window::new(When::All, None, now).unwrap();
        assert_eq!(w.since_text(), "");
        assert_eq!(
            Window::new(When::Ago(DAY), Some(When::All), now),
            Err(WhenError::UntilAll)
        );
        assert!(matches!(
            Window::new(
                When::Day(at("2026-12-02T00:00:00Z")),
                Some(When::Day(at("2026-12-01T00:00:00Z"))),
                now
            ),
            Err(WhenError::Empty { .. })
        ));
    }

    #[test]
    fn window_days_run_from_the_start_or_the_first_data() {
        let now = at("2026-12-03T10:00:00Z");
        let w = Window::new(When::Ago(Duration::from_secs(2 * 86_400)), None, now).unwrap();
        assert_eq!(
            w.days(Some("2026-01-01")),
            ["2026-12-01", "2026-12-02", "2026-12-03"]
        );
        let w = Window::new(When::All, None, now).unwrap();
        assert_eq!(w.days(Some("2026-12-02")), ["2026-12-02", "2026-12-03"]);
        assert!(w.days(None).is_empty());
    }

    #[test]
    fn clients_are_names_addresses_or_networks() {
        assert_eq!(
            "reception-tv".parse::<ClientFilter>(),
            Ok(ClientFilter::Name("reception-tv".into()))
        );
        assert_eq!(
            "192.168.1.40".parse::<ClientFilter>(),
            Ok(ClientFilter::Net("192.168.1.40/32".parse().unwrap()))
        );
        assert_eq!(
            "10.0.5.0/24".parse::<ClientFilter>(),
            Ok(ClientFilter::Net("10.0.5.0/24".parse().unwrap()))
        );
        assert!("10.0.5.0/33".parse::<ClientFilter>().is_err());
        assert!(" ".parse::<ClientFilter>().is_err());
        assert_eq!(
            "192.168.1.40".parse::<ClientFilter>().unwrap().to_string(),
            "192.168.1.40"
        );
    }

    fn row(
        client: &str,
        name: &str,
        group: &str,
        list: &str,
        first: &str,
        last: &str,
    ) -> StoredRow {
        StoredRow {
            day: first[..10].to_string(),
            client: client.into(),
            client_name: name.into(),
            client_group: group.into(),
            list: list.into(),
            name: "t.example".into(),
            action: "log".into(),
            via: "name".into(),
            count: 1,
            first_seen: first.into(),
            last_seen: last.into(),
            qtypes: "A".into(),
        }
    }

    #[test]
    fn selections_keep_rows_by_window_list_group_and_client() {
        let now = at("2026-12-03T10:00:00Z");
        let window = Window::new(
            When::At(at("2026-12-02T12:00:00Z")),
            Some(When::At(at("2026-12-03T08:00:00Z"))),
            now,
        )
        .unwrap();
        let all = Selection::new(window);
        let r = |first: &str, last: &str| row("10.0.0.5", "tv", "iot", "xiaomi", first, last);
        // a day's row counts when any of its matches fall in the window
        assert!(all.keeps(&r("2026-12-02T08:00:00.000Z", "2026-12-02T13:00:00.000Z")));
        assert!(!all.keeps(&r("2026-12-02T08:00:00.000Z", "2026-12-02T11:59:59.999Z")));
        assert!(all.keeps(&r("2026-12-03T08:00:00.000Z", "2026-12-03T09:00:00.000Z")));
        assert!(!all.keeps(&r("2026-12-03T08:00:00.001Z", "2026-12-03T09:00:00.000Z")));

        let inside = r("2026-12-02T13:00:00.000Z", "2026-12-02T14:00:00.000Z");
        let with = |f: &dyn Fn(&mut Selection)| {
            let mut s = all.clone();
            f(&mut s);
            s.keeps(&inside)
        };
        assert!(with(&|s| s.list = Some("xiaomi".into())));
        assert!(!with(&|s| s.list = Some("samsung".into())));
        assert!(with(&|s| s.group = Some("iot".into())));
        assert!(!with(&|s| s.group = Some("default".into())));
        assert!(with(&|s| s.client = Some("tv".parse().unwrap())));
        assert!(!with(&|s| s.client = Some("phone".parse().unwrap())));
        assert!(with(&|s| s.client = Some("10.0.0.0/24".parse().unwrap())));
        assert!(with(&|s| s.client = Some("10.0.0.5".parse().unwrap())));
        assert!(!with(&|s| s.client = Some("10.0.1.0/24".parse().unwrap())));
        // an IPv4-mapped address in the store is its IPv4 address
        let mapped = row(
            "::ffff:10.0.0.5",
            "",
            "default",
            "xiaomi",
            "2026-12-02T13:00:00.000Z",
            "2026-12-02T13:00:00.000Z",
        );
        let mut s = all.clone();
        s.client = Some("10.0.0.0/24".parse().unwrap());
        assert!(s.keeps(&mapped));
    }
}

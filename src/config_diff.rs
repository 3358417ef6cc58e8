//! Which config keys changed between the config hushd runs with and a file, and whether a
//! reload applies each. The answer is the same for the reload's log and for `hushd check
//! --diff-running`, so an admin sees before saving what a reload would and would not apply.
//!
//! Keys are compared as the file has them (TOML, dotted: `upstream.servers`), so every key is
//! covered without a list to keep in step with the config, and one table (`RESTART_ONLY`) says
//! which of them only a restart applies.

use std::{collections::BTreeMap, fmt};

use toml::{Table, Value};

/// Keys a reload cannot apply: each binds a socket at start. A key here covers the keys under
/// it (`metrics` would cover `metrics.listen`). Adding one is one line.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "metrics.listen",
    "metrics.enabled",
    "server.tls_listen",
    "server.https_listen",
    // the certificate files' contents reload live (certs.rs); which files, only at start
    "server.cert_file",
    "server.key_file",
    "server.tls_handshake_timeout_secs",
];

/// Whether a key's change is applied by a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    OnReload,
    AfterRestart,
}

/// One changed key (added, removed or edited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub applies: Applies,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.applies {
            Applies::OnReload => write!(f, "{}: applies on reload", self.key),
            Applies::AfterRestart => write!(f, "{}: needs a restart", self.key),
        }
    }
}

/// Whether only a restart applies a change of `key`.
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|k| key == *k || (key.starts_with(k) && key.as_bytes().get(k.len()) == Some(&b'.')))
}

/// Every key of `table` with its value, dotted. Tables are walked into; arrays (`servers`,
/// `[[lists]]`) are one value each.
pub fn flatten(table: &Table) -> BTreeMap<String, &Value> {
    fn walk<'t>(prefix: &str, table: &'t Table, out: &mut BTreeMap<String, &'t Value>) {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Table(inner) => walk(&key, inner, out),
                _ => {
                    out.insert(key, value);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", table, &mut out);
    out
}

/// The keys that differ between `running` and `new`, in key order.
pub fn changes(running: &Table, new: &Table) -> Vec<Change> {
    let (old, new) = (flatten(running), flatten(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|key| Change {
            key: key.clone(),
            applies: if needs_restart(key) {
                Applies::AfterRestart
            } else {
                Applies::OnReload
            },
        })
        .collect()
}

/// The config in force after a reload from `running` to `new`: `new`, with each restart-only
/// key as `running` has it (a listener bound at start stays where it is).
pub fn in_force_after_reload(running: &Table, new: &Table) -> Table {
    let mut out = new.clone();
    for key in RESTART_ONLY {
        let path: Vec<&str> = key.split('.').collect();
        match get(running, &path) {
            Some(value) => set(&mut out, &path, value.clone()),
            None => remove(&mut out, &path),
        }
    }
    out
}

fn get<'t>(table: &'t Table, path: &[&str]) -> Option<&'t Value> {
    let (last, parents) = path.split_last()?;
    let mut at = table;
    for p in parents {
        at = at.get(*p)?.as_table()?;
    }
    at.get(*last)
}

fn set(table: &mut Table, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = table;
    for p in parents {
        let entry = at
            .entry((*p).to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(inner) = entry else { return };
        at = inner;
    }
    at.insert((*last).to_string(), value);
}

fn remove(table: &mut Table, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = table;
    for p in parents {
        let Some(Value::Table(inner)) = at.get_mut(*p) else {
            return;
        };
        at = inner;
    }
    at.remove(*last);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    const RUNNING: &str = r#"
[server]
listen = ["127.0.0.1:53"]
allow_clients = ["10.0.0.0/8"]
[upstream]
servers = ["192.0.2.1:53"]
[metrics]
listen = "127.0.0.1:9153"
[cache]
size = 1000
"#;

    #[test]
    fn each_changed_key_says_whether_a_reload_applies_it() {
        let new = RUNNING
            .replace("127.0.0.1:53", "127.0.0.1:5353")
            .replace("192.0.2.1:53", "192.0.2.2:53")
            .replace("size = 1000", "size = 10\nmax_ttl = 60");
        let lines: Vec<String> = changes(&table(RUNNING), &table(&new))
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "cache.max_ttl: applies on reload",
                "cache.size: applies on reload",
                "server.listen: needs a restart",
                "upstream.servers: applies on reload",
            ]
        );
        assert!(changes(&table(RUNNING), &table(RUNNING)).is_empty());
    }

    #[test]
    fn a_removed_section_is_every_key_it_held() {
        let new = RUNNING.replace("[metrics]\nlisten = \"127.0.0.1:9153\"\n", "");
        let all = changes(&table(RUNNING), &table(&new));
        assert_eq!(
            all,
            [Change {
                key: "metrics.listen".into(),
                applies: Applies::AfterRestart
            }]
        );
    }

    #[test]
    fn restart_only_keys_stay_as_they_run_after_a_reload() {
        let new = table(
            &RUNNING
                .replace("127.0.0.1:53", "127.0.0.1:5353")
                .replace("[metrics]\nlisten = \"127.0.0.1:9153\"\n", "")
                .replace("size = 1000", "size = 10"),
        );
        let in_force = in_force_after_reload(&table(RUNNING), &new);
        let keys: Vec<String> = changes(&table(RUNNING), &in_force)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["cache.size: applies on reload"]);
        // and the same edit, seen against what runs now, still needs the restart
        let again: Vec<String> = changes(&in_force, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            again,
            [
                "metrics.listen: needs a restart",
                "server.listen: needs a restart"
            ]
        );
    }

    #[test]
    fn a_key_under_a_restart_only_key_needs_a_restart_too() {
        assert!(needs_restart("server.listen"));
        assert!(!needs_restart("server.listen_backlog"));
        assert!(!needs_restart("server.allow_clients"));
        assert!(needs_restart("metrics.listen"));
    }
}

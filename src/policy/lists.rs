//! Loading list files: each `*.toml` in the blocklist folder is one list, named by its file stem.
//! Loading is apart from matching (the routedns split): this module turns files into validated
//! `ListFile`s, and `Policy::build` turns those into a new immutable matcher.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Action, BlockResponse};
use crate::diagnostic::{LoadError, LoadErrors};

/// One parsed and validated list file.
#[derive(Debug, Clone, PartialEq)]
pub struct ListFile {
    pub name: String,
    pub path: PathBuf,
    pub action: Action,
    pub description: Option<String>,
    pub block_response: Option<BlockResponse>,
    /// Normalised: lower-case, no final dot.
    pub domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    action: Action,
    description: Option<String>,
    block_response: Option<BlockResponse>,
    #[serde(default)]
    domains: Vec<Spanned<String>>,
}

/// Reads every list in `dir`, sorted by name. Collects the errors of all files.
pub fn load_dir(dir: &Path) -> Result<Vec<ListFile>, LoadErrors> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if is_list_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();

    let mut lists = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|source| {
                LoadErrors::from(LoadError::Read {
                    path: path.clone(),
                    source,
                })
            })
            .and_then(|text| parse_list(&path, &text));
        match parsed {
            Ok(list) => lists.push(list),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(lists)
    } else {
        Err(LoadErrors(errors))
    }
}

/// `*.toml`, but not editors' hidden lock and backup files such as emacs's `.#name.toml`.
pub fn is_list_file(path: &Path) -> bool {
    let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
        return false;
    };
    !file.starts_with('.') && path.extension().is_some_and(|e| e == "toml")
}

pub fn parse_list(path: &Path, text: &str) -> Result<ListFile, LoadErrors> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| LoadError::File {
            path: path.to_path_buf(),
            message: "a list file needs a UTF-8 name, which becomes the list's name".into(),
        })?
        .to_string();
    let raw: RawList = toml::from_str(text).map_err(|e| LoadError::toml(path, text, &e))?;

    let mut errors = Vec::new();
    let mut domains = Vec::with_capacity(raw.domains.len());
    for d in &raw.domains {
        match normalize_domain(d.get_ref()) {
            Ok(n) => domains.push(n),
            Err(why) => errors.push(LoadError::at(
                path,
                text,
                d.span(),
                format!("{:?}: {why}", d.get_ref()),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(ListFile {
        name,
        path: path.to_path_buf(),
        action: raw.action,
        description: raw.description,
        block_response: raw.block_response,
        domains,
    })
}

/// Lower-cases and checks a listed name; the final dot is optional.
pub fn normalize_domain(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name != raw {
        return Err("remove the spaces around the name".into());
    }
    if let Some(rest) = name.strip_prefix("*.") {
        return Err(format!(
            "wildcards are not needed: write {rest:?}, which already matches every subdomain"
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name".into());
    }
    if !name.is_ascii() {
        return Err(
            "not ASCII: write an internationalised name in its xn-- (punycode) form".into(),
        );
    }
    if name.len() > 253 {
        return Err(format!(
            "name is {} characters long; DNS allows 253",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!(
                "label {label:?} is {} characters long; DNS allows 63",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("character {c:?} is not allowed in a domain name"));
        }
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ListFile, LoadErrors> {
        parse_list(Path::new("/lists/xiaomi.toml"), text)
    }

    #[test]
    fn parses_a_list_with_comments_per_entry() {
        let l = parse(
            "# source: example\ndescription = \"Xiaomi\"\naction = \"block\"\ndomains = [\n  \"Tracking.MIUI.com.\", # analytics\n  \"mistat.xiaomi.com\",\n]\n",
        )
        .unwrap();
        assert_eq!(l.name, "xiaomi");
        assert_eq!(l.action, Action::Block);
        assert_eq!(l.domains, vec!["tracking.miui.com", "mistat.xiaomi.com"]);
        assert_eq!(l.description.as_deref(), Some("Xiaomi"));
        assert_eq!(l.block_response, None);
    }

    #[test]
    fn actions_and_block_responses() {
        assert_eq!(parse("action = \"log\"\n").unwrap().action, Action::Log);
        assert_eq!(parse("action = \"allow\"\n").unwrap().action, Action::Allow);
        let l = parse("action = \"block\"\nblock_response = \"null\"\n").unwrap();
        assert_eq!(l.block_response, Some(BlockResponse::Null));
        let err = parse("action = \"deny\"\n").unwrap_err().to_string();
        assert!(err.starts_with("/lists/xiaomi.toml:1:10:"), "{err}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_file_line_and_column() {
        let err = parse("action = \"block\"\ndomain = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:2:1: unknown field `domain`"),
            "{err}"
        );
        let err =
            parse("action = \"block\"\ndomains = [\n  \"a.com\",\n  \"b.com\"\n  \"c.com\",\n]\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("/lists/xiaomi.toml:5:3: missing comma"),
            "{err}"
        );
        let err = parse("domains = []\n").unwrap_err().to_string();
        assert!(err.contains("missing field `action`"), "{err}");
    }

    #[test]
    fn bad_names_are_reported_each_at_its_place() {
        let err =
            parse("action = \"block\"\ndomains = [\"ok.com\", \"bad name.com\",\n \"*.x.com\"]\n")
                .unwrap_err();
        let lines: Vec<_> = err.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("/lists/xiaomi.toml:2:22: \"bad name.com\": character ' '"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("/lists/xiaomi.toml:3:2: \"*.x.com\": wildcards are not needed"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn normalize_domain_rules() {
        assert_eq!(normalize_domain("A.B.Com.").unwrap(), "a.b.com");
        assert_eq!(
            normalize_domain("_dmarc.x-y.com").unwrap(),
            "_dmarc.x-y.com"
        );
        assert_eq!(normalize_domain("com").unwrap(), "com");
        for bad in [
            "",
            ".",
            "a..b",
            ".a.b",
            " a.b",
            "a.b/c",
            "ä.com",
            &"a".repeat(64),
            &["a"; 130].join("."),
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn only_visible_toml_files_are_lists() {
        assert!(is_list_file(Path::new("/l/xiaomi.toml")));
        assert!(!is_list_file(Path::new("/l/.#xiaomi.toml")));
        assert!(!is_list_file(Path::new("/l/xiaomi.toml~")));
        assert!(!is_list_file(Path::new("/l/xiaomi.toml.swp")));
        assert!(!is_list_file(Path::new("/l/README.md")));
    }
}

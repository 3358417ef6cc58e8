//! Client groups as the policy uses them: for each group, the action each list has for its
//! members (its own, overridden, or none when the list does not apply). Built with the policy,
//! so a query's group costs one index after the client lookup it already makes.

use super::{Action, matcher::Tag, rank};
use crate::{
    config::{Config, DEFAULT_GROUP},
    diagnostic::LoadError,
    egress::{SetRef, nft::SetTargets},
};

/// Index of a group in `Groups`; 0 is the implicit `default` group.
pub type GroupId = u16;

#[derive(Debug)]
pub struct Group {
    /// Shared, so a match handed to the evidence store costs a reference count, not a copy.
    pub name: std::sync::Arc<str>,
    /// Per list tag: the action for members, `None` where the list does not apply.
    actions: Box<[Option<Action>]>,
    pub egress_set: Vec<SetRef>,
    /// `egress_set` as the firewall writer knows it, once `Policy::attach_sets` ran.
    pub egress: SetTargets,
}

impl Group {
    /// What list `tag` does for this group's members, if it applies to them.
    pub fn action(&self, tag: Tag) -> Option<Action> {
        self.actions.get(usize::from(tag)).copied().flatten()
    }

    /// Whether this group changes anything about list `tag` (it is left out, or its action
    /// overridden): `explain` says so.
    pub fn overrides(&self, tag: Tag, own: Action) -> bool {
        self.action(tag) != Some(own)
    }
}

#[derive(Debug)]
pub struct Groups {
    groups: Vec<Group>,
}

impl Default for Groups {
    fn default() -> Self {
        Self {
            groups: vec![Group {
                name: DEFAULT_GROUP.into(),
                actions: Box::new([]),
                egress_set: Vec::new(),
                egress: SetTargets::default(),
            }],
        }
    }
}

impl Groups {
    /// The groups of `config` over `lists` (each list's name and own action, in tag order). A
    /// group naming a list that is not in the blocklist folder is an error: a typo must not
    /// quietly leave a group unprotected.
    pub fn build(config: &Config, lists: &[(&str, Action)]) -> Result<Self, Vec<LoadError>> {
        let mut errors = Vec::new();
        let every: Box<[Option<Action>]> = lists.iter().map(|&(_, a)| Some(a)).collect();
        let mut groups = vec![Group {
            name: DEFAULT_GROUP.into(),
            actions: every.clone(),
            egress_set: Vec::new(),
            egress: SetTargets::default(),
        }];
        let tag_of = |name: &str| lists.iter().position(|&(n, _)| n == name);
        let known = || {
            let names: Vec<&str> = lists.iter().map(|&(n, _)| n).collect();
            if names.is_empty() {
                "the blocklist folder holds no lists".to_string()
            } else {
                format!("lists are: {}", names.join(", "))
            }
        };
        for g in &config.groups {
            let problem = |what: &str, list: &str| LoadError::File {
                path: config.path.clone(),
                message: format!(
                    "group {:?}: {what} {list:?} is not a list in {} ({})",
                    g.name,
                    config.blocklists.dir.display(),
                    known()
                ),
            };
            let mut actions: Box<[Option<Action>]> = match &g.lists {
                None => every.clone(),
                Some(names) => {
                    let mut only = vec![None; lists.len()].into_boxed_slice();
                    for name in names {
                        match tag_of(name) {
                            Some(t) => only[t] = every[t],
                            None => errors.push(problem("lists entry", name)),
                        }
                    }
                    only
                }
            };
            for (name, action) in &g.actions {
                match tag_of(name) {
                    // An override of a list the group leaves out would do nothing: say so.
                    Some(t) if actions[t].is_none() => errors.push(LoadError::File {
                        path: config.path.clone(),
                        message: format!(
                            "group {:?}: actions names {name:?}, which is not in the group's lists",
                            g.name
                        ),
                    }),
                    Some(t) => actions[t] = Some(*action),
                    None => errors.push(problem("actions key", name)),
                }
            }
            groups.push(Group {
                name: g.name.as_str().into(),
                actions,
                egress_set: g.egress_set.clone(),
                egress: SetTargets::default(),
            });
        }
        if groups.len() > usize::from(GroupId::MAX) {
            errors.push(LoadError::File {
                path: config.path.clone(),
                message: format!(
                    "{} groups; hushd supports at most {}",
                    groups.len(),
                    GroupId::MAX
                ),
            });
        }
        match errors.is_empty() {
            true => Ok(Self { groups }),
            false => Err(errors),
        }
    }

    pub fn get(&self, id: GroupId) -> &Group {
        self.groups.get(usize::from(id)).unwrap_or(&self.groups[0])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.groups.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The id of the group named `name`.
    pub fn id_of(&self, name: &str) -> Option<GroupId> {
        self.groups
            .iter()
            .position(|g| &*g.name == name)
            .and_then(|i| GroupId::try_from(i).ok())
    }

    /// Whether lists `kept` and `new` may share one matcher entry for a name both hold, and
    /// if so which tag the entry keeps. They may when no group can tell them apart: every group
    /// applies both or neither, and every group that applies both ranks the same one higher
    /// (the one it keeps; on equal rank the list already there). Otherwise each list keeps its
    /// own entry, so each group sees exactly its own lists. With no `[[groups]]` this is the
    /// global rank, as it was before groups.
    pub fn shared_winner(&self, kept: Tag, new: Tag) -> Option<Tag> {
        let mut winner = None;
        for g in &self.groups {
            match (g.action(kept), g.action(new)) {
                (None, None) => {}
                (Some(k), Some(n)) => {
                    let w = if rank(n) > rank(k) { new } else { kept };
                    if winner.is_some_and(|x| x != w) {
                        return None;
                    }
                    winner = Some(w);
                }
                _ => return None,
            }
        }
        Some(winner.unwrap_or(kept))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(groups: &str) -> Config {
        Config::parse(
            Path::new("/etc/hushd/hushd.toml"),
            &format!("[upstream]\nservers = [\"192.0.2.1\"]\n{groups}"),
        )
        .unwrap()
    }

    const LISTS: [(&str, Action); 3] = [
        ("samsung", Action::Log),
        ("xiaomi", Action::Block),
        ("allow", Action::Allow),
    ];

    #[test]
    fn groups_pick_lists_and_override_actions() {
        let c = config(
            "[[groups]]\nname = \"iot\"\nclients = [\"10.0.5.0/24\"]\nlists = [\"samsung\", \"allow\"]\nactions = { samsung = \"block\" }\n",
        );
        let g = Groups::build(&c, &LISTS).unwrap();
        let default = g.get(0);
        assert_eq!(default.action(0), Some(Action::Log));
        assert_eq!(default.action(1), Some(Action::Block));
        let iot = g.get(g.id_of("iot").unwrap());
        assert_eq!(iot.action(0), Some(Action::Block));
        assert_eq!(iot.action(1), None);
        assert_eq!(iot.action(2), Some(Action::Allow));
        assert!(iot.overrides(0, Action::Log) && !iot.overrides(2, Action::Allow));
    }

    #[test]
    fn unknown_lists_are_errors_naming_the_group() {
        let c = config(
            "[[groups]]\nname = \"iot\"\nlists = [\"samsng\"]\nactions = { xiaomi = \"log\", nope = \"block\" }\n",
        );
        let e = Groups::build(&c, &LISTS).unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        let text = text.join("\n");
        assert!(
            text.contains("group \"iot\": lists entry \"samsng\" is not a list"),
            "{text}"
        );
        assert!(text.contains("lists are: samsung, xiaomi, allow"), "{text}");
        assert!(
            text.contains("actions names \"xiaomi\", which is not in the group's lists"),
            "{text}"
        );
        assert!(text.contains("actions key \"nope\""), "{text}");
    }

    #[test]
    fn lists_share_an_entry_only_where_no_group_tells_them_apart() {
        // no groups: the global rank, as before groups
        let none = Groups::build(&config(""), &LISTS).unwrap();
        assert_eq!(none.shared_winner(0, 1), Some(1));
        assert_eq!(none.shared_winner(1, 0), Some(1));
        assert_eq!(none.shared_winner(2, 1), Some(2));
        // a group that leaves xiaomi out must still see samsung's entry for a shared name
        let c = config("[[groups]]\nname = \"iot\"\nlists = [\"samsung\", \"allow\"]\n");
        let g = Groups::build(&c, &LISTS).unwrap();
        assert_eq!(g.shared_winner(0, 1), None);
        assert_eq!(g.shared_winner(0, 2), Some(2));
        // a group whose override reverses the rank
        let c = config("[[groups]]\nname = \"iot\"\nactions = { samsung = \"allow\" }\n");
        let g = Groups::build(&c, &LISTS).unwrap();
        assert_eq!(g.shared_winner(0, 1), None);
    }
}

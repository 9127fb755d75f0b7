//! Docker token scopes: what a client asks the token endpoint for
//! (`repository:library/alpine:pull,push`, `registry:catalog:*`).
//!
//! The grammar is Docker's: `type[(class)]:name:action[,action...]`, several scopes separated
//! by spaces (a `POST` form) or given as repeated `scope=` parameters (a `GET`). Parsing is
//! lenient where Docker clients expect it and strict where a mistake would hide a bug:
//!
//! * unknown actions are dropped (`repository:a:pull,frobnicate` asks for `pull`), and `*`
//!   on a repository asks for every action;
//! * scopes Berth has no resource for are dropped without an error: other resource types,
//!   typed resources such as `repository(plugin):...`, registry resources other than the
//!   catalog. A client may ask for anything; it is granted only what exists and is allowed;
//! * a scope that does not have the `type:name:actions` shape, or whose repository name is
//!   not a valid name, is refused with [`ErrorCode::NameInvalid`] (400): that is a client
//!   bug worth reporting, not a permission question. So is a request for more than
//!   [`MAX_SCOPES`] resources.
//!
//! Repository names never contain `:`, so the actions are what follows the last `:`.

use std::fmt;

use berth_core::{ErrorCode, RegistryError, RepositoryName};

/// Most distinct resources one token request may name. Docker asks for one to three (a
/// cross-repository mount names two); the bound keeps one request from costing hundreds of
/// account-store reads.
pub const MAX_SCOPES: usize = 32;

/// Something done to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Self::Pull, Self::Push, Self::Delete];

    /// The action's name in scopes and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Delete => "delete",
        }
    }

    /// The action named `name`; `None` for anything else, `*` included.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Self::Pull => 1,
            Self::Push => 2,
            Self::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s, iterated and displayed in the order pull, push, delete.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const EMPTY: Self = Self(0);
    pub const ALL: Self = Self(1 | 2 | 4);

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    #[must_use]
    pub fn with(self, action: Action) -> Self {
        Self(self.0 | action.bit())
    }

    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    #[must_use]
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL
            .into_iter()
            .filter(move |action| self.contains(*action))
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(actions: I) -> Self {
        actions.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl<const N: usize> From<[Action; N]> for ActionSet {
    fn from(actions: [Action; N]) -> Self {
        actions.into_iter().collect()
    }
}

/// `pull,push`: the form scopes and challenges use.
impl fmt::Display for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, action) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(action.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One resource a client asks for, with the actions it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`.
    Repository {
        name: RepositoryName,
        actions: ActionSet,
    },
    /// `registry:catalog:*`: listing every repository.
    Catalog,
}

impl Scope {
    /// Parses one scope. `Ok(None)` is a well-formed scope for something Berth does not have
    /// (see the module documentation).
    pub fn parse(text: &str) -> Result<Option<Scope>, RegistryError> {
        let malformed = || {
            RegistryError::new(
                ErrorCode::NameInvalid,
                format!("invalid scope {text:?}: expected type:name:actions"),
            )
        };
        let (resource_type, rest) = text.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        if resource_type.is_empty() || name.is_empty() {
            return Err(malformed());
        }
        let mut wildcard = false;
        let mut requested = ActionSet::EMPTY;
        for action in actions.split(',') {
            match Action::from_name(action) {
                Some(action) => requested = requested.with(action),
                None => wildcard |= action == "*",
            }
        }
        match resource_type {
            "repository" => {
                let name = name.parse::<RepositoryName>().map_err(|_| {
                    RegistryError::new(
                        ErrorCode::NameInvalid,
                        format!("invalid scope {text:?}: {name:?} is not a repository name"),
                    )
                })?;
                let actions = if wildcard { ActionSet::ALL } else { requested };
                Ok(Some(Scope::Repository { name, actions }))
            }
            "registry" if name == "catalog" && wildcard => Ok(Some(Scope::Catalog)),
            _ => Ok(None),
        }
    }

    /// A repository scope.
    pub fn repository(name: RepositoryName, actions: impl Into<ActionSet>) -> Self {
        Self::Repository {
            name,
            actions: actions.into(),
        }
    }
}

/// `repository:<name>:<actions>` or `registry:catalog:*`, as in a challenge's `scope`.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repository { name, actions } => write!(f, "repository:{name}:{actions}"),
            Self::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// Parses the scopes of a token request: each value is one `scope` parameter, which may
/// itself hold several scopes separated by spaces. Scopes naming the same repository are
/// merged (their actions united), in the order first named.
pub fn parse_scopes<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Scope>, RegistryError> {
    let mut scopes: Vec<Scope> = Vec::new();
    for text in values.into_iter().flat_map(str::split_whitespace) {
        let Some(scope) = Scope::parse(text)? else {
            continue;
        };
        let same_resource = |existing: &Scope| match (existing, &scope) {
            (Scope::Repository { name: a, .. }, Scope::Repository { name: b, .. }) => a == b,
            (Scope::Catalog, Scope::Catalog) => true,
            _ => false,
        };
        match scopes.iter().position(same_resource) {
            Some(i) => {
                if let (
                    Scope::Repository { actions, .. },
                    Scope::Repository { actions: more, .. },
                ) = (&mut scopes[i], scope)
                {
                    *actions = actions.union(more);
                }
            }
            None if scopes.len() < MAX_SCOPES => scopes.push(scope),
            None => {
                return Err(RegistryError::new(
                    ErrorCode::NameInvalid,
                    format!("a token request may name at most {MAX_SCOPES} resources"),
                ));
            }
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, actions: impl Into<ActionSet>) -> Scope {
        Scope::repository(name.parse().unwrap(), actions)
    }

    #[test]
    fn repository_scopes() {
        use Action::*;
        let cases: &[(&str, Scope)] = &[
            ("repository:alpine:pull", repo("alpine", [Pull])),
            (
                "repository:library/alpine:pull,push",
                repo("library/alpine", [Pull, Push]),
            ),
            ("repository:a/b/c:delete", repo("a/b/c", [Delete])),
            ("repository:a:*", repo("a", ActionSet::ALL)),
            ("repository:a:push,pull", repo("a", [Pull, Push])),
            ("repository:a:pull,frobnicate", repo("a", [Pull])),
            ("repository:a:", repo("a", ActionSet::EMPTY)),
            ("repository:a:frobnicate", repo("a", ActionSet::EMPTY)),
        ];
        for (text, expected) in cases {
            assert_eq!(
                Scope::parse(text).unwrap().as_ref(),
                Some(expected),
                "{text}"
            );
        }
    }

    #[test]
    fn catalog_scope() {
        assert_eq!(
            Scope::parse("registry:catalog:*").unwrap(),
            Some(Scope::Catalog)
        );
        for ignored in ["registry:catalog:pull", "registry:other:*"] {
            assert_eq!(Scope::parse(ignored).unwrap(), None, "{ignored}");
        }
    }

    #[test]
    fn scopes_for_other_resources_are_dropped() {
        for text in [
            "repository(plugin):vieux/sshfs:pull",
            "plugin:x:pull",
            "registry:catalog:",
            "whatever:a:b:c",
        ] {
            assert_eq!(Scope::parse(text).unwrap(), None, "{text}");
        }
    }

    #[test]
    fn malformed_scopes_and_names_are_refused() {
        for text in [
            "repository",
            "repository:alpine",
            ":alpine:pull",
            "repository::pull",
            "repository:Alpine:pull",
            "repository:localhost:5000/alpine:pull",
            "repository:a//b:pull",
            "repository:../etc:pull",
        ] {
            let err = Scope::parse(text).unwrap_err();
            assert_eq!(err.code(), ErrorCode::NameInvalid, "{text}");
        }
    }

    #[test]
    fn several_scopes_are_merged_per_resource() {
        use Action::*;
        let scopes = parse_scopes([
            "repository:a:pull repository:b:push",
            "repository:a:push",
            "registry:catalog:* repository(plugin):p:pull",
            "registry:catalog:*",
        ])
        .unwrap();
        assert_eq!(
            scopes,
            [repo("a", [Pull, Push]), repo("b", [Push]), Scope::Catalog]
        );
        assert_eq!(parse_scopes([]).unwrap(), []);
        assert_eq!(parse_scopes(["", "  "]).unwrap(), []);
        assert!(parse_scopes(["repository:a:pull repository:B:pull"]).is_err());
    }

    #[test]
    fn too_many_resources_are_refused() {
        let texts: Vec<String> = (0..=MAX_SCOPES)
            .map(|i| format!("repository:r{i}:pull"))
            .collect();
        let err = parse_scopes(texts.iter().map(String::as_str)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NameInvalid);
        let within = parse_scopes(texts[..MAX_SCOPES].iter().map(String::as_str)).unwrap();
        assert_eq!(within.len(), MAX_SCOPES);
        // Naming one resource many times is not naming many resources.
        let repeated = vec!["repository:a:pull"; MAX_SCOPES * 2];
        assert_eq!(parse_scopes(repeated).unwrap().len(), 1);
    }

    #[test]
    fn scopes_display_in_the_wire_form() {
        use Action::*;
        assert_eq!(
            repo("library/alpine", [Push, Pull]).to_string(),
            "repository:library/alpine:pull,push"
        );
        assert_eq!(repo("a", [Delete]).to_string(), "repository:a:delete");
        assert_eq!(Scope::Catalog.to_string(), "registry:catalog:*");
        for text in ["repository:a/b:pull,push,delete", "registry:catalog:*"] {
            assert_eq!(Scope::parse(text).unwrap().unwrap().to_string(), text);
        }
    }

    #[test]
    fn action_sets() {
        use Action::*;
        let set = ActionSet::from([Pull, Delete]);
        assert!(set.contains(Pull) && set.contains(Delete) && !set.contains(Push));
        assert_eq!(set.intersection([Push, Delete].into()), [Delete].into());
        assert_eq!(set.union([Push].into()), ActionSet::ALL);
        assert!(ActionSet::EMPTY.is_empty());
        assert_eq!(format!("{set:?}"), "{Pull, Delete}");
        assert_eq!(set.to_string(), "pull,delete");
        assert_eq!(Action::from_name("*"), None);
    }
}

//! Selecting jobs by their tags, as kubectl selects objects by label (`-l team=graphics,tier!=gpu`):
//! equality-based requirements, all of which must hold.

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagRequirement {
    /// `key=value` (or `key==value`).
    Equals { key: String, value: String },
    /// `key!=value`: a job without the tag matches too, as in Kubernetes.
    NotEquals { key: String, value: String },
    /// `key`: the tag is set, to anything.
    Exists { key: String },
    /// `!key`: the tag is not set.
    Absent { key: String },
}

impl TagRequirement {
    pub fn key(&self) -> &str {
        match self {
            TagRequirement::Equals { key, .. }
            | TagRequirement::NotEquals { key, .. }
            | TagRequirement::Exists { key }
            | TagRequirement::Absent { key } => key,
        }
    }
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSelector(pub Vec<TagRequirement>);

/// The most requirements one selector may hold: each costs a condition per row a list looks at.
pub const MAX_REQUIREMENTS: usize = 8;

impl TagSelector {
    /// Reads `key=value,key2!=value2,key3,!key4`. Set-based forms (`in`, `notin`) are not read.
    pub fn parse(text: &str) -> Result<TagSelector, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim) {
            let requirement = if let Some((key, value)) = term.split_once("!=") {
                TagRequirement::NotEquals {
                    key: key.trim().to_string(),
                    value: value.trim().to_string(),
                }
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                TagRequirement::Equals {
                    key: key.trim().to_string(),
                    value: value.trim().to_string(),
                }
            } else if let Some(key) = term.strip_prefix('!') {
                TagRequirement::Absent {
                    key: key.trim().to_string(),
                }
            } else {
                TagRequirement::Exists {
                    key: term.to_string(),
                }
            };
            let key = requirement.key();
            if key.is_empty()
                || key.chars().count() > 128
                || key.contains(['"', '\\', ' ', '(', ')'])
            {
                return Err(format!(
                    "{term:?} is not a tag requirement: give key=value, key!=value, key or !key, comma-separated (a key of 1 to 128 characters, without quotes, backslashes, spaces or parentheses)"
                ));
            }
            requirements.push(requirement);
        }
        if requirements.len() > MAX_REQUIREMENTS {
            return Err(format!(
                "has {} requirements; give at most {MAX_REQUIREMENTS}",
                requirements.len()
            ));
        }
        Ok(TagSelector(requirements))
    }

    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            TagRequirement::Equals { key, value } => tags.get(key) == Some(value),
            TagRequirement::NotEquals { key, value } => tags.get(key) != Some(value),
            TagRequirement::Exists { key } => tags.contains_key(key),
            TagRequirement::Absent { key } => !tags.contains_key(key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let tags: BTreeMap<String, String> = [("team", "graphics"), ("tier", "gpu")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // (selector, matches the tags above)
        let cases = [
            ("team=graphics", true),
            ("team==graphics", true),
            ("team=audio", false),
            ("team!=audio", true),
            ("owner!=anyone", true),
            ("team,tier", true),
            ("owner", false),
            ("!owner", true),
            ("!team", false),
            ("team=graphics, tier=gpu", true),
            ("team=graphics,tier=cpu", false),
            ("team=", false),
        ];
        for (text, expected) in cases {
            let selector = TagSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&tags), expected, "{text}");
        }
        for refused in ["", "=x", "a,,b", "te\"am=x", "team in (a,b)", "!"] {
            assert!(TagSelector::parse(refused).is_err(), "{refused}");
        }
        assert!(TagSelector::parse(&["k"; 9].join(",")).is_err());
    }
}

//! EventBridge event patterns: parsed and checked once (`EventPattern::parse`), then matched
//! against events (`matches`). Pure.
//!
//! A pattern is a JSON object mirroring the event. Each leaf is an array of what may match there;
//! an object recurses into the event's object. The event must have every field the pattern names
//! (except under `{"exists": false}`), and when the event's value is an array, any element may
//! match. Matchers: exact values (strings, numbers compared as numbers, booleans, `null`),
//! `prefix`, `suffix`, `equals-ignore-case`, `wildcard` (`*`), `anything-but` (a value, a list,
//! or a `prefix`/`suffix`/`equals-ignore-case`/`wildcard`), `numeric` (`=`, `<`, `<=`, `>`, `>=`,
//! up to two comparisons), `exists`, and `$or` (a list of patterns, any of which may match).

use serde_json::{Map, Value};

/// What is wrong with a pattern, and where (a dotted path into it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PatternError {
    pub path: String,
    pub message: String,
}

/// Kept with the JSON it was parsed from: that is its stored form, parsed again when read.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPattern {
    root: Node,
    source: Value,
}

impl serde::Serialize for EventPattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for EventPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = Value::deserialize(deserializer)?;
        EventPattern::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    /// Each field the event must match.
    fields: Vec<(String, Field)>,
    /// `$or`: any of these must match too.
    any_of: Vec<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Object(Node),
    /// Any of these matches.
    Leaf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix(String),
    PrefixIgnoreCase(String),
    Suffix(String),
    SuffixIgnoreCase(String),
    EqualsIgnoreCase(String),
    Wildcard(String),
    AnythingBut(Vec<Matcher>),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl EventPattern {
    pub fn parse(pattern: &Value) -> Result<EventPattern, PatternError> {
        let Value::Object(object) = pattern else {
            return Err(error("", "an event pattern is a JSON object"));
        };
        Ok(EventPattern {
            root: node(object, "")?,
            source: pattern.clone(),
        })
    }

    pub fn matches(&self, event: &Value) -> bool {
        node_matches(&self.root, Some(event))
    }

    /// Whether some event with this `source` and `detail-type` could match, whatever its other
    /// fields: the pattern's top-level `source` and `detail-type` are checked, the rest (and any
    /// top-level `$or`) is assumed to match. Used to skip events no rule could receive.
    pub fn may_match(&self, source: &str, detail_type: &str) -> bool {
        let head = serde_json::json!({"source": source, "detail-type": detail_type});
        self.root
            .fields
            .iter()
            .all(|(key, field)| match (key.as_str(), field) {
                ("source" | "detail-type", Field::Leaf(matchers)) => matchers
                    .iter()
                    .any(|matcher| leaf_matches(matcher, head.get(key))),
                ("source" | "detail-type", Field::Object(_)) => false,
                _ => true,
            })
    }
}

fn error(path: &str, message: impl Into<String>) -> PatternError {
    PatternError {
        path: if path.is_empty() {
            "(pattern)".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn node(object: &Map<String, Value>, path: &str) -> Result<Node, PatternError> {
    let mut fields = Vec::new();
    let mut any_of = Vec::new();
    for (key, value) in object {
        let here = join(path, key);
        if key == "$or" {
            let Value::Array(alternatives) = value else {
                return Err(error(&here, "$or takes a list of patterns"));
            };
            if alternatives.len() < 2 {
                return Err(error(&here, "$or needs at least two patterns"));
            }
            let nodes = alternatives
                .iter()
                .enumerate()
                .map(|(index, alternative)| match alternative {
                    Value::Object(object) => node(object, &format!("{here}[{index}]")),
                    _ => Err(error(
                        &format!("{here}[{index}]"),
                        "each $or entry is a pattern object",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            any_of.push(nodes);
            continue;
        }
        let field = match value {
            Value::Object(inner) => Field::Object(node(inner, &here)?),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(error(
                        &here,
                        "an empty list matches nothing; list at least one value",
                    ));
                }
                Field::Leaf(
                    items
                        .iter()
                        .enumerate()
                        .map(|(index, item)| matcher(item, &format!("{here}[{index}]")))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => {
                return Err(error(
                    &here,
                    "a value to match must be in a list, like [\"value\"]",
                ))
            }
        };
        fields.push((key.clone(), field));
    }
    Ok(Node { fields, any_of })
}

fn text(value: &Value, path: &str, what: &str) -> Result<String, PatternError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| error(path, format!("{what} takes a string")))
}

fn matcher(item: &Value, path: &str) -> Result<Matcher, PatternError> {
    let Value::Object(object) = item else {
        return Ok(Matcher::Exact(item.clone()));
    };
    let mut entries = object.iter();
    let (Some((operator, operand)), None) = (entries.next(), entries.next()) else {
        return Err(error(
            path,
            "a matcher object has exactly one operator, like {\"prefix\": \"a\"}",
        ));
    };
    let here = join(path, operator);
    Ok(match operator.as_str() {
        "prefix" => match operand {
            Value::Object(inner) => Matcher::PrefixIgnoreCase(ignore_case_operand(inner, &here)?),
            _ => Matcher::Prefix(text(operand, &here, "prefix")?),
        },
        "suffix" => match operand {
            Value::Object(inner) => Matcher::SuffixIgnoreCase(ignore_case_operand(inner, &here)?),
            _ => Matcher::Suffix(text(operand, &here, "suffix")?),
        },
        "equals-ignore-case" => Matcher::EqualsIgnoreCase(text(operand, &here, "equals-ignore-case")?),
        "wildcard" => Matcher::Wildcard(text(operand, &here, "wildcard")?),
        "exists" => match operand {
            Value::Bool(exists) => Matcher::Exists(*exists),
            _ => return Err(error(&here, "exists takes true or false")),
        },
        "numeric" => Matcher::Numeric(numeric(operand, &here)?),
        "anything-but" => Matcher::AnythingBut(match operand {
            Value::Array(values) => values
                .iter()
                .map(|value| match value {
                    Value::Object(_) | Value::Array(_) => {
                        Err(error(&here, "anything-but lists plain values"))
                    }
                    plain => Ok(Matcher::Exact(plain.clone())),
                })
                .collect::<Result<_, _>>()?,
            Value::Object(_) => {
                let inner = matcher(operand, &here)?;
                match inner {
                    Matcher::Prefix(_)
                    | Matcher::Suffix(_)
                    | Matcher::EqualsIgnoreCase(_)
                    | Matcher::Wildcard(_)
                    | Matcher::PrefixIgnoreCase(_)
                    | Matcher::SuffixIgnoreCase(_) => vec![inner],
                    Matcher::Exact(_)
                    | Matcher::AnythingBut(_)
                    | Matcher::Numeric(_)
                    | Matcher::Exists(_) => {
                        return Err(error(&here, "anything-but takes values, or prefix, suffix, equals-ignore-case or wildcard"))
                    }
                }
            }
            plain => vec![Matcher::Exact(plain.clone())],
        }),
        other => {
            return Err(error(
                path,
                format!("unknown matcher {other:?}; use prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric or exists"),
            ))
        }
    })
}

fn ignore_case_operand(object: &Map<String, Value>, path: &str) -> Result<String, PatternError> {
    match object.get("equals-ignore-case") {
        Some(value) if object.len() == 1 => text(value, path, "equals-ignore-case"),
        _ => Err(error(
            path,
            "takes a string, or {\"equals-ignore-case\": \"…\"}",
        )),
    }
}

fn numeric(operand: &Value, path: &str) -> Result<Vec<(Comparison, f64)>, PatternError> {
    let Value::Array(items) = operand else {
        return Err(error(
            path,
            "numeric takes a list like [\">\", 0, \"<=\", 5]",
        ));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(error(
            path,
            "numeric takes one or two comparisons, like [\">\", 0, \"<=\", 5]",
        ));
    }
    items
        .chunks(2)
        .map(|pair| {
            let comparison = match pair[0].as_str() {
                Some("=") => Comparison::Equal,
                Some("<") => Comparison::Less,
                Some("<=") => Comparison::LessOrEqual,
                Some(">") => Comparison::Greater,
                Some(">=") => Comparison::GreaterOrEqual,
                _ => return Err(error(path, format!("{} is not =, <, <=, > or >=", pair[0]))),
            };
            let number = pair[1]
                .as_f64()
                .ok_or_else(|| error(path, format!("{} is not a number", pair[1])))?;
            Ok((comparison, number))
        })
        .collect()
}

fn node_matches(node: &Node, event: Option<&Value>) -> bool {
    let object = event.and_then(Value::as_object);
    node.fields.iter().all(|(key, field)| {
        let value = object.and_then(|object| object.get(key));
        match field {
            Field::Object(inner) => value.is_some_and(|value| match value {
                Value::Array(items) => items.iter().any(|item| node_matches(inner, Some(item))),
                other => node_matches(inner, Some(other)),
            }),
            Field::Leaf(matchers) => matchers.iter().any(|matcher| leaf_matches(matcher, value)),
        }
    }) && node.any_of.iter().all(|alternatives| {
        alternatives
            .iter()
            .any(|alternative| node_matches(alternative, event))
    })
}

fn leaf_matches(matcher: &Matcher, value: Option<&Value>) -> bool {
    match (matcher, value) {
        (Matcher::Exists(exists), value) => {
            // An empty list or object counts as absent, as in EventBridge; so does a field that
            // holds an object (exists is for leaves).
            let present = value.is_some_and(|value| match value {
                Value::Array(items) => !items.is_empty(),
                Value::Object(_) => false,
                _ => true,
            });
            present == *exists
        }
        (_, None) => false,
        (matcher, Some(Value::Array(items))) => {
            items.iter().any(|item| scalar_matches(matcher, item))
        }
        (matcher, Some(value)) => scalar_matches(matcher, value),
    }
}

fn scalar_matches(matcher: &Matcher, value: &Value) -> bool {
    let string = value.as_str();
    match matcher {
        Matcher::Exact(expected) => match (expected, value) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (expected, value) => expected == value,
        },
        Matcher::Prefix(prefix) => string.is_some_and(|s| s.starts_with(prefix.as_str())),
        Matcher::PrefixIgnoreCase(prefix) => {
            string.is_some_and(|s| s.to_lowercase().starts_with(&prefix.to_lowercase()))
        }
        Matcher::Suffix(suffix) => string.is_some_and(|s| s.ends_with(suffix.as_str())),
        Matcher::SuffixIgnoreCase(suffix) => {
            string.is_some_and(|s| s.to_lowercase().ends_with(&suffix.to_lowercase()))
        }
        Matcher::EqualsIgnoreCase(expected) => {
            string.is_some_and(|s| s.to_lowercase() == expected.to_lowercase())
        }
        Matcher::Wildcard(pattern) => string.is_some_and(|s| wildcard(pattern, s)),
        Matcher::AnythingBut(excluded) => !excluded
            .iter()
            .any(|matcher| scalar_matches(matcher, value)),
        Matcher::Numeric(comparisons) => value.as_f64().is_some_and(|number| {
            comparisons
                .iter()
                .all(|(comparison, bound)| match comparison {
                    Comparison::Equal => number == *bound,
                    Comparison::Less => number < *bound,
                    Comparison::LessOrEqual => number <= *bound,
                    Comparison::Greater => number > *bound,
                    Comparison::GreaterOrEqual => number >= *bound,
                })
        }),
        Matcher::Exists(_) => unreachable!("exists is decided by leaf_matches"),
    }
}

/// `*` matches any run of characters; everything else itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An EC2 state-change event, as in EventBridge's documentation, with a few extra fields.
    fn event() -> Value {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "111122223333",
            "time": "2017-12-22T18:43:48Z",
            "region": "us-west-1",
            "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
            "detail": {
                "instance-id": "i-1234567890abcdef0",
                "state": "terminated",
                "c-count": 5,
                "d-count": 3.0,
                "tags": ["prod", "web"],
                "location": {"zone": "us-west-1a"},
                "empty": [],
                "nothing": null,
                "source-ip": "10.0.0.123"
            }
        })
    }

    #[test]
    fn patterns_from_the_eventbridge_documentation() {
        let cases: Vec<(Value, bool)> = vec![
            (json!({"source": ["aws.ec2"]}), true),
            (json!({"source": ["aws.s3", "aws.ec2"]}), true),
            (json!({"source": ["aws.s3"]}), false),
            (json!({"detail": {"state": ["terminated"]}}), true),
            (json!({"detail": {"state": ["running"]}}), false),
            (
                json!({"detail": {"location": {"zone": ["us-west-1a"]}}}),
                true,
            ),
            // Numbers compare as numbers; arrays in the event match on any element.
            (json!({"detail": {"d-count": [3]}}), true),
            (json!({"detail": {"tags": ["web"]}}), true),
            (json!({"detail": {"tags": ["dev"]}}), false),
            (json!({"detail": {"nothing": [null]}}), true),
            (json!({"detail": {"missing": [null]}}), false),
            (json!({"time": [{"prefix": "2017-12-22"}]}), true),
            (json!({"time": [{"prefix": "2018"}]}), false),
            (
                json!({"source": [{"prefix": {"equals-ignore-case": "AWS."}}]}),
                true,
            ),
            (
                json!({"detail": {"instance-id": [{"suffix": "def0"}]}}),
                true,
            ),
            (
                json!({"detail": {"instance-id": [{"suffix": {"equals-ignore-case": "DEF0"}}]}}),
                true,
            ),
            (
                json!({"detail-type": [{"equals-ignore-case": "ec2 instance state-change notification"}]}),
                true,
            ),
            (
                json!({"detail": {"instance-id": [{"wildcard": "i-*abc*0"}]}}),
                true,
            ),
            (
                json!({"detail": {"instance-id": [{"wildcard": "i-*xyz*"}]}}),
                false,
            ),
            (
                json!({"detail": {"state": [{"anything-but": "running"}]}}),
                true,
            ),
            (
                json!({"detail": {"state": [{"anything-but": ["stopped", "terminated"]}]}}),
                false,
            ),
            (
                json!({"detail": {"state": [{"anything-but": {"prefix": "term"}}]}}),
                false,
            ),
            (
                json!({"detail": {"state": [{"anything-but": {"suffix": "ing"}}]}}),
                true,
            ),
            (
                json!({"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}),
                true,
            ),
            (
                json!({"detail": {"c-count": [{"numeric": ["<", 5]}]}}),
                false,
            ),
            (
                json!({"detail": {"c-count": [{"numeric": ["=", 5]}]}}),
                true,
            ),
            (json!({"detail": {"state": [{"exists": true}]}}), true),
            (json!({"detail": {"missing": [{"exists": false}]}}), true),
            (json!({"detail": {"empty": [{"exists": false}]}}), true),
            (json!({"detail": {"state": [{"exists": false}]}}), false),
            (
                json!({"detail": {"$or": [{"c-count": [{"numeric": [">", 10]}]}, {"d-count": [3]}]}}),
                true,
            ),
            (
                json!({"$or": [{"source": ["aws.s3"]}, {"detail": {"state": ["running"]}}]}),
                false,
            ),
            (
                json!({"source": ["aws.ec2"], "detail": {"state": ["terminated"], "c-count": [5]}}),
                true,
            ),
            (
                json!({"source": ["aws.ec2"], "detail": {"state": ["terminated"], "c-count": [6]}}),
                false,
            ),
        ];
        for (pattern, expected) in cases {
            let parsed = EventPattern::parse(&pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(parsed.matches(&event()), expected, "{pattern}");
        }
    }

    #[test]
    fn invalid_patterns_are_refused_naming_where() {
        let cases = [
            (
                json!(["aws.ec2"]),
                "(pattern): an event pattern is a JSON object",
            ),
            (
                json!({"source": "aws.ec2"}),
                "source: a value to match must be in a list",
            ),
            (
                json!({"source": []}),
                "source: an empty list matches nothing",
            ),
            (
                json!({"detail": {"n": [{"numeric": [">", "five"]}]}}),
                "detail.n[0].numeric: \"five\" is not a number",
            ),
            (
                json!({"detail": {"n": [{"numeric": ["!=", 1]}]}}),
                "is not =, <, <=, > or >=",
            ),
            (
                json!({"source": [{"regex": "a.*"}]}),
                "source[0]: unknown matcher \"regex\"",
            ),
            (
                json!({"source": [{"exists": "yes"}]}),
                "source[0].exists: exists takes true or false",
            ),
            (
                json!({"$or": [{"source": ["a"]}]}),
                "$or: $or needs at least two patterns",
            ),
            (
                json!({"source": [{"prefix": "a", "suffix": "b"}]}),
                "exactly one operator",
            ),
        ];
        for (pattern, expected) in cases {
            let message = EventPattern::parse(&pattern).unwrap_err().to_string();
            assert!(message.contains(expected), "{pattern}: {message}");
        }
    }

    #[test]
    fn may_match_looks_at_source_and_detail_type_only() {
        let cases = [
            (
                json!({"source": ["batchctl"], "detail": {"status": ["FAILED"]}}),
                true,
            ),
            (json!({"source": [{"prefix": "batch"}]}), true),
            (json!({"detail-type": ["Job State Change"]}), true),
            (json!({"detail": {"x": [1]}}), true),
            (json!({"source": ["shop"]}), false),
            (
                json!({"source": ["batchctl"], "detail-type": ["Order Placed"]}),
                false,
            ),
        ];
        for (pattern, expected) in cases {
            let parsed = EventPattern::parse(&pattern).unwrap();
            assert_eq!(
                parsed.may_match("batchctl", "Job State Change"),
                expected,
                "{pattern}"
            );
        }
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "anything", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("abc", "abc", true),
            ("abc", "abd", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(wildcard(pattern, text), expected, "{pattern} {text}");
        }
    }
}

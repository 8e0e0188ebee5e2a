//! Where and how a Kubernetes attempt's pod runs: node selector, tolerations, affinity, priority
//! class and the pod's user and groups. A definition's `podProperties` over its environment's
//! `podDefaults`; other backends have no nodes to select and do not read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodOptions {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Kubernetes' `Affinity` as given, in JSON text (its shape is checked by the Kubernetes
    /// backend, which refuses the start naming what it could not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "PodSecurity::is_empty")]
    pub security_context: PodSecurity,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; every effect when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// The pod's user and groups. Root (0) is refused: pods keep `runAsNonRoot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplemental_groups: Vec<i64>,
}

impl PodSecurity {
    pub fn is_empty(&self) -> bool {
        *self == PodSecurity::default()
    }
}

impl PodOptions {
    /// These options over `defaults` (an environment's): node selector keys and security fields
    /// one by one, tolerations added to the environment's, affinity and priority class whole.
    pub fn over(&self, defaults: &PodOptions) -> PodOptions {
        let mut node_selector = defaults.node_selector.clone();
        node_selector.extend(self.node_selector.clone());
        let security = &self.security_context;
        let base = &defaults.security_context;
        PodOptions {
            node_selector,
            tolerations: defaults
                .tolerations
                .iter()
                .chain(&self.tolerations)
                .cloned()
                .collect(),
            affinity: self.affinity.clone().or_else(|| defaults.affinity.clone()),
            priority_class_name: self
                .priority_class_name
                .clone()
                .or_else(|| defaults.priority_class_name.clone()),
            security_context: PodSecurity {
                run_as_user: security.run_as_user.or(base.run_as_user),
                run_as_group: security.run_as_group.or(base.run_as_group),
                fs_group: security.fs_group.or(base.fs_group),
                supplemental_groups: if security.supplemental_groups.is_empty() {
                    base.supplemental_groups.clone()
                } else {
                    security.supplemental_groups.clone()
                },
            },
        }
    }

    /// Checks what can be checked without Kubernetes' types: the toleration operators and
    /// effects, the ids, the priority class's name, the affinity's top-level keys. The message
    /// names the field under `podProperties`.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (key, value) in &self.node_selector {
            if key.is_empty() || key.len() > 253 || value.len() > 63 {
                return Err((
                    format!("nodeSelector.{key}"),
                    "is not a label key and value (a key of at most 253 characters, a value of at most 63)".into(),
                ));
            }
        }
        for (index, toleration) in self.tolerations.iter().enumerate() {
            let field = |name: &str| format!("tolerations[{index}].{name}");
            match toleration.operator.as_deref() {
                None | Some("Equal") => {}
                Some("Exists") if toleration.value.is_none() => {}
                Some("Exists") => {
                    return Err((field("value"), "must be absent with operator Exists".into()))
                }
                Some(other) => {
                    return Err((
                        field("operator"),
                        format!("{other:?} is not an operator; use Equal or Exists"),
                    ))
                }
            }
            if let Some(effect) = toleration.effect.as_deref() {
                if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                    return Err((
                        field("effect"),
                        format!("{effect:?} is not an effect; use NoSchedule, PreferNoSchedule or NoExecute"),
                    ));
                }
            }
            if toleration.key.is_none() && toleration.operator.as_deref() != Some("Exists") {
                return Err((
                    field("key"),
                    "is required unless operator is Exists (which tolerates every taint)".into(),
                ));
            }
        }
        if let Some(affinity) = &self.affinity {
            let known = ["nodeAffinity", "podAffinity", "podAntiAffinity"];
            let affinity: serde_json::Value =
                serde_json::from_str(affinity).unwrap_or(serde_json::Value::Null);
            match affinity.as_object() {
                Some(fields) => {
                    if let Some(unknown) = fields.keys().find(|key| !known.contains(&key.as_str()))
                    {
                        return Err((
                            format!("affinity.{unknown}"),
                            "is not a kind of affinity; use nodeAffinity, podAffinity or podAntiAffinity".into(),
                        ));
                    }
                }
                None => return Err(("affinity".into(), "must be an object".into())),
            }
        }
        if let Some(name) = &self.priority_class_name {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')
                });
            if !valid {
                return Err((
                    "priorityClassName".into(),
                    format!(
                        "{name:?} is not a PriorityClass name (lowercase letters, digits, - and .)"
                    ),
                ));
            }
        }
        let security = &self.security_context;
        for (field, id) in [
            ("securityContext.runAsUser", security.run_as_user),
            ("securityContext.runAsGroup", security.run_as_group),
            ("securityContext.fsGroup", security.fs_group),
        ] {
            if let Some(id) = id {
                if !(0..=2_147_483_647).contains(&id) {
                    return Err((field.into(), format!("{id} is not a user or group id")));
                }
            }
        }
        if security.run_as_user == Some(0) {
            return Err((
                "securityContext.runAsUser".into(),
                "0 is root, which batchctl's pods never run as (runAsNonRoot); give another id"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_goes_over_its_environment() {
        let defaults = PodOptions {
            node_selector: [("pool", "batch"), ("zone", "a")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tolerations: vec![Toleration {
                key: Some("batch".into()),
                operator: Some("Exists".into()),
                value: None,
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }],
            priority_class_name: Some("low".into()),
            security_context: PodSecurity {
                run_as_user: Some(1000),
                fs_group: Some(2000),
                ..PodSecurity::default()
            },
            ..PodOptions::default()
        };
        let definition = PodOptions {
            node_selector: [("zone".to_string(), "b".to_string())].into(),
            tolerations: vec![Toleration {
                key: Some("gpu".into()),
                operator: None,
                value: Some("true".into()),
                effect: None,
                toleration_seconds: None,
            }],
            security_context: PodSecurity {
                run_as_user: Some(1001),
                ..PodSecurity::default()
            },
            ..PodOptions::default()
        };
        let merged = definition.over(&defaults);
        assert_eq!(merged.node_selector["pool"], "batch");
        assert_eq!(merged.node_selector["zone"], "b");
        assert_eq!(merged.tolerations.len(), 2);
        assert_eq!(merged.priority_class_name.as_deref(), Some("low"));
        assert_eq!(merged.security_context.run_as_user, Some(1001));
        assert_eq!(merged.security_context.fs_group, Some(2000));
    }

    #[test]
    fn checks_name_the_field() {
        let check = |options: PodOptions| options.check().map_err(|(field, _)| field);
        assert_eq!(check(PodOptions::default()), Ok(()));
        let toleration = |operator: &str, value: Option<&str>| PodOptions {
            tolerations: vec![Toleration {
                key: Some("k".into()),
                operator: Some(operator.into()),
                value: value.map(str::to_string),
                effect: None,
                toleration_seconds: None,
            }],
            ..PodOptions::default()
        };
        assert_eq!(
            check(toleration("Exists", Some("v"))),
            Err("tolerations[0].value".into())
        );
        assert_eq!(
            check(toleration("Like", None)),
            Err("tolerations[0].operator".into())
        );
        let affinity = PodOptions {
            affinity: Some(r#"{"nodeAffinty": {}}"#.into()),
            ..PodOptions::default()
        };
        assert_eq!(check(affinity), Err("affinity.nodeAffinty".into()));
        let root = PodOptions {
            security_context: PodSecurity {
                run_as_user: Some(0),
                ..PodSecurity::default()
            },
            ..PodOptions::default()
        };
        assert_eq!(check(root), Err("securityContext.runAsUser".into()));
        let class = PodOptions {
            priority_class_name: Some("High".into()),
            ..PodOptions::default()
        };
        assert_eq!(check(class), Err("priorityClassName".into()));
    }
}

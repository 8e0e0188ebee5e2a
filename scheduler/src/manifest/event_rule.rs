//! `kind: EventRule`: a pattern, an input transformer, and the submit it makes.

use super::*;

/// `kind: EventRule`: an EventBridge event pattern, and the job to submit for each matching
/// event, with values carried over by `inputTransformer.inputPathsMap` into `<name>` placeholders
/// of the target's parameters, command and environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventRuleSpec {
    pub event_pattern: serde_json::Value,
    #[serde(default)]
    pub state: Option<ResourceState>,
    pub target: SubmitJobRequest,
    #[serde(default)]
    pub input_transformer: Option<InputTransformerSpec>,
    /// How many rule deliveries in a row may lead to a job before the chain is cut as a loop
    /// (default 16, as AWS stops a recursive Lambda loop).
    #[serde(default)]
    pub max_chain_depth: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputTransformerSpec {
    pub input_paths_map: BTreeMap<String, String>,
}

pub fn event_rule(name: String, spec: &EventRuleSpec) -> Result<EventRule, FieldError> {
    let pattern = EventPattern::parse(&spec.event_pattern)
        .map_err(|error| FieldError::new(format!("eventPattern.{}", error.path), error.message))?;
    let input_paths = spec
        .input_transformer
        .as_ref()
        .map(|transformer| transformer.input_paths_map.clone())
        .unwrap_or_default();
    check_input_paths(&input_paths).map_err(|(name, message)| {
        FieldError::new(format!("inputTransformer.inputPathsMap.{name}"), message)
    })?;
    if !spec.target.depends_on.is_empty() {
        return Err(FieldError::new(
            "target.dependsOn",
            "a rule's jobs cannot depend on job ids; match the other job's state change event instead",
        ));
    }
    if spec.target.job_queue.trim().is_empty() || spec.target.job_definition.trim().is_empty() {
        return Err(FieldError::new(
            "target",
            "needs jobQueue and jobDefinition: the job each matching event submits",
        ));
    }
    let max_chain_depth = match spec.max_chain_depth {
        None => crate::core::events::DEFAULT_MAX_CHAIN_DEPTH,
        Some(depth @ 1..=crate::core::events::MAX_CHAIN_DEPTH) => depth,
        Some(depth) => {
            return Err(FieldError::new(
                "maxChainDepth",
                format!(
                "is {depth}; give 1 to {} (how many rule deliveries in a row may lead to a job)",
                crate::core::events::MAX_CHAIN_DEPTH
            ),
            ))
        }
    };
    Ok(EventRule {
        name,
        pattern,
        enabled: spec.state.unwrap_or(ResourceState::Enabled) == ResourceState::Enabled,
        input_paths,
        max_chain_depth,
    })
}

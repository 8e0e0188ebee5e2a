//! `kind: ConsumableResource` and the `consumableResourceProperties` definitions and submits ask
//! with (`core::consumable`).

use super::*;
use crate::core::consumable::{
    ConsumableRequest, ConsumableResource, ConsumableType, MAX_QUANTITY, MAX_REQUESTS,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumableResourceSpec {
    pub total_quantity: i64,
    /// `REPLENISHABLE` (the default: given back when the job's attempt ends) or
    /// `NON_REPLENISHABLE` (used up).
    #[serde(default)]
    pub resource_type: Option<String>,
}

/// AWS Batch's `consumableResourceProperties`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumableResourceProperties {
    pub consumable_resource_list: Vec<ConsumableRequestSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsumableRequestSpec {
    pub consumable_resource: String,
    pub quantity: i64,
}

pub fn consumable_resource(
    name: String,
    spec: &ConsumableResourceSpec,
) -> Result<ConsumableResource, FieldError> {
    let total_quantity = u64::try_from(spec.total_quantity)
        .ok()
        .filter(|total| *total <= MAX_QUANTITY)
        .ok_or_else(|| {
            FieldError::new(
                "totalQuantity",
                format!("is {}; give 0 to {MAX_QUANTITY}", spec.total_quantity),
            )
        })?;
    let resource_type = match spec.resource_type.as_deref() {
        None | Some("REPLENISHABLE") => ConsumableType::Replenishable,
        Some("NON_REPLENISHABLE") => ConsumableType::NonReplenishable,
        Some(other) => {
            return Err(FieldError::new(
                "resourceType",
                format!("{other:?} is not a type; use REPLENISHABLE or NON_REPLENISHABLE"),
            ))
        }
    };
    Ok(ConsumableResource {
        name,
        total_quantity,
        resource_type,
    })
}

/// The requests of `consumableResourceProperties`, checked on their own (that the resources
/// exist is checked at submit, against the store).
pub fn consumable_requests(
    properties: &ConsumableResourceProperties,
) -> Result<Vec<ConsumableRequest>, FieldError> {
    let list = &properties.consumable_resource_list;
    if list.len() > MAX_REQUESTS {
        return Err(FieldError::new(
            "consumableResourceList",
            format!(
                "names {} resources; give at most {MAX_REQUESTS}",
                list.len()
            ),
        ));
    }
    let mut requests: Vec<ConsumableRequest> = Vec::with_capacity(list.len());
    for (index, request) in list.iter().enumerate() {
        let field = |name: &str| format!("consumableResourceList[{index}].{name}");
        crate::core::model::validate_name(&request.consumable_resource)
            .map_err(|message| FieldError::new(field("consumableResource"), message))?;
        if requests
            .iter()
            .any(|seen| seen.consumable_resource == request.consumable_resource)
        {
            return Err(FieldError::new(
                field("consumableResource"),
                format!("{} is listed twice", request.consumable_resource),
            ));
        }
        let quantity = u64::try_from(request.quantity)
            .ok()
            .filter(|quantity| (1..=MAX_QUANTITY).contains(quantity))
            .ok_or_else(|| {
                FieldError::new(
                    field("quantity"),
                    format!("is {}; give 1 to {MAX_QUANTITY}", request.quantity),
                )
            })?;
        requests.push(ConsumableRequest {
            consumable_resource: request.consumable_resource.clone(),
            quantity,
        });
    }
    Ok(requests)
}

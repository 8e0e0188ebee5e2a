//! Consumable resources, as AWS Batch has them (`kind: ConsumableResource`): a named quantity —
//! licences, API quota, seats — that jobs ask for beside vCPUs and memory
//! (`consumableResourceProperties`) and that placement accounts like capacity.
//!
//! A REPLENISHABLE resource is held while a job's attempt is STARTING or RUNNING and given back
//! when it ends. A NON_REPLENISHABLE one is used up when an attempt is placed and never given
//! back; what was used is stored with the placement that used it (`consumed`), in the same
//! transaction, so a restart never hands it out again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A validated `kind: ConsumableResource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableResource {
    pub name: String,
    pub total_quantity: u64,
    pub resource_type: ConsumableType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsumableType {
    Replenishable,
    NonReplenishable,
}

/// One entry of `consumableResourceProperties.consumableResourceList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableRequest {
    pub consumable_resource: String,
    pub quantity: u64,
}

/// The most a quantity may be.
pub const MAX_QUANTITY: u64 = 1_000_000_000;
/// The most consumable resources one job may ask for.
pub const MAX_REQUESTS: usize = 16;

/// A consumable resource as placement reads it: the resource, and how much of a
/// NON_REPLENISHABLE one is used up already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumableStock {
    pub resource: ConsumableResource,
    pub consumed: u64,
}

/// Why a job cannot have what it asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Short {
    pub consumable_resource: String,
    pub needs: u64,
    /// None when no such resource exists.
    pub available: Option<u64>,
}

/// What each consumable resource has left, kept while a pass places jobs.
#[derive(Debug, Clone, Default)]
pub struct ConsumableBook {
    available: HashMap<String, (u64, ConsumableType)>,
}

impl ConsumableBook {
    /// The stock, less what `running` (the requests of the STARTING and RUNNING attempts) hold
    /// of REPLENISHABLE resources; NON_REPLENISHABLE ones are less what was `consumed`.
    pub fn new<'r>(
        stock: &[ConsumableStock],
        running: impl IntoIterator<Item = &'r [ConsumableRequest]>,
    ) -> ConsumableBook {
        let mut book = ConsumableBook {
            available: stock
                .iter()
                .map(|stock| {
                    let left = match stock.resource.resource_type {
                        ConsumableType::Replenishable => stock.resource.total_quantity,
                        ConsumableType::NonReplenishable => {
                            stock.resource.total_quantity.saturating_sub(stock.consumed)
                        }
                    };
                    (
                        stock.resource.name.clone(),
                        (left, stock.resource.resource_type),
                    )
                })
                .collect(),
        };
        if !book.available.is_empty() {
            for requests in running {
                for request in requests {
                    if let Some((left, ConsumableType::Replenishable)) =
                        book.available.get_mut(&request.consumable_resource)
                    {
                        *left = left.saturating_sub(request.quantity);
                    }
                }
            }
        }
        book
    }

    /// What `name` has left now; None when no such resource exists.
    pub fn left(&self, name: &str) -> Option<u64> {
        self.available.get(name).map(|(left, _)| *left)
    }

    /// The first request that cannot be met now, if any.
    pub fn short(&self, requests: &[ConsumableRequest]) -> Option<Short> {
        requests.iter().find_map(|request| {
            let available = self.left(&request.consumable_resource);
            (available.unwrap_or(0) < request.quantity).then(|| Short {
                consumable_resource: request.consumable_resource.clone(),
                needs: request.quantity,
                available,
            })
        })
    }

    /// Takes what `requests` ask for; returns the NON_REPLENISHABLE part, which the placement's
    /// commit records as used up.
    pub fn take(&mut self, requests: &[ConsumableRequest]) -> Vec<ConsumableRequest> {
        let mut used_up = Vec::new();
        for request in requests {
            if let Some((left, kind)) = self.available.get_mut(&request.consumable_resource) {
                *left = left.saturating_sub(request.quantity);
                if *kind == ConsumableType::NonReplenishable {
                    used_up.push(request.clone());
                }
            }
        }
        used_up
    }
}

/// Whether each request names a resource that exists and asks no more than it has in all: a
/// job that could never be placed is refused at submit. The error is the request's index and
/// what to do.
pub fn check_requests(
    requests: &[ConsumableRequest],
    stock: &[ConsumableStock],
) -> Result<(), (usize, String)> {
    for (index, request) in requests.iter().enumerate() {
        let Some(stock) = stock
            .iter()
            .find(|stock| stock.resource.name == request.consumable_resource)
        else {
            return Err((
                index,
                format!(
                    "consumable resource \"{}\" does not exist; apply it first (kind: ConsumableResource)",
                    request.consumable_resource
                ),
            ));
        };
        if request.quantity > stock.resource.total_quantity {
            return Err((
                index,
                format!(
                    "asks for {} of consumable resource \"{}\", which has {} in all",
                    request.quantity, request.consumable_resource, stock.resource.total_quantity
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(name: &str, total: u64, kind: ConsumableType, consumed: u64) -> ConsumableStock {
        ConsumableStock {
            resource: ConsumableResource {
                name: name.into(),
                total_quantity: total,
                resource_type: kind,
            },
            consumed,
        }
    }

    fn ask(name: &str, quantity: u64) -> ConsumableRequest {
        ConsumableRequest {
            consumable_resource: name.into(),
            quantity,
        }
    }

    #[test]
    fn replenishable_resources_are_held_while_running_and_used_up_ones_are_gone() {
        let stocks = [
            stock("licences", 3, ConsumableType::Replenishable, 0),
            stock("quota", 10, ConsumableType::NonReplenishable, 7),
        ];
        let running = [vec![ask("licences", 2), ask("quota", 5)]];
        let mut book = ConsumableBook::new(&stocks, running.iter().map(Vec::as_slice));
        assert_eq!(book.short(&[ask("licences", 1)]), None);
        assert_eq!(
            book.short(&[ask("licences", 2)]),
            Some(Short {
                consumable_resource: "licences".into(),
                needs: 2,
                available: Some(1)
            }),
            "two of three licences are held by the running job"
        );
        assert_eq!(
            book.short(&[ask("quota", 4)]),
            Some(Short {
                consumable_resource: "quota".into(),
                needs: 4,
                available: Some(3)
            }),
            "seven of ten used up; the running job's five are among them, not counted twice"
        );
        assert_eq!(
            book.take(&[ask("licences", 1), ask("quota", 3)]),
            [ask("quota", 3)],
            "only the non-replenishable part is recorded as used up"
        );
        assert!(book.short(&[ask("licences", 1)]).is_some());
        assert!(book.short(&[ask("quota", 1)]).is_some());
        assert_eq!(
            book.short(&[ask("nothing", 1)]),
            Some(Short {
                consumable_resource: "nothing".into(),
                needs: 1,
                available: None
            })
        );
    }
}

//! Multi-node attempts on Docker (`AttemptSpec::nodes`): one user-defined bridge network per
//! attempt and one container per node on it.
//!
//! Invariants:
//! - The main node's container is named after the attempt (its handle), so waiting, outcomes
//!   and `list` treat a multi-node attempt as its main container; every other node's is
//!   `<attempt>-node-<i>` (`core::multinode::node_attempt_id`), labelled a worker, and never listed
//!   as an attempt of its own.
//! - The main node starts first; the others get its address on the attempt's network
//!   (`AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS`) and start after it. Every node is also
//!   reachable by the alias `node-<i>`.
//! - A gang is whole or it is not running: `list` reports an attempt whose workers are missing or
//!   never started (a server that died mid-start) as never started, so it is started again — and
//!   a start first removes whatever an earlier start of the same attempt left.
//! - The attempt ends with its main node: once it has stopped, the others are stopped too.

use std::collections::HashMap;

use bollard::models::{EndpointSettings, NetworkCreateRequest, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;

use super::spec::{container_body, LABEL_COMPUTE_ENVIRONMENT, LABEL_OWNER};
use super::{classify, classify_start, status};
use crate::{AttemptSpec, ExecutorError, NodeGroup, MAIN_NODE_ADDRESS_VARIABLE};

/// On every container of a multi-node attempt: the attempt's name (its handle).
pub const LABEL_ATTEMPT_NAME: &str = "batchctl.attempt-name";
/// The node a container runs, from 0.
pub const LABEL_NODE_INDEX: &str = "batchctl.node-index";
/// On the main node's container: how many nodes the attempt has, and which is the main one.
pub const LABEL_NUM_NODES: &str = "batchctl.num-nodes";
pub const LABEL_MAIN_NODE: &str = "batchctl.main-node";
/// On every other node's container, so `list` passes over it.
pub const LABEL_WORKER: &str = "batchctl.worker";

/// How long a worker may take to stop once its main node has ended.
const WORKER_STOP_SECONDS: i32 = 2;

/// The attempt's network.
pub fn network_name(attempt: &str) -> String {
    format!("batchctl-{attempt}")
}

/// The name of node `node`'s container, given the main node's container labels.
pub fn node_container(attempt: &str, node: u32, main_labels: &HashMap<String, String>) -> String {
    let main = main_labels
        .get(LABEL_MAIN_NODE)
        .and_then(|main| main.parse().ok())
        .unwrap_or(0);
    batchctl_core::multinode::node_attempt_id(attempt, node, main)
}

/// Node `node`'s create body: its container, on the attempt's network under `node-<i>`, labelled
/// as part of the attempt.
pub fn node_body(
    group: &NodeGroup,
    node: u32,
    attempt: &str,
    owner: &str,
    main_address: Option<&str>,
) -> bollard::models::ContainerCreateBody {
    let spec = &group.nodes[node as usize];
    let mut body = container_body(spec, owner);
    let network = network_name(attempt);
    let labels = body.labels.get_or_insert_with(HashMap::new);
    labels.insert(LABEL_ATTEMPT_NAME.into(), attempt.into());
    labels.insert(LABEL_NODE_INDEX.into(), node.to_string());
    match node == group.main_node {
        true => {
            labels.insert(LABEL_NUM_NODES.into(), group.nodes.len().to_string());
            labels.insert(LABEL_MAIN_NODE.into(), group.main_node.to_string());
        }
        false => {
            labels.insert(LABEL_WORKER.into(), "true".into());
        }
    }
    if let Some(address) = main_address {
        body.env
            .get_or_insert_with(Vec::new)
            .push(format!("{MAIN_NODE_ADDRESS_VARIABLE}={address}"));
    }
    body.hostname = Some(format!("node-{node}"));
    if let Some(host) = body.host_config.as_mut() {
        host.network_mode = Some(network.clone());
    }
    body.networking_config = Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network,
            EndpointSettings {
                aliases: Some(vec![format!("node-{node}")]),
                ..EndpointSettings::default()
            },
        )])),
    });
    body
}

/// Starts every node of `spec` (whose `nodes` is `group`): removes what an earlier start of this
/// attempt left, makes the network, starts the main node, reads its address, starts the rest.
pub async fn start_nodes(
    docker: &Docker,
    spec: &AttemptSpec,
    group: &NodeGroup,
    owner: &str,
) -> Result<(), ExecutorError> {
    let attempt = spec.attempt_id.as_str();
    remove_all(docker, attempt).await?;
    let network = network_name(attempt);
    let request = NetworkCreateRequest {
        name: network.clone(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_OWNER.to_string(), owner.to_string()),
            (
                LABEL_COMPUTE_ENVIRONMENT.to_string(),
                spec.compute_environment.clone(),
            ),
            (LABEL_ATTEMPT_NAME.to_string(), attempt.to_string()),
        ])),
        ..NetworkCreateRequest::default()
    };
    match docker.create_network(request).await {
        Ok(_) => {}
        // Left by an earlier start of this attempt: its containers are gone, so reuse it.
        Err(error) if status(&error) == Some(409) => {}
        Err(error) => return Err(classify_start(error)),
    }
    let create_and_start = |node: u32, address: Option<String>| {
        let body = node_body(group, node, attempt, owner, address.as_deref());
        let name = group.nodes[node as usize].attempt_id.clone();
        async move {
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..CreateContainerOptions::default()
            };
            docker
                .create_container(Some(options), body)
                .await
                .map_err(classify_start)?;
            docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(classify_start)?;
            Ok::<String, ExecutorError>(name)
        }
    };
    let main = create_and_start(group.main_node, None).await?;
    let inspected = docker
        .inspect_container(&main, None::<InspectContainerOptions>)
        .await
        .map_err(classify)?;
    let address = inspected
        .network_settings
        .and_then(|settings| settings.networks)
        .and_then(|networks| networks.get(&network).cloned())
        .and_then(|endpoint| endpoint.ip_address)
        .filter(|address| !address.is_empty());
    let Some(address) = address else {
        // The main node stopped before it had an address (a command that exits at once): the
        // others have no one to reach. The outcome is the main node's.
        return Ok(());
    };
    let workers = (0..group.nodes.len() as u32).filter(|node| *node != group.main_node);
    futures::future::try_join_all(
        workers.map(|node| create_and_start(node, Some(address.clone()))),
    )
    .await?;
    Ok(())
}

/// The containers of an attempt's nodes but its main one, by name, with whether each has ever
/// started.
async fn workers(docker: &Docker, attempt: &str) -> Result<Vec<(String, bool)>, ExecutorError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_ATTEMPT_NAME}={attempt}"),
                LABEL_WORKER.to_string(),
            ],
        )])),
        ..ListContainersOptions::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(classify)?;
    Ok(listed
        .into_iter()
        .filter_map(|summary| {
            let name = summary.names?.first()?.trim_start_matches('/').to_string();
            let started = summary.state.map(|state| state.to_string()) != Some("created".into());
            Some((name, started))
        })
        .collect())
}

/// Whether every worker of a multi-node attempt whose main container has `labels` exists and
/// has started; true for an attempt of one container.
pub async fn gang_complete(
    docker: &Docker,
    attempt: &str,
    labels: &HashMap<String, String>,
) -> Result<bool, ExecutorError> {
    let Some(nodes) = labels
        .get(LABEL_NUM_NODES)
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Ok(true);
    };
    let workers = workers(docker, attempt).await?;
    Ok(workers.len() + 1 == nodes && workers.iter().all(|(_, started)| *started))
}

/// Stops every worker of the attempt (the main node's end, a terminate).
pub async fn stop_workers(
    docker: &Docker,
    attempt: &str,
    seconds: i32,
) -> Result<(), ExecutorError> {
    let names = workers(docker, attempt).await?;
    let stops = names.into_iter().map(|(name, _)| async move {
        let options = StopContainerOptions {
            t: Some(seconds),
            ..StopContainerOptions::default()
        };
        match docker.stop_container(&name, Some(options)).await {
            Err(error) if !matches!(status(&error), Some(304 | 404)) => Err(classify(error)),
            _ => Ok(()),
        }
    });
    futures::future::try_join_all(stops).await?;
    Ok(())
}

/// Stops the workers of an attempt whose main node has ended.
pub async fn main_node_ended(docker: &Docker, attempt: &str) -> Result<(), ExecutorError> {
    stop_workers(docker, attempt, WORKER_STOP_SECONDS).await
}

/// Removes every container of an attempt and its network.
pub async fn remove_all(docker: &Docker, attempt: &str) -> Result<(), ExecutorError> {
    let mut names: Vec<String> = workers(docker, attempt)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.push(attempt.to_string());
    for name in names {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..RemoveContainerOptions::default()
        };
        match docker.remove_container(&name, Some(options)).await {
            Err(error) if status(&error) != Some(404) => return Err(classify(error)),
            _ => {}
        }
    }
    match docker.remove_network(&network_name(attempt)).await {
        Err(error) if status(&error) != Some(404) => Err(classify(error)),
        _ => Ok(()),
    }
}

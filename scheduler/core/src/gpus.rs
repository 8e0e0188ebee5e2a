//! Which GPUs of a Docker compute environment an attempt gets: its environment declares their
//! ids (`gpuIds`, or `0` to `maxGpus - 1`), and each placement takes the lowest ids no running
//! attempt of the environment holds, so concurrent attempts never share a device. Placement has
//! already counted GPUs like vCPUs; this names them.

use std::collections::BTreeSet;

use crate::model::{Backend, ComputeEnvironment};

/// The GPU ids of an environment whose attempts get named devices (Docker); empty for the others
/// (Kubernetes' device plugin names them, processes have none).
pub fn environment_gpu_ids(environment: &ComputeEnvironment) -> Vec<String> {
    match &environment.backend {
        Backend::Docker(settings) if !settings.gpu_ids.is_empty() => settings.gpu_ids.clone(),
        Backend::Docker(_) => (0..environment.capacity.gpus)
            .map(|index| index.to_string())
            .collect(),
        Backend::Kubernetes(_) | Backend::Process => Vec::new(),
    }
}

/// The `count` lowest-listed ids of `ids` not in `in_use`, or `None` when fewer are free.
pub fn assign(ids: &[String], in_use: &BTreeSet<String>, count: u64) -> Option<Vec<String>> {
    let free: Vec<String> = ids
        .iter()
        .filter(|id| !in_use.contains(*id))
        .take(count as usize)
        .cloned()
        .collect();
    (free.len() as u64 == count).then_some(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_ids_lowest_first() {
        let ids: Vec<String> = ["0", "1", "2", "3"].map(String::from).to_vec();
        let mut in_use = BTreeSet::new();
        let first = assign(&ids, &in_use, 2).unwrap();
        assert_eq!(first, ["0", "1"]);
        in_use.extend(first);
        assert_eq!(assign(&ids, &in_use, 1).unwrap(), ["2"]);
        in_use.insert("2".into());
        assert_eq!(assign(&ids, &in_use, 2), None, "one is left");
        in_use.remove("0");
        assert_eq!(assign(&ids, &in_use, 2).unwrap(), ["0", "3"]);
        assert_eq!(assign(&ids, &in_use, 0).unwrap(), Vec::<String>::new());
    }
}

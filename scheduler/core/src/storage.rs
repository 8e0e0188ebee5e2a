//! A container's storage: AWS Batch's `volumes` and `mountPoints`, with the Kubernetes volume kinds
//! AWS Batch on EKS has. Each backend mounts what it can and refuses, by name, what it cannot;
//! host paths are mounted only under the paths the compute environment lists
//! (`allowedHostPaths`), so a job cannot mount `/` or the engine's socket.

use serde::{Deserialize, Serialize};

/// A named volume of a definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum VolumeSource {
    /// A directory of the host (`host: {sourcePath}`): a bind mount, a `hostPath` volume.
    Host { path: String },
    /// Scratch space that lives as long as the attempt (`host: {}`, `emptyDir`): an anonymous
    /// volume or a tmpfs on Docker, an `emptyDir` on Kubernetes.
    Scratch { memory: bool, size_mib: Option<u32> },
    /// A Docker named volume (`dockerVolumeConfiguration`), made on first use and kept.
    Named { driver: Option<String> },
    /// Kubernetes only.
    PersistentVolumeClaim { claim_name: String, read_only: bool },
    /// Kubernetes only.
    ConfigMap { name: String },
    /// Kubernetes only: a Kubernetes Secret's keys as files.
    Secret { secret_name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    pub read_only: bool,
}

/// The volumes and where the container mounts them; the default is none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_points: Vec<MountPoint>,
}

/// Which backend a refusal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBackend {
    Docker,
    Kubernetes,
    Process,
}

impl Storage {
    pub fn is_empty(&self) -> bool {
        self.volumes.is_empty() && self.mount_points.is_empty()
    }

    /// The host paths the volumes mount.
    pub fn host_paths(&self) -> impl Iterator<Item = &str> {
        self.volumes
            .iter()
            .filter_map(|volume| match &volume.source {
                VolumeSource::Host { path } => Some(path.as_str()),
                VolumeSource::Scratch { .. }
                | VolumeSource::Named { .. }
                | VolumeSource::PersistentVolumeClaim { .. }
                | VolumeSource::ConfigMap { .. }
                | VolumeSource::Secret { .. } => None,
            })
    }

    /// Why `backend` cannot start an attempt with this storage, where `allowed_host_paths` are
    /// its environment's; `None` when it can.
    pub fn refusal(
        &self,
        backend: StorageBackend,
        environment: &str,
        allowed_host_paths: &[String],
    ) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        if backend == StorageBackend::Process {
            return Some(
                "CannotStartContainerError: a process environment has no volumes (its work sees the host's files as they are); run the job on a docker or kubernetes environment, or use workingDir".into(),
            );
        }
        let unsupported: Vec<String> = self
            .volumes
            .iter()
            .filter(|volume| !supports(backend, &volume.source))
            .map(|volume| format!("{} ({})", volume.name, kind_name(&volume.source)))
            .collect();
        if !unsupported.is_empty() {
            return Some(format!(
                "CannotStartContainerError: compute environment {environment} cannot mount volumes {}; {}",
                unsupported.join(", "),
                match backend {
                    StorageBackend::Docker => "persistentVolumeClaim, configMap and secret volumes need a kubernetes environment",
                    StorageBackend::Kubernetes | StorageBackend::Process => "dockerVolumeConfiguration needs a docker environment",
                }
            ));
        }
        let refused: Vec<&str> = self
            .host_paths()
            .filter(|path| !host_path_allowed(path, allowed_host_paths))
            .collect();
        (!refused.is_empty()).then(|| {
            format!(
                "CannotStartContainerError: compute environment {environment} does not allow mounting host paths {}; list them (or a directory above them) in its allowedHostPaths",
                refused.join(", ")
            )
        })
    }
}

fn supports(backend: StorageBackend, source: &VolumeSource) -> bool {
    match (backend, source) {
        (StorageBackend::Process, _) => false,
        (_, VolumeSource::Host { .. } | VolumeSource::Scratch { .. }) => true,
        (StorageBackend::Docker, VolumeSource::Named { .. }) => true,
        (StorageBackend::Kubernetes, VolumeSource::Named { .. }) => false,
        (
            StorageBackend::Docker,
            VolumeSource::PersistentVolumeClaim { .. }
            | VolumeSource::ConfigMap { .. }
            | VolumeSource::Secret { .. },
        ) => false,
        (
            StorageBackend::Kubernetes,
            VolumeSource::PersistentVolumeClaim { .. }
            | VolumeSource::ConfigMap { .. }
            | VolumeSource::Secret { .. },
        ) => true,
    }
}

fn kind_name(source: &VolumeSource) -> &'static str {
    match source {
        VolumeSource::Host { .. } => "host",
        VolumeSource::Scratch { .. } => "emptyDir",
        VolumeSource::Named { .. } => "dockerVolumeConfiguration",
        VolumeSource::PersistentVolumeClaim { .. } => "persistentVolumeClaim",
        VolumeSource::ConfigMap { .. } => "configMap",
        VolumeSource::Secret { .. } => "secret",
    }
}

/// Whether `path` is one of `allowed` or inside one of them, comparing whole components (`/data`
/// allows `/data/in`, not `/database`). Paths are absolute without `..` (checked at apply).
pub fn host_path_allowed(path: &str, allowed: &[String]) -> bool {
    let path = path.trim_end_matches('/');
    allowed.iter().any(|root| {
        let root = root.trim_end_matches('/');
        root.is_empty() && !path.is_empty()
            || path == root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// A volume name: 1 to 255 letters, digits, `_`, `.` or `-`, starting with a letter or digit (a
/// valid Docker volume name, as AWS Batch's).
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a volume name: 1 to 255 letters, digits, _, . or -, starting with a letter or digit"
        ))
    }
}

/// A Kubernetes size such as `512Mi` or `2Gi`, in MiB.
pub fn mebibytes_of_quantity(text: &str) -> Result<u32, String> {
    let (number, factor) = if let Some(number) = text.strip_suffix("Gi") {
        (number, 1024)
    } else if let Some(number) = text.strip_suffix("Mi") {
        (number, 1)
    } else {
        return Err(format!("{text:?} is not a size such as 512Mi or 2Gi"));
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|mib| (1..=1_048_576).contains(mib))
        .ok_or_else(|| format!("{text:?} is not a size from 1Mi to 1024Gi"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(sources: Vec<VolumeSource>) -> Storage {
        Storage {
            volumes: sources
                .into_iter()
                .enumerate()
                .map(|(index, source)| Volume {
                    name: format!("v{index}"),
                    source,
                })
                .collect(),
            mount_points: vec![],
        }
    }

    #[test]
    fn host_paths_are_allowed_by_whole_components() {
        let allowed = vec!["/data".to_string(), "/scratch/".to_string()];
        for (path, expected) in [
            ("/data", true),
            ("/data/in", true),
            ("/scratch/x", true),
            ("/database", false),
            ("/", false),
            ("/var/run/docker.sock", false),
        ] {
            assert_eq!(host_path_allowed(path, &allowed), expected, "{path}");
        }
        assert!(!host_path_allowed("/data", &[]));
        assert!(host_path_allowed("/anything", &["/".to_string()]));
    }

    #[test]
    fn each_backend_refuses_what_it_cannot_mount() {
        let host = VolumeSource::Host {
            path: "/data/in".into(),
        };
        let claim = VolumeSource::PersistentVolumeClaim {
            claim_name: "c".into(),
            read_only: false,
        };
        let named = VolumeSource::Named { driver: None };
        let allowed = vec!["/data".to_string()];
        let both = storage(vec![host.clone(), claim.clone()]);
        let docker = both
            .refusal(StorageBackend::Docker, "ce", &allowed)
            .unwrap();
        assert!(docker.contains("v1 (persistentVolumeClaim)"), "{docker}");
        assert_eq!(
            both.refusal(StorageBackend::Kubernetes, "ce", &allowed),
            None
        );
        let named = storage(vec![named]);
        assert!(named
            .refusal(StorageBackend::Kubernetes, "ce", &allowed)
            .unwrap()
            .contains("dockerVolumeConfiguration"));
        assert_eq!(named.refusal(StorageBackend::Docker, "ce", &[]), None);
        let outside = storage(vec![VolumeSource::Host {
            path: "/etc".into(),
        }]);
        let refusal = outside
            .refusal(StorageBackend::Docker, "ce", &allowed)
            .unwrap();
        assert!(
            refusal.contains("/etc") && refusal.contains("allowedHostPaths"),
            "{refusal}"
        );
        assert!(storage(vec![host])
            .refusal(StorageBackend::Process, "ce", &allowed)
            .is_some());
        assert_eq!(
            Storage::default().refusal(StorageBackend::Process, "ce", &[]),
            None
        );
    }

    #[test]
    fn names_and_sizes() {
        assert!(check_volume_name("cache-1.v2").is_ok());
        for bad in ["", "-x", "a b", "a/b"] {
            assert!(check_volume_name(bad).is_err(), "{bad}");
        }
        assert_eq!(mebibytes_of_quantity("512Mi"), Ok(512));
        assert_eq!(mebibytes_of_quantity("2Gi"), Ok(2048));
        for bad in ["512", "0Mi", "5Ti", "xGi"] {
            assert!(mebibytes_of_quantity(bad).is_err(), "{bad}");
        }
    }
}

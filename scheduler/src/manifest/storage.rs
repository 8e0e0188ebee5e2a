//! A definition's `volumes` and `mountPoints` (AWS Batch's, with the Kubernetes volume kinds of
//! AWS Batch on EKS) into `core::storage::Storage`.

use super::*;
use crate::core::linux::check_absolute_path;
use crate::core::storage::{
    check_volume_name, mebibytes_of_quantity, MountPoint, Storage, Volume, VolumeSource,
};

/// One volume: a name and exactly one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    /// A host directory (`sourcePath`), or scratch space when it names none.
    #[serde(default)]
    pub host: Option<HostVolumeSpec>,
    /// A Docker named volume called `name`.
    #[serde(default)]
    pub docker_volume_configuration: Option<DockerVolumeSpec>,
    #[serde(default)]
    pub empty_dir: Option<EmptyDirSpec>,
    #[serde(default)]
    pub persistent_volume_claim: Option<ClaimSpec>,
    #[serde(default)]
    pub config_map: Option<ConfigMapVolumeSpec>,
    #[serde(default)]
    pub secret: Option<SecretVolumeSpec>,
    /// AWS's Elastic File System, which batchctl cannot reach; refused with a way out.
    #[serde(default)]
    pub efs_volume_configuration: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostVolumeSpec {
    #[serde(default)]
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerVolumeSpec {
    #[serde(default)]
    pub driver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDirSpec {
    /// `""` (the node's disk) or `Memory`.
    #[serde(default)]
    pub medium: Option<String>,
    /// `512Mi`, `2Gi`.
    #[serde(default)]
    pub size_limit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimSpec {
    pub claim_name: String,
    #[serde(default)]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapVolumeSpec {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretVolumeSpec {
    pub secret_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPointSpec {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// The most volumes (and mount points) a definition may have.
const MAX_VOLUMES: usize = 32;

pub(super) fn storage(
    volumes: &[VolumeSpec],
    mount_points: &[MountPointSpec],
) -> Result<Storage, FieldError> {
    if volumes.len() > MAX_VOLUMES || mount_points.len() > MAX_VOLUMES {
        return Err(FieldError::new(
            "volumes",
            format!("give at most {MAX_VOLUMES} volumes and {MAX_VOLUMES} mount points"),
        ));
    }
    let mut storage = Storage::default();
    for (index, volume) in volumes.iter().enumerate() {
        let field = |name: &str| format!("volumes[{index}].{name}");
        check_volume_name(&volume.name)
            .map_err(|message| FieldError::new(field("name"), message))?;
        if storage
            .volumes
            .iter()
            .any(|other| other.name == volume.name)
        {
            return Err(FieldError::new(
                field("name"),
                format!("{:?} names two volumes", volume.name),
            ));
        }
        storage.volumes.push(Volume {
            name: volume.name.clone(),
            source: source(volume).map_err(|error| error.within(&format!("volumes[{index}]")))?,
        });
    }
    for (index, mount) in mount_points.iter().enumerate() {
        let field = |name: &str| format!("mountPoints[{index}].{name}");
        if !storage
            .volumes
            .iter()
            .any(|volume| volume.name == mount.source_volume)
        {
            return Err(FieldError::new(
                field("sourceVolume"),
                format!(
                    "{:?} is not one of the definition's volumes",
                    mount.source_volume
                ),
            ));
        }
        check_absolute_path(&mount.container_path)
            .map_err(|message| FieldError::new(field("containerPath"), message))?;
        if storage
            .mount_points
            .iter()
            .any(|other| other.container_path == mount.container_path)
        {
            return Err(FieldError::new(
                field("containerPath"),
                format!("{:?} is mounted twice", mount.container_path),
            ));
        }
        storage.mount_points.push(MountPoint {
            source_volume: mount.source_volume.clone(),
            container_path: mount.container_path.clone(),
            read_only: mount.read_only.unwrap_or(false),
        });
    }
    Ok(storage)
}

fn source(volume: &VolumeSpec) -> Result<VolumeSource, FieldError> {
    if volume.efs_volume_configuration.is_some() {
        return Err(FieldError::new(
            "efsVolumeConfiguration",
            "is AWS's Elastic File System, which batchctl cannot mount; mount the file system on the hosts and use host: {sourcePath}, or a persistentVolumeClaim on Kubernetes",
        ));
    }
    let given = [
        volume.host.is_some(),
        volume.docker_volume_configuration.is_some(),
        volume.empty_dir.is_some(),
        volume.persistent_volume_claim.is_some(),
        volume.config_map.is_some(),
        volume.secret.is_some(),
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(FieldError::new(
            "",
            "gives more than one source; give one of host, dockerVolumeConfiguration, emptyDir, persistentVolumeClaim, configMap or secret",
        ));
    }
    if let Some(host) = &volume.host {
        return Ok(match &host.source_path {
            Some(path) => {
                check_absolute_path(path)
                    .map_err(|message| FieldError::new("host.sourcePath", message))?;
                VolumeSource::Host { path: path.clone() }
            }
            None => VolumeSource::Scratch {
                memory: false,
                size_mib: None,
            },
        });
    }
    if let Some(docker) = &volume.docker_volume_configuration {
        if let Some(driver) = &docker.driver {
            check_volume_name(driver)
                .map_err(|message| FieldError::new("dockerVolumeConfiguration.driver", message))?;
        }
        return Ok(VolumeSource::Named {
            driver: docker.driver.clone(),
        });
    }
    if let Some(empty_dir) = &volume.empty_dir {
        let memory = match empty_dir.medium.as_deref() {
            None | Some("") => false,
            Some("Memory") => true,
            Some(other) => {
                return Err(FieldError::new(
                    "emptyDir.medium",
                    format!("{other:?} is not a medium; give \"\" (disk) or Memory"),
                ))
            }
        };
        let size_mib = empty_dir
            .size_limit
            .as_deref()
            .map(mebibytes_of_quantity)
            .transpose()
            .map_err(|message| FieldError::new("emptyDir.sizeLimit", message))?;
        return Ok(VolumeSource::Scratch { memory, size_mib });
    }
    let kubernetes_name = |name: &str, field: &str| {
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
        if valid {
            Ok(name.to_string())
        } else {
            Err(FieldError::new(
                field,
                format!(
                    "{name:?} is not a Kubernetes object name (lowercase letters, digits, - and .)"
                ),
            ))
        }
    };
    if let Some(claim) = &volume.persistent_volume_claim {
        return Ok(VolumeSource::PersistentVolumeClaim {
            claim_name: kubernetes_name(&claim.claim_name, "persistentVolumeClaim.claimName")?,
            read_only: claim.read_only.unwrap_or(false),
        });
    }
    if let Some(config_map) = &volume.config_map {
        return Ok(VolumeSource::ConfigMap {
            name: kubernetes_name(&config_map.name, "configMap.name")?,
        });
    }
    if let Some(secret) = &volume.secret {
        return Ok(VolumeSource::Secret {
            secret_name: kubernetes_name(&secret.secret_name, "secret.secretName")?,
        });
    }
    Err(FieldError::new(
        "",
        "gives no source; give one of host, dockerVolumeConfiguration, emptyDir, persistentVolumeClaim, configMap or secret",
    ))
}

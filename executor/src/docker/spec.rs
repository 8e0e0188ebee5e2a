//! The container an attempt runs in, as the Docker Engine API's create body. Pure: no engine calls.

use std::collections::HashMap;

use batchctl_core::storage::{Storage, VolumeSource};
use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig, Mount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    ResourcesUlimits,
};

use crate::AttemptSpec;

pub const LABEL_JOB_ID: &str = "batchctl.job-id";
pub const LABEL_ATTEMPT: &str = "batchctl.attempt";
pub const LABEL_COMPUTE_ENVIRONMENT: &str = "batchctl.compute-environment";
/// The installation that made the container; `list` only sees its own installation's containers.
pub const LABEL_OWNER: &str = "batchctl.owner";
/// Processes one container may run: enough for real work, a stop to fork bombs.
pub const PIDS_LIMIT: i64 = 4096;

/// Secure defaults: no new privileges, every capability dropped except those the job lists, a pids
/// limit, CPU and memory limits from the job's resource requirements (no swap beyond the memory),
/// and a log driver that keeps bytes exact.
pub fn container_body(spec: &AttemptSpec, owner: &str) -> ContainerCreateBody {
    let memory_bytes = (spec.resources.memory_mib as i64).saturating_mul(1024 * 1024);
    let linux = &spec.linux;
    // The job's propagated tags, then batchctl's own labels, which no tag can replace.
    let labels: HashMap<String, String> = spec
        .tags
        .clone()
        .into_iter()
        .chain([
            (LABEL_JOB_ID.to_string(), spec.job_id.clone()),
            (LABEL_ATTEMPT.to_string(), spec.attempt_number.to_string()),
            (
                LABEL_COMPUTE_ENVIRONMENT.to_string(),
                spec.compute_environment.clone(),
            ),
            (LABEL_OWNER.to_string(), owner.to_string()),
        ])
        .collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.command.clone()),
        env: Some(
            spec.environment
                .iter()
                .map(|v| format!("{}={}", v.name, v.value))
                // The engine has no secret store of its own (Swarm's needs a swarm): the values
                // are in the container's configuration, readable by whoever may inspect it.
                .chain(
                    spec.secrets
                        .iter()
                        .map(|v| format!("{}={}", v.name, v.value.expose())),
                )
                // The devices the NVIDIA runtime exposes, as AWS Batch sets it for GPU jobs.
                .chain(
                    (spec.resources.gpus > 0)
                        .then(|| format!("NVIDIA_VISIBLE_DEVICES={}", visible_devices(spec))),
                )
                .collect(),
        ),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        labels: Some(labels),
        host_config: Some(HostConfig {
            nano_cpus: Some((spec.resources.vcpu_millis as i64).saturating_mul(1_000_000)),
            memory: (memory_bytes > 0).then_some(memory_bytes),
            // No swap beyond the memory unless the job's maxSwap allows some.
            memory_swap: (memory_bytes > 0).then(|| {
                let swap_mib = i64::from(linux.max_swap_mib.unwrap_or(0));
                memory_bytes.saturating_add(swap_mib * 1024 * 1024)
            }),
            memory_swappiness: linux.swappiness.map(i64::from),
            ulimits: (!linux.ulimits.is_empty()).then(|| {
                linux
                    .ulimits
                    .iter()
                    .map(|ulimit| ResourcesUlimits {
                        name: Some(ulimit.name.clone()),
                        soft: Some(ulimit.soft_limit),
                        hard: Some(ulimit.hard_limit),
                    })
                    .collect()
            }),
            readonly_rootfs: linux.read_only_root_filesystem.then_some(true),
            devices: (!linux.devices.is_empty()).then(|| {
                linux
                    .devices
                    .iter()
                    .map(|device| DeviceMapping {
                        path_on_host: Some(device.host_path.clone()),
                        path_in_container: Some(
                            device
                                .container_path
                                .clone()
                                .unwrap_or_else(|| device.host_path.clone()),
                        ),
                        cgroup_permissions: Some(device.permissions.clone()),
                    })
                    .collect()
            }),
            init: linux.init_process_enabled.then_some(true),
            device_requests: (spec.resources.gpus > 0).then(|| vec![gpu_request(spec)]),
            mounts: (!spec.storage.mount_points.is_empty()).then(|| mounts(&spec.storage)),
            shm_size: linux
                .shared_memory_mib
                .map(|mib| i64::from(mib) * 1024 * 1024),
            tmpfs: (!linux.tmpfs.is_empty()).then(|| {
                linux
                    .tmpfs
                    .iter()
                    .map(|tmpfs| {
                        let options = std::iter::once(format!("size={}m", tmpfs.size_mib))
                            .chain(tmpfs.mount_options.iter().cloned())
                            .collect::<Vec<_>>()
                            .join(",");
                        (tmpfs.container_path.clone(), options)
                    })
                    .collect()
            }),
            pids_limit: Some(PIDS_LIMIT),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: (!spec.capabilities.is_empty()).then(|| spec.capabilities.clone()),
            privileged: Some(spec.privileged),
            // The `local` driver keeps output bytes as written; `json-file` replaces bytes that are
            // not UTF-8.
            log_config: Some(HostConfigLogConfig {
                typ: Some("local".into()),
                config: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// The GPUs of a GPU attempt, as `--gpus` asks for them: the ids placement named, or a count
/// where it named none.
fn gpu_request(spec: &AttemptSpec) -> DeviceRequest {
    DeviceRequest {
        driver: Some("nvidia".into()),
        count: spec
            .gpu_ids
            .is_empty()
            .then_some(spec.resources.gpus as i64),
        device_ids: (!spec.gpu_ids.is_empty()).then(|| spec.gpu_ids.clone()),
        capabilities: Some(vec![vec!["gpu".into()]]),
        options: None,
    }
}

fn visible_devices(spec: &AttemptSpec) -> String {
    match spec.gpu_ids.is_empty() {
        true => "all".into(),
        false => spec.gpu_ids.join(","),
    }
}

/// A mount per mount point: a bind mount of a host path, a named volume, or scratch space (an
/// anonymous volume, removed with the container, or a tmpfs when memory-backed). Kinds Docker
/// cannot mount were refused before (`Storage::refusal`) and are left out here.
fn mounts(storage: &Storage) -> Vec<Mount> {
    storage
        .mount_points
        .iter()
        .filter_map(|point| {
            let volume = storage
                .volumes
                .iter()
                .find(|volume| volume.name == point.source_volume)?;
            let base = Mount {
                target: Some(point.container_path.clone()),
                read_only: Some(point.read_only),
                ..Mount::default()
            };
            Some(match &volume.source {
                VolumeSource::Host { path } => Mount {
                    typ: Some(MountType::BIND),
                    source: Some(path.clone()),
                    ..base
                },
                VolumeSource::Named { driver } => Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(volume.name.clone()),
                    volume_options: driver.as_ref().map(|driver| MountVolumeOptions {
                        driver_config: Some(MountVolumeOptionsDriverConfig {
                            name: Some(driver.clone()),
                            options: None,
                        }),
                        ..MountVolumeOptions::default()
                    }),
                    ..base
                },
                VolumeSource::Scratch {
                    memory: true,
                    size_mib,
                } => Mount {
                    typ: Some(MountType::TMPFS),
                    tmpfs_options: size_mib.map(|mib| MountTmpfsOptions {
                        size_bytes: Some(i64::from(mib) * 1024 * 1024),
                        ..MountTmpfsOptions::default()
                    }),
                    ..base
                },
                VolumeSource::Scratch { memory: false, .. } => Mount {
                    typ: Some(MountType::VOLUME),
                    ..base
                },
                VolumeSource::PersistentVolumeClaim { .. }
                | VolumeSource::ConfigMap { .. }
                | VolumeSource::Secret { .. } => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EnvironmentVariable, Resources};

    fn spec() -> AttemptSpec {
        AttemptSpec {
            attempt_id: "job-1".into(),
            job_id: "job".into(),
            attempt_number: 1,
            compute_environment: "local".into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            environment: vec![EnvironmentVariable {
                name: "A".into(),
                value: "b=c".into(),
            }],
            working_dir: Some("/tmp".into()),
            user: Some("1000".into()),
            resources: Resources {
                vcpu_millis: 1500,
                memory_mib: 64,
                gpus: 0,
            },
            ..AttemptSpec::default()
        }
    }

    #[test]
    fn limits_labels_and_secure_defaults() {
        let body = container_body(&spec(), "installation");
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.log_config.unwrap().typ.as_deref(), Some("local"));
        assert_eq!(body.env, Some(vec!["A=b=c".to_string()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_JOB_ID], "job");
        assert_eq!(labels[LABEL_ATTEMPT], "1");
        assert_eq!(labels[LABEL_COMPUTE_ENVIRONMENT], "local");
        assert_eq!(labels[LABEL_OWNER], "installation");
        assert_eq!(body.user.as_deref(), Some("1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn secrets_join_the_environment_and_tags_the_labels_under_batchctls() {
        let mut spec = spec();
        spec.secrets = vec![crate::SecretVariable {
            name: "TOKEN".into(),
            value: "s3cret".into(),
        }];
        spec.tags = [("team", "graphics"), (LABEL_JOB_ID, "spoofed")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let body = container_body(&spec, "installation");
        assert_eq!(
            body.env,
            Some(vec!["A=b=c".to_string(), "TOKEN=s3cret".to_string()])
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels["team"], "graphics");
        assert_eq!(labels[LABEL_JOB_ID], "job", "batchctl's label wins");
    }

    #[test]
    fn linux_parameters_reach_the_host_config() {
        use batchctl_core::linux::{Device, LinuxSettings, Tmpfs, Ulimit};
        let mut spec = spec();
        spec.linux = LinuxSettings {
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft_limit: 256,
                hard_limit: 512,
            }],
            read_only_root_filesystem: true,
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                container_path: None,
                permissions: "rw".into(),
            }],
            init_process_enabled: true,
            shared_memory_mib: Some(128),
            tmpfs: vec![Tmpfs {
                container_path: "/scratch".into(),
                size_mib: 64,
                mount_options: vec!["noexec".into()],
            }],
            max_swap_mib: Some(32),
            swappiness: Some(10),
        };
        let host = container_body(&spec, "installation").host_config.unwrap();
        let ulimits = host.ulimits.unwrap();
        assert_eq!(
            (ulimits[0].name.as_deref(), ulimits[0].soft, ulimits[0].hard),
            (Some("nofile"), Some(256), Some(512))
        );
        assert_eq!(host.readonly_rootfs, Some(true));
        let devices = host.devices.unwrap();
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.shm_size, Some(128 * 1024 * 1024));
        assert_eq!(host.tmpfs.unwrap()["/scratch"], "size=64m,noexec");
        assert_eq!(host.memory_swap, Some(96 * 1024 * 1024));
        assert_eq!(host.memory_swappiness, Some(10));
    }

    #[test]
    fn gpus_are_requested_by_the_ids_placement_named() {
        let mut spec = spec();
        assert!(container_body(&spec, "i")
            .host_config
            .unwrap()
            .device_requests
            .is_none());
        spec.resources.gpus = 2;
        spec.gpu_ids = vec!["1".into(), "3".into()];
        let body = container_body(&spec, "i");
        let request = &body.host_config.unwrap().device_requests.unwrap()[0];
        assert_eq!(request.driver.as_deref(), Some("nvidia"));
        assert_eq!(
            request.device_ids,
            Some(vec!["1".to_string(), "3".to_string()])
        );
        assert_eq!(request.count, None);
        assert_eq!(request.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert!(body
            .env
            .unwrap()
            .contains(&"NVIDIA_VISIBLE_DEVICES=1,3".to_string()));
    }

    #[test]
    fn listed_capabilities_and_privilege_are_passed_on() {
        let mut spec = spec();
        spec.capabilities = vec!["NET_ADMIN".into()];
        spec.privileged = true;
        let host = container_body(&spec, "installation").host_config.unwrap();
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(host.privileged, Some(true));
    }
}

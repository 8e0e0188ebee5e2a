//! What a container runs with beyond its command and resources: AWS Batch's `ulimits`,
//! `readonlyRootFilesystem` and `linuxParameters` (devices, an init process, `/dev/shm`'s size,
//! tmpfs mounts, swap). Validated here; each backend carries out what it can and refuses, by name,
//! what it cannot (`unsupported_on_kubernetes`), rather than starting the work without it.

use serde::{Deserialize, Serialize};

/// The resource limits Docker and `setrlimit` know, by their Docker names.
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The container's Linux settings; the default is none of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_root_filesystem: bool,
    /// Host devices given to the container (as `docker run --device`); they need
    /// `allowPrivileged` on the environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// An init process as PID 1 that forwards signals and reaps orphans.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init_process_enabled: bool,
    /// The size of `/dev/shm`, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_memory_mib: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// Swap the container may use beyond its memory, in MiB (0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_swap_mib: Option<u32>,
    /// 0 to 100: how readily the kernel swaps the container's pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub host_path: String,
    /// Where the container sees it; the host path when absent.
    pub container_path: Option<String>,
    /// `r`, `w` and `m` (READ, WRITE, MKNOD), as Docker's cgroup permissions; all three when none
    /// were given.
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tmpfs {
    pub container_path: String,
    pub size_mib: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mount_options: Vec<String>,
}

impl LinuxSettings {
    /// What of these settings a Kubernetes pod cannot express, named by field, or `None`.
    /// `readonlyRootFilesystem`, `sharedMemorySize` and `tmpfs` (memory-backed emptyDir volumes)
    /// and `initProcessEnabled` (a shared process namespace, whose first process reaps orphans)
    /// can be.
    pub fn unsupported_on_kubernetes(&self) -> Option<String> {
        let mut fields = Vec::new();
        if !self.ulimits.is_empty() {
            fields.push("ulimits (Kubernetes sets no per-pod rlimits)");
        }
        if !self.devices.is_empty() {
            fields.push("linuxParameters.devices (use a device plugin's resources)");
        }
        if self.max_swap_mib.is_some() || self.swappiness.is_some() {
            fields.push("linuxParameters.maxSwap and swappiness (the node decides swap)");
        }
        if self
            .tmpfs
            .iter()
            .any(|tmpfs| !tmpfs.mount_options.is_empty())
        {
            fields.push("linuxParameters.tmpfs[].mountOptions");
        }
        (!fields.is_empty()).then(|| {
            format!(
                "CannotStartContainerError: a Kubernetes environment cannot carry out {}; run the job on a docker environment or drop them",
                fields.join(", ")
            )
        })
    }
}

impl LinuxSettings {
    /// What a host process (the process executor) cannot have, named by field, or `None`. Its
    /// ulimits are set with `setrlimit`, and its shim already reaps orphans as an init process
    /// would.
    pub fn unsupported_on_processes(&self) -> Option<String> {
        let mut fields = Vec::new();
        if self.read_only_root_filesystem {
            fields.push("readonlyRootFilesystem");
        }
        if !self.devices.is_empty() {
            fields.push("linuxParameters.devices");
        }
        if self.shared_memory_mib.is_some() {
            fields.push("linuxParameters.sharedMemorySize");
        }
        if !self.tmpfs.is_empty() {
            fields.push("linuxParameters.tmpfs");
        }
        if self.max_swap_mib.is_some() || self.swappiness.is_some() {
            fields.push("linuxParameters.maxSwap and swappiness");
        }
        (!fields.is_empty()).then(|| {
            format!(
                "CannotStartContainerError: a process environment runs host processes and cannot carry out {}; run the job on a docker environment or drop them",
                fields.join(", ")
            )
        })
    }
}

/// Checks a ulimit as Docker and `setrlimit` take it.
pub fn check_ulimit(ulimit: &Ulimit) -> Result<(), String> {
    if !ULIMIT_NAMES.contains(&ulimit.name.as_str()) {
        return Err(format!(
            "{:?} is not a ulimit name; use one of {}",
            ulimit.name,
            ULIMIT_NAMES.join(", ")
        ));
    }
    if ulimit.soft_limit < 0 || ulimit.hard_limit < 0 {
        return Err("limits are 0 or more".into());
    }
    if ulimit.soft_limit > ulimit.hard_limit {
        return Err(format!(
            "softLimit {} is above hardLimit {}",
            ulimit.soft_limit, ulimit.hard_limit
        ));
    }
    Ok(())
}

/// Checks an absolute container or host path: `/`-rooted, no `..`, no NUL or `:` (Docker's
/// separator), at most 4,096 bytes.
pub fn check_absolute_path(path: &str) -> Result<(), String> {
    let valid = path.starts_with('/')
        && path.len() <= 4096
        && !path.contains(['\0', ':'])
        && !path.split('/').any(|part| part == "..");
    if valid {
        Ok(())
    } else {
        Err(format!("{path:?} is not an absolute path without .. or :"))
    }
}

/// Docker's permission letters from AWS Batch's `permissions` (`READ`, `WRITE`, `MKNOD`).
pub fn device_permissions(permissions: &[String]) -> Result<String, String> {
    if permissions.is_empty() {
        return Ok("rwm".into());
    }
    let mut letters = String::new();
    for permission in permissions {
        let letter = match permission.as_str() {
            "READ" => 'r',
            "WRITE" => 'w',
            "MKNOD" => 'm',
            other => {
                return Err(format!(
                    "{other:?} is not a device permission; use READ, WRITE or MKNOD"
                ))
            }
        };
        if !letters.contains(letter) {
            letters.push(letter);
        }
    }
    Ok(letters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let ulimit = |name: &str, soft, hard| Ulimit {
            name: name.into(),
            soft_limit: soft,
            hard_limit: hard,
        };
        assert!(check_ulimit(&ulimit("nofile", 1024, 4096)).is_ok());
        assert!(check_ulimit(&ulimit("files", 1, 1)).is_err());
        assert!(check_ulimit(&ulimit("nofile", 8, 4)).is_err());
        assert!(check_ulimit(&ulimit("nofile", -1, 4)).is_err());
        assert!(check_absolute_path("/dev/fuse").is_ok());
        for bad in ["dev/fuse", "/a/../etc", "/a:b", ""] {
            assert!(check_absolute_path(bad).is_err(), "{bad}");
        }
        assert_eq!(device_permissions(&[]).unwrap(), "rwm");
        assert_eq!(
            device_permissions(&["READ".into(), "READ".into(), "WRITE".into()]).unwrap(),
            "rw"
        );
        assert!(device_permissions(&["EXECUTE".into()]).is_err());
    }

    #[test]
    fn kubernetes_names_what_it_cannot_do() {
        let mut settings = LinuxSettings {
            read_only_root_filesystem: true,
            shared_memory_mib: Some(256),
            init_process_enabled: true,
            ..LinuxSettings::default()
        };
        assert_eq!(settings.unsupported_on_kubernetes(), None);
        settings.ulimits.push(Ulimit {
            name: "nofile".into(),
            soft_limit: 1,
            hard_limit: 1,
        });
        settings.swappiness = Some(10);
        let refusal = settings.unsupported_on_kubernetes().unwrap();
        assert!(
            refusal.contains("ulimits") && refusal.contains("swappiness"),
            "{refusal}"
        );
    }
}

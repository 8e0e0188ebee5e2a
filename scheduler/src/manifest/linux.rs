//! A definition's `ulimits`, `readonlyRootFilesystem` and `linuxParameters` beyond capabilities
//! into `core::linux::LinuxSettings`.

use super::*;
use crate::core::linux::{Device, LinuxSettings, Tmpfs, Ulimit};

/// `ulimits`, `readonlyRootFilesystem` and `linuxParameters` beyond capabilities.
pub(super) fn linux_settings(
    properties: &ContainerPropertiesSpec,
) -> Result<LinuxSettings, FieldError> {
    use crate::core::linux::{check_absolute_path, check_ulimit, device_permissions};
    let mut settings = LinuxSettings {
        read_only_root_filesystem: properties.readonly_root_filesystem.unwrap_or(false),
        ..LinuxSettings::default()
    };
    for (index, ulimit) in properties.ulimits.iter().enumerate() {
        let ulimit = Ulimit {
            name: ulimit.name.clone(),
            soft_limit: ulimit.soft_limit,
            hard_limit: ulimit.hard_limit,
        };
        check_ulimit(&ulimit)
            .map_err(|message| FieldError::new(format!("ulimits[{index}]"), message))?;
        if settings
            .ulimits
            .iter()
            .any(|other| other.name == ulimit.name)
        {
            return Err(FieldError::new(
                format!("ulimits[{index}].name"),
                format!("{:?} is limited twice", ulimit.name),
            ));
        }
        settings.ulimits.push(ulimit);
    }
    let Some(parameters) = &properties.linux_parameters else {
        return Ok(settings);
    };
    let field = |name: String| format!("linuxParameters.{name}");
    for (index, device) in parameters.devices.iter().enumerate() {
        check_absolute_path(&device.host_path).map_err(|message| {
            FieldError::new(field(format!("devices[{index}].hostPath")), message)
        })?;
        if let Some(path) = &device.container_path {
            check_absolute_path(path).map_err(|message| {
                FieldError::new(field(format!("devices[{index}].containerPath")), message)
            })?;
        }
        settings.devices.push(Device {
            host_path: device.host_path.clone(),
            container_path: device.container_path.clone(),
            permissions: device_permissions(&device.permissions).map_err(|message| {
                FieldError::new(field(format!("devices[{index}].permissions")), message)
            })?,
        });
    }
    settings.init_process_enabled = parameters.init_process_enabled.unwrap_or(false);
    settings.shared_memory_mib = parameters
        .shared_memory_size
        .map(|size| mebibytes(size, field("sharedMemorySize".into())))
        .transpose()?;
    for (index, tmpfs) in parameters.tmpfs.iter().enumerate() {
        check_absolute_path(&tmpfs.container_path).map_err(|message| {
            FieldError::new(field(format!("tmpfs[{index}].containerPath")), message)
        })?;
        if let Some(option) = tmpfs.mount_options.iter().find(|option| {
            option.is_empty() || option.contains([',', '=', ' ']) && !option.starts_with("mode=")
        }) {
            return Err(FieldError::new(
                field(format!("tmpfs[{index}].mountOptions")),
                format!("{option:?} is not a mount option such as noexec, nosuid or mode=1777"),
            ));
        }
        settings.tmpfs.push(Tmpfs {
            container_path: tmpfs.container_path.clone(),
            size_mib: mebibytes(tmpfs.size, field(format!("tmpfs[{index}].size")))?,
            mount_options: tmpfs.mount_options.clone(),
        });
    }
    settings.max_swap_mib = match parameters.max_swap {
        None => None,
        Some(swap @ 0..=1_048_576) => Some(swap as u32),
        Some(other) => {
            return Err(FieldError::new(
                field("maxSwap".into()),
                format!("{other} is out of range; give 0 (no swap) to 1048576 MiB"),
            ))
        }
    };
    settings.swappiness = match parameters.swappiness {
        None => None,
        Some(value @ 0..=100) => Some(value as u8),
        Some(other) => {
            return Err(FieldError::new(
                field("swappiness".into()),
                format!("{other} is out of range; give 0 to 100"),
            ))
        }
    };
    Ok(settings)
}

/// A size in MiB: 1 to 1,048,576 (1 TiB).
fn mebibytes(size: i64, field: String) -> Result<u32, FieldError> {
    match size {
        1..=1_048_576 => Ok(size as u32),
        other => Err(FieldError::new(
            field,
            format!("{other} is out of range; give 1 to 1048576 MiB"),
        )),
    }
}

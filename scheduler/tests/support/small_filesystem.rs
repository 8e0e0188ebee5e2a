//! A small filesystem of the test's own, to fill up: a tmpfs mounted on a new directory and
//! unmounted on drop. Mounting needs root, which CI has; elsewhere the test is skipped, saying so
//! loudly, and with `CI=true` a failed mount fails it. Shared by the store's disk-full test and the
//! end-to-end one (`tests/e2e/faults.rs` includes this file).

use std::path::Path;
use std::process::Command;

pub struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// A tmpfs of `size` (as `mount -o size=` takes it: `3m`).
    pub fn mount(size: &str) -> Option<SmallFilesystem> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but a tmpfs cannot be mounted (the disk-full tests need root)");
            }
            eprintln!("\n!!! SKIPPING a disk-full test: cannot mount a tmpfs (needs root) !!!\n");
            return None;
        }
        Some(SmallFilesystem { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

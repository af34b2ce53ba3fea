//! Per-attempt control groups for the limits rlimits cannot give: a process count (the
//! kernel does not apply `RLIMIT_NPROC` to root) and memory for all of a step's processes
//! together. cgroup v1 hierarchies and v2 (where our own group delegates the controller)
//! are both found from `/proc/self/cgroup` and `/proc/self/mountinfo`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

/// Where attempt groups are made for one controller.
#[derive(Debug, Clone)]
struct Hierarchy {
    /// Our own group's directory: attempt groups are made beneath it.
    parent: PathBuf,
    v2: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Cgroups {
    pids: Option<Hierarchy>,
    memory: Option<Hierarchy>,
    /// Why a controller is not usable, for `cairn doctor`.
    pub missing: Vec<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    pub fn detect() -> Cgroups {
        let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut cgroups = Cgroups::default();
        for controller in [Controller::Pids, Controller::Memory] {
            let found = find(controller, &membership, &mounts).and_then(|h| probe(controller, h));
            if let Ok(hierarchy) = &found {
                remove_stale(&hierarchy.parent);
            }
            match found {
                Ok(hierarchy) => match controller {
                    Controller::Pids => cgroups.pids = Some(hierarchy),
                    Controller::Memory => cgroups.memory = Some(hierarchy),
                },
                Err(why) => cgroups
                    .missing
                    .push(format!("{}: {why}", controller.name())),
            }
        }
        cgroups
    }

    pub fn has(&self, controller: Controller) -> bool {
        match controller {
            Controller::Pids => self.pids.is_some(),
            Controller::Memory => self.memory.is_some(),
        }
    }

    /// Groups for one attempt with the given limits (`None`: that controller is not used).
    pub fn create(&self, processes: Option<u64>, memory: Option<u64>) -> Result<Group, Error> {
        let name = format!(
            "cairn-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut group = Group::default();
        if let (Some(hierarchy), Some(limit)) = (&self.pids, processes) {
            let dir = make(&hierarchy.parent.join(&name))?;
            group.dirs.push(dir.clone());
            set(&dir, "pids.max", &limit.to_string())?;
            group.pids = Some(dir);
        }
        if let (Some(hierarchy), Some(limit)) = (&self.memory, memory) {
            let dir = make(&hierarchy.parent.join(&name))?;
            group.dirs.push(dir.clone());
            if hierarchy.v2 {
                set(&dir, "memory.max", &limit.to_string())?;
                let _ = set(&dir, "memory.swap.max", "0");
            } else {
                set(&dir, "memory.limit_in_bytes", &limit.to_string())?;
                // Without this the group would swap instead of being contained.
                let _ = set(&dir, "memory.memsw.limit_in_bytes", &limit.to_string());
            }
            group.memory = Some((dir, hierarchy.v2));
        }
        for dir in &group.dirs {
            let path = dir.join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::Limits { path, source })?;
            group.procs.push(file);
        }
        Ok(group)
    }
}

/// One attempt's groups. The spawned process joins them before it runs anything (by writing
/// `0`, "myself", to each `cgroup.procs`); dropping the group kills what is left in it and
/// removes it.
#[derive(Debug, Default)]
pub struct Group {
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
    pids: Option<PathBuf>,
    memory: Option<(PathBuf, bool)>,
}

impl Group {
    /// The opened `cgroup.procs` files the child writes itself into.
    pub fn take_join_files(&mut self) -> Vec<File> {
        std::mem::take(&mut self.procs)
    }

    /// Whether the process limit was hit (`pids.events`: `max N`).
    pub fn hit_process_limit(&self) -> bool {
        self.pids
            .as_ref()
            .is_some_and(|dir| counter(&dir.join("pids.events"), "max") > 0)
    }

    /// Whether the kernel killed a process of the group for memory.
    pub fn hit_memory_limit(&self) -> bool {
        self.memory.as_ref().is_some_and(|(dir, v2)| {
            let events = if *v2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            counter(&dir.join(events), "oom_kill") > 0
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for dir in &self.dirs {
            for _ in 0..50 {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
                for pid in &pids {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

fn counter(path: &Path, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn make(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir(dir).map_err(|source| Error::Limits {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(dir.to_path_buf())
}

fn set(dir: &Path, file: &str, value: &str) -> Result<(), Error> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| Error::Limits { path, source })
}

/// Our group's directory in the hierarchy that holds `controller`.
fn find(controller: Controller, membership: &str, mounts: &str) -> Result<Hierarchy, String> {
    let name = controller.name();
    // v1 first: a v1 hierarchy holding the controller takes it away from v2.
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(controllers), Some(path)) => (id, controllers, path),
            _ => continue,
        };
        if controllers.split(',').any(|c| c == name) {
            let mount = mount_of(mounts, |fstype, options| {
                fstype == "cgroup" && options.split(',').any(|o| o == name)
            })
            .ok_or_else(|| format!("the v1 {name} hierarchy is not mounted here"))?;
            return Ok(Hierarchy {
                parent: join(&mount, path),
                v2: false,
            });
        }
    }
    let path = membership
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| format!("no cgroup hierarchy has the {name} controller"))?;
    let mount = mount_of(mounts, |fstype, _| fstype == "cgroup2")
        .ok_or_else(|| "the cgroup2 hierarchy is not mounted here".to_string())?;
    let parent = join(&mount, path);
    let delegated = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == name);
    if !delegated {
        return Err(format!(
            "cgroup2 does not delegate {name} to {}",
            parent.display()
        ));
    }
    Ok(Hierarchy { parent, v2: true })
}

/// `(mount point, root within the hierarchy)` of the first mount that `matches`.
fn mount_of(mounts: &str, matches: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    mounts.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let fstype = after.next()?;
        let _source = after.next()?;
        let options = after.next().unwrap_or("");
        if !matches(fstype, options) {
            return None;
        }
        let mut before = before.split_whitespace();
        let root = before.nth(3)?.to_string();
        let point = before.next()?;
        Some((PathBuf::from(point), root))
    })
}

/// Our group's directory: the mount point plus our path below the mount's root.
fn join((point, root): &(PathBuf, String), path: &str) -> PathBuf {
    let below = path
        .strip_prefix(root.as_str())
        .unwrap_or(path)
        .trim_start_matches('/');
    point.join(below)
}

/// Groups an engine killed mid-attempt left behind (its pid is gone): removed once empty.
/// Their processes are the orphans the resumed run kills by attempt token.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("cairn-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Makes and removes a group, so a read-only cgroup filesystem is found at start.
fn probe(controller: Controller, hierarchy: Hierarchy) -> Result<Hierarchy, String> {
    let dir = hierarchy
        .parent
        .join(format!("cairn-probe-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| {
        format!(
            "cannot create groups in {}: {e}",
            hierarchy.parent.display()
        )
    })?;
    let control = match (controller, hierarchy.v2) {
        (Controller::Pids, _) => "pids.max",
        (Controller::Memory, true) => "memory.max",
        (Controller::Memory, false) => "memory.limit_in_bytes",
    };
    let usable = dir.join(control).exists();
    let _ = std::fs::remove_dir(&dir);
    if usable {
        Ok(hierarchy)
    } else {
        Err(format!(
            "{control} is missing in {}",
            hierarchy.parent.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_group_is_found_below_the_mount_root() {
        let membership = "4:memory:/process_api/abc\n0::/\n";
        let mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let found = find(Controller::Memory, membership, mounts).map(|h| (h.parent, h.v2));
        assert_eq!(
            found,
            Ok((
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"),
                false
            ))
        );
        // A container whose mount root is its own group sees itself at the mount point.
        let mounts =
            "35 31 0:32 /process_api/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let found = find(Controller::Memory, membership, mounts).map(|h| h.parent);
        assert_eq!(found, Ok(PathBuf::from("/sys/fs/cgroup/memory")));
        // No v1 pids hierarchy and a v2 one that does not delegate pids: not usable.
        assert!(find(Controller::Pids, membership, mounts).is_err());
    }
}

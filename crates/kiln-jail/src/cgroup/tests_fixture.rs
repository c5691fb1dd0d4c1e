//! Fixture tests: fake hierarchies of plain files in a temporary directory, for the three host
//! layouts Kiln meets (hybrid, pure v2, pure v1 with `cpu,cpuacct` co-mounted). No root needed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CgroupError, CgroupLayout, CgroupLimits, CgroupStats, CgroupVersion, Controller,
    ControllerPlacement, CpuQuota,
};

const MIB: u64 = 1024 * 1024;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn put(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.path(rel)).expect("mkdir");
    }

    fn get(&self, rel: &str) -> String {
        let path = self.path(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    fn layout(&self, mountinfo: &str, cgroup: &str) -> CgroupLayout {
        CgroupLayout::from_proc(mountinfo, cgroup, Some(self.root())).expect("layout")
    }
}

fn limits() -> CgroupLimits {
    CgroupLimits {
        memory_bytes: Some(64 * MIB),
        pids_max: Some(16),
        cpu_quota: Some(CpuQuota {
            quota_us: 50_000,
            period_us: 100_000,
        }),
        cpuset_cpus: None,
    }
}

fn placement(controller: Controller, version: CgroupVersion, dir: PathBuf) -> ControllerPlacement {
    ControllerPlacement {
        controller,
        version,
        own_dir: dir,
    }
}

// This machine's layout (and CI's).
const HYBRID_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/abc
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

fn hybrid() -> (Fixture, CgroupLayout) {
    let fx = Fixture::new();
    for h in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    ] {
        fx.mkdir(&format!("sys/fs/cgroup/{h}"));
    }
    fx.mkdir("sys/fs/cgroup/memory/process_api/abc");
    fx.put("sys/fs/cgroup/cpuset/cpuset.cpus", "0-1\n");
    fx.put("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    fx.put("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n");
    let layout = fx.layout(HYBRID_MOUNTINFO, HYBRID_CGROUP);
    (fx, layout)
}

#[test]
fn hybrid_detection() {
    let (fx, layout) = hybrid();
    let cg = fx.path("sys/fs/cgroup");
    assert_eq!(
        layout.describe(),
        vec![
            placement(
                Controller::Memory,
                CgroupVersion::V1,
                cg.join("memory/process_api/abc")
            ),
            placement(Controller::Pids, CgroupVersion::V1, cg.join("pids")),
            placement(Controller::Cpu, CgroupVersion::V1, cg.join("cpu")),
            placement(Controller::Cpuacct, CgroupVersion::V1, cg.join("cpuacct")),
            placement(Controller::Cpuset, CgroupVersion::V1, cg.join("cpuset")),
            placement(Controller::Freezer, CgroupVersion::V1, cg.join("freezer")),
        ]
    );
    assert_eq!(layout.unified_own_dir(), Some(cg.join("unified").as_path()));
}

#[test]
fn hybrid_prepare_create_attach_stats_remove() {
    let (fx, layout) = hybrid();
    let parent = layout.prepare("kiln").expect("prepare");
    let cg = "sys/fs/cgroup";
    // Kiln's parent sits under the service's own cgroup, in every used hierarchy.
    for dir in [
        "memory/process_api/abc/kiln",
        "cpu/kiln",
        "cpuacct/kiln",
        "cpuset/kiln",
        "pids/kiln",
        "unified/kiln",
    ] {
        assert!(fx.exists(&format!("{cg}/{dir}")), "{dir}");
    }
    // The v1 freezer stays unused next to a unified hierarchy; devices is not Kiln's business.
    assert!(!fx.exists(&format!("{cg}/freezer/kiln")));
    assert!(!fx.exists(&format!("{cg}/devices/kiln")));
    assert!(!fx.exists(&format!("{cg}/memory/kiln")));
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/cpuset.cpus")), "0-1");
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/cpuset.mems")), "0");
    // Nothing to delegate in a unified hierarchy that serves no Kiln controller.
    assert!(!fx.exists(&format!("{cg}/unified/cgroup.subtree_control")));
    assert!(!fx.exists(&format!("{cg}/unified/kiln/cgroup.subtree_control")));
    assert_eq!(layout.prepare("kiln").expect("idempotent").name(), "kiln");

    let sb = parent.create("sb1", &limits()).expect("create");
    let mem = format!("{cg}/memory/process_api/abc/kiln/sb1");
    assert_eq!(fx.get(&format!("{mem}/memory.limit_in_bytes")), "67108864");
    assert_eq!(
        fx.get(&format!("{mem}/memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(fx.get(&format!("{cg}/pids/kiln/sb1/pids.max")), "16");
    assert_eq!(
        fx.get(&format!("{cg}/cpu/kiln/sb1/cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        fx.get(&format!("{cg}/cpu/kiln/sb1/cpu.cfs_quota_us")),
        "50000"
    );
    assert!(fx.exists(&format!("{cg}/cpuacct/kiln/sb1")));
    assert!(fx.exists(&format!("{cg}/unified/kiln/sb1")));
    // Not pinned: no cpuset group.
    assert!(!fx.exists(&format!("{cg}/cpuset/kiln/sb1")));
    assert_eq!(sb.name(), "sb1");

    // Creating the same group twice is refused: it could hold another sandbox's processes.
    let err = parent.create("sb1", &limits()).unwrap_err();
    assert!(matches!(err, CgroupError::Mkdir { .. }), "{err}");

    sb.attach(4242).expect("attach");
    for dir in [
        "memory/process_api/abc/kiln/sb1",
        "cpu/kiln/sb1",
        "cpuacct/kiln/sb1",
        "pids/kiln/sb1",
        "unified/kiln/sb1",
    ] {
        assert_eq!(
            fx.get(&format!("{cg}/{dir}/cgroup.procs")),
            "4242\n",
            "{dir}"
        );
    }
    assert_eq!(sb.pids().expect("pids"), vec![4242]);
    assert_eq!(sb.open_procs_files().expect("procs fds").len(), 5);

    // v1 cpuacct is preferred on hybrid hosts; the counter is re-read through the same fd.
    fx.put(
        &format!("{cg}/cpuacct/kiln/sb1/cpuacct.usage"),
        "250000000\n",
    );
    assert_eq!(sb.cpu_usage().expect("cpu"), Duration::from_millis(250));
    fx.put(
        &format!("{cg}/cpuacct/kiln/sb1/cpuacct.usage"),
        "300000000\n",
    );
    assert_eq!(sb.cpu_usage().expect("cpu"), Duration::from_millis(300));
    fx.put(&format!("{mem}/memory.max_usage_in_bytes"), "1048576\n");
    fx.put(
        &format!("{mem}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    fx.put(&format!("{cg}/pids/kiln/sb1/pids.peak"), "5\n");
    assert_eq!(
        sb.stats().expect("stats"),
        CgroupStats {
            cpu_ns: 300_000_000,
            memory_peak_bytes: Some(MIB),
            oom_kills: 2,
            pids_peak: Some(5),
        }
    );
    fx.put(&format!("{mem}/memory.oom_control"), "oom_kill two\n");
    let err = sb.oom_kills().unwrap_err();
    assert!(err.to_string().contains("memory.oom_control"), "{err}");

    sb.kill().expect("kill");
    assert_eq!(fx.get(&format!("{cg}/unified/kiln/sb1/cgroup.kill")), "1");

    // Pinned: the v1 cpuset group gets the CPUs asked for and the parent's memory nodes.
    let pinned = CgroupLimits {
        cpuset_cpus: Some("1".into()),
        ..CgroupLimits::default()
    };
    let sb2 = parent.create("sb2", &pinned).expect("create pinned");
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/sb2/cpuset.cpus")), "1");
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/sb2/cpuset.mems")), "0");
    assert!(!fx.exists(&format!(
        "{cg}/memory/process_api/abc/kiln/sb2/memory.limit_in_bytes"
    )));

    assert_eq!(parent.children().expect("children"), vec!["sb1", "sb2"]);
    sb.remove().expect("remove");
    for dir in ["memory/process_api/abc/kiln/sb1", "unified/kiln/sb1"] {
        assert!(!fx.exists(&format!("{cg}/{dir}")), "{dir}");
    }
    drop(sb2);
    assert!(!fx.exists(&format!("{cg}/cpuset/kiln/sb2")));

    // A crashed run leaves a group behind; sweep removes it.
    let leaked = parent.create("leaked", &limits()).expect("create");
    std::mem::forget(leaked);
    assert_eq!(parent.children().expect("children"), vec!["leaked"]);
    assert_eq!(parent.sweep().expect("sweep"), 1);
    assert!(parent.children().expect("children").is_empty());

    parent.remove().expect("remove parent");
    assert!(!fx.exists(&format!("{cg}/unified/kiln")));
    assert!(!fx.exists(&format!("{cg}/memory/process_api/abc/kiln")));
    assert!(fx.exists(&format!("{cg}/memory/process_api/abc")));
}

#[test]
fn missing_controller_is_refused_not_ignored() {
    let (fx, _) = hybrid();
    let mountinfo: String = HYBRID_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("memory"))
        .map(|l| format!("{l}\n"))
        .collect();
    let layout = fx.layout(&mountinfo, HYBRID_CGROUP);
    assert_eq!(layout.version(Controller::Memory), None);
    let parent = layout.prepare("kiln").expect("prepare");
    let err = parent.create("sb", &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerUnavailable {
                controller: Controller::Memory,
                ..
            }
        ),
        "{err}"
    );
    assert!(parent.children().expect("children").is_empty());
}

#[test]
fn names_are_checked() {
    let (_fx, layout) = hybrid();
    for bad in ["", ".", "..", "a/b", "../x", "cgroup.procs", "memory.max"] {
        let err = layout.prepare(bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{bad:?}: {err}"
        );
    }
    let parent = layout.prepare("kiln").expect("prepare");
    let err = parent.create("../kiln", &limits()).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidName { .. }), "{err}");
}

#[test]
fn no_cgroup_mounts() {
    let err = CgroupLayout::from_proc(
        "22 1 259:1 / / rw,relatime - ext4 /dev/vda rw\n",
        "0::/\n",
        Some(Path::new("/nonexistent")),
    )
    .unwrap_err();
    assert!(matches!(err, CgroupError::NoHierarchy), "{err}");
}

const V2_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
const V2_CGROUP: &str = "0::/user.slice/kiln.service\n";

fn pure_v2() -> (Fixture, CgroupLayout) {
    let fx = Fixture::new();
    let controllers = "cpuset cpu io memory pids\n";
    fx.put("sys/fs/cgroup/cgroup.controllers", controllers);
    let own = "sys/fs/cgroup/user.slice/kiln.service";
    fx.put(&format!("{own}/cgroup.controllers"), controllers);
    fx.put(&format!("{own}/cgroup.subtree_control"), "");
    fx.put(&format!("{own}/cgroup.procs"), "1234\n5678\n");
    let layout = fx.layout(V2_MOUNTINFO, V2_CGROUP);
    (fx, layout)
}

#[test]
fn pure_v2_detection_prepare_create() {
    let (fx, layout) = pure_v2();
    let own = "sys/fs/cgroup/user.slice/kiln.service";
    let own_dir = fx.path(own);
    assert_eq!(
        layout.describe(),
        vec![
            placement(Controller::Memory, CgroupVersion::V2, own_dir.clone()),
            placement(Controller::Pids, CgroupVersion::V2, own_dir.clone()),
            placement(Controller::Cpu, CgroupVersion::V2, own_dir.clone()),
            placement(Controller::Cpuset, CgroupVersion::V2, own_dir.clone()),
        ]
    );
    assert_eq!(layout.unified_own_dir(), Some(own_dir.as_path()));

    let parent = layout.prepare("kiln").expect("prepare");
    // The service's processes leave its cgroup for a leaf before controllers are delegated.
    assert_eq!(
        fx.get(&format!("{own}/service/cgroup.procs")),
        "1234\n5678\n"
    );
    assert_eq!(
        fx.get(&format!("{own}/cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(
        fx.get(&format!("{own}/kiln/cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    // Again: already delegated, nothing is moved or written.
    std::fs::remove_file(fx.path(&format!("{own}/service/cgroup.procs"))).expect("rm");
    layout.prepare("kiln").expect("idempotent");
    assert!(!fx.exists(&format!("{own}/service/cgroup.procs")));
    let err = layout.prepare("service").unwrap_err();
    assert!(matches!(err, CgroupError::InvalidName { .. }), "{err}");

    let sb = parent.create("sb", &limits()).expect("create");
    let dir = format!("{own}/kiln/sb");
    assert_eq!(fx.get(&format!("{dir}/memory.max")), "67108864");
    assert_eq!(fx.get(&format!("{dir}/memory.swap.max")), "0");
    assert_eq!(fx.get(&format!("{dir}/pids.max")), "16");
    assert_eq!(fx.get(&format!("{dir}/cpu.max")), "50000 100000");
    assert!(!fx.exists(&format!("{dir}/cpuset.cpus")));

    assert!(!fx.exists(&format!("{dir}/cgroup.procs")));
    sb.attach(78).expect("attach");
    assert_eq!(fx.get(&format!("{dir}/cgroup.procs")), "78\n");

    fx.put(
        &format!("{dir}/cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    fx.put(
        &format!("{dir}/memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    );
    fx.put(&format!("{dir}/memory.peak"), "4096\n");
    assert_eq!(
        sb.stats().expect("stats"),
        CgroupStats {
            cpu_ns: 1_500_000,
            memory_peak_bytes: Some(4096),
            oom_kills: 1,
            pids_peak: None,
        }
    );
    fx.put(&format!("{dir}/cpu.stat"), "usage_usec\n");
    let err = sb.cpu_usage().unwrap_err();
    assert!(
        err.to_string().contains(&format!("{dir}/cpu.stat")),
        "{err}"
    );

    sb.kill().expect("kill");
    assert_eq!(fx.get(&format!("{dir}/cgroup.kill")), "1");
    sb.remove().expect("remove");
    assert!(!fx.exists(&dir));

    // Pinning enables cpuset on demand, top-down, then writes the CPUs.
    let pinned = CgroupLimits {
        cpuset_cpus: Some("0-1".into()),
        ..limits()
    };
    let sb = parent.create("pinned", &pinned).expect("create pinned");
    assert_eq!(fx.get(&format!("{own}/cgroup.subtree_control")), "+cpuset");
    assert_eq!(
        fx.get(&format!("{own}/kiln/cgroup.subtree_control")),
        "+cpuset"
    );
    assert_eq!(fx.get(&format!("{own}/kiln/pinned/cpuset.cpus")), "0-1");
    drop(sb);
    parent.remove().expect("remove parent");
    assert!(!fx.exists(&format!("{own}/kiln")));
    assert!(fx.exists(&format!("{own}/service")));
}

#[test]
fn undelegated_v2_controller() {
    let (fx, _) = pure_v2();
    let own = "sys/fs/cgroup/user.slice/kiln.service";
    fx.put(&format!("{own}/cgroup.controllers"), "memory pids\n");
    let layout = fx.layout(V2_MOUNTINFO, V2_CGROUP);
    let parent = layout.prepare("kiln").expect("prepare");
    assert_eq!(
        fx.get(&format!("{own}/cgroup.subtree_control")),
        "+memory +pids"
    );
    let err = parent.create("sb", &limits()).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerUnavailable {
                controller: Controller::Cpu,
                ..
            }
        ),
        "{err}"
    );
    let no_cpu = CgroupLimits {
        cpu_quota: None,
        ..limits()
    };
    parent
        .create("sb", &no_cpu)
        .expect("create")
        .remove()
        .expect("remove");
}

const V1_MOUNTINFO: &str = "\
22 1 259:1 / / rw,relatime - ext4 /dev/vda rw
25 23 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
32 25 0:29 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,freezer
33 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset
34 25 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
";
const V1_CGROUP: &str = "\
8:net_cls,net_prio:/
7:cpuset:/
6:freezer:/
5:pids:/system.slice/kiln.service
4:memory:/system.slice/kiln.service
3:cpu,cpuacct:/system.slice/kiln.service
1:name=systemd:/system.slice/kiln.service
0::/system.slice/kiln.service
";

#[test]
fn v1_comounted_cpu_cpuacct() {
    let fx = Fixture::new();
    for dir in [
        "memory/system.slice/kiln.service",
        "pids/system.slice/kiln.service",
        "cpu,cpuacct/system.slice/kiln.service",
        "freezer",
        "net_cls,net_prio",
    ] {
        fx.mkdir(&format!("sys/fs/cgroup/{dir}"));
    }
    fx.put("sys/fs/cgroup/cpuset/cpuset.cpus", "0-3\n");
    fx.put("sys/fs/cgroup/cpuset/cpuset.mems", "0\n");
    let layout = fx.layout(V1_MOUNTINFO, V1_CGROUP);
    let cg = fx.path("sys/fs/cgroup");
    let cpu_dir = cg.join("cpu,cpuacct/system.slice/kiln.service");
    assert_eq!(
        layout.describe(),
        vec![
            placement(
                Controller::Memory,
                CgroupVersion::V1,
                cg.join("memory/system.slice/kiln.service")
            ),
            placement(
                Controller::Pids,
                CgroupVersion::V1,
                cg.join("pids/system.slice/kiln.service")
            ),
            placement(Controller::Cpu, CgroupVersion::V1, cpu_dir.clone()),
            placement(Controller::Cpuacct, CgroupVersion::V1, cpu_dir),
            placement(Controller::Cpuset, CgroupVersion::V1, cg.join("cpuset")),
            placement(Controller::Freezer, CgroupVersion::V1, cg.join("freezer")),
        ]
    );
    // A `0::` line without a cgroup2 mount is not a unified hierarchy.
    assert_eq!(layout.unified_own_dir(), None);

    let parent = layout.prepare("kiln").expect("prepare");
    let cg = "sys/fs/cgroup";
    // No unified hierarchy: the v1 freezer is how groups get killed.
    assert!(fx.exists(&format!("{cg}/freezer/kiln")));
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/cpuset.cpus")), "0-3");

    let pinned = CgroupLimits {
        cpuset_cpus: Some("2-3".into()),
        ..limits()
    };
    let sb = parent.create("sb", &pinned).expect("create");
    let cpu = format!("{cg}/cpu,cpuacct/system.slice/kiln.service/kiln/sb");
    assert_eq!(fx.get(&format!("{cpu}/cpu.cfs_quota_us")), "50000");
    assert_eq!(fx.get(&format!("{cpu}/cpu.cfs_period_us")), "100000");
    let mem = format!("{cg}/memory/system.slice/kiln.service/kiln/sb");
    assert_eq!(fx.get(&format!("{mem}/memory.limit_in_bytes")), "67108864");
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/sb/cpuset.cpus")), "2-3");
    assert_eq!(fx.get(&format!("{cg}/cpuset/kiln/sb/cpuset.mems")), "0");
    assert!(fx.exists(&format!("{cg}/freezer/kiln/sb")));

    sb.attach(99).expect("attach");
    // memory, pids, cpu+cpuacct, freezer, cpuset.
    assert_eq!(sb.open_procs_files_with_paths().expect("fds").len(), 5);
    fx.put(&format!("{cpu}/cpuacct.usage"), "1000\n");
    assert_eq!(sb.cpu_usage().expect("cpu"), Duration::from_micros(1));

    // Killing goes through the v1 freezer, which must be left thawed.
    sb.kill().expect("kill");
    assert_eq!(
        fx.get(&format!("{cg}/freezer/kiln/sb/freezer.state")),
        "THAWED"
    );
    sb.remove().expect("remove");
    assert!(!fx.exists(&cpu));
    parent.remove().expect("remove parent");
    assert!(!fx.exists(&format!("{cg}/cpuset/kiln")));
}

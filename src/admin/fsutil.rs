//! File primitives for the store, the audit log and published bundles:
//! atomic replace with restrictive permissions, and an exclusive lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Replaces `path` with `contents` so that a reader (or a crash) only ever
/// sees the old or the new file: temp file in the same directory, fsync,
/// rename, fsync the directory. The file gets `mode` (e.g. 0o600).
///
/// The temp file is created with `O_CREAT|O_EXCL|O_NOFOLLOW` under a name
/// nobody can predict: a file or symlink planted at that name by someone
/// who can write the directory makes the write fail instead of writing
/// through it (to the link's target) or reusing a file they hold open.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), unpredictable()));
    let mut created = false;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(mode)
            .open(&tmp)?;
        created = true;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    // Never remove a file this call did not create (it may be a planted link).
    if result.is_err() && created {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// 64 bits from the OS random source, in hex, for temp file names.
fn unpredictable() -> String {
    let mut b = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An exclusive advisory lock held until drop; serializes every
/// read-modify-write of the store across processes.
pub struct LockGuard {
    file: File,
}

impl LockGuard {
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
        fs2::FileExt::lock_exclusive(&file)?;
        Ok(Self { file })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = fs2::FileExt::unlock(&self.file);
    }
}

/// Follows a file its writers replace by rename (a published bundle):
/// `poll` hands over its bytes when they changed since the last poll (size,
/// mtime and inode first, so an unchanged file costs one `stat`; then the
/// content, so a rewrite of the same bytes is no change), and a failure once
/// per streak, not on every poll.
pub struct FileWatch {
    path: PathBuf,
    stamp: Option<(u64, Option<std::time::SystemTime>, u64)>,
    hash: Option<[u8; 32]>,
    failing: bool,
}

impl FileWatch {
    pub fn new(path: PathBuf) -> Self {
        Self { path, stamp: None, hash: None, failing: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn poll(&mut self) -> Option<io::Result<Vec<u8>>> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => return self.fail(e),
        };
        let stamp = (meta.len(), meta.modified().ok(), meta.ino());
        if self.stamp == Some(stamp) {
            return None;
        }
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => return self.fail(e),
        };
        self.stamp = Some(stamp);
        self.failing = false;
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
        if self.hash == Some(hash) {
            return None;
        }
        self.hash = Some(hash);
        Some(Ok(bytes))
    }

    fn fail(&mut self, e: io::Error) -> Option<io::Result<Vec<u8>>> {
        self.stamp = None;
        if std::mem::replace(&mut self.failing, true) {
            return None;
        }
        Some(Err(e))
    }
}

/// Reads a secret file (the master key), refusing one that others can
/// read, like ssh does with private keys: a leaked master key opens every
/// secret. See [`check_secret_mode`] for the one group-readable layout
/// accepted (a secret mounted into a container).
pub fn read_private_file(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    let file = FileIds { mode: meta.mode(), uid: meta.uid(), gid: meta.gid() };
    check_secret_mode(path, file, ProcessIds::current())
        .map_err(|message| io::Error::new(io::ErrorKind::PermissionDenied, message))?;
    fs::read_to_string(path)
}

/// Mode and owner of a secret file (after symlinks: a Kubernetes Secret
/// volume's `master.key -> ..data/master.key`).
#[derive(Clone, Copy, Debug)]
pub struct FileIds {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The reading process's effective user and group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessIds {
    pub uid: u32,
    pub gid: u32,
}

impl ProcessIds {
    /// From `/proc/self/status` (Linux, where the sidecar's containers
    /// run). `None` elsewhere: then only the 0600 rule applies.
    pub fn current() -> Option<Self> {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let effective = |field: &str| -> Option<u32> {
            let line = status.lines().find(|l| l.starts_with(field))?;
            // "Uid:\treal\teffective\tsaved\tfilesystem"
            line[field.len()..].split_whitespace().nth(1)?.parse().ok()
        };
        Some(Self { uid: effective("Uid:")?, gid: effective("Gid:")? })
    }
}

/// The rule for secret files. Accepted:
///
/// - a private file: no permission bits for group or others (`0600`,
///   `0400`), whoever owns it (the process could open it);
/// - a mounted secret: group-readable only (`0440` or `0640`, nothing for
///   others, no group write), owned by root or by the process's own user,
///   whose group is the process's own effective group, and not root's
///   group. This is what a Kubernetes Secret volume with `fsGroup` looks
///   like (the kubelet makes every file `root:<fsGroup>` and adds `0440`,
///   so `0400` cannot be had there; set `runAsGroup` equal to `fsGroup`),
///   and what `envoy/docker/up.sh` writes for Compose (`root:65532 0640`,
///   bind-mounted as it is into containers running as `65532:65532`).
///   Only processes running with that group can read it, which in those
///   deployments means the pod's or the stack's own containers.
///
/// Everything else is refused with a message naming the file and the fix.
pub fn check_secret_mode(path: &Path, file: FileIds, process: Option<ProcessIds>) -> Result<(), String> {
    let perms = file.mode & 0o777;
    if perms & 0o077 == 0 {
        return Ok(());
    }
    let mounted = perms & 0o007 == 0
        && perms & 0o070 == 0o040
        && file.gid != 0
        && process.is_some_and(|p| file.gid == p.gid && (file.uid == 0 || file.uid == p.uid));
    if mounted {
        return Ok(());
    }
    let groups = match process {
        Some(p) => format!("gid {}", p.gid),
        None => "this process's group".to_string(),
    };
    Err(format!(
        "{path} has mode {perms:04o} (owner {uid}:{gid}): group or others may read it; run: chmod 600 {path} \
         (a secret mounted into a container may instead be 0440 or 0640, owned by root or by this user, \
         with group {groups}, the process's own group: in Kubernetes set fsGroup equal to runAsGroup)",
        path = path.display(),
        uid = file.uid,
        gid = file.gid,
    ))
}

pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// An empty directory `thg-<name>-<pid>` under the system's temp dir, for
/// the admin's unit tests.
#[cfg(test)]
pub(crate) fn fresh_test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("thg-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = fresh_test_dir("fsutil");
        let p = dir.join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left behind");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_private_file(&p).unwrap_err().to_string().contains("chmod 600"));
        fs::remove_dir_all(&dir).unwrap();
    }

    const CONTAINER: ProcessIds = ProcessIds { uid: 65532, gid: 65532 };

    fn check(mode: u32, uid: u32, gid: u32, process: Option<ProcessIds>) -> Result<(), String> {
        check_secret_mode(
            Path::new("/etc/tokenhub/master/master.key"),
            FileIds { mode: 0o100000 | mode, uid, gid },
            process,
        )
    }

    #[test]
    fn private_files_are_accepted_whoever_reads_them() {
        for mode in [0o600, 0o400, 0o700] {
            assert!(check(mode, 65532, 65532, Some(CONTAINER)).is_ok(), "{mode:o}");
            assert!(check(mode, 1000, 1000, None).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn mounted_secrets_readable_by_the_processs_own_group_are_accepted() {
        // Kubernetes: Secret volume, defaultMode 0440, fsGroup 65532: the
        // kubelet makes the file root:65532 0440.
        assert_eq!(check(0o440, 0, 65532, Some(CONTAINER)), Ok(()));
        // Compose: envoy/docker/up.sh writes root:65532 0640.
        assert_eq!(check(0o640, 0, 65532, Some(CONTAINER)), Ok(()));
        // Owned by the reading user itself.
        assert_eq!(check(0o640, 65532, 65532, Some(CONTAINER)), Ok(()));
    }

    #[test]
    fn anything_else_is_refused_with_the_fix() {
        let refused = [
            (0o644, 0, 65532, Some(CONTAINER)),                 // the old up.sh: world-readable
            (0o444, 0, 65532, Some(CONTAINER)),                 // others may read
            (0o660, 0, 65532, Some(CONTAINER)),                 // group may write
            (0o440, 0, 1000, Some(CONTAINER)),                  // another group
            (0o440, 1000, 65532, Some(CONTAINER)),              // another owner
            (0o440, 0, 0, Some(ProcessIds { uid: 0, gid: 0 })), // root's group
            (0o440, 0, 65532, None),                            // process unknown: 0600 rule only
        ];
        for (mode, uid, gid, process) in refused {
            let err = check(mode, uid, gid, process).unwrap_err();
            assert!(err.contains("chmod 600 /etc/tokenhub/master/master.key"), "{err}");
            assert!(err.contains(&format!("{mode:04o}")), "{err}");
        }
    }

    /// The first `key: N` line at or before `end` counting back (the
    /// nearest), as YAML reads it (a leading 0 is octal).
    fn yaml_number(lines: &[&str], key: &str, end: usize, backwards: bool) -> Option<u32> {
        let parse = |l: &&str| {
            let v = l.trim().strip_prefix(key)?.trim();
            if v.len() > 1 && v.starts_with('0') {
                u32::from_str_radix(&v[1..], 8).ok()
            } else {
                v.parse().ok()
            }
        };
        if backwards {
            lines[..end].iter().rev().find_map(parse)
        } else {
            lines[end..].iter().find_map(parse)
        }
    }

    /// The Kubernetes manifests as the kubelet mounts them: Secret
    /// `tokenhub-master-key` becomes `root:<fsGroup>` with `defaultMode |
    /// 0440` (a read-only volume with fsGroup), read by a process running as
    /// `runAsUser:runAsGroup`. Fails on a layout the sidecar would refuse
    /// (e.g. the old rule with the shipped 0440 mount).
    #[test]
    fn the_kubernetes_master_key_mount_is_accepted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/k8s");
        let mut mounts = 0;
        // Every manifest, the scale-out shape's (a subdirectory) included.
        let mut files = Vec::new();
        let mut dirs = vec![dir];
        while let Some(d) = dirs.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml") {
                    files.push(path);
                }
            }
        }
        for file in files {
            let text = fs::read_to_string(file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.trim() == "secretName: tokenhub-master-key") {
                let default_mode = yaml_number(&lines, "defaultMode:", i, false).unwrap_or(0o644);
                let fs_group = yaml_number(&lines, "fsGroup:", i, true).unwrap();
                let process = ProcessIds {
                    uid: yaml_number(&lines, "runAsUser:", i, true).unwrap(),
                    gid: yaml_number(&lines, "runAsGroup:", i, true).unwrap(),
                };
                let file = FileIds { mode: 0o100000 | default_mode | 0o440, uid: 0, gid: fs_group };
                assert_eq!(
                    check_secret_mode(Path::new("master.key"), file, Some(process)),
                    Ok(()),
                    "{file:?} {process:?}"
                );
                mounts += 1;
            }
        }
        assert!(
            mounts >= 2,
            "expected the single pod's and the control plane's tokenhub-master-key volumes, found {mounts}"
        );
    }

    /// `envoy/docker/up.sh --secrets` writes a master key the Compose
    /// containers (65532:65532, bind-mounted as it is) accept.
    #[test]
    fn the_compose_master_key_is_accepted() {
        let dir = std::env::temp_dir().join(format!("thg-secrets-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let out = std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/docker/up.sh"))
            .arg("--secrets")
            .env("TOKENHUB_SECRETS_DIR", &dir)
            .output()
            .unwrap();
        let root = ProcessIds::current().unwrap().uid == 0;
        if root {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let meta = fs::metadata(dir.join("master.key")).unwrap();
            let file = FileIds { mode: meta.mode(), uid: meta.uid(), gid: meta.gid() };
            assert_eq!(check_secret_mode(Path::new("master.key"), file, Some(CONTAINER)), Ok(()), "{file:?}");
            // Nobody else on the host: no bit for others, on the key or the directory.
            assert_eq!(meta.mode() & 0o007, 0);
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o077, 0);
        } else {
            // Only root can hand the file to group 65532: up.sh says so.
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).contains("chown 0:65532"));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_process_ids_are_read_from_proc() {
        let me = ProcessIds::current().unwrap();
        let meta = fs::metadata("/proc/self").unwrap();
        assert_eq!((me.uid, me.gid), (meta.uid(), meta.gid()));
    }

    #[test]
    fn temp_files_are_exclusive_and_never_followed() {
        let dir = fresh_test_dir("fsutil-excl");
        // The name the old code used (`.f.tmp.<pid>`), planted as a symlink
        // to a file the attacker wants overwritten: never written through.
        let victim = dir.join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".f.tmp.{}", std::process::id()))).unwrap();
        let p = dir.join("f");
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"new");
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_watched_file_is_handed_over_once_per_change_and_a_failure_once_per_streak() {
        let dir = fresh_test_dir("fsutil-watch");
        let p = dir.join("guard.json");
        let mut watch = FileWatch::new(p.clone());
        assert!(matches!(watch.poll(), Some(Err(_))), "missing: reported");
        assert!(watch.poll().is_none(), "still missing: reported once");
        write_atomic(&p, b"v1", 0o600).unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), b"v1");
        assert!(watch.poll().is_none(), "unchanged");
        write_atomic(&p, b"v1", 0o600).unwrap();
        assert!(watch.poll().is_none(), "the same bytes renamed in again");
        write_atomic(&p, b"v2", 0o600).unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), b"v2");
        fs::remove_file(&p).unwrap();
        assert!(matches!(watch.poll(), Some(Err(_))));
        write_atomic(&p, b"v3", 0o600).unwrap();
        assert_eq!(watch.poll().unwrap().unwrap(), b"v3");
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Output files that are either complete or absent.
//!
//! `record` may sample for hours before it writes anything, so [`OutputFile::create`] runs
//! first and proves the destination is writable by creating the file that will hold the
//! profile. That file is created unnamed (`O_TMPFILE`) in the destination's directory, so
//! that a profiler killed by SIGKILL leaves nothing behind; [`OutputFile::commit`] writes
//! and syncs it, gives it a hidden temporary name and renames it over the destination. A
//! reader never sees half a profile, and a failed or interrupted write leaves whatever was
//! there before untouched. File systems without `O_TMPFILE` get a hidden named file from
//! the start instead.
//!
//! Symlinks: a link owned by root or by us is followed, like any program writing a file
//! would (`-o /dev/stdout`, a link into a results directory). A link owned by anyone else
//! (planted in a shared directory such as `/tmp`) is never followed: the rename replaces
//! the link itself, as the kernel's `protected_symlinks` rule would have it. Temporary
//! names are created with `O_EXCL` or `linkat`, neither of which follows a link. A
//! character device or a FIFO (`/dev/null`, `/dev/stdout` on a pipe) is written in place,
//! because renaming over it would destroy it.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};

use crate::privileges::invoking_user;

/// Tells apart the temporary files of one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// How much of the destination's name goes into the temporary name: enough to recognise
/// it, short enough that the prefix and suffix never push it over NAME_MAX.
const NAME_BYTES: usize = 128;

/// Most symlinks followed from the destination (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// A destination file being prepared, until [`OutputFile::commit`] puts it in place.
/// Dropping it uncommitted removes whatever it created.
#[derive(Debug)]
pub struct OutputFile {
    /// The destination as the user named it.
    path: PathBuf,
    /// Where the file goes: `path`, or what a trusted symlink there points to.
    target: PathBuf,
    kind: Kind,
    file: Option<File>,
}

#[derive(Debug)]
enum Kind {
    /// An `O_TMPFILE` file in `target`'s directory: nameless until committed.
    Unnamed,
    /// A hidden file beside `target`, for file systems without `O_TMPFILE`; emptied once
    /// committed or removed.
    Named(PathBuf),
    /// A character device or FIFO, written in place.
    Special,
    /// Committed: nothing left to clean up.
    Done,
}

/// An io error as the user should read it. Access refusals become plain messages: the
/// generic error printer treats an `io::Error` of kind `PermissionDenied` as a ptrace
/// problem and would suggest running as root, which is not the fix for a file.
fn io_error(err: io::Error, what: String) -> anyhow::Error {
    match err.kind() {
        ErrorKind::PermissionDenied => anyhow!("{what}: permission denied"),
        _ if err.raw_os_error() == Some(libc::EROFS) => anyhow!("{what}: read-only file system"),
        _ if err.raw_os_error() == Some(libc::ENOSPC) => anyhow!("{what}: no space left on device"),
        _ if err.raw_os_error() == Some(libc::EDQUOT) => anyhow!("{what}: disk quota exceeded"),
        _ => anyhow::Error::new(err).context(what),
    }
}

/// Where writing to `path` should go.
enum Destination {
    /// Create a file at this path (replacing what is there, a foreign symlink included).
    File(PathBuf),
    /// Open this device or FIFO and write into it.
    Special(PathBuf),
}

/// Whether a symlink owned by `uid` may be followed: it was made by root or by us, not
/// planted by another user.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::Uid::effective().as_raw()
}

/// Follows trusted symlinks from `path` to the file to create or the device to open.
fn resolve(path: &Path) -> Result<Destination> {
    let mut at = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match fs::symlink_metadata(&at) {
            Ok(meta) => meta,
            // Missing, or under something that is not a directory: creating it will say
            // which.
            Err(err)
                if err.kind() == ErrorKind::NotFound
                    || err.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(Destination::File(at))
            }
            Err(err) => return Err(io_error(err, format!("cannot use {}", at.display()))),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            if !trusted_owner(meta.uid()) {
                return Ok(Destination::File(at));
            }
            // Where the whole chain ends decides devices and directories: links under
            // /proc/self/fd name pipes ("pipe:[123]") that are no path to follow.
            if let Ok(end) = fs::metadata(&at) {
                let end_kind = end.file_type();
                if end_kind.is_char_device() || end_kind.is_fifo() {
                    return Ok(Destination::Special(at));
                }
                if end.is_dir() {
                    bail!("{} is a directory", path.display());
                }
            }
            let link = fs::read_link(&at)
                .map_err(|err| io_error(err, format!("cannot follow {}", at.display())))?;
            at = match at.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
            continue;
        }
        if kind.is_dir() {
            bail!("{} is a directory", path.display());
        }
        if kind.is_char_device() || kind.is_fifo() {
            return Ok(Destination::Special(at));
        }
        if kind.is_block_device() || kind.is_socket() {
            bail!(
                "{} is a {}, not a file to write a profile into",
                path.display(),
                if kind.is_socket() {
                    "socket"
                } else {
                    "block device"
                }
            );
        }
        return Ok(Destination::File(at));
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// The directory of `path` ("." for a bare name) and its file name.
fn split(path: &Path) -> Result<(&Path, &OsStr)> {
    let Some(name) = path.file_name() else {
        bail!("{} does not name a file", path.display());
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// A fresh hidden name beside `name` in `dir`; each call gives another one.
fn temp_name(dir: &Path, name: &OsStr) -> PathBuf {
    let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let short = &name.as_bytes()[..name.len().min(NAME_BYTES)];
    let mut temp = b".".to_vec();
    temp.extend_from_slice(short);
    temp.extend_from_slice(format!(".py-spy-{}-{n}.tmp", std::process::id()).as_bytes());
    dir.join(OsStr::from_bytes(&temp))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))
}

/// Gives the unnamed `file` the name `to` without following or replacing anything there.
fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let to = c_path(to)?;
    // Through /proc any user may link an O_TMPFILE file; the AT_EMPTY_PATH form needs
    // CAP_DAC_READ_SEARCH, which a root without /proc mounted still has.
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: both paths are NUL-terminated strings that outlive the calls.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    if first.kind() != ErrorKind::NotFound {
        return Err(first);
    }
    // SAFETY: an empty NUL-terminated path with a valid descriptor, as AT_EMPTY_PATH wants.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl OutputFile {
    /// Prepares to write `path`: creates the file that will hold the profile in `path`'s
    /// directory (mode 0644 less the umask), or opens the device or FIFO `path` names.
    /// Fails with a message naming the problem when the directory is missing or not
    /// writable, or `path` is a directory.
    pub fn create(path: &Path) -> Result<OutputFile> {
        Self::create_with(path, true)
    }

    /// [`OutputFile::create`], optionally without `O_TMPFILE` (to test the fallback).
    fn create_with(path: &Path, allow_unnamed: bool) -> Result<OutputFile> {
        let target = match resolve(path)? {
            Destination::Special(device) => {
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(&device)
                    .map_err(|err| io_error(err, format!("cannot open {}", path.display())))?;
                return Ok(OutputFile {
                    path: path.to_path_buf(),
                    target: device,
                    kind: Kind::Special,
                    file: Some(file),
                });
            }
            Destination::File(target) => target,
        };
        let (dir, name) = split(&target)?;
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} is not a directory", dir.display()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                bail!("directory {} does not exist", dir.display())
            }
            Err(err) => {
                return Err(io_error(
                    err,
                    format!("cannot use directory {}", dir.display()),
                ))
            }
        }
        let cannot_write =
            |err| io_error(err, format!("cannot write to directory {}", dir.display()));
        let unnamed = if allow_unnamed {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o644)
                .open(dir)
        } else {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        };
        let (kind, file) = match unnamed {
            Ok(file) => (Kind::Unnamed, file),
            // No O_TMPFILE here (old kernels report EISDIR, some file systems EOPNOTSUPP).
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                loop {
                    let temp = temp_name(dir, name);
                    let opened = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&temp);
                    match opened {
                        Ok(file) => break (Kind::Named(temp), file),
                        // Left behind by an earlier run with the same pid, or planted.
                        Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                        Err(err) => return Err(cannot_write(err)),
                    }
                }
            }
            Err(err) => return Err(cannot_write(err)),
        };
        if let Some(user) = invoking_user() {
            // Best effort: the profile is still written if the file cannot change hands.
            let _ = user.take_ownership(&file);
        }
        Ok(OutputFile {
            path: path.to_path_buf(),
            target,
            kind,
            file: Some(file),
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` on a buffered writer to the file, then flushes and syncs it and puts
    /// it in place of the destination. On any error nothing is left of it, the destination
    /// is as it was, and the error (a full disk included) is returned.
    pub fn commit(mut self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let file = self.file.take().context("output file already used")?;
        let what = || format!("cannot write {}", self.path.display());
        let mut out = BufWriter::new(file);
        write(&mut out).map_err(|err| match err.downcast::<io::Error>() {
            Ok(err) => io_error(err, what()),
            Err(err) => err.context(what()),
        })?;
        let file = out
            .into_inner()
            .map_err(|err| io_error(err.into_error(), what()))?;
        if matches!(self.kind, Kind::Special) {
            self.kind = Kind::Done;
            return Ok(());
        }
        file.sync_all().map_err(|err| io_error(err, what()))?;
        let temp = match &self.kind {
            Kind::Named(temp) => temp.clone(),
            _ => {
                let (dir, name) = split(&self.target)?;
                loop {
                    let temp = temp_name(dir, name);
                    match link_unnamed(&file, &temp) {
                        Ok(()) => break temp,
                        Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                        Err(err) => return Err(io_error(err, what())),
                    }
                }
            }
        };
        drop(file);
        // From here on, Drop removes the named file if the rename fails.
        self.kind = Kind::Named(temp.clone());
        fs::rename(&temp, &self.target)
            .map_err(|err| io_error(err, format!("cannot replace {}", self.path.display())))?;
        self.kind = Kind::Done;
        // The rename is durable once the directory is synced; the profile is already
        // complete either way, so a directory that cannot be synced is no error.
        if let Ok((dir, _)) = split(&self.target) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Kind::Named(temp) = &self.kind {
            let _ = fs::remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> PathBuf {
        let base = std::env::temp_dir();
        loop {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("py-spy-file-test-{}-{n}", std::process::id()));
            if fs::create_dir(&dir).is_ok() {
                return dir;
            }
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commit_writes_the_file() {
        for unnamed in [true, false] {
            let dir = scratch();
            let path = dir.join("out.svg");
            let file = OutputFile::create_with(&path, unnamed).unwrap();
            assert_eq!(file.path(), path);
            let names = entries(&dir);
            if unnamed {
                // Nothing to see (or to leave behind) until the profile is complete.
                assert!(names.is_empty(), "{names:?}");
            } else {
                // The fallback: a hidden temporary file beside the destination.
                assert_eq!(names.len(), 1);
                assert!(names[0].starts_with(".out.svg.py-spy-"), "{names:?}");
                assert!(names[0].ends_with(".tmp"), "{names:?}");
            }
            file.commit(|out| {
                out.write_all(b"hello\n")?;
                Ok(())
            })
            .unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
            assert_eq!(entries(&dir), vec!["out.svg"]);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & !0o644, 0, "mode {mode:o}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn replaces_an_existing_file_and_follows_our_own_symlink() {
        let dir = scratch();
        let path = dir.join("out.txt");
        fs::write(&path, "old contents that are longer").unwrap();
        OutputFile::create(&path)
            .unwrap()
            .commit(|out| Ok(out.write_all(b"new")?))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");

        // Our own link is followed: the file it names gets the profile, the link stays.
        fs::create_dir(dir.join("results")).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("results/profile.txt", &link).unwrap();
        OutputFile::create(&link)
            .unwrap()
            .commit(|out| Ok(out.write_all(b"profile")?))
            .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(dir.join("results/profile.txt")).unwrap(),
            "profile"
        );
        assert_eq!(entries(&dir.join("results")), vec!["profile.txt"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A link someone else planted is replaced, never written through. Making a link owned
    /// by another user needs root, so the check is skipped otherwise.
    #[test]
    fn never_follows_a_symlink_planted_by_another_user() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let dir = scratch();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let link = dir.join("out.svg");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        OutputFile::create(&link)
            .unwrap()
            .commit(|out| Ok(out.write_all(b"profile")?))
            .unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        let meta = fs::symlink_metadata(&link).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(fs::read_to_string(&link).unwrap(), "profile");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Symlinks planted under the temporary names py-spy is about to use are skipped, not
    /// followed: the commit takes the next free name.
    #[test]
    fn planted_temporary_names_are_not_followed() {
        for unnamed in [true, false] {
            let dir = scratch();
            let victim = dir.join("victim");
            fs::write(&victim, "precious").unwrap();
            let next = NEXT_TEMP.load(Ordering::Relaxed);
            // Other tests of this binary take numbers too: plant well ahead.
            for n in next..next + 64 {
                let name = format!(".out.svg.py-spy-{}-{n}.tmp", std::process::id());
                std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
            }
            OutputFile::create_with(&dir.join("out.svg"), unnamed)
                .unwrap()
                .commit(|out| Ok(out.write_all(b"profile")?))
                .unwrap();
            assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
            assert_eq!(fs::read_to_string(dir.join("out.svg")).unwrap(), "profile");
            assert_eq!(entries(&dir).len(), 64 + 2);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn devices_are_written_in_place() {
        OutputFile::create(Path::new("/dev/null"))
            .unwrap()
            .commit(|out| Ok(out.write_all(b"profile")?))
            .unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        let err = OutputFile::create(Path::new("/dev/full"))
            .unwrap()
            .commit(|out| Ok(out.write_all(&[b'x'; 100_000])?))
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "cannot write /dev/full: no space left on device"
        );
        assert!(fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = scratch();
        let path = dir.join("out.json");
        let err = OutputFile::create(&path)
            .unwrap()
            .commit(|out| {
                out.write_all(b"half a profile")?;
                bail!("disk on fire")
            })
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("cannot write {}: disk on fire", path.display())
        );
        assert!(entries(&dir).is_empty());

        // An existing destination survives a failed write untouched.
        fs::write(&path, "previous").unwrap();
        OutputFile::create(&path)
            .unwrap()
            .commit(|_| bail!("no"))
            .unwrap_err();
        assert_eq!(fs::read_to_string(&path).unwrap(), "previous");
        assert_eq!(entries(&dir), vec!["out.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropped_without_commit_leaves_nothing() {
        let dir = scratch();
        for unnamed in [true, false] {
            let file = OutputFile::create_with(&dir.join("out.svg"), unnamed).unwrap();
            assert_eq!(entries(&dir).len(), usize::from(!unnamed));
            drop(file);
            assert!(entries(&dir).is_empty());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn panicking_writer_leaves_nothing() {
        let dir = scratch();
        let file = OutputFile::create(&dir.join("out.svg")).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            file.commit(|_| panic!("bug in a format"))
        }));
        assert!(result.is_err());
        assert!(entries(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_destinations() {
        let dir = scratch();
        let missing = dir.join("x").join("y");
        let err = OutputFile::create(&missing.join("out.svg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("directory {} does not exist", missing.display())
        );

        let err = OutputFile::create(&dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{} is a directory", dir.display()));

        let file = dir.join("file");
        fs::write(&file, "").unwrap();
        let err = OutputFile::create(&file.join("out.svg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is not a directory", file.display())
        );

        let err = OutputFile::create(Path::new("/")).unwrap_err();
        assert_eq!(err.to_string(), "/ is a directory");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Root bypasses directory permissions (CAP_DAC_OVERRIDE), so as root (how the test
    /// suite usually runs) there is nothing to observe and the check is skipped.
    #[test]
    fn read_only_directory() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return;
        }
        let dir = scratch();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        let err = OutputFile::create(&dir.join("out.svg")).unwrap_err();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "cannot write to directory {}: permission denied",
                dir.display()
            )
        );
        assert!(!crate::process::is_permission_error(&err));
        fs::remove_dir_all(&dir).unwrap();
    }
}

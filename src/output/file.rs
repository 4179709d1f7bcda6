//! Output files that are either complete or absent.
//!
//! `record` may sample for hours before it writes anything, so [`OutputFile::create`] runs
//! first and proves the destination is writable by creating a temporary file next to it.
//! [`OutputFile::commit`] writes, syncs and renames that file over the destination: a
//! reader never sees half a profile, and a failed or interrupted write leaves whatever was
//! there before untouched.
//!
//! The temporary file is created with `O_EXCL`, so a symlink planted under its name is
//! never followed. The rename replaces the destination's directory entry: if the
//! destination is a symlink, the link is replaced, not the file it points to.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};

/// Tells apart the temporary files of one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// How much of the destination's name goes into the temporary name: enough to recognise
/// it, short enough that the prefix and suffix never push it over NAME_MAX.
const NAME_BYTES: usize = 128;

/// A destination file being prepared: a temporary file beside it until
/// [`OutputFile::commit`] renames it into place. Dropping it uncommitted removes the
/// temporary file.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

/// An io error as the user should read it. Access refusals become plain messages: the
/// generic error printer treats an `io::Error` of kind `PermissionDenied` as a ptrace
/// problem and would suggest running as root, which is not the fix for a file.
fn io_error(err: io::Error, what: String) -> anyhow::Error {
    match err.kind() {
        ErrorKind::PermissionDenied => anyhow!("{what}: permission denied"),
        _ if err.raw_os_error() == Some(libc::EROFS) => anyhow!("{what}: read-only file system"),
        _ => anyhow::Error::new(err).context(what),
    }
}

impl OutputFile {
    /// Creates the temporary file for `path` in `path`'s directory (mode 0644 less the
    /// umask). Fails with a message naming the problem when the directory is missing or
    /// not writable, or `path` is a directory.
    pub fn create(path: &Path) -> Result<OutputFile> {
        if path.is_dir() {
            bail!("{} is a directory", path.display());
        }
        let name = match path.file_name() {
            Some(name) => name,
            None => bail!("{} does not name a file", path.display()),
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
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
        let short = &name.as_bytes()[..name.len().min(NAME_BYTES)];
        loop {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = b".".to_vec();
            temp_name.extend_from_slice(short);
            temp_name
                .extend_from_slice(format!(".py-spy-{}-{n}.tmp", std::process::id()).as_bytes());
            let temp = dir.join(OsStr::from_bytes(&temp_name));
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp);
            match opened {
                Ok(file) => {
                    return Ok(OutputFile {
                        path: path.to_path_buf(),
                        temp,
                        file: Some(file),
                    })
                }
                // Left behind by an earlier run with the same pid: take the next number.
                Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(io_error(
                        err,
                        format!("cannot write to directory {}", dir.display()),
                    ))
                }
            }
        }
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `write` on a buffered writer to the temporary file, then flushes and syncs it
    /// and renames it over the destination. On any error the temporary file is removed, the
    /// destination is left as it was, and the error (a full disk included) is returned.
    pub fn commit(mut self, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        let file = self.file.take().context("output file already used")?;
        let what = || format!("cannot write {}", self.path.display());
        let mut out = BufWriter::new(file);
        write(&mut out).with_context(what)?;
        let file = out
            .into_inner()
            .map_err(|err| io_error(err.into_error(), what()))?;
        file.sync_all().map_err(|err| io_error(err, what()))?;
        drop(file);
        fs::rename(&self.temp, &self.path)
            .map_err(|err| io_error(err, format!("cannot replace {}", self.path.display())))?;
        // Committed: nothing left for Drop to remove.
        self.temp = PathBuf::new();
        // The rename is durable once the directory is synced; the profile is already
        // complete either way, so a directory that cannot be synced is no error.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
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
        let dir = scratch();
        let path = dir.join("out.svg");
        let file = OutputFile::create(&path).unwrap();
        assert_eq!(file.path(), path);
        // The temporary file exists from the start, hidden, beside the destination.
        let names = entries(&dir);
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with(".out.svg.py-spy-"), "{names:?}");
        assert!(names[0].ends_with(".tmp"), "{names:?}");
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

    #[test]
    fn replaces_an_existing_file_and_a_symlink() {
        let dir = scratch();
        let path = dir.join("out.txt");
        fs::write(&path, "old contents that are longer").unwrap();
        OutputFile::create(&path)
            .unwrap()
            .commit(|out| Ok(out.write_all(b"new")?))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");

        // A symlink at the destination is replaced; its target is left alone.
        let target = dir.join("target");
        fs::write(&target, "target").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        OutputFile::create(&link)
            .unwrap()
            .commit(|out| Ok(out.write_all(b"profile")?))
            .unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "target");
        assert!(!fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&link).unwrap(), "profile");
        fs::remove_dir_all(&dir).unwrap();
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
        let file = OutputFile::create(&dir.join("out.svg")).unwrap();
        assert_eq!(entries(&dir).len(), 1);
        drop(file);
        assert!(entries(&dir).is_empty());
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

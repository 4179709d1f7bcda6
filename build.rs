//! Build script: records the target triple (`PY_SPY_TARGET`) and the version line that
//! `py-spy --version` prints (`PY_SPY_VERSION`): the package version, plus the git commit
//! the binary was built from and whether tracked files differed from it.
//!
//! It never fails: git missing, refusing ("dubious ownership"), not a repository, or
//! printing something unexpected all mean "no commit", and the version is then the bare
//! package version. `tests/version.rs` runs these functions against real repositories.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=PY_SPY_TARGET={target}");
    let package = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = git_state(OsStr::new("git"), &package);
    let revision = match &git {
        Some(state) => Some(state.revision.clone()),
        None => vcs_info_revision(&package),
    };
    println!(
        "cargo:rustc-env=PY_SPY_VERSION={}",
        version_line(&version, revision.as_ref())
    );
    // Any rerun-if-changed line turns off cargo's default of rerunning on every change in
    // the package, so everything whose change can alter the line above is listed.
    println!("cargo:rerun-if-changed=build.rs");
    let vcs_info = package.join(".cargo_vcs_info.json");
    if vcs_info.exists() {
        println!("cargo:rerun-if-changed={}", vcs_info.display());
    }
    for path in git.iter().flat_map(|state| &state.watch) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The commit a build comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The commit id abbreviated to 12 hex digits (or more, where git needs more to be
    /// unambiguous).
    pub short: String,
    /// Whether tracked files differed from that commit.
    pub modified: bool,
}

/// What git says about the package's own repository.
#[derive(Debug)]
pub struct GitState {
    /// The checked-out commit.
    pub revision: Revision,
    /// Files and directories whose change can change `revision`: HEAD, the ref it points
    /// to (or the directory it will appear in), packed-refs, the index, and the tracked
    /// top-level entries of the working tree.
    pub watch: Vec<PathBuf>,
}

/// `py-spy --version` without the leading name: `0.1.0 (commit 1a2b3c4d5e6f, modified)`.
pub fn version_line(version: &str, revision: Option<&Revision>) -> String {
    match revision {
        Some(Revision {
            short,
            modified: true,
        }) => format!("{version} (commit {short}, modified)"),
        Some(Revision {
            short,
            modified: false,
        }) => format!("{version} (commit {short})"),
        None => version.to_string(),
    }
}

/// Runs `git -C DIR ARGS…` and returns its stdout as one trimmed line, or None if git is
/// missing, fails, or prints nothing, several lines or non-UTF-8.
fn git_line(git: &OsStr, dir: &Path, args: &[&str]) -> Option<String> {
    let out = git_output(git, dir, args)?;
    let text = String::from_utf8(out).ok()?;
    let line = text.trim_end_matches('\n');
    (!line.is_empty() && !line.contains('\n')).then(|| line.to_string())
}

/// Runs `git -C DIR ARGS…`; its stdout if it exits successfully.
fn git_output(git: &OsStr, dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let mut command = Command::new(git);
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    // A build started from a git hook inherits GIT_DIR and GIT_INDEX_FILE, which would
    // point these questions at whatever repository ran the hook.
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    ] {
        command.env_remove(var);
    }
    // `git status` otherwise rewrites a stale index, whose new mtime would make cargo run
    // this script once more for nothing.
    command.env("GIT_OPTIONAL_LOCKS", "0");
    let output = command.output().ok()?;
    output.status.success().then_some(output.stdout)
}

/// An abbreviated or full commit id: hex digits, 7 to 64 of them.
fn is_commit_id(text: &str) -> bool {
    (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The revision of the git repository whose top level is `package`, and what to watch.
///
/// A repository that merely encloses the package (a crate unpacked or vendored into some
/// other project's checkout) is ignored: its commit and its uncommitted changes describe
/// that project, not this source, so claiming them would mislead whoever reads
/// `--version`. Such a build then reports `.cargo_vcs_info.json`'s commit, or none.
pub fn git_state(git: &OsStr, package: &Path) -> Option<GitState> {
    let package = fs::canonicalize(package).ok()?;
    let toplevel = git_line(git, &package, &["rev-parse", "--show-toplevel"])?;
    if fs::canonicalize(&toplevel).ok()? != package {
        return None;
    }
    let short = git_line(
        git,
        &package,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--short=12",
            "HEAD^{commit}",
        ],
    )?;
    if !is_commit_id(&short) {
        return None;
    }
    let status = git_output(
        git,
        &package,
        &["status", "--porcelain", "--untracked-files=no"],
    )?;
    let revision = Revision {
        short,
        modified: !status.is_empty(),
    };
    Some(GitState {
        revision,
        watch: watch_list(git, &package),
    })
}

/// Where git keeps `name` (`HEAD`, `index`, a ref…): `--git-path` knows which of them a
/// linked worktree keeps in its own git directory and which in the shared one.
fn git_path(git: &OsStr, package: &Path, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git_line(git, package, &["rev-parse", "--git-path", name])?);
    // A relative answer is relative to the directory given with -C.
    Some(package.join(path))
}

/// Everything whose change can change the revision of `package`'s repository. Only
/// existing paths: cargo reruns a script on every build while a listed path is missing.
fn watch_list(git: &OsStr, package: &Path) -> Vec<PathBuf> {
    let mut watch = Vec::new();
    for name in ["HEAD", "index", "packed-refs", "reftable"] {
        watch.extend(git_path(git, package, name));
    }
    // The branch HEAD points to. Its loose file may not exist yet (a freshly cloned branch
    // is only in packed-refs); the next commit creates it, so then its directory is
    // watched, which sees the file appear.
    if let Some(reference) = git_line(git, package, &["symbolic-ref", "--quiet", "HEAD"]) {
        if let Some(file) = git_path(git, package, &reference) {
            if file.exists() {
                watch.push(file);
            } else if let Some(dir) = file.parent() {
                watch.push(dir.to_path_buf());
            }
        }
    }
    // Edits to tracked files make the build "modified". The whole package directory
    // cannot be listed: it holds target/, which changes on every build.
    if let Some(listing) = git_output(git, package, &["ls-files", "-z"]) {
        let mut tops: Vec<&[u8]> = listing
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| name.split(|&b| b == b'/').next().unwrap_or(name))
            .collect();
        tops.sort_unstable();
        tops.dedup();
        for top in tops {
            if let Ok(top) = std::str::from_utf8(top) {
                watch.push(package.join(top));
            }
        }
    }
    watch.retain(|path| path.exists());
    watch
}

/// The commit `cargo package` recorded in `.cargo_vcs_info.json`
/// (`{"git": {"sha1": "…", "dirty": true}, …}`), for builds from a published crate.
pub fn vcs_info_revision(package: &Path) -> Option<Revision> {
    let text = fs::read_to_string(package.join(".cargo_vcs_info.json")).ok()?;
    let after_key = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let value = value.strip_prefix('"')?;
    let sha = &value[..value.find('"')?];
    if !is_commit_id(sha) {
        return None;
    }
    let modified = text
        .split_once("\"dirty\"")
        .and_then(|(_, rest)| rest.trim_start().strip_prefix(':'))
        .is_some_and(|rest| rest.trim_start().starts_with("true"));
    Some(Revision {
        short: sha[..sha.len().min(12)].to_string(),
        modified,
    })
}

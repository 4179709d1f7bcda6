//! `py-spy --version`: the package version and the commit it was built from.
//!
//! The binary under test is compared with what git says about this checkout right now;
//! build.rs's functions run against real repositories (a linked worktree, a repository
//! that only encloses the package, one git refuses, broken gits); and a copy of the
//! tracked files is built by a nested cargo with no git on PATH.

mod common;

#[allow(dead_code)]
#[path = "../build.rs"]
mod build_script;

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use build_script::{git_state, vcs_info_revision, Revision};

const TIMEOUT: Duration = Duration::from_secs(30);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A scratch directory removed on drop unless the test is failing.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("py-spy-version-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(fs::canonicalize(&dir).expect("canonicalize the scratch directory"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// `git -C dir ARGS…` with no user or system configuration; (success, stdout, stderr).
fn git_raw(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // `git status` would otherwise rewrite this checkout's index, and its new mtime
        // make the next build run build.rs again.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `git -C dir ARGS…`, which must succeed; its stdout without the final newline.
fn git(dir: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = git_raw(dir, args);
    assert!(ok, "git {args:?} in {}: {stderr}", dir.display());
    stdout
}

/// A repository at `dir` with one commit of `src/lib.rs` and `README`.
fn repository(dir: &Path) {
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(dir.join("src/lib.rs"), "// one\n").unwrap();
    fs::write(dir.join("README"), "readme\n").unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "one"]);
}

fn state(dir: &Path) -> Option<build_script::GitState> {
    git_state(OsStr::new("git"), dir)
}

/// What `--version` should print after the name, from git's view of this checkout now.
fn expected_version() -> String {
    let package = fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let (ok, toplevel, _) = git_raw(&package, &["rev-parse", "--show-toplevel"]);
    if !ok || fs::canonicalize(&toplevel).ok() != Some(package.clone()) {
        println!("the package is not the top of a git repository: expecting the bare version");
        return VERSION.to_string();
    }
    let short = git(&package, &["rev-parse", "--short=12", "HEAD"]);
    let status = git(&package, &["status", "--porcelain", "--untracked-files=no"]);
    if status.is_empty() {
        format!("{VERSION} (commit {short})")
    } else {
        format!("{VERSION} (commit {short}, modified)")
    }
}

#[test]
fn version_names_the_commit() {
    let want = expected_version();
    let run = common::run_py_spy(&["--version"], TIMEOUT);
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.stdout, format!("py-spy {want}\n"), "{}", run.describe());
    assert_eq!(run.stderr, "");
    // propagate_version: each subcommand has the same version under its own name.
    for sub in ["record", "dump", "top", "completions"] {
        let run = common::run_py_spy(&[sub, "--version"], TIMEOUT);
        assert!(run.status.success(), "{}", run.describe());
        assert_eq!(
            run.stdout,
            format!("py-spy-{sub} {want}\n"),
            "{}",
            run.describe()
        );
    }
}

#[test]
fn own_repository_commit_changes_and_watch_list() {
    let dir = Scratch::new("own");
    let repo = &dir.0;
    repository(repo);
    let state = state(repo).expect("a commit for a repository's top level");
    let head = git(repo, &["rev-parse", "--short=12", "HEAD"]);
    assert_eq!(
        state.revision,
        Revision {
            short: head.clone(),
            modified: false
        }
    );
    let git_dir = repo.join(".git");
    assert_eq!(
        state.watch,
        [
            git_dir.join("HEAD"),
            git_dir.join("index"),
            git_dir.join("refs/heads/main"),
            repo.join("README"),
            repo.join("src"),
        ]
    );
    // An untracked file is not a modification; an edit to a tracked one is.
    fs::write(repo.join("notes.txt"), "untracked\n").unwrap();
    assert!(!self::state(repo).unwrap().revision.modified);
    fs::write(repo.join("src/lib.rs"), "// two\n").unwrap();
    assert_eq!(
        self::state(repo).unwrap().revision,
        Revision {
            short: head.clone(),
            modified: true
        }
    );
    git(repo, &["commit", "-q", "-a", "-m", "two"]);
    let second = git(repo, &["rev-parse", "--short=12", "HEAD"]);
    assert_ne!(second, head);
    assert_eq!(
        self::state(repo).unwrap().revision,
        Revision {
            short: second,
            modified: false
        }
    );
    // Only packed: the branch's loose file is gone, its directory is watched instead.
    git(repo, &["pack-refs", "--all"]);
    assert!(!git_dir.join("refs/heads/main").exists());
    let watch = self::state(repo).unwrap().watch;
    assert_eq!(
        watch[..4],
        [
            git_dir.join("HEAD"),
            git_dir.join("index"),
            git_dir.join("packed-refs"),
            git_dir.join("refs/heads"),
        ]
    );
}

/// A linked worktree (like the checkouts this project is developed in) has its own HEAD
/// and index, and shares the branch refs with the main one.
#[test]
fn linked_worktree() {
    let dir = Scratch::new("worktree");
    let main = dir.0.join("main");
    let linked = dir.0.join("linked");
    fs::create_dir_all(&main).unwrap();
    repository(&main);
    git(
        &main,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            linked.to_str().unwrap(),
        ],
    );
    fs::write(linked.join("README"), "changed on the feature branch\n").unwrap();
    git(&linked, &["commit", "-q", "-a", "-m", "feature"]);
    let feature = git(&linked, &["rev-parse", "--short=12", "HEAD"]);
    assert_ne!(feature, git(&main, &["rev-parse", "--short=12", "HEAD"]));
    let state = state(&linked).expect("a commit for a linked worktree");
    assert_eq!(
        state.revision,
        Revision {
            short: feature,
            modified: false
        }
    );
    let own = main.join(".git/worktrees/linked");
    assert_eq!(
        state.watch,
        [
            own.join("HEAD"),
            own.join("index"),
            main.join(".git/refs/heads/feature"),
            linked.join("README"),
            linked.join("src"),
        ]
    );
}

/// A package unpacked inside some other project's checkout does not take its commit.
#[test]
fn enclosing_repository_is_not_the_packages() {
    let dir = Scratch::new("enclosing");
    repository(&dir.0);
    let package = dir.0.join("vendor/py-spy");
    fs::create_dir_all(&package).unwrap();
    fs::write(package.join("Cargo.toml"), "[package]\n").unwrap();
    git(&dir.0, &["add", "."]);
    git(&dir.0, &["commit", "-q", "-m", "vendor"]);
    assert!(
        state(&dir.0).is_some(),
        "the enclosing repository itself has a commit"
    );
    assert!(state(&package).is_none());
}

/// git refuses a repository owned by someone else ("dubious ownership").
#[test]
fn refused_repository_means_no_commit() {
    if !common::is_root() {
        println!("SKIP refused_repository_means_no_commit: needs root to chown");
        return;
    }
    let dir = Scratch::new("refused");
    repository(&dir.0);
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&dir.0)
        .status()
        .expect("run chown");
    assert!(chown.success());
    let (ok, _, stderr) = git_raw(&dir.0, &["rev-parse", "HEAD"]);
    assert!(
        !ok && stderr.contains("dubious ownership"),
        "git did not refuse: {stderr}"
    );
    assert!(state(&dir.0).is_none());
}

/// Missing, failing and babbling gits all mean "no commit", never a failed build.
#[test]
fn broken_git_means_no_commit() {
    let dir = Scratch::new("broken");
    let repo = dir.0.join("repo");
    fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    assert!(state(&repo).is_some(), "the real git finds the commit");
    // The fake gits answer --show-toplevel truthfully (the directory after -C), then lie.
    let fakes = [
        ("fails", "exit 1"),
        (
            "not-hex",
            r#"case "$*" in *show-toplevel*) echo "$2";; *) echo 'no such commit';; esac"#,
        ),
        (
            "two-lines",
            r#"case "$*" in *show-toplevel*) echo "$2";; *) printf 'abcdef0123456\nabc\n';; esac"#,
        ),
        (
            "not-utf8",
            r#"case "$*" in *show-toplevel*) echo "$2";; *) printf '\377\376\n';; esac"#,
        ),
        (
            "empty",
            r#"case "$*" in *show-toplevel*) echo "$2";; *) :;; esac"#,
        ),
        ("toplevel-garbage", "printf '\\0\\1\\2\\n'"),
        ("killed", "kill -9 $$"),
    ];
    for (name, body) in fakes {
        let fake = dir.0.join(name);
        fs::write(&fake, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(git_state(fake.as_os_str(), &repo).is_none(), "{name}");
    }
    let missing = dir.0.join("no-such-git");
    assert!(git_state(missing.as_os_str(), &repo).is_none());
}

#[test]
fn cargo_vcs_info_commit() {
    let dir = Scratch::new("vcs-info");
    assert_eq!(vcs_info_revision(&dir.0), None);
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let cases = [
        (
            format!(
                "{{\n  \"git\": {{\n    \"sha1\": \"{sha}\"\n  }},\n  \"path_in_vcs\": \"\"\n}}\n"
            ),
            Some(Revision {
                short: "0123456789ab".to_string(),
                modified: false,
            }),
        ),
        (
            format!("{{\"git\":{{\"sha1\":\"{sha}\",\"dirty\":true}},\"path_in_vcs\":\"\"}}"),
            Some(Revision {
                short: "0123456789ab".to_string(),
                modified: true,
            }),
        ),
        ("{\"git\":{\"sha1\":\"not a sha\"}}".to_string(), None),
        ("{\"git\":{\"sha1\":".to_string(), None),
        ("\u{1F980}".to_string(), None),
    ];
    for (text, want) in cases {
        fs::write(dir.0.join(".cargo_vcs_info.json"), &text).unwrap();
        assert_eq!(vcs_info_revision(&dir.0), want, "{text}");
    }
}

// ------------------------------------------------------------ build without git --

/// The files to copy: git's tracked files when git knows the checkout, else everything
/// but `target/` and `.git`.
fn package_files(package: &Path) -> Vec<PathBuf> {
    let (ok, _, _) = git_raw(package, &["rev-parse", "--show-toplevel"]);
    if ok {
        let out = Command::new("git")
            .arg("-C")
            .arg(package)
            .args(["ls-files", "-z"])
            .output()
            .expect("git ls-files");
        assert!(out.status.success());
        return out
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8(name.to_vec()).expect("UTF-8 file name")))
            // Tracked but deleted in the working tree: not part of what is built.
            .filter(|rel| package.join(rel).exists())
            .collect();
    }
    let mut files = Vec::new();
    walk(package, Path::new(""), &mut files, &|rel| {
        rel == Path::new("target") || rel == Path::new(".git")
    });
    files
}

/// Every file under `root/rel`, as paths relative to `root`, skipping `skip`ped ones.
fn walk(root: &Path, rel: &Path, files: &mut Vec<PathBuf>, skip: &dyn Fn(&Path) -> bool) {
    for entry in fs::read_dir(root.join(rel)).expect("list a directory") {
        let entry = entry.expect("read a directory");
        let rel = rel.join(entry.file_name());
        if skip(&rel) {
            continue;
        }
        if entry.file_type().expect("file type").is_dir() {
            walk(root, &rel, files, skip);
        } else {
            files.push(rel);
        }
    }
}

/// Makes `dest` hold exactly `files` from `package`. Files whose content is unchanged
/// are left alone, so cargo sees the same changes as in the checkout and a second run
/// rebuilds nothing.
fn sync(package: &Path, files: &[PathBuf], dest: &Path) {
    for rel in files {
        let content = fs::read(package.join(rel)).expect("read a package file");
        let to = dest.join(rel);
        if fs::read(&to).ok().as_deref() != Some(&content[..]) {
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::write(&to, &content).expect("copy a package file");
        }
    }
    let mut present = Vec::new();
    walk(dest, Path::new(""), &mut present, &|_| false);
    for rel in present {
        if !files.contains(&rel) {
            fs::remove_file(dest.join(rel)).expect("remove a stale copy");
        }
    }
}

/// A directory of links to every program on `PATH` except git, first one wins as in a
/// PATH search (both /usr/bin/git and /usr/local/bin/git exist on the test machines, and
/// /usr/bin also holds the C compiler and linker cargo needs).
fn path_without_git(farm: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(farm);
    fs::create_dir_all(farm).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = farm.join(&name);
            if name != "git" && fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(entry.path(), &link).expect("link a program");
            }
        }
    }
    farm.to_path_buf()
}

/// Holds an exclusive lock on a file until dropped: one nested build per copy at a time.
struct Lock {
    _file: fs::File,
}

impl Lock {
    fn take(path: &Path) -> Lock {
        let file = fs::File::create(path).expect("create the lock file");
        // SAFETY: flock on a descriptor this function owns.
        assert_eq!(
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) },
            0,
            "flock"
        );
        Lock { _file: file }
    }
}

/// A checkout without git still builds, and `--version` is then the bare version.
///
/// The copy and its target directory live in the cache directory, outside this checkout:
/// the nested cargo never waits on the outer one's target-directory lock, and a second run
/// only rebuilds what changed.
#[test]
fn builds_without_git() {
    let started = Instant::now();
    let package = fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let cache = common::cache_dir().join("build-without-git");
    // One copy for every checkout on the machine, so that a fresh clone (as in CI) reuses
    // the build: files are only rewritten where their content differs. The lock keeps two
    // runs from rewriting it under each other.
    let copy = cache.join("src");
    fs::create_dir_all(&copy).expect("create the copy's directory");
    let _lock = Lock::take(&cache.join("lock"));
    sync(&package, &package_files(&package), &copy);
    let scratch = Scratch::new("no-git-path");
    let path = path_without_git(&scratch.0.join("bin"));
    let which = Command::new("sh")
        .args(["-c", "command -v git"])
        .env_clear()
        .env("PATH", &path)
        .output()
        .expect("run sh");
    assert!(
        !which.status.success(),
        "git is still on the PATH: {which:?}"
    );

    let target_dir = cache.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--offline",
            "--locked",
            "--bin",
            "py-spy",
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(&copy)
        .stdin(Stdio::null())
        // What cargo test sets (CARGO_*, the outer RUSTFLAGS, jobserver MAKEFLAGS…) would
        // change or break the nested build; it gets only what finds the toolchain.
        .env_clear()
        .env("PATH", &path);
    for var in [
        "HOME",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "TMPDIR",
    ] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    let out = command.output().expect("run the nested cargo");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let built = target_dir.join("debug/py-spy");
    let version = Command::new(&built)
        .arg("--version")
        .output()
        .expect("run the copy");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("py-spy {VERSION}\n")
    );
    println!(
        "builds_without_git took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

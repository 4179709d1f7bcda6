//! Installing py-spy the ways its users do, then running what got installed:
//!
//! * `wheel_installs_into_a_fresh_venv`: `maturin build --release` makes the wheel (its
//!   file name and platform tag checked), which pip installs offline into a fresh venv; the
//!   venv's `py-spy` prints its version and dumps a running Python process exactly.
//! * `pip_install_dot_puts_py_spy_on_path`: `pip install .` of this checkout with build
//!   isolation, as a user types it, but offline: pip takes maturin from the cache. Then
//!   the venv's `py-spy` runs, an activated venv finds it first on PATH, and the checkout
//!   holds no new file.
//! * `cargo_install_path_installs_the_same_binary`: `cargo install --path .` installs the
//!   very file the wheel carries.
//!
//! tests/provision puts maturin (a venv, and its wheel for pip) under the cache directory.
//! A missing maturin or interpreter is a SKIP line, a failure with `CI=true`.
//!
//! The nested builds use the release profile, as pip's build backend and `cargo install`
//! do, so all three share one build. Their target directory is
//! `<cache>/wheel-target/<checkout path>`: it survives between runs (a second run
//! relinks at most), a nested cargo never waits for the lock of the checkout's own
//! `target/` (taken by this `cargo test`'s build or an editor's), and each checkout has its
//! own because two checkouts' binaries differ (paths in the debug info) yet would land on
//! the same `release/py-spy`. Stale ones can be deleted at any time.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cache_dir, marker_line, output_within, Workdir};

/// The interpreter that makes the venvs and runs the dumped process.
const PYTHON: &str = "py312";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// A cold release build takes about a minute on two cores; this only catches a hang.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const PIP_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const TARGET_SCRIPT: &str = "install_target.py";

/// The nested builds share one target directory; taking turns keeps one build from
/// relinking a binary while another copies it into a wheel.
static NESTED_BUILDS: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn wheel_target_dir() -> PathBuf {
    let checkout = repo()
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "-");
    cache_dir().join("wheel-target").join(checkout)
}

/// What every test here needs, or `None` after the SKIP line.
struct Tools {
    interp: common::Interpreter,
    python: PathBuf,
    maturin: PathBuf,
    wheels: PathBuf,
}

fn tools(test: &str) -> Option<Tools> {
    let interp = common::interpreter(PYTHON);
    if !interp.available() {
        return None;
    }
    let maturin = cache_dir().join("maturin/bin/maturin");
    let wheels = cache_dir().join("wheels");
    let has_wheel = fs::read_dir(&wheels).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("maturin-"))
    });
    if !maturin.is_file() || !has_wheel {
        let message = format!(
            "SKIP {test}: no {} or no maturin wheel in {} (run tests/provision)",
            maturin.display(),
            wheels.display()
        );
        assert!(!common::in_ci(), "{message} (CI=true: a failure)");
        println!("{message}");
        eprintln!("{message}");
        return None;
    }
    Some(Tools {
        python: interp.host_path(),
        interp,
        maturin,
        wheels,
    })
}

/// A command for a nested build or install. `cargo test` gives this process CARGO_* and
/// the package's settings, and a developer's shell may hold RUSTFLAGS, a target directory
/// or an active virtualenv: each would steer the nested build away from what a user gets
/// (or into this `cargo test`'s locked target directory), so they go.
fn nested(program: &Path) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_setting = key.starts_with("CARGO") && key != "CARGO_HOME";
        let build_setting = matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC"
                | "RUSTDOC"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "MAKEFLAGS"
                | "MFLAGS"
        );
        let python_setting = key.starts_with("PIP_")
            || key.starts_with("MATURIN_")
            || matches!(
                key,
                "VIRTUAL_ENV" | "CONDA_PREFIX" | "PYTHONHOME" | "PYTHONPATH"
            );
        if cargo_setting || build_setting || python_setting {
            command.env_remove(key);
        }
    }
    command
        .env("CARGO_TARGET_DIR", wheel_target_dir())
        // The outer build fetched every crate already.
        .env("CARGO_NET_OFFLINE", "true")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .current_dir(repo());
    command
}

/// Runs `command`; panics with its output unless it succeeds. Returns stdout.
fn run_ok(what: &str, command: &mut Command, timeout: Duration) -> String {
    let started = Instant::now();
    let out = output_within(command, timeout, None);
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        out.status.success(),
        "{what} failed ({})\n$ {command:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the wheel into `out` (empty or missing) with the cached maturin; returns it.
fn build_wheel(tools: &Tools, out: &Path) -> PathBuf {
    let _turn = NESTED_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    run_ok(
        "maturin build --release",
        nested(&tools.maturin)
            .args(["build", "--release", "--out"])
            .arg(out),
        BUILD_TIMEOUT,
    );
    let wheels: Vec<PathBuf> = fs::read_dir(out)
        .expect("maturin's output directory")
        .map(|e| e.expect("list the output directory").path())
        .collect();
    assert_eq!(
        wheels.len(),
        1,
        "expected one wheel, maturin wrote {wheels:?}"
    );
    wheels.into_iter().next().unwrap()
}

/// `python -m venv DIR`; returns DIR.
fn make_venv(tools: &Tools, wd: &Workdir, name: &str) -> PathBuf {
    let venv = wd.host(name);
    run_ok(
        "python -m venv",
        nested(&tools.python).arg("-m").arg("venv").arg(&venv),
        PIP_TIMEOUT,
    );
    venv
}

/// `py-spy --version` of `binary`, checked for the form `py-spy X.Y.Z` with an optional
/// ` (...)` after it.
fn version_of(binary: &Path) -> String {
    let stdout = run_ok(
        "py-spy --version",
        Command::new(binary).arg("--version"),
        RUN_TIMEOUT,
    );
    let line = stdout.strip_suffix('\n').unwrap_or(&stdout);
    let rest = line.strip_prefix(&format!("py-spy {VERSION}"));
    let well_formed = match rest {
        Some("") => true,
        Some(details) => {
            details.starts_with(" (") && details.ends_with(')') && !details.contains('\n')
        }
        None => false,
    };
    assert!(
        well_formed && stdout.ends_with('\n'),
        "{} --version printed {stdout:?}, expected \"py-spy {VERSION}\" (optionally \" (...)\") and a newline",
        binary.display()
    );
    stdout
}

/// The highest `GLIBC_2.N` symbol version `binary` needs: the N of its manylinux tag.
fn glibc_minor_needed(binary: &Path) -> u32 {
    let bytes = fs::read(binary).expect("read the binary");
    let elf = goblin::elf::Elf::parse(&bytes).expect("the binary is an ELF file");
    let verneed = elf
        .verneed
        .as_ref()
        .expect("the binary has versioned dependencies");
    verneed
        .iter()
        .flat_map(|need| need.iter().collect::<Vec<_>>())
        .filter_map(|aux| elf.dynstrtab.get_at(aux.vna_name))
        .filter_map(|name| name.strip_prefix("GLIBC_2."))
        .filter_map(|minor| minor.split('.').next()?.parse().ok())
        .max()
        .expect("the binary needs some GLIBC_2.N version")
}

/// Dumps a running `install_target.py` with `binary` and checks the whole output.
fn check_dump(tools: &Tools, wd: &Workdir, binary: &Path) {
    let ready = wd.seen("ready.json");
    let mut child = wd.spawn(TARGET_SCRIPT, &[&ready]);
    let truth = wd.wait_json("ready.json", &mut child, TARGET_SCRIPT, RUN_TIMEOUT);
    let pid = child.pid();
    assert_eq!(truth["pid"].as_u64(), Some(u64::from(pid)), "{truth}");
    let executable = fs::canonicalize(&tools.python).expect("resolve the interpreter");
    let line = |marker: &str| marker_line(TARGET_SCRIPT, marker);
    let expected = format!(
        "Process {pid}: {cmdline}\n\
         Python v{version} ({executable})\n\
         \n\
         Thread {pid} (idle): \"MainThread\"\n    \
         park ({TARGET_SCRIPT}:{park})\n    \
         main ({TARGET_SCRIPT}:{main})\n    \
         <module> ({TARGET_SCRIPT}:{module})\n",
        cmdline = wd.python_cmdline(TARGET_SCRIPT, &[&ready]),
        version = truth["version"].as_str().expect("version"),
        executable = executable.display(),
        park = line("HOT park"),
        main = line("CALL park"),
        module = line("CALL main"),
    );
    let pid_arg = pid.to_string();
    let stdout = run_ok(
        "py-spy dump",
        Command::new(binary).args(["dump", "--pid", &pid_arg]),
        RUN_TIMEOUT,
    );
    assert_eq!(stdout, expected, "{} dump --pid {pid}", binary.display());
}

#[test]
fn wheel_installs_into_a_fresh_venv() {
    let Some(tools) = tools("wheel_installs_into_a_fresh_venv") else {
        return;
    };
    let wd = Workdir::new(&tools.interp);
    let wheel = build_wheel(&tools, &wd.host("dist"));

    let venv = make_venv(&tools, &wd, "venv");
    run_ok(
        "pip install <wheel>",
        nested(&venv.join("bin/pip"))
            .args(["install", "--no-index", "--no-cache-dir"])
            .arg(&wheel),
        PIP_TIMEOUT,
    );
    let installed = venv.join("bin/py-spy");
    assert!(installed.is_file(), "{} is missing", installed.display());

    // maturin names the tag after the newest glibc symbol version the binary uses.
    let minor = glibc_minor_needed(&installed);
    let platform = if minor <= 17 {
        format!(
            "manylinux_2_17_{arch}.manylinux2014_{arch}",
            arch = std::env::consts::ARCH
        )
    } else {
        format!("manylinux_2_{minor}_{}", std::env::consts::ARCH)
    };
    let name = wheel.file_name().unwrap().to_string_lossy();
    assert_eq!(name, format!("py_spy-{VERSION}-py3-none-{platform}.whl"));

    version_of(&installed);
    check_dump(&tools, &wd, &installed);
}

#[test]
fn pip_install_dot_puts_py_spy_on_path() {
    let Some(tools) = tools("pip_install_dot_puts_py_spy_on_path") else {
        return;
    };
    let wd = Workdir::new(&tools.interp);
    let venv = make_venv(&tools, &wd, "venv");
    let checkout_before = checkout_status();
    {
        let _turn = NESTED_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run_ok(
            "pip install .",
            nested(&venv.join("bin/pip"))
                .args(["install", "--no-index", "--no-cache-dir", "--find-links"])
                .arg(&tools.wheels)
                .arg("."),
            BUILD_TIMEOUT,
        );
    }
    assert_eq!(
        checkout_status(),
        checkout_before,
        "`pip install .` changed the checkout (git status --ignored=matching)"
    );

    let installed = venv.join("bin/py-spy");
    let version = version_of(&installed);
    // What a user types after `pip install .`: activate, then call py-spy by name.
    let activated = run_ok(
        "activated py-spy --version",
        Command::new("bash")
            .arg("-c")
            .arg(r#". "$1/bin/activate" && command -v py-spy && py-spy --version"#)
            .arg("bash")
            .arg(&venv),
        RUN_TIMEOUT,
    );
    assert_eq!(activated, format!("{}\n{version}", installed.display()));
}

/// `git status` of the checkout, ignored paths included, to see what a build added.
fn checkout_status() -> String {
    let out = output_within(
        Command::new("git").current_dir(repo()).args([
            "status",
            "--porcelain=v1",
            "--ignored=matching",
            "--untracked-files=all",
        ]),
        RUN_TIMEOUT,
        None,
    );
    assert!(
        out.status.success(),
        "git status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cargo_install_path_installs_the_same_binary() {
    let Some(tools) = tools("cargo_install_path_installs_the_same_binary") else {
        return;
    };
    let wd = Workdir::new(&tools.interp);
    let wheel = build_wheel(&tools, &wd.host("dist"));
    let unpacked = wd.host("unpacked");
    run_ok(
        "unpack the wheel",
        nested(&tools.python)
            .args(["-m", "zipfile", "-e"])
            .arg(&wheel)
            .arg(&unpacked),
        RUN_TIMEOUT,
    );
    let from_wheel = unpacked.join(format!("py_spy-{VERSION}.data/scripts/py-spy"));
    // zipfile drops the mode bits that pip would set from the wheel's RECORD.
    fs::set_permissions(&from_wheel, fs::Permissions::from_mode(0o755))
        .expect("make the wheel's binary executable");

    let root = wd.host("root");
    {
        let _turn = NESTED_BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run_ok(
            "cargo install --path .",
            nested(Path::new("cargo"))
                .args(["install", "--path", ".", "--locked", "--offline", "--root"])
                .arg(&root)
                .arg("--target-dir")
                .arg(wheel_target_dir()),
            BUILD_TIMEOUT,
        );
    }
    let installed = root.join("bin/py-spy");
    assert!(installed.is_file(), "{} is missing", installed.display());
    assert!(
        fs::read(&installed).expect("read the installed binary")
            == fs::read(&from_wheel).expect("read the wheel's binary"),
        "{} and the wheel's {} differ",
        installed.display(),
        from_wheel.display()
    );
    assert_eq!(version_of(&installed), version_of(&from_wheel));
}

//! `py-spy completions SHELL`: the generated scripts are loaded into the real shells and
//! asked for completions, and the answers are compared with the command line's definition.
//!
//! bash and fish run their real completion machinery; elvish runs the script with a stand-in
//! for its interactive-only `edit:` module and calls the completer; zsh gets a syntax check
//! and `compdef` registration, since its completion functions only run inside the line
//! editor (driving that through zpty was left out as too fragile for its value);
//! PowerShell is not packaged for Debian, so its script is only read, never executed.
//!
//! A missing shell makes its test print `SKIP …` and pass, unless `CI=true`, in which case
//! it fails (tests/provision installs them).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::run_py_spy;

const TIMEOUT: Duration = Duration::from_secs(30);

const SUBCOMMANDS: &[&str] = &["record", "dump", "top", "completions", "help"];
const FORMATS: &[&str] = &["flamegraph", "speedscope", "raw", "chrometrace"];
const SHELLS: &[&str] = &["bash", "elvish", "fish", "powershell", "zsh"];

/// A scratch directory removed on drop unless the test is failing.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("py-spy-completions-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
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

/// The shell's executable from PATH, or None after printing why the test is skipped
/// (a failure under `CI=true`).
fn shell(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    let message = format!("SKIP: {name} is not installed (run tests/provision)");
    assert!(
        !common::in_ci(),
        "{message} (CI=true: a missing shell is a failure)"
    );
    println!("{message}");
    eprintln!("{message}");
    None
}

/// `py-spy completions SHELL`, checked to succeed quietly, saved as `dir/name`.
fn script(shell: &str, dir: &Path, name: &str) -> PathBuf {
    let run = run_py_spy(&["completions", shell], TIMEOUT);
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.stderr, "", "{}", run.describe());
    let path = dir.join(name);
    fs::write(&path, &run.stdout).expect("write the completion script");
    path
}

/// Runs a command in `cwd`; its stdout, after checking that it succeeded.
fn output(command: &mut Command, cwd: &Path) -> String {
    let out = command
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{command:?}: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn with(base: &[&str], more: &[&str]) -> BTreeSet<String> {
    base.iter().chain(more).map(|w| w.to_string()).collect()
}

/// What bash's completion function offers for the line typed so far, the cursor at its
/// end, as bash would call it after `complete -F`.
fn bash_complete(bash: &Path, script: &Path, cwd: &Path, line: &str) -> BTreeSet<String> {
    let driver = r#"
        source "$1"
        COMP_LINE=$2
        COMP_POINT=${#COMP_LINE}
        read -ra COMP_WORDS <<<"$COMP_LINE"
        # A trailing space starts a new, empty word.
        [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        _py-spy py-spy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let stdout = output(
        Command::new(bash)
            .args(["--norc", "--noprofile", "-c", driver, "bash"])
            .arg(script)
            .arg(line),
        cwd,
    );
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_options_and_values() {
    let Some(bash) = shell("bash") else { return };
    let dir = Scratch::new("bash");
    let script = script("bash", &dir.0, "py-spy.bash");
    // Where file names are completed, these are the files.
    let files = dir.0.join("files");
    fs::create_dir_all(files.join("sub")).unwrap();
    fs::write(files.join("a.svg"), "").unwrap();
    let global = ["-h", "--help", "-V", "--version"];
    let cases: &[(&str, BTreeSet<String>)] = &[
        ("py-spy ", with(SUBCOMMANDS, &global)),
        ("py-spy re", set(&["record"])),
        ("py-spy record --fo", set(&["--format"])),
        ("py-spy record -f ", set(FORMATS)),
        ("py-spy record --format ", set(FORMATS)),
        ("py-spy record -f sp", set(&["speedscope"])),
        ("py-spy top --de", set(&["--delay"])),
        (
            "py-spy dump -",
            set(&[
                "-p",
                "--pid",
                "-l",
                "--locals",
                "-j",
                "--json",
                "--full-filenames",
                "--nonblocking",
                "-h",
                "--help",
                "-V",
                "--version",
            ]),
        ),
        ("py-spy record -o ", set(&["a.svg", "sub"])),
        ("py-spy completions ", with(SHELLS, &global)),
        ("py-spy completions f", set(&["fish"])),
        ("py-spy help ", set(SUBCOMMANDS)),
    ];
    for (line, want) in cases {
        let got = bash_complete(&bash, &script, &files, line);
        assert_eq!(&got, want, "bash completions for {line:?}");
    }
}

/// fish's own `complete -C LINE`: one `candidate<TAB>description` line each.
fn fish_complete(fish: &Path, script: &Path, cwd: &Path, line: &str) -> Vec<String> {
    let stdout = output(
        Command::new(fish)
            .args(["--no-config", "-c", "source $argv[1]; complete -C $argv[2]"])
            .arg(script)
            .arg(line),
        cwd,
    );
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn fish_completes_subcommands_options_and_values() {
    let Some(fish) = shell("fish") else { return };
    let dir = Scratch::new("fish");
    let script = script("fish", &dir.0, "py-spy.fish");
    let record =
        "record\tSample a running or launched program and write a flame graph or another profile";
    let cases: &[(&str, &[&str])] = &[
        ("py-spy rec", &[record]),
        (
            "py-spy ",
            &[
                "completions\tPrint the shell completion script for py-spy (bash, zsh, fish, elvish, powershell)",
                "dump\tPrint every thread's current Python stack once (for hung or slow programs)",
                "help\tPrint this message or the help of the given subcommand(s)",
                record,
                "top\tLive view of the functions taking the most time, like `top` (q to quit)",
            ],
        ),
        ("py-spy record --fo", &["--format\tOutput format"]),
        (
            "py-spy record -f ",
            &[
                "chrometrace\tTrace Event Format JSON (open in https://ui.perfetto.dev or chrome://tracing)",
                "flamegraph\tInteractive SVG flame graph (open in a browser)",
                "raw\tFolded stacks, one `a;b;c count` line per stack (for inferno, flamegraph.pl)",
                "speedscope\tJSON for https://www.speedscope.app",
            ],
        ),
        ("py-spy top --del", &["--delay\tSeconds between refreshes of the view (fractions allowed)"]),
        (
            "py-spy dump --",
            &[
                "--full-filenames\tShow full paths instead of short filenames",
                "--help\tPrint help",
                "--json\tPrint one JSON document instead of text (format in README.md)",
                "--locals\tShow each frame's arguments and local variables",
                "--nonblocking\tRead without pausing the program (less consistent stacks, no pause at all)",
                "--pid\tPID of the running Python program",
                "--version\tPrint version",
            ],
        ),
        // clap_complete's fish generator does not complete positional arguments, so
        // `py-spy completions ` offers file names there rather than the shells.
    ];
    for (line, want) in cases {
        let got = fish_complete(&fish, &script, &dir.0, line);
        assert_eq!(got, *want, "fish completions for {line:?}");
    }
}

#[test]
fn zsh_script_parses_and_registers() {
    let Some(zsh) = shell("zsh") else { return };
    let dir = Scratch::new("zsh");
    let script = script("zsh", &dir.0, "_py-spy");
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#compdef py-spy\n"), "{text}");
    // Subcommands as `name:description` entries, values of --format as a list.
    for sub in SUBCOMMANDS {
        assert!(text.contains(&format!("'{sub}:")), "no {sub} in\n{text}");
    }
    assert!(
        text.contains(":FORMAT:((flamegraph\\:\"Interactive SVG flame graph (open in a browser)\""),
        "{text}"
    );
    assert!(
        text.contains("':shell -- The shell to complete in:(bash elvish fish powershell zsh)'"),
        "{text}"
    );
    output(Command::new(&zsh).arg("-n").arg(&script), &dir.0);
    // Loaded after compinit (as when sourced from .zshrc) it registers itself for py-spy.
    let registered = output(
        Command::new(&zsh)
            .args([
                "-f",
                "-c",
                "autoload -Uz compinit && compinit -u -D && source $1 && print -r -- $_comps[py-spy] && whence -w _py-spy",
                "zsh",
            ])
            .arg(&script)
            .env("HOME", &dir.0),
        &dir.0,
    );
    assert_eq!(registered, "_py-spy\n_py-spy: function\n");
}

/// A stand-in for elvish's `edit:` module, which only exists in an interactive shell: the
/// completer map the script assigns to, and candidates that are just their text.
const ELVISH_EDIT_STUB: &str = "var edit: = (ns [&completion:=(ns [&arg-completer=[&]]) \
     &complex-candidate~={|text &display=''| put $text}])\n";

#[test]
fn elvish_script_compiles_and_completes() {
    let Some(elvish) = shell("elvish") else {
        return;
    };
    let dir = Scratch::new("elvish");
    let script = script("elvish", &dir.0, "py-spy.elv");
    let text = fs::read_to_string(&script).unwrap();
    let global = ["-h", "--help", "-V", "--version"];
    // elvish's completers return every candidate for the position; the editor filters them
    // by what was typed.
    let cases: &[(&str, BTreeSet<String>)] = &[
        ("py-spy ''", with(SUBCOMMANDS, &global)),
        ("py-spy completions ''", set(&global)),
        (
            "py-spy dump ''",
            with(
                &[
                    "-p",
                    "--pid",
                    "-l",
                    "--locals",
                    "-j",
                    "--json",
                    "--full-filenames",
                    "--nonblocking",
                ],
                &global,
            ),
        ),
    ];
    for (words, want) in cases {
        let program = dir.0.join("check.elv");
        fs::write(
            &program,
            format!(
                "{ELVISH_EDIT_STUB}{text}\nfor w [($edit:completion:arg-completer[py-spy] {words})] {{ echo $w }}\n"
            ),
        )
        .unwrap();
        let stdout = output(Command::new(&elvish).arg(&program), &dir.0);
        let got: BTreeSet<String> = stdout.lines().map(str::to_string).collect();
        assert_eq!(&got, want, "elvish completions for {words}");
    }
}

#[test]
fn powershell_script_registers_a_completer() {
    // Not executed: Debian has no PowerShell package. The content is what it would load.
    let run = run_py_spy(&["completions", "powershell"], TIMEOUT);
    assert!(run.status.success(), "{}", run.describe());
    assert_eq!(run.stderr, "");
    let text = &run.stdout;
    assert!(
        text.contains("Register-ArgumentCompleter -Native -CommandName 'py-spy' -ScriptBlock"),
        "{text}"
    );
    for sub in SUBCOMMANDS {
        assert!(
            text.contains(&format!("[CompletionResult]::new('{sub}', '{sub}',")),
            "no {sub} in\n{text}"
        );
    }
    assert!(text.contains("'py-spy;record' {"), "{text}");
}

/// The reader is gone before py-spy writes: a quiet success, as for `dump | head -1`.
#[test]
fn broken_pipe_is_a_quiet_success() {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two descriptors it creates; each is then owned exactly once.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe()");
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let out = Command::new(common::PY_SPY)
        .args(["completions", "bash"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .expect("run py-spy");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `py-spy completions bash >&-`: one error line, exit status 1, as for `dump`.
#[test]
fn closed_stdout_is_an_error() {
    let out = Command::new("sh")
        .args(["-c", r#""$0" completions bash >&-"#, common::PY_SPY])
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: standard output is closed, so there is nowhere to print to \
         (redirect it to a file, or to /dev/null to discard it)\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn help_lists_completions() {
    let run = run_py_spy(&["--help"], TIMEOUT);
    assert!(run.status.success(), "{}", run.describe());
    let line = "  completions  Print the shell completion script for py-spy (bash, zsh, fish, \
                elvish, powershell)\n";
    assert!(run.stdout.contains(line), "{}", run.describe());
}

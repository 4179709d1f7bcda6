//! README.md is what a new user follows word for word, so what it shows is checked here:
//!
//! 1. The flame graph picture (`examples/demo.svg`, and `examples/demo.png` made from it) is
//!    what `py-spy record -- python3 examples/demo.py` gives today: every function line
//!    with a noticeable share in the picture is in a fresh recording, and the other way
//!    round. A change to the demo or to the output that leaves the picture stale fails
//!    here (`examples/render-flamegraph` remakes it).
//! 2. Every `Error:` line quoted under "Troubleshooting" is the line py-spy prints in that
//!    situation, once the situation's pids and paths are replaced by the README's.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::profiles::Folded;
use common::{ChildGuard, PY_SPY};

/// The interpreter `examples/demo.svg` was recorded with (`python3` on this machine).
const DEMO_PYTHON: &str = "py311";
/// A frame label below this share of the samples may be missing from a short recording.
const NOTICEABLE: f64 = 0.03;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// `(label, samples)` of every frame box in an inferno flame graph (`<title>label (N
/// samples, P%)</title>`), summed over the boxes of the same label; and the total.
fn svg_labels(svg: &str) -> (BTreeMap<String, u64>, u64) {
    let mut labels = BTreeMap::new();
    let mut total = 0;
    for piece in svg.split("<title>").skip(1) {
        let title = piece.split("</title>").next().unwrap_or_default();
        let title = title
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        let Some((label, rest)) = title.rsplit_once(" (") else {
            continue;
        };
        let Some(count) = rest
            .split(' ')
            .next()
            .and_then(|n| n.replace(',', "").parse::<u64>().ok())
        else {
            continue;
        };
        if label == "all" {
            total = count;
        } else {
            *labels.entry(label.to_string()).or_insert(0) += count;
        }
    }
    (labels, total)
}

/// The `width` and `height` attributes of the outer `<svg>` element.
fn svg_size(svg: &str) -> (u32, u32) {
    let tag = &svg[svg.find("<svg ").expect("an <svg> element")..];
    let tag = &tag[..tag.find('>').unwrap()];
    let attribute = |name: &str| -> u32 {
        let start = tag.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        tag[start..start + tag[start..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    (attribute("width"), attribute("height"))
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn flamegraph_picture_is_what_the_demo_records() {
    let readme = readme();
    for needle in [
        "(examples/demo.png)](examples/demo.svg)",
        "py-spy record -o profile.svg -- python3 examples/demo.py",
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
    let svg = fs::read_to_string(repo().join("examples/demo.svg")).expect("examples/demo.svg");
    assert!(
        svg.contains(">py-spy record: python3 examples/demo.py<"),
        "examples/demo.svg was not recorded with the README's command"
    );
    let png = fs::read(repo().join("examples/demo.png")).expect("examples/demo.png");
    assert_eq!(
        png_size(&png),
        svg_size(&svg),
        "examples/demo.png is not a picture of examples/demo.svg at its size"
    );
    let (pictured, pictured_total) = svg_labels(&svg);
    assert!(
        pictured_total >= 500,
        "the picture has only {pictured_total} samples"
    );

    let python = common::interpreter(DEMO_PYTHON);
    if !python.available() {
        assert!(!common::in_ci(), "{} is missing", python.label);
        eprintln!("SKIP: {} is not installed", python.label);
        return;
    }
    let dir = tempdir("demo");
    let out = dir.join("demo.txt");
    let run = common::output_within(
        Command::new(PY_SPY)
            .current_dir(repo())
            .args(["record", "-f", "raw", "-r", "200", "-o"])
            .arg(&out)
            .arg("--")
            .arg(python.host_path())
            .args(["examples/demo.py", "--seconds", "3"]),
        Duration::from_secs(60),
        None,
    );
    assert!(
        run.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let fresh = Folded::read(&out).unwrap();
    let recorded = fresh.labels();
    assert!(fresh.total >= 300, "only {} samples recorded", fresh.total);

    let noticeable = |labels: &BTreeMap<String, u64>, total: u64| -> Vec<String> {
        labels
            .iter()
            .filter(|(_, &n)| n as f64 >= NOTICEABLE * total as f64)
            .map(|(label, _)| label.clone())
            .collect()
    };
    let stale: Vec<_> = noticeable(&pictured, pictured_total)
        .into_iter()
        .filter(|label| !recorded.contains_key(label))
        .collect();
    let missing: Vec<_> = noticeable(&recorded, fresh.total)
        .into_iter()
        .filter(|label| !pictured.contains_key(label))
        .collect();
    assert!(
        stale.is_empty() && missing.is_empty(),
        "examples/demo.svg is stale (run examples/render-flamegraph):\n  in the picture only: \
         {stale:?}\n  in a fresh recording only: {missing:?}\nfresh recording:\n{}",
        fresh.top(15)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The pyenv Python the troubleshooting targets run on; README's example says python3.12.
const TARGET_PYTHON: &str = "/root/.pyenv/versions/3.12.1/bin/python";

/// One troubleshooting situation: the error line py-spy prints, with what must be replaced
/// to turn it into README's example (`(actual, README's)`).
struct Case {
    what: &'static str,
    line: String,
    replace: Vec<(String, &'static str)>,
}

impl Case {
    fn readme_line(&self) -> String {
        let mut line = self.line.clone();
        // Longer first, so that a pid that is a prefix of another cannot clobber it.
        let mut pairs: Vec<_> = self.replace.iter().collect();
        pairs.sort_by_key(|(actual, _)| std::cmp::Reverse(actual.len()));
        for (actual, readme) in pairs {
            line = line.replace(actual.as_str(), readme);
        }
        line
    }
}

/// Processes our children started, killed when the test ends however it ends (strace's
/// tracee would be detached and run on when strace is killed).
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain syscall on a process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn spawn(program: &str, args: &[&str]) -> ChildGuard {
    ChildGuard(
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}")),
    )
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("py-spy-readme-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The first stderr line of py-spy run with `args` (through `setpriv` as nobody with
/// `as_nobody`), in `cwd`.
fn error_line(args: &[&str], as_nobody: bool, cwd: &Path) -> String {
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", PY_SPY]);
        c
    } else {
        Command::new(PY_SPY)
    };
    command.args(args).current_dir(cwd);
    let out = common::output_within(&mut command, Duration::from_secs(30), None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "py-spy {args:?} succeeded: {stderr}");
    stderr.lines().next().unwrap_or_default().to_string()
}

#[test]
fn troubleshooting_lines_are_what_py_spy_prints() {
    if !Path::new(TARGET_PYTHON).exists() || !common::is_root() {
        assert!(!common::in_ci(), "needs root and {TARGET_PYTHON}");
        eprintln!("SKIP: needs root and {TARGET_PYTHON}");
        return;
    }
    let readme = readme();
    let section = readme
        .split("## Troubleshooting")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Troubleshooting section in README.md");
    let quoted: Vec<&str> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Error: ") || l.starts_with("py-spy: warning: "))
        .collect();

    let dir = tempdir("troubleshooting");
    let sleeper = "import time\nwhile True: time.sleep(1)";
    let python = spawn(TARGET_PYTHON, &["-c", sleeper]);
    let shell = spawn("bash", &["-c", "while :; do sleep 1; done"]);
    let wrapper = spawn(
        "bash",
        &[
            "-c",
            &format!("{TARGET_PYTHON} -c 'import time; time.sleep(300)'; true"),
        ],
    );
    let tracer = spawn("strace", &["-o", "/dev/null", TARGET_PYTHON, "-c", sleeper]);
    wait_until("the targets", || {
        common::maps_contain(python.pid(), "libpython3.12")
            && common::maps_contain(shell.pid(), "bash")
            && common::first_child(wrapper.pid())
                .is_some_and(|p| common::maps_contain(p, "libpython3.12"))
            && common::first_child(tracer.pid()).is_some_and(|p| {
                common::maps_contain(p, "libpython3.12") && common::tracer_pid(p) != 0
            })
    });
    // Give the interpreters time to finish starting.
    std::thread::sleep(Duration::from_millis(300));
    let wrapped = common::first_child(wrapper.pid()).unwrap();
    let traced_python = common::first_child(tracer.pid()).unwrap();
    let _grandchildren = KillOnDrop(vec![wrapped, traced_python]);
    let unused = common::unused_pid();
    let pid = |p: u32| p.to_string();

    let cases = vec![
        Case {
            what: "no such pid",
            line: error_line(&["dump", "--pid", &pid(unused)], false, &dir),
            replace: vec![(pid(unused), "12345")],
        },
        Case {
            what: "permission denied",
            line: error_line(&["dump", "--pid", &pid(python.pid())], true, &dir),
            replace: vec![(pid(python.pid()), "12345")],
        },
        Case {
            what: "a shell whose child is Python",
            line: error_line(&["dump", "--pid", &pid(wrapper.pid())], false, &dir),
            replace: vec![(pid(wrapped), "12346")],
        },
        Case {
            what: "a shell",
            line: error_line(&["dump", "--pid", &pid(shell.pid())], false, &dir),
            replace: vec![],
        },
        Case {
            what: "another tracer",
            line: error_line(&["dump", "--pid", &pid(traced_python)], false, &dir),
            replace: vec![(pid(traced_python), "12345"), (pid(tracer.pid()), "12350")],
        },
        Case {
            what: "a missing output directory",
            line: error_line(
                &[
                    "record",
                    "-o",
                    "results/profile.svg",
                    "--pid",
                    &pid(python.pid()),
                ],
                false,
                &dir,
            ),
            replace: vec![],
        },
    ];
    let mut wrong = Vec::new();
    for case in &cases {
        let expected = case.readme_line();
        if !quoted.contains(&expected.as_str()) {
            wrong.push(format!(
                "{}: py-spy prints\n    {}\n  which README.md would quote as\n    {expected}",
                case.what, case.line
            ));
        }
    }

    // Falling behind: the numbers differ every run, the words must not.
    let out = common::output_within(
        Command::new(PY_SPY).args([
            "record",
            "-r",
            "100000",
            "-d",
            "1",
            "-o",
            &dir.join("behind.svg").to_string_lossy(),
            "--pid",
            &pid(python.pid()),
        ]),
        Duration::from_secs(30),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let digits_as_n = |line: &str| -> String {
        let mut out = String::new();
        let mut in_number = false;
        for c in line.chars() {
            if c.is_ascii_digit() {
                if !in_number {
                    out.push('N');
                }
                in_number = true;
            } else {
                in_number = false;
                out.push(c);
            }
        }
        out
    };
    let printed = stderr
        .lines()
        .find(|l| l.starts_with("py-spy: warning: sampling fell behind"));
    let in_readme = quoted
        .iter()
        .find(|l| l.starts_with("py-spy: warning: sampling fell behind"));
    match (printed, in_readme) {
        (Some(printed), Some(quoted)) if digits_as_n(printed) == digits_as_n(quoted) => {}
        _ => wrong.push(format!(
            "falling behind: py-spy prints {printed:?}, README.md quotes {in_readme:?}"
        )),
    }
    let _ = fs::remove_dir_all(&dir);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing quoted that no case checks, except what cannot be provoked on demand.
    assert_eq!(
        quoted.len(),
        cases.len() + 1,
        "README.md quotes lines no case here checks: {quoted:#?}"
    );
}

//! Output is never lost or left half-written, one table: each row puts `record`'s output
//! somewhere hostile (a full disk, a read-only file system, a device) or kills py-spy
//! mid-recording, then checks the exit status, the one error line, and exactly which
//! files the output directory holds afterwards.
//!
//! Mounting needs root; as another user the test says it skipped.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn_py_spy;

/// Python on every machine.
const PYTHON: &str = "/usr/bin/python3.11";
const SCRIPT: &str = "busy_ids.py";
/// What a previous recording left at the destination; it must survive every failure.
const PREVIOUS: &str = "previous profile\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// A tmpfs with every block taken: writes fail with ENOSPC.
    FullDisk,
    /// A tmpfs mounted read-only: even root gets EROFS.
    ReadOnly,
    /// A plain directory; py-spy is SIGKILLed in the middle of the recording.
    KilledMidRecord,
    /// `-o /dev/full`: the device fails every write.
    DevFull,
    /// `-o /dev/null`: written in place, the device left alone.
    DevNull,
}

struct Row {
    what: &'static str,
    place: Place,
    /// Expected exit status of py-spy (`None`: killed by a signal).
    exit: Option<i32>,
    /// Words of the one error line, if it must fail.
    says: &'static [&'static str],
    /// Whether the program was to be started at all (the check comes first).
    program_starts: bool,
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row { what: "disk full", place: Place::FullDisk, exit: Some(1),
          says: &["cannot write {out}: no space left on device"], program_starts: true },
    Row { what: "read-only file system", place: Place::ReadOnly, exit: Some(1),
          says: &["cannot write to directory {dir}: read-only file system"], program_starts: false },
    Row { what: "py-spy killed with SIGKILL", place: Place::KilledMidRecord, exit: None,
          says: &[], program_starts: true },
    Row { what: "-o /dev/full", place: Place::DevFull, exit: Some(1),
          says: &["cannot write /dev/full: no space left on device"], program_starts: true },
    Row { what: "-o /dev/null", place: Place::DevNull, exit: Some(0),
          says: &[], program_starts: true },
];

/// A small tmpfs mounted for one row; unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                options,
                "py-spy-test",
                &dir.display().to_string(),
            ])
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs -o {options} {}",
            dir.display()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn output_is_never_lost_or_half_written() {
    let missing: Vec<&str> = [
        (!common::is_root()).then_some("root"),
        (!Path::new(PYTHON).exists()).then_some(PYTHON),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        let message = format!("SKIP output_is_never_lost_or_half_written: needs {missing:?}");
        assert!(!common::in_ci(), "{message}");
        println!("{message}");
        return;
    }
    let base = std::env::temp_dir().join(format!("py-spy-output-safety-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let script = base.join(SCRIPT);
    fs::copy(common::scripts_dir().join(SCRIPT), &script).unwrap();
    let mut failures = Vec::new();
    for (i, row) in ROWS.iter().enumerate() {
        let dir = base.join(format!("row{i}"));
        let ids = base.join(format!("ids{i}.json"));
        let mut _mount = None;
        let out = match row.place {
            Place::DevFull => PathBuf::from("/dev/full"),
            Place::DevNull => PathBuf::from("/dev/null"),
            _ => dir.join("profile.svg"),
        };
        match row.place {
            Place::FullDisk => {
                _mount = Some(Mount::tmpfs(&dir, "size=64k,mode=755"));
                fs::write(&out, PREVIOUS).unwrap();
                // Take every remaining block.
                let mut filler = fs::File::create(dir.join("filler")).unwrap();
                while filler.write_all(&[b'x'; 4096]).is_ok() {}
                let _ = filler.sync_all();
            }
            Place::ReadOnly => {
                let mount = Mount::tmpfs(&dir, "size=64k,mode=755");
                fs::write(&out, PREVIOUS).unwrap();
                let status = Command::new("mount")
                    .args(["-o", "remount,ro", &dir.display().to_string()])
                    .status()
                    .expect("remount");
                assert!(status.success());
                _mount = Some(mount);
            }
            Place::KilledMidRecord => {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&out, PREVIOUS).unwrap();
            }
            Place::DevFull | Place::DevNull => {}
        }
        let before = entries(&dir);
        let out_arg = out.display().to_string();
        let seconds = if row.place == Place::KilledMidRecord {
            "30"
        } else {
            "0.5"
        };
        let py_spy = spawn_py_spy(&[
            "record",
            "-r",
            "200",
            "-o",
            &out_arg,
            "--",
            PYTHON,
            &script.display().to_string(),
            &ids.display().to_string(),
            seconds,
        ]);
        if row.place == Place::KilledMidRecord {
            // Well into the recording: the program runs and samples are being taken.
            let deadline = Instant::now() + Duration::from_secs(20);
            while !ids.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(500));
            py_spy.signal(libc::SIGKILL);
            // The program outlives py-spy (as under any killed launcher) and holds its
            // stderr: end it too.
            let pid = fs::read_to_string(&ids)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["pid"].as_i64());
            if let Some(pid) = pid {
                // SAFETY: plain syscall; the pid is the program py-spy started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        let (run, _) = py_spy.wait(Duration::from_secs(60));
        let mut problems = Vec::new();
        if run.status.code() != row.exit {
            problems.push(format!(
                "exit status {} (expected {:?})",
                run.status, row.exit
            ));
        }
        if !row.says.is_empty() {
            let errors: Vec<&str> = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("Error: "))
                .collect();
            let fill = |w: &str| {
                w.replace("{out}", &out_arg)
                    .replace("{dir}", &dir.display().to_string())
            };
            if errors.len() != 1 {
                problems.push(format!("{} error lines (expected one)", errors.len()));
            } else {
                for w in row.says {
                    if !errors[0].contains(&fill(w)) {
                        problems.push(format!("the error does not say {:?}", fill(w)));
                    }
                }
            }
        }
        if run.stderr.contains("panicked") || run.stderr.contains("internal error") {
            problems.push("panicked".into());
        }
        if ids.exists() != row.program_starts {
            problems.push(format!(
                "the program {} started",
                if row.program_starts { "was not" } else { "was" }
            ));
        }
        match row.place {
            Place::DevFull | Place::DevNull => {
                if !fs::metadata(&out).is_ok_and(|m| m.file_type().is_char_device()) {
                    problems.push(format!("{out_arg} is no longer a device"));
                }
            }
            _ => {
                // Exactly what was there before: no half profile, no temporary file.
                let after = entries(&dir);
                if after != before {
                    problems.push(format!("files before {before:?}, after {after:?}"));
                }
                if fs::read_to_string(&out).ok().as_deref() != Some(PREVIOUS) {
                    problems.push("the previous profile was changed".into());
                }
            }
        }
        println!(
            "{:6} {:28} exit {:?}  {}",
            if problems.is_empty() { "ok" } else { "FAILED" },
            row.what,
            run.status.code(),
            run.stderr.lines().last().unwrap_or("")
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                row.what,
                problems.join("; "),
                run.describe()
            ));
        }
    }
    drop(fs::remove_dir_all(&base));
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// `-o /dev/stdout` into a pipe: the profile comes out of the pipe, whole.
#[test]
fn profile_to_stdout() {
    if !Path::new(PYTHON).exists() {
        assert!(!common::in_ci(), "{PYTHON} missing");
        println!("SKIP profile_to_stdout: {PYTHON} missing");
        return;
    }
    let dir = std::env::temp_dir().join(format!("py-spy-stdout-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let ids = dir.join("ids.json");
    let out = Command::new(common::PY_SPY)
        .args([
            "record",
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            "/dev/stdout",
            "--",
            PYTHON,
        ])
        .arg(common::scripts_dir().join(SCRIPT))
        .args([ids.display().to_string(), "0.5".into()])
        .stdin(Stdio::null())
        .output()
        .expect("run py-spy");
    let _ = fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let busy = format!("busy ({SCRIPT}:{})", common::marker_line(SCRIPT, "BUSY"));
    let samples: u64 = stdout
        .lines()
        .filter(|l| l.contains(&busy))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(samples >= 50, "{samples} samples in {busy}:\n{stdout}");
    assert!(fs::metadata("/dev/stdout").is_ok());
}

//! Running the program to profile as our child (`py-spy record -- python app.py`) and
//! learning how it ended.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::process::take_reaped_status;

/// How a launched program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report: the status, or 128 + the signal.
    pub fn exit_code(self) -> u8 {
        match self {
            Exit::Code(code) => (code & 0xff) as u8,
            Exit::Signal(signal) => (128 + signal).clamp(0, 255) as u8,
        }
    }

    fn from_wait_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "was killed by {name}")
            }
        }
    }
}

/// A program we started. It shares our terminal, process group and standard streams, so
/// it behaves as it would without the profiler (Ctrl-C reaches it directly).
#[derive(Debug)]
pub struct Launched {
    pid: i32,
    exit: Option<Exit>,
}

impl Launched {
    /// Starts `argv[0]` with the arguments `argv[1..]`, searching `PATH`.
    pub fn spawn(argv: &[String]) -> Result<Launched> {
        Self::spawn_with(argv, |_| {})
    }

    /// Like [`Launched::spawn`], with standard input, output and error on `/dev/null`: for
    /// a program started under a full-screen view (`py-spy top`), whose output would tear
    /// the screen and whose reads would steal the keys.
    pub fn spawn_detached_io(argv: &[String]) -> Result<Launched> {
        Self::spawn_with(argv, |command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        })
    }

    fn spawn_with(argv: &[String], configure: impl FnOnce(&mut Command)) -> Result<Launched> {
        let Some((program, args)) = argv.split_first() else {
            bail!("no program to run was given after `--`");
        };
        let mut command = Command::new(program);
        command.args(args);
        configure(&mut command);
        let drop_to = crate::privileges::invoking_user();
        if let Some(user) = drop_to.clone() {
            // Through sudo, py-spy is root only to read the target; the program runs as
            // the user who asked for it, with their own home.
            if let Some(home) = &user.home {
                command.env("HOME", home);
            }
            if let Some(name) = &user.name {
                command.env("USER", name).env("LOGNAME", name);
            }
            // SAFETY: the closure only makes system calls (setgroups, setgid, setuid) on
            // data allocated before the fork.
            unsafe {
                command.pre_exec(move || user.become_user());
            }
        }
        let child = command.spawn().map_err(|err| {
            let as_whom = match &drop_to {
                Some(user) => format!(
                    " as uid {} (the user who ran sudo; py-spy runs the program as them)",
                    user.uid
                ),
                None => String::new(),
            };
            if err.kind() == std::io::ErrorKind::PermissionDenied {
                // Not a ptrace problem: keep the error printer from suggesting root.
                anyhow::anyhow!("cannot run `{program}`{as_whom}: permission denied")
            } else {
                anyhow::Error::new(err).context(format!("cannot run `{program}`{as_whom}"))
            }
        })?;
        // The std handle is dropped on purpose: we wait with waitpid ourselves, because
        // pausing the child (ptrace) may reap it, and its status then comes from there.
        Ok(Launched {
            pid: child.id() as i32,
            exit: None,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How it ended, if it has; never blocks.
    pub fn poll(&mut self) -> Option<Exit> {
        if self.exit.is_some() {
            return self.exit;
        }
        if let Some(status) = crate::process::held_child_exit(self.pid) {
            self.exit = status.and_then(Exit::from_wait_status);
            return self.exit;
        }
        let mut status: libc::c_int = 0;
        // SAFETY: plain system call with a valid pointer to a local.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        self.exit = if r == self.pid {
            Exit::from_wait_status(status)
        } else if r < 0 {
            // Already reaped while it was paused; the pause kept the status. If nobody
            // kept it, it is gone all the same: report a failure rather than wait forever.
            Some(
                take_reaped_status(self.pid)
                    .and_then(Exit::from_wait_status)
                    .unwrap_or(Exit::Code(1)),
            )
        } else {
            None
        };
        self.exit
    }

    /// Sends `signal` to it (if it still runs).
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none() {
            // SAFETY: plain system call; a pid we have not reaped cannot have been reused.
            unsafe {
                libc::kill(self.pid, signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait(child: &mut Launched) -> Exit {
        let start = Instant::now();
        loop {
            if let Some(exit) = child.poll() {
                return exit;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "child did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn reports_exit_codes_and_signals() {
        let argv = |s: &str| -> Vec<String> { ["sh", "-c", s].map(String::from).to_vec() };
        let mut ok = Launched::spawn(&argv("exit 0")).unwrap();
        assert_eq!(wait(&mut ok), Exit::Code(0));
        let mut three = Launched::spawn(&argv("exit 3")).unwrap();
        assert_eq!(wait(&mut three).exit_code(), 3);
        let mut killed = Launched::spawn(&argv("kill -TERM $$")).unwrap();
        let exit = wait(&mut killed);
        assert_eq!(exit, Exit::Signal(libc::SIGTERM));
        assert_eq!(exit.exit_code(), 143);
        assert_eq!(exit.to_string(), "was killed by SIGTERM");
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let err = Launched::spawn(&["/no/such/program".to_string()]).unwrap_err();
        assert!(format!("{err:#}").starts_with("cannot run `/no/such/program`: "));
    }
}

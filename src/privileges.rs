//! Who py-spy acts for when it runs through `sudo`.
//!
//! `sudo py-spy record -- python app.py` needs root for ptrace, but the user asked to run
//! *their* program: it must not run as root, and the profile it writes should belong to
//! them. sudo says who invoked it in `SUDO_UID`, `SUDO_GID` and `SUDO_USER`.

use std::ffi::CString;

use anyhow::{Context, Result};
use nix::unistd::{Gid, Uid, User};

/// The user who ran `sudo py-spy …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokingUser {
    /// `SUDO_UID`.
    pub uid: u32,
    /// `SUDO_GID`.
    pub gid: u32,
    /// Their supplementary groups, from the group database (`SUDO_GID` alone when the
    /// user is not in the password database, e.g. a uid that exists only in a container).
    pub groups: Vec<u32>,
    /// Login name, home directory: put back into the environment of the launched program
    /// so that it finds its own `~` rather than root's.
    pub name: Option<String>,
    /// Home directory from the password database.
    pub home: Option<String>,
}

/// The user behind `sudo` when py-spy runs as root through it; `None` when py-spy was not
/// started by sudo, or by root itself, or is not root (nothing to drop).
pub fn invoking_user() -> Option<InvokingUser> {
    invoking_user_from(
        Uid::effective().as_raw(),
        |name| std::env::var(name).ok(),
        |uid| User::from_uid(Uid::from_raw(uid)).ok().flatten(),
    )
}

/// [`invoking_user`] with the effective uid, the environment and the password database
/// passed in, so the rules can be tested without sudo.
fn invoking_user_from(
    euid: u32,
    env: impl Fn(&str) -> Option<String>,
    lookup: impl Fn(u32) -> Option<User>,
) -> Option<InvokingUser> {
    if euid != 0 {
        return None;
    }
    let uid: u32 = env("SUDO_UID")?.trim().parse().ok()?;
    if uid == 0 {
        return None;
    }
    let user = lookup(uid);
    let gid = env("SUDO_GID")
        .and_then(|g| g.trim().parse().ok())
        .or_else(|| user.as_ref().map(|u| u.gid.as_raw()))?;
    let name = user
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| env("SUDO_USER"));
    let mut groups = name
        .as_deref()
        .and_then(|n| CString::new(n).ok())
        .and_then(|n| nix::unistd::getgrouplist(&n, Gid::from_raw(gid)).ok())
        .map(|g| g.into_iter().map(Gid::as_raw).collect::<Vec<_>>())
        .unwrap_or_default();
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Some(InvokingUser {
        uid,
        gid,
        groups,
        name,
        home: user.map(|u| u.dir.to_string_lossy().into_owned()),
    })
}

impl InvokingUser {
    /// Switches the calling process to this user for good: groups, then gid, then uid (the
    /// order matters, each later step gives up the right to the earlier one).
    ///
    /// Runs between fork and exec, so it only makes system calls: no allocation, no locks.
    pub fn become_user(&self) -> std::io::Result<()> {
        // SAFETY: setgroups reads `groups.len()` gids from a live slice; setgid and setuid
        // take plain integers.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
                || libc::setuid(self.uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Gives `file` to this user, so that a profile written through sudo is theirs to
    /// move or delete.
    pub fn take_ownership(&self, file: &std::fs::File) -> Result<()> {
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving the output file to uid {}", self.uid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn nobody(uid: u32) -> Option<User> {
        (uid == 65534).then(|| User {
            name: "nobody".into(),
            passwd: CString::new("x").unwrap(),
            uid: Uid::from_raw(65534),
            gid: Gid::from_raw(65534),
            gecos: CString::new("").unwrap(),
            dir: PathBuf::from("/nonexistent"),
            shell: PathBuf::from("/usr/sbin/nologin"),
        })
    }

    #[test]
    fn only_root_started_by_sudo_for_another_user_drops() {
        let sudo = env(&[("SUDO_UID", "65534"), ("SUDO_GID", "65534")]);
        let user = invoking_user_from(0, &sudo, nobody).unwrap();
        assert_eq!((user.uid, user.gid), (65534, 65534));
        assert_eq!(user.name.as_deref(), Some("nobody"));
        assert_eq!(user.home.as_deref(), Some("/nonexistent"));
        assert!(user.groups.contains(&65534), "{:?}", user.groups);

        assert_eq!(invoking_user_from(1000, &sudo, nobody), None, "not root");
        assert_eq!(invoking_user_from(0, env(&[]), nobody), None, "no sudo");
        let root_sudo = env(&[("SUDO_UID", "0"), ("SUDO_GID", "0")]);
        assert_eq!(invoking_user_from(0, root_sudo, nobody), None, "root");
        let garbage = env(&[("SUDO_UID", "abc"), ("SUDO_GID", "1")]);
        assert_eq!(invoking_user_from(0, garbage, nobody), None);
    }

    #[test]
    fn a_uid_missing_from_the_password_database_still_drops() {
        let sudo = env(&[
            ("SUDO_UID", "4242"),
            ("SUDO_GID", "4343"),
            ("SUDO_USER", "ghost"),
        ]);
        let user = invoking_user_from(0, sudo, |_| None).unwrap();
        assert_eq!((user.uid, user.gid), (4242, 4343));
        assert_eq!(user.groups, vec![4343]);
        assert_eq!(user.name.as_deref(), Some("ghost"));
        assert_eq!(user.home, None);
    }
}

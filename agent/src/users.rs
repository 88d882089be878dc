//! Users and groups without NSS: the static binary cannot load glibc's NSS modules, so it reads
//! `/etc/passwd` and `/etc/group` itself and falls back to the `getent` program (which runs
//! with the system's dynamic glibc and so sees LDAP, SSSD and the rest) for names not there.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid};

/// The account a job runs as, resolved before the agent detaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// The primary group and every group listing the user, as `initgroups` would set them.
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// Where accounts are read from; tests point it at their own files.
#[derive(Clone, Debug)]
pub struct AccountDb {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub getent: Option<PathBuf>,
}

impl Default for AccountDb {
    fn default() -> Self {
        Self {
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            getent: ["/usr/bin/getent", "/bin/getent"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no such user `{0}` (not in /etc/passwd, nor known to getent)")]
    Unknown(String),
    #[error("user `{name}`: malformed passwd entry `{line}`")]
    Malformed { name: String, line: String },
}

impl AccountDb {
    /// Looks `name` up (or a numeric uid), with its groups.
    pub fn lookup(&self, name: &str) -> Result<Account, AccountError> {
        let line = find_line(&self.passwd, |f| matches_user(f, name))
            .or_else(|| self.getent("passwd", name))
            .ok_or_else(|| AccountError::Unknown(name.to_owned()))?;
        let mut account = parse_passwd(&line)
            .ok_or_else(|| AccountError::Malformed { name: name.to_owned(), line: line.clone() })?;
        account.groups = self.groups_of(&account.name, account.gid);
        Ok(account)
    }

    /// The user's supplementary groups from /etc/group, else from `getent initgroups`.
    fn groups_of(&self, user: &str, primary: Gid) -> Vec<Gid> {
        let mut groups = vec![primary];
        let text = read(&self.group).unwrap_or_default();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [_, _, gid, members] = fields[..]
                && members.split(',').any(|m| m.trim() == user)
                && let Ok(gid) = gid.parse()
            {
                groups.push(Gid::from_raw(gid));
            }
        }
        if groups.len() == 1
            && let Some(line) = self.getent("initgroups", user)
        {
            // "name  gid1 gid2 ..."
            groups.extend(
                line.split_whitespace().skip(1).filter_map(|g| g.parse().ok()).map(Gid::from_raw),
            );
        }
        groups.sort_by_key(|g| g.as_raw());
        groups.dedup();
        groups
    }

    fn getent(&self, db: &str, key: &str) -> Option<String> {
        let getent = self.getent.as_ref()?;
        // The one process the agent starts besides the job; clippy.toml allows it here too.
        #[allow(clippy::disallowed_methods)]
        let out = Command::new(getent).args([db, key]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.lines().next().map(str::to_owned)
    }
}

fn matches_user(fields: &[&str], name: &str) -> bool {
    fields.first() == Some(&name) || (fields.get(2) == Some(&name) && name.parse::<u32>().is_ok())
}

fn find_line(path: &Path, pred: impl Fn(&[&str]) -> bool) -> Option<String> {
    let text = read(path)?;
    text.lines().find(|l| pred(&l.split(':').collect::<Vec<_>>())).map(str::to_owned)
}

fn read(path: &Path) -> Option<String> {
    #[allow(clippy::disallowed_methods)]
    std::fs::read_to_string(path).ok()
}

fn parse_passwd(line: &str) -> Option<Account> {
    let f: Vec<&str> = line.split(':').collect();
    let [name, _, uid, gid, _, home, shell] = f[..] else { return None };
    Some(Account {
        name: name.to_owned(),
        uid: Uid::from_raw(uid.parse().ok()?),
        gid: Gid::from_raw(gid.parse().ok()?),
        groups: Vec::new(),
        home: home.into(),
        shell: if shell.is_empty() { "/bin/sh".into() } else { shell.into() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path, passwd: &str, group: &str) -> AccountDb {
        std::fs::write(dir.join("passwd"), passwd).unwrap();
        std::fs::write(dir.join("group"), group).unwrap();
        AccountDb { passwd: dir.join("passwd"), group: dir.join("group"), getent: None }
    }

    #[test]
    fn reads_user_and_groups_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(
            dir.path(),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:100:Alice:/home/alice:\n",
            "users:x:100:\nadm:x:4:bob,alice\nwheel:x:10:alice\nother:x:11:alicex\n",
        );
        let a = db.lookup("alice").unwrap();
        assert_eq!((a.uid.as_raw(), a.gid.as_raw()), (1000, 100));
        assert_eq!(a.groups.iter().map(|g| g.as_raw()).collect::<Vec<_>>(), [4, 10, 100]);
        assert_eq!(a.home, Path::new("/home/alice"));
        assert_eq!(a.shell, Path::new("/bin/sh"));
        assert_eq!(db.lookup("1000").unwrap().name, "alice");
        assert!(matches!(db.lookup("mallory"), Err(AccountError::Unknown(_))));
    }

    #[test]
    fn falls_back_to_getent() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = db(dir.path(), "", "");
        db.getent = Some(AccountDb::default().getent.expect("getent on the test machine"));
        assert_eq!(db.lookup("root").unwrap().uid.as_raw(), 0);
    }
}

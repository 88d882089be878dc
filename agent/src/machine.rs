//! The minion's id when `SP_MACHINE_ID` is not set. The original used the FQDN, which breaks
//! result attribution wherever the minion id differs from it; the minion id is what the
//! sidecar targets, so it comes first: `id:` in the minion config, then `/etc/salt/minion_id`,
//! then the FQDN from /etc/hosts, then the host name.

use std::path::Path;

pub fn default_id() -> String {
    from_files(Path::new("/etc/salt"), Path::new("/etc/hosts"))
}

fn from_files(salt_dir: &Path, hosts: &Path) -> String {
    let read = |p: &Path| {
        #[allow(clippy::disallowed_methods)]
        std::fs::read_to_string(p).ok()
    };
    let configured = read(&salt_dir.join("minion")).and_then(|text| {
        text.lines().find_map(|l| {
            let value = l.strip_prefix("id:")?.trim().trim_matches(|c| c == '"' || c == '\'');
            (!value.is_empty()).then(|| value.to_owned())
        })
    });
    let file =
        || read(&salt_dir.join("minion_id")).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    configured.or_else(file).unwrap_or_else(|| fqdn(&host_name(), read(hosts).unwrap_or_default()))
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The canonical name /etc/hosts gives the host name (the first name on its line), as
/// `socket.getfqdn()` would find it without DNS.
fn fqdn(host: &str, hosts: String) -> String {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .find_map(|l| {
            let names: Vec<&str> = l.split_whitespace().skip(1).collect();
            (names.contains(&host) && names[0].contains('.')).then(|| names[0].to_owned())
        })
        .unwrap_or_else(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_minion_config_then_minion_id_then_fqdn() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.1.1 web1.example.com web1 # me\n").unwrap();
        std::fs::write(dir.path().join("minion_id"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("minion"), "master: salt\nid: 'from-config'\n").unwrap();
        assert_eq!(from_files(dir.path(), &hosts), "from-config");
        std::fs::remove_file(dir.path().join("minion")).unwrap();
        assert_eq!(from_files(dir.path(), &hosts), "from-file");
        assert_eq!(fqdn("web1", std::fs::read_to_string(&hosts).unwrap()), "web1.example.com");
        assert_eq!(fqdn("db1", std::fs::read_to_string(&hosts).unwrap()), "db1");
    }
}

//! What a lab is made of: how many minions, their grains, the master's extra config, and the file
//! and pillar roots; and the files and `saltlab up` arguments that express it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

/// Every lab has the nodegroup the shared lab promises; `master_extra` snippets come after it.
const NODEGROUPS: &str = "nodegroups:\n  web: 'G@role:web'\n";

/// A pillar of its own saltenv, so that a test's own `pillar_roots` (with their own `top.sls`)
/// do not hide it: `lab: {id, role}` on every minion.
const LAB_PILLAR_TOP: &str = "saltlab:\n  '*':\n    - lab\n";
/// `opts['id']`, not `grains['id']`: the pillar of an id that is no minion (the sidecar reads the
/// master's) has no grains, and must render too.
const LAB_PILLAR_SLS: &str = "lab:\n  id: {{ opts['id'] }}\n  role: {{ grains.get('role', '') }}\n";

/// What to start. `LabConfig::default()` is the shared lab: 3 minions, `role: web` on the odd
/// ones and `role: db` on the even ones, nodegroup `web`, pillar `lab`.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Minion ids are `minion-1` to `minion-<minions>`.
    pub minions: usize,
    /// YAML snippets, each written to the master's `master.d/`.
    pub master_extra: Vec<String>,
    /// Extra `file_roots` of saltenv base, searched before the repo's `salt/` and `states/`.
    pub file_roots: Vec<PathBuf>,
    /// `pillar_roots` of saltenv base (the `lab` pillar lives in its own saltenv).
    pub pillar_roots: Vec<PathBuf>,
    /// Minion id -> grains map, merged over the default `role` grain.
    pub grains: BTreeMap<String, Value>,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            minions: 3,
            master_extra: Vec::new(),
            file_roots: Vec::new(),
            pillar_roots: Vec::new(),
            grains: BTreeMap::new(),
        }
    }
}

impl LabConfig {
    pub(crate) fn minion_ids(&self) -> Vec<String> {
        (1..=self.minions).map(|i| format!("minion-{i}")).collect()
    }

    /// The default role grain plus the test's own grains for minion number `index` (1-based).
    fn grains_of(&self, id: &str, index: usize) -> anyhow::Result<Value> {
        let role = if index % 2 == 1 { "web" } else { "db" };
        let mut grains = json!({ "role": role });
        match self.grains.get(id) {
            None => {}
            Some(Value::Object(extra)) => {
                if let Value::Object(map) = &mut grains {
                    map.extend(extra.clone());
                }
            }
            Some(other) => {
                anyhow::bail!("LabConfig.grains[{id}] must be a JSON object, not {other}")
            }
        }
        Ok(grains)
    }

    /// Writes the lab's own files into `dir` and returns the matching `saltlab up` arguments.
    pub(crate) fn prepare(&self, dir: &Path) -> anyhow::Result<Vec<OsString>> {
        if let Some(unknown) = self.grains.keys().find(|id| !self.minion_ids().contains(id)) {
            anyhow::bail!(
                "LabConfig.grains names {unknown}, which is not one of the lab's minions"
            );
        }
        let mut args: Vec<OsString> = vec!["--minions".into(), self.minions.to_string().into()];

        let extra_dir = dir.join("master-extra");
        fs_err::create_dir_all(&extra_dir)?;
        let snippets =
            std::iter::once(NODEGROUPS).chain(self.master_extra.iter().map(String::as_str));
        for (i, snippet) in snippets.enumerate() {
            let path = extra_dir.join(format!("{i:02}.conf"));
            fs_err::write(&path, snippet)?;
            args.extend(["--master-extra".into(), path.into_os_string()]);
        }

        let lab_roots = dir.join("srv");
        let lab_files = lab_roots.join("salt");
        let lab_pillar = lab_roots.join("lab-pillar");
        fs_err::create_dir_all(&lab_files)?;
        fs_err::create_dir_all(&lab_pillar)?;
        fs_err::write(lab_pillar.join("top.sls"), LAB_PILLAR_TOP)?;
        fs_err::write(lab_pillar.join("lab.sls"), LAB_PILLAR_SLS)?;

        let repo = crate::repo_root();
        let repo_roots = ["salt", "states"].map(|d| repo.join(d));
        let file_roots =
            self.file_roots.iter().cloned().chain(repo_roots.into_iter().filter(|d| d.is_dir()));
        for root in file_roots.chain([lab_files]) {
            let root = absolute(&root)?;
            args.extend(["--file-roots".into(), root.into_os_string()]);
        }
        for root in &self.pillar_roots {
            args.extend(["--pillar-roots".into(), absolute(root)?.into_os_string()]);
        }
        let mut env_root = OsString::from("saltlab=");
        env_root.push(&lab_pillar);
        args.extend(["--pillar-roots".into(), env_root]);

        for (index, id) in self.minion_ids().iter().enumerate() {
            let grains = self.grains_of(id, index + 1)?;
            args.extend(["--grains".into(), format!("{id}={grains}").into()]);
        }
        Ok(args)
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}

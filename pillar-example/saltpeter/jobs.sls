# Jobs from pillar: the same keys as a job file, validated the same way. A job defined both here
# and in a file of the config directory is an error naming both; the file's job is used.
# The sidecar reads them again on `salt-run event.send saltpeter/reload`, when minions return
# from `saltutil.refresh_pillar`, and every `pillar_refresh` seconds (default 60).
saltpeter:
  jobs:
    pillar-disk-usage:
      description: From pillar. Every 20 seconds on every minion, the fullest file system.
      sec: '*/20'
      min: '*'
      hour: '*'
      dom: '*'
      mon: '*'
      dow: '*'
      targets: '*'
      command: "df -P / | tail -n 1"
      timeout: 30
    pillar-nightly-report:
      description: From pillar. The db minions (grain role:db), at 03:15 Europe/Berlin.
      min: 15
      hour: 3
      dom: '*'
      mon: '*'
      dow: '*'
      timezone: Europe/Berlin
      targets: 'role:db'
      target_type: grain
      command: 'echo "report of $(hostname)"'

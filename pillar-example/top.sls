# The pillar top of Saltpeter's example tree (scripts/demo and the end-to-end tests use it).
base:
  # Every minion: the formula's settings for the agent (`state.apply saltpeter`).
  '*':
    - saltpeter.agent
  # The sidecar reads jobs and maintenance from the pillar of ONE minion id: setting
  # `pillar_minion`, by default the master's own id (`id:` in the master config, or
  # `<host>_master`; the test lab's master is `saltlab-master`).
  '*_master or saltlab-master':
    - match: compound
    - saltpeter.jobs
    - saltpeter.maintenance
  # Per-minion maintenance: a minion whose own pillar says `saltpeter:maintenance: true` is
  # skipped by every job until it is removed (then `salt '*' saltutil.refresh_pillar`).
  # 'db-7.example.com':
  #   - saltpeter.in_maintenance

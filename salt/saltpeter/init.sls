# `state.apply saltpeter`: installs the agent on every targeted minion.
# The sidecar, on the master's own minion: `state.apply saltpeter.sidecar`.
include:
  - saltpeter.agent

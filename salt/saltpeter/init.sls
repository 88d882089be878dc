# `state.apply saltpeter`: installs the agent on every targeted minion.
# (The sidecar state, for the master's own minion, comes with the daemon.)
include:
  - saltpeter.agent

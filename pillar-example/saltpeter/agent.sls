# The formula's settings for the agent on every minion (salt/saltpeter/defaults.yaml has them all).
saltpeter:
  agent:
    # Pin the fleet's agent version here; change it to upgrade or downgrade.
    version: 0.1.0
    path: /usr/local/bin/saltpeter-agent

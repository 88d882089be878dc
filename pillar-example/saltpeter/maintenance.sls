# Maintenance from pillar, added to `saltpeter_maintenance` of the config files:
# `global: true` starts no run anywhere; `machines` are minion ids no run includes.
saltpeter:
  maintenance:
    global: false
    machines: []

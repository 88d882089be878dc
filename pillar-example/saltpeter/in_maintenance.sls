# Assign to a minion (in top.sls) to take it out of every Saltpeter job.
saltpeter:
  maintenance: true

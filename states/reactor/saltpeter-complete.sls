{#- Reacts to `saltpeter/job/<job>/complete` (see states/reactor/saltpeter.conf, docs/events.md).
    On a run that did not succeed:
    - fires `saltpeter/alert/failed` on the master bus (job, instance, status, reason, the failed
      minions), for a notification reactor, an engine or `salt-run state.event` to pick up;
    - sets the grain `saltpeter_last_failure` on each minion that failed (job, instance, retcode,
      when), so that `salt -G 'saltpeter_last_failure:job:<job>' ...` finds them.
    A successful run does nothing. -#}
{%- if not data.get('success', True) %}
{%-   set failed = {} %}
{%-   for minion, code in (data.get('retcodes') or {}).items() %}
{%-     if code is not none and code != 0 %}{% do failed.update({minion: code}) %}{% endif %}
{%-   endfor %}
saltpeter-alert-failed:
  runner.event.send:
    - args:
      - tag: saltpeter/alert/failed
      - data:
          job: {{ data.get('job') | json }}
          instance: {{ data.get('instance') | json }}
          status: {{ data.get('status') | json }}
          reason: {{ data.get('reason') | json }}
          failed: {{ failed | json }}
{%-   for minion, code in failed.items() %}

saltpeter-last-failure-{{ minion }}:
  local.grains.setval:
    - tgt: {{ minion | json }}
    - args:
      - key: saltpeter_last_failure
      - val:
          job: {{ data.get('job') | json }}
          instance: {{ data.get('instance') | json }}
          retcode: {{ code }}
          finished: {{ data.get('finished') | json }}
{%-   endfor %}
{%- endif %}

# Installs saltpeter-agent, the job agent, at a pinned version, verified by its sha256.
{%- from 'saltpeter/map.jinja' import agent with context %}
{%- from 'saltpeter/verify.jinja' import verify with context %}
{%- set source = agent.source | replace('{version}', agent.version) %}
{%- set source_hash = agent.source_hash | replace('{version}', agent.version) %}

{{ verify('saltpeter-agent', source, source_hash) }}

saltpeter-agent:
  file.managed:
    - name: {{ agent.path }}
    - source: {{ source }}
    - source_hash: {{ source_hash }}
    - user: {{ agent.user }}
    - group: {{ agent.group }}
    - mode: '0755'
    - makedirs: True
    - require:
      - test: saltpeter-agent-verified

# Proves the installed binary runs on this minion (right architecture, not truncated) and is the
# pinned version, whenever it changes.
saltpeter-agent-version:
  cmd.run:
    - name: {{ agent.path }} --version | grep -qF '{{ agent.version }}'
    - onchanges:
      - file: saltpeter-agent

{%- if agent.legacy_link %}

saltpeter-agent-legacy-link:
  file.symlink:
    - name: {{ agent.legacy_link }}
    - target: {{ agent.path }}
    - force: True
    - makedirs: True
    - require:
      - file: saltpeter-agent
{%- endif %}

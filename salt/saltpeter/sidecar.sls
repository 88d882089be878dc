# The sidecar on the Salt master (apply to the master's own minion): the `saltpeter` binary at a
# pinned version verified by its sha256, the config directory rendered from pillar
# (`saltpeter:sidecar:config` → `saltpeter_config`, `saltpeter:sidecar:job_files` → job files), the
# state and log directories, and a hardened systemd unit, restarted when any of them changes.
# Jobs can also live in pillar `saltpeter:jobs`: the running sidecar reads those itself.
{%- from 'saltpeter/map.jinja' import sidecar with context %}
{%- from 'saltpeter/verify.jinja' import verify with context %}
{%- set source = sidecar.source | replace('{version}', sidecar.version) %}
{%- set source_hash = sidecar.source_hash | replace('{version}', sidecar.version) %}
{%- set settings = {'logdir': sidecar.log_dir} %}
{%- do settings.update(sidecar.config) %}

{{ verify('saltpeter-sidecar-binary', source, source_hash) }}

saltpeter-sidecar-binary:
  file.managed:
    - name: {{ sidecar.path }}
    - source: {{ source }}
    - source_hash: {{ source_hash }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True
    - require:
      - test: saltpeter-sidecar-binary-verified

saltpeter-sidecar-version:
  cmd.run:
    - name: {{ sidecar.path }} --version | grep -qF '{{ sidecar.version }}'
    - onchanges:
      - file: saltpeter-sidecar-binary

saltpeter-sidecar-config-dir:
  file.directory:
    - name: {{ sidecar.config_dir }}
    - user: root
    - group: {{ sidecar.group }}
    - mode: '0750'
    - makedirs: True

{%- for dir in [sidecar.state_dir, sidecar.log_dir] %}

saltpeter-sidecar-dir-{{ dir }}:
  file.directory:
    - name: {{ dir }}
    - user: {{ sidecar.user }}
    - group: {{ sidecar.group }}
    - mode: '0750'
    - makedirs: True
{%- endfor %}

saltpeter-sidecar-settings:
  file.serialize:
    - name: {{ sidecar.config_dir }}/00-saltpeter-config.yaml
    - serializer: yaml
    - dataset:
        saltpeter_config: {{ settings | json }}
    - user: root
    - group: {{ sidecar.group }}
    - mode: '0640'
    - require:
      - file: saltpeter-sidecar-config-dir

{%- for name, jobs in sidecar.job_files.items() %}

saltpeter-sidecar-jobs-{{ name }}:
  file.serialize:
    - name: {{ sidecar.config_dir }}/{{ name }}.yaml
    - serializer: yaml
    - dataset: {{ jobs | json }}
    - user: root
    - group: {{ sidecar.group }}
    - mode: '0640'
    - require:
      - file: saltpeter-sidecar-config-dir
{%- endfor %}

saltpeter-sidecar-unit:
  file.managed:
    - name: {{ sidecar.unit_dir }}/{{ sidecar.service.name }}.service
    - source: salt://saltpeter/templates/saltpeter.service.jinja
    - template: jinja
    - context:
        sidecar: {{ sidecar | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

{%- if sidecar.service.manage %}

saltpeter-sidecar-service:
  service.running:
    - name: {{ sidecar.service.name }}
    - enable: True
    # Salt's systemd module reloads systemd when the unit file changed.
    - watch:
      - file: saltpeter-sidecar-binary
      - file: saltpeter-sidecar-settings
      - file: saltpeter-sidecar-unit
{%-   for name in sidecar.job_files %}
      - file: saltpeter-sidecar-jobs-{{ name }}
{%-   endfor %}
{%- endif %}

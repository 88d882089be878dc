"""
Saltpeter from ``salt-run``: the jobs, the runs in flight, run now, kill, maintenance and a job's
history, through the sidecar's HTTP API (docs/api.md).

Install: this file is in the formula's ``salt/_runners/``; with ``salt/`` in ``file_roots``,
``salt-run saltutil.sync_runners`` makes it available. Configure in the master config
(e.g. ``/etc/salt/master.d/saltpeter.conf``)::

    saltpeter_api:
      url: http://127.0.0.1:8888      # the sidecar's API (api_ws_port)
      token: SECRET                    # from `saltpeter token new --name salt-run --role operator`
      timeout: 10                      # seconds per request

Every function also takes ``url=`` and ``token=`` to override the config. Results are plain
dicts and lists, which Salt's outputters (``nested``, ``json``, ``yaml``) render; an API error
returns ``{"error": ..., "retcode": 1}`` and ``salt-run`` exits with 1.

.. code-block:: bash

    salt-run saltpeter.jobs
    salt-run saltpeter.status
    salt-run saltpeter.run name=backup
    salt-run saltpeter.kill instance=backup_1795456220 [minion=web1]
    salt-run saltpeter.maintenance                       # what is in effect
    salt-run saltpeter.maintenance start scope=minion target=web1 why='disk swap'
    salt-run saltpeter.maintenance end id=3
    salt-run saltpeter.history name=backup limit=10
"""

import json
import urllib.error
import urllib.parse
import urllib.request

__virtualname__ = "saltpeter"

DEFAULT_URL = "http://127.0.0.1:8888"


def __virtual__():
    return __virtualname__


def _settings(url=None, token=None):
    conf = __opts__.get("saltpeter_api") or {}
    return (
        (url or conf.get("url") or DEFAULT_URL).rstrip("/"),
        token or conf.get("token"),
        float(conf.get("timeout", 10)),
    )


def _fail(message):
    # salt-run exits with a result's `retcode`; the context's marks the job as failed.
    __context__["retcode"] = 1
    return {"error": message, "retcode": 1}


def _call(method, path, query=None, body=None, url=None, token=None):
    """Calls the API; (answer, None) or (None, the error as a dict)."""
    base, secret, timeout = _settings(url, token)
    query = {k: v for k, v in (query or {}).items() if v is not None}
    full = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(full, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if secret:
        request.add_header("Authorization", "Bearer " + secret)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        return None, _fail(f"{method} {full}: HTTP {e.code}: {detail}")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None, _fail(
            f"{method} {full}: {reason} (is the sidecar running with its API on, "
            "and saltpeter_api.url right in the master config?)"
        )
    if not text.strip():
        return {}, None
    try:
        return json.loads(text), None
    except ValueError:
        return None, _fail(f"{method} {full}: not JSON: {text[:200]}")


def _runs(answer):
    """The runs of a runs answer: a list, or a page ``{"runs": [...], "next": ...}``."""
    if isinstance(answer, dict):
        return answer.get("runs", [])
    return answer or []


def _brief(run):
    keys = ("instance", "job", "status", "trigger", "scheduled", "started", "finished", "reason")
    return {k: run.get(k) for k in keys if k in run}


def jobs(q=None, group=None, url=None, token=None):
    """
    Every job: schedule, targets, next runs, last result.

    CLI Example: ``salt-run saltpeter.jobs [group=db]``
    """
    found, offset = {}, 0
    while True:
        query = {"q": q, "group": group, "limit": 1000, "offset": offset}
        answer, error = _call("GET", "/api/v1/jobs", query, url=url, token=token)
        if error:
            return error
        # A page ``{"jobs": [...], "total": N, ...}``; older sidecars answer a bare list.
        listed = (answer.get("jobs") if isinstance(answer, dict) else answer) or []
        for job in listed:
            found[job.get("name", str(len(found)))] = job
        offset += len(listed)
        total = answer.get("total", 0) if isinstance(answer, dict) else 0
        if not listed or offset >= total:
            return found


def status(name=None, url=None, token=None):
    """
    The runs in flight (or one job: its definition, next and last runs).

    CLI Example: ``salt-run saltpeter.status [name=backup]``
    """
    if name:
        answer, error = _call("GET", "/api/v1/jobs/" + urllib.parse.quote(name, safe=""), url=url, token=token)
        return error or answer
    answer, error = _call("GET", "/api/v1/runs", {"status": "running", "limit": 1000}, url=url, token=token)
    if error:
        return error
    return {"running": [_brief(r) for r in _runs(answer)]}


def run(name, url=None, token=None):
    """
    Runs a job now (as if its schedule fired).

    CLI Example: ``salt-run saltpeter.run name=backup``
    """
    path = "/api/v1/jobs/" + urllib.parse.quote(name, safe="") + "/run"
    answer, error = _call("POST", path, url=url, token=token)
    return error or answer


def kill(instance, minion=None, url=None, token=None):
    """
    Kills a run, or one minion of it (its result becomes 143 once the process ended).

    CLI Example: ``salt-run saltpeter.kill instance=backup_1795456220 [minion=web1]``
    """
    path = "/api/v1/runs/" + urllib.parse.quote(instance, safe="") + "/kill"
    answer, error = _call("POST", path, {"minion": minion}, url=url, token=token)
    return error or answer or {"kill": instance, "minion": minion}


def maintenance(
    action="show",
    scope=None,
    target=None,
    target_type=None,
    why=None,
    until=None,
    id=None,  # pylint: disable=redefined-builtin
    url=None,
    token=None,
):
    """
    Maintenance: ``show`` what is in effect (files, pillar, API entries), ``start`` an entry
    (scope ``global``, ``minion`` or ``target``), ``end`` one by its id.

    CLI Example::

        salt-run saltpeter.maintenance
        salt-run saltpeter.maintenance start scope=target target='G@role:db' target_type=compound why=upgrade until=2026-11-24T06:00:00Z
        salt-run saltpeter.maintenance end id=3
    """
    if action == "show":
        answer, error = _call("GET", "/api/v1/maintenance", url=url, token=token)
        return error or answer
    if action == "start":
        if not scope:
            return _fail("maintenance start needs scope=global|minion|target")
        body = {"scope": scope, "target": target, "target_type": target_type, "why": why, "until": until}
        answer, error = _call(
            "POST", "/api/v1/maintenance", body={k: v for k, v in body.items() if v is not None}, url=url, token=token
        )
        return error or answer
    if action == "end":
        if id is None:
            return _fail("maintenance end needs id=N (see salt-run saltpeter.maintenance)")
        answer, error = _call("DELETE", f"/api/v1/maintenance/{id}", url=url, token=token)
        return error or answer or {"ended": id}
    return _fail(f"unknown action {action!r}: show, start or end")


def history(name, limit=20, status=None, url=None, token=None):  # pylint: disable=redefined-outer-name
    """
    A job's runs, newest first, with each minion's exit code.

    CLI Example: ``salt-run saltpeter.history name=backup [limit=10] [status=failed]``
    """
    answer, error = _call(
        "GET", "/api/v1/runs", {"job": name, "limit": int(limit), "status": status}, url=url, token=token
    )
    if error:
        return error
    out = []
    for r in _runs(answer):
        brief = _brief(r)
        detail, error = _call("GET", "/api/v1/runs/" + urllib.parse.quote(r["instance"], safe=""), url=url, token=token)
        if error:
            return error
        brief["retcodes"] = {m["minion"]: m.get("retcode") for m in detail.get("results", [])}
        out.append(brief)
    return out

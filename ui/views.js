// The pages: sign-in, jobs, a job, runs, maintenance, audit. Each view returns
// {el, dispose?}; the shell mounts it and calls dispose when leaving.

import { api, can, live, session, signIn } from './api.js';
import {
  badge, codeChip, debounce, fmtDuration, fmtRelative, fmtTime, h, pct, runDuration, zoneName,
} from './util.js';

export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h(`div.toast.toast-${kind}`, { role: kind === 'error' ? 'alert' : 'status' }, message);
  box.append(t);
  setTimeout(() => t.classList.add('out'), 4200);
  setTimeout(() => t.remove(), 4800);
}

/** A modal question; resolves true on confirm. */
export function confirmDialog(title, text, ok = 'Confirm', danger = true) {
  return new Promise((resolve) => {
    const dlg = h('dialog.modal', { 'aria-labelledby': 'dlg-title' },
      h('h2#dlg-title', { id: 'dlg-title' }, title),
      h('p', text),
      h('div.modal-actions',
        h('button.btn.btn-ghost', { type: 'button', onclick: () => { dlg.close(); resolve(false); } }, 'Cancel'),
        h(`button.btn.${danger ? 'btn-danger' : 'btn-primary'}`, { type: 'button', 'data-confirm': '', onclick: () => { dlg.close(); resolve(true); } }, ok)));
    dlg.addEventListener('close', () => setTimeout(() => dlg.remove(), 0));
    document.body.append(dlg);
    dlg.showModal();
  });
}

export async function runNow(job, button) {
  if (button) button.disabled = true;
  try {
    await api(`/api/v1/jobs/${encodeURIComponent(job)}/run`, { method: 'POST' });
    toast(`${job} started`, 'success');
    return true;
  } catch (e) {
    toast(`Cannot run ${job}: ${e.message}`, 'error');
    return false;
  } finally {
    if (button) setTimeout(() => { button.disabled = false; }, 1500);
  }
}

function loading() { return h('div.loading', h('span.spinner'), 'Loading…'); }
function failure(e) { return h('div.empty.empty-error', h('strong', 'Could not load this page.'), h('p', e.message)); }

function countdown(iso) {
  return iso ? h('span.countdown', { dataset: { at: iso }, title: fmtTime(iso) }, fmtRelative(iso)) : h('span.muted', '—');
}

function ago(iso) {
  return iso ? h('span.ago', { dataset: { ago: iso }, title: fmtTime(iso) }, fmtRelative(iso)) : h('span.muted', 'never');
}

function historyStrip(history) {
  const runs = [...history].reverse();
  return h('div.strip', { 'aria-label': 'recent runs, oldest first' },
    runs.map((r) => h(`a.cell.s-${r.status}`, { href: `#/run/${encodeURIComponent(r.instance)}`, title: `${r.status} · ${fmtTime(r.scheduled)}` })));
}

function rateBar(rate) {
  if (rate === null || rate === undefined) return h('span.muted', '—');
  const cls = rate >= 0.95 ? 'good' : rate >= 0.7 ? 'warn' : 'bad';
  return h('div.rate', h('div.rate-track', h(`div.rate-fill.${cls}`, { dataset: { w: Math.round(rate * 100) } })), h('span', pct(rate)));
}

/** Widths come from data attributes (the page's CSP allows no inline styles in markup). */
export function applyWidths(root) {
  for (const el of root.querySelectorAll('[data-w]')) el.style.width = `${el.dataset.w}%`;
}

// ---------------------------------------------------------------- sign in

export function loginView(_params, ctx) {
  const input = h('input#token', { type: 'password', name: 'token', autocomplete: 'current-password', placeholder: 'sp_…', required: true, 'aria-label': 'API token' });
  const remember = h('input', { type: 'checkbox', id: 'remember', checked: true });
  const error = h('p.form-error', { role: 'alert' });
  const form = h('form.login-card', {
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = '';
      signIn(input.value.trim(), remember.checked);
      try {
        session.me = await api('/api/v1/whoami');
        ctx.signedIn();
      } catch (err) {
        session.token = '';
        error.textContent = err.status === 401 ? 'This token is not valid.' : err.message;
      }
    },
  },
  h('div.login-logo', h('img', { src: '/assets/favicon.svg', alt: '' }), h('span', 'Saltpeter')),
  h('h1', 'Sign in'),
  h('p.muted', 'Use an API token. An administrator creates one on the Salt master with ', h('code', 'saltpeter token new --name you --role operator'), '.'),
  h('label', { for: 'token' }, 'API token'), input,
  h('label.check', remember, ' Remember on this browser'),
  error,
  h('button.btn.btn-primary.btn-block', { type: 'submit' }, 'Sign in'));
  return { el: h('div.login', form) };
}

// ---------------------------------------------------------------- jobs

export function jobsView(_params) {
  // Search, group, state and paging are the server's: the list may hold thousands of jobs.
  const PAGE = 100;
  const state = { q: sessionStorage.getItem('jobs.q') || '', group: '', filter: 'all', offset: 0, jobs: [], total: 0 };
  const body = h('tbody');
  const count = h('span.count');
  const refilter = () => { state.offset = 0; load(); };
  const groupSel = h('select', { 'aria-label': 'Group', onchange: (e) => { state.group = e.target.value; refilter(); } }, h('option', { value: '' }, 'All groups'));
  const search = h('input.search', { type: 'search', placeholder: 'Search jobs, groups, targets…', value: state.q, 'aria-label': 'Search jobs',
    oninput: debounce((e) => { state.q = e.target.value; sessionStorage.setItem('jobs.q', state.q); refilter(); }, 200) });
  const filters = ['all', 'running', 'failing', 'disabled'].map((f) => h('button.chip', {
    type: 'button', 'aria-pressed': f === 'all' ? 'true' : 'false', dataset: { filter: f },
    onclick: (e) => { state.filter = f; for (const b of filters) b.setAttribute('aria-pressed', b === e.currentTarget ? 'true' : 'false'); refilter(); },
  }, f[0].toUpperCase() + f.slice(1)));
  const prev = h('button.btn.btn-small', { type: 'button', 'aria-label': 'Previous page', onclick: () => { state.offset = Math.max(0, state.offset - PAGE); load(); } }, '‹ Previous');
  const next = h('button.btn.btn-small', { type: 'button', 'aria-label': 'Next page', onclick: () => { state.offset += PAGE; load(); } }, 'Next ›');
  const pageInfo = h('span.count');
  const pager = h('div.pager', pageInfo, prev, next);

  function status(j) {
    if (j.running) return 'running';
    if (!j.enabled) return 'disabled';
    return j.last_result ? j.last_result.status : 'none';
  }

  function draw() {
    const rows = state.jobs;
    const filtered = state.q || state.group || state.filter !== 'all';
    count.textContent = filtered ? `${state.total} matching jobs` : `${state.total} jobs`;
    const last = state.offset + rows.length;
    pageInfo.textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : '';
    prev.disabled = state.offset === 0;
    next.disabled = last >= state.total;
    pager.hidden = state.total <= PAGE && state.offset === 0;
    body.replaceChildren(...(rows.length ? rows.map(row) : [h('tr', h('td.empty', { colspan: 9 }, filtered ? 'No job matches.' : 'No jobs are configured yet.'))]));
    applyWidths(body);
  }

  function row(j) {
    const st = status(j);
    const stateCell = st === 'running' ? h('span.badge.s-running', 'Running')
      : st === 'disabled' ? h('span.badge.s-disabled', 'Disabled')
        : j.last_result ? h('div.last', badge(j.last_result.status), ago(j.last_result.finished || j.last_result.scheduled))
          : h('span.muted', 'No runs yet');
    return h('tr', { dataset: { job: j.name } },
      h('td.job-cell', h('a.job-name', { href: `#/job/${encodeURIComponent(j.name)}` }, j.name), j.description ? h('div.sub', j.description) : null),
      h('td', h('span.tag', j.group)),
      h('td', h('code.sched', j.schedule), h('div.sub', j.timezone)),
      h('td', h('code.target', j.targets)),
      h('td.next', j.next_runs.length ? countdown(j.next_runs[0]) : h('span.muted', '—')),
      h('td', stateCell),
      h('td', rateBar(j.success_rate)),
      h('td', historyStrip(j.history)),
      h('td.actions', can.operate() ? h('button.btn.btn-small', { type: 'button', title: `Run ${j.name} now`, 'aria-label': `Run ${j.name} now`, onclick: (e) => runNow(j.name, e.currentTarget) }, '▶ Run now') : null));
  }

  let asked = 0;
  async function load() {
    const ask = ++asked;
    const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
    if (state.q) params.set('q', state.q);
    if (state.group) params.set('group', state.group);
    if (state.filter !== 'all') params.set('state', state.filter);
    try {
      const list = await api(`/api/v1/jobs?${params}`);
      if (ask !== asked) return; // a newer question is on its way
      if (list.jobs.length === 0 && state.offset > 0 && list.total > 0) {
        state.offset = Math.floor((list.total - 1) / PAGE) * PAGE;
        load();
        return;
      }
      state.jobs = list.jobs;
      state.total = list.total;
      const groups = list.groups;
      const current = state.group;
      groupSel.replaceChildren(h('option', { value: '' }, 'All groups'), ...groups.map((g) => h('option', { value: g, selected: g === current }, g)));
      draw();
    } catch (e) {
      body.replaceChildren(h('tr', h('td', { colspan: 9 }, failure(e))));
    }
  }

  const el = h('section.page',
    h('div.page-head', h('div', h('h1', 'Jobs'), count),
      h('div.toolbar', search, groupSel, h('div.chips', { role: 'group', 'aria-label': 'Filter by state' }, filters))),
    h('div.card.table-card', h('table.grid.jobs',
      h('thead', h('tr', ['Job', 'Group', 'Schedule', 'Targets', 'Next run', 'Last result', 'Success', 'History', ''].map((t) => h('th', { scope: 'col' }, t)))),
      body)),
    pager);
  body.append(h('tr', h('td', { colspan: 9 }, loading())));
  load();
  const off = live.on('overview', () => load());
  const timer = setInterval(load, 30_000);
  return { el, dispose: () => { off(); clearInterval(timer); } };
}

// ---------------------------------------------------------------- a job

export function jobView({ name }) {
  const el = h('section.page', loading());
  let timer;
  async function load() {
    let job, matrix, runs;
    try {
      [job, matrix, runs] = await Promise.all([
        api(`/api/v1/jobs/${encodeURIComponent(name)}`),
        api(`/api/v1/jobs/${encodeURIComponent(name)}/matrix?runs=40`),
        api(`/api/v1/runs?job=${encodeURIComponent(name)}&limit=15`),
      ]);
    } catch (e) { el.replaceChildren(failure(e)); return; }
    const d = job.definition;
    const defRows = [
      ['Command', h('pre.command', d.command)],
      ['Schedule', h('span', h('code', job.schedule), ' ', h('span.muted', job.timezone))],
      ['Targets', h('span', h('code', job.targets), ' ', h('span.muted', job.target_type))],
      ['Timeout', d.timeout ? fmtDuration(d.timeout * 1000) : 'none'],
      d.user ? ['User', d.user] : null,
      d.cwd ? ['Directory', h('code', d.cwd)] : null,
      d.batch_size ? ['Batch size', d.batch_size] : null,
      ['Overlap', d.allow_overlap ? 'allowed' : 'skipped while running'],
      ['Catch-up', d.catch_up],
      Object.keys(d.env).length ? ['Environment', h('div.env', Object.keys(d.env).map((k) => h('div', h('code', k), ' = ', h('span.redacted', 'redacted'))))] : null,
      ['Defined in', h('code.sub', d.file)],
    ].filter(Boolean);
    el.replaceChildren(
      h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Jobs'), h('span', '/'), h('span', name)),
      h('div.page-head',
        h('div', h('h1', name, ' ', h('span.tag', job.group), job.enabled ? null : h('span.badge.s-disabled', 'Disabled')), job.description ? h('p.muted', job.description) : null),
        h('div.toolbar', can.operate() ? h('button.btn.btn-primary', { type: 'button', onclick: async (e) => { if (await runNow(name, e.currentTarget)) setTimeout(load, 800); } }, '▶ Run now') : null)),
      h('div.stats',
        stat('Last result', job.last_result ? badge(job.last_result.status) : h('span.muted', 'none')),
        stat('Success rate', pct(job.success_rate), 'of the last 30 runs'),
        stat('Next run', job.next_runs.length ? countdown(job.next_runs[0]) : '—', job.next_runs.length ? fmtTime(job.next_runs[0]) : ''),
        stat('State', job.running ? h('span.badge.s-running', 'Running') : h('span.badge.s-idle', 'Idle'))),
      h('div.two',
        h('div.card', h('h2', 'Definition'), h('dl.def', defRows.map(([k, v]) => [h('dt', k), h('dd', v)]))),
        h('div.card', h('h2', 'Next runs ', h('span.muted.small', zoneName())), h('ol.next-list', job.next_runs.map((t) => h('li', h('span', fmtTime(t)), countdown(t)))))),
      h('div.card', h('h2', 'Results by minion'), heatmap(matrix)),
      h('div.card.table-card', h('h2', 'Recent runs'), runsTable(runs.runs, false)));
    applyWidths(el);
  }
  load();
  const off = live.on('overview', () => load());
  timer = setInterval(load, 30_000);
  return { el, dispose: () => { off(); clearInterval(timer); } };
}

function stat(label, value, hint) {
  return h('div.stat', h('div.stat-label', label), h('div.stat-value', value), hint ? h('div.stat-hint', hint) : null);
}

function heatmap(m) {
  if (!m.runs.length) return h('p.empty', 'No runs yet.');
  if (!m.minions.length) return h('p.empty', 'No minion results yet (runs were skipped or had no targets).');
  const runs = [...m.runs].reverse();
  const n = runs.length;
  const cell = (code, r) => {
    const cls = code === null ? (r.status === 'running' || r.status === 'pending' ? 'hm-run' : 'hm-none') : code === 0 ? 'hm-ok' : code === 143 ? 'hm-killed' : 'hm-bad';
    return h(`a.hm.${cls}`, { href: `#/run/${encodeURIComponent(r.instance)}`, title: `${fmtTime(r.scheduled)} · ${code === null ? r.status : 'exit ' + code}` });
  };
  return h('div.heatmap-wrap',
    h('table.heatmap', { 'aria-label': 'exit codes by minion (rows) and run (columns, oldest first)' },
      h('tbody', m.minions.map((minion) => h('tr', h('th', { scope: 'row' }, minion),
        ...m.cells[minion].slice().reverse().map((code, i) => h('td', cell(code, runs[i]))))))),
    h('div.legend', h('span.hm.hm-ok'), 'exit 0', h('span.hm.hm-bad'), 'failed', h('span.hm.hm-killed'), 'killed', h('span.hm.hm-run'), 'running', h('span.hm.hm-none'), 'no result',
      h('span.muted', ` · ${n} run${n === 1 ? '' : 's'}, oldest left`)));
}

export function runsTable(runs, withJob = true) {
  if (!runs.length) return h('p.empty', 'No runs.');
  return h('table.grid',
    h('thead', h('tr', [withJob ? 'Job' : null, 'Scheduled', 'Trigger', 'Status', 'Duration', 'Instance'].filter(Boolean).map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', runs.map((r) => h('tr',
      withJob ? h('td', h('a', { href: `#/job/${encodeURIComponent(r.job)}` }, r.job)) : null,
      h('td', fmtTime(r.scheduled)),
      h('td', h('span.trigger', r.trigger)),
      h('td', badge(r.status), r.reason ? h('div.sub', r.reason) : null),
      h('td', fmtDuration(runDuration(r))),
      h('td', h('a.mono', { href: `#/run/${encodeURIComponent(r.instance)}` }, r.instance))))));
}

// ---------------------------------------------------------------- all runs

export function runsView() {
  const state = { status: '', job: '', next: null, runs: [] };
  const list = h('div');
  const more = h('button.btn.btn-ghost', { type: 'button', hidden: true, onclick: () => load(true) }, 'Load more');
  const statusSel = h('select', { 'aria-label': 'Status', onchange: (e) => { state.status = e.target.value; load(false); } },
    ['', 'running', 'succeeded', 'failed', 'killed', 'skipped', 'cancelled', 'pending'].map((s) => h('option', { value: s }, s || 'Any status')));
  const jobInput = h('input.search', { type: 'search', placeholder: 'Job name', 'aria-label': 'Job', oninput: debounce((e) => { state.job = e.target.value.trim(); load(false); }, 300) });
  async function load(append) {
    const q = new URLSearchParams({ limit: '50' });
    if (state.status) q.set('status', state.status);
    if (state.job) q.set('job', state.job);
    if (append && state.next) q.set('cursor', state.next);
    try {
      const page = await api(`/api/v1/runs?${q}`);
      state.runs = append ? state.runs.concat(page.runs) : page.runs;
      state.next = page.next || null;
      list.replaceChildren(runsTable(state.runs));
      more.hidden = !state.next;
    } catch (e) { list.replaceChildren(failure(e)); }
  }
  load(false);
  const off = live.on('overview', () => { if (!state.next) load(false); });
  return {
    el: h('section.page', h('div.page-head', h('h1', 'Runs'), h('div.toolbar', jobInput, statusSel)), h('div.card.table-card', list), h('div.center', more)),
    dispose: off,
  };
}

// ---------------------------------------------------------------- maintenance

export function maintenanceView() {
  const el = h('section.page', loading());
  async function load() {
    let m;
    try { m = await api('/api/v1/maintenance'); } catch (e) { el.replaceChildren(failure(e)); return; }
    const scope = h('select#m-scope', { name: 'scope', onchange: () => { targetRow.hidden = scope.value === 'global'; typeSel.hidden = scope.value !== 'target'; } },
      h('option', { value: 'minion' }, 'One minion'), h('option', { value: 'target' }, 'Target expression'), h('option', { value: 'global' }, 'Whole fleet'));
    const target = h('input#m-target', { name: 'target', placeholder: 'web01.example.com or web*', autocomplete: 'off' });
    const typeSel = h('select#m-type', { name: 'target_type', hidden: true, 'aria-label': 'Target type' },
      ['glob', 'pcre', 'list', 'grain', 'grain_pcre', 'pillar', 'nodegroup', 'compound', 'ipcidr'].map((t) => h('option', { value: t }, t)));
    const targetRow = h('div.field', h('label', { for: 'm-target' }, 'Minion or target'), h('div.inline', target, typeSel));
    const why = h('input#m-why', { name: 'why', required: true, placeholder: 'Disk replacement, ticket OPS-1234' });
    const until = h('input#m-until', { name: 'until', type: 'datetime-local', 'aria-label': 'Until' });
    const form = h('form.card.m-form', {
      onsubmit: async (e) => {
        e.preventDefault();
        const body = { scope: scope.value, why: why.value };
        if (scope.value !== 'global') body.target = target.value;
        if (scope.value === 'target') body.target_type = typeSel.value;
        if (until.value) body.until = new Date(until.value).toISOString();
        try {
          await api('/api/v1/maintenance', { method: 'POST', body });
          toast('Maintenance set', 'success');
          load();
        } catch (err) { toast(err.message, 'error'); }
      },
    }, h('h2', 'Put machines in maintenance'),
    h('div.field', h('label', { for: 'm-scope' }, 'Scope'), scope), targetRow,
    h('div.field', h('label', { for: 'm-why' }, 'Why'), why),
    h('div.field', h('label', { for: 'm-until' }, 'Until (optional)'), until),
    h('button.btn.btn-primary', { type: 'submit' }, 'Start maintenance'));
    const eff = m.effective;
    el.replaceChildren(
      h('div.page-head', h('h1', 'Maintenance')),
      h(`div.banner.${eff.global ? 'banner-warn' : eff.machines.length ? 'banner-info' : 'banner-ok'}`,
        eff.global ? 'The whole fleet is in maintenance: no new run starts.'
          : eff.machines.length ? `${eff.machines.length} minion${eff.machines.length > 1 ? 's are' : ' is'} in maintenance and skipped by every run: ${eff.machines.join(', ')}`
            : 'No machine is in maintenance.'),
      h('div.two.two-wide',
        h('div.card.table-card', h('h2', 'Set through the UI and API'),
          m.entries.length ? h('table.grid', h('thead', h('tr', ['Scope', 'Covers', 'Who', 'Why', 'Since', 'Until', ''].map((t) => h('th', t)))),
            h('tbody', m.entries.map((e) => h('tr',
              h('td', h('span.tag', e.scope)),
              h('td.nowrap', e.target ? h('code', e.target) : 'every minion', e.target_type ? h('div.sub', e.target_type + (e.minions ? ` · ${e.minions.length} minions` : '')) : null),
              h('td.nowrap', e.who), h('td', e.why), h('td.nowrap', fmtTime(e.created, false)), h('td.nowrap', e.until ? countdown(e.until) : h('span.muted', 'until ended')),
              h('td.actions', can.operate() ? h('button.btn.btn-small.btn-ghost', { type: 'button', onclick: async () => {
                if (!await confirmDialog('End maintenance?', `Runs will include ${e.target || 'the fleet'} again.`, 'End maintenance', false)) return;
                try { await api(`/api/v1/maintenance/${e.id}`, { method: 'DELETE' }); toast('Maintenance ended', 'success'); load(); } catch (err) { toast(err.message, 'error'); }
              } }, 'End') : null)))))
            : h('p.empty', 'Nothing set here.')),
        can.operate() ? form : h('div.card', h('h2', 'Put machines in maintenance'), h('p.muted', 'Your token has the viewer role; operators can set maintenance.'))),
      h('div.card', h('h2', 'From the configuration files'),
        h('p.muted', 'saltpeter_maintenance in the config directory (and pillar). Edit the files to change it; entries above add to it.'),
        m.file.global || m.file.machines.length
          ? h('p', m.file.global ? 'global: true. ' : '', m.file.machines.length ? ['machines: ', m.file.machines.map((x) => h('code.pill', x))] : '')
          : h('p.empty', 'Nothing.')));
  }
  load();
  return { el };
}

// ---------------------------------------------------------------- audit

export function auditView() {
  const el = h('section.page', loading());
  api('/api/v1/audit?limit=200').then((rows) => {
    el.replaceChildren(h('div.page-head', h('h1', 'Audit log'), h('span.count', 'Every run-now, kill, maintenance change and reload, with the token that did it.')),
      h('div.card.table-card', rows.length ? h('table.grid', h('thead', h('tr', ['When', 'Token', 'Action', 'Detail'].map((t) => h('th', t)))),
        h('tbody', rows.map((r) => h('tr', h('td', fmtTime(r.at)), h('td', h('strong', r.actor)), h('td', h('span.tag', r.action)), h('td', linkify(r)))))) : h('p.empty', 'Nothing yet.')));
  }).catch((e) => el.replaceChildren(failure(e)));
  return { el };
}

function linkify(r) {
  if (r.action === 'run') return h('a', { href: `#/job/${encodeURIComponent(r.detail)}` }, r.detail);
  if (r.action === 'kill') {
    const inst = r.detail.split(' ')[0];
    return h('span', h('a.mono', { href: `#/run/${encodeURIComponent(inst)}` }, inst), r.detail.slice(inst.length));
  }
  return r.detail;
}

export { codeChip };

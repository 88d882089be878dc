// A run: its status and, per minion, live output (ANSI colours, \r progress), exit code,
// duration and a kill button. Output and status arrive on the WebSocket; the page asks for the
// run once over HTTP so it shows at once.

import { api, can, live } from './api.js';
import { Terminal } from './term.js';
import { badge, codeChip, fmtDuration, fmtTime, h, runDuration } from './util.js';
import { confirmDialog, toast } from './views.js';

export function runView({ instance }) {
  const minions = new Map(); // minion -> {card, term, offset, head}
  const header = h('div');
  const summary = h('div.stats');
  const list = h('div.minions');
  const el = h('section.page.run-page', header, summary, list);
  let run = null;
  let frame = 0;

  function scheduleRender() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      for (const m of minions.values()) if (m.dirty) { m.term.render(); m.dirty = false; }
    });
  }

  async function kill(minion) {
    const what = minion ? `${minion}'s part of this run` : 'every minion of this run';
    if (!await confirmDialog(minion ? `Kill ${minion}?` : 'Kill this run?', `SIGTERM goes to ${what}, SIGKILL after the grace period. The exit code will be 143.`, 'Kill')) return;
    const q = minion ? `?minion=${encodeURIComponent(minion)}` : '';
    try {
      await api(`/api/v1/runs/${encodeURIComponent(instance)}/kill${q}`, { method: 'POST' });
      toast(minion ? `Killing ${minion}…` : 'Killing the run…', 'success');
    } catch (e) { toast(`Cannot kill: ${e.message}`, 'error'); }
  }

  function minionCard(name) {
    let m = minions.get(name);
    if (m) return m;
    const pre = h('div.term', { role: 'log', 'aria-label': `output of ${name}`, tabindex: '0' });
    const head = h('div.minion-head');
    const card = h('article.card.minion', { dataset: { minion: name } }, head, pre);
    m = { card, head, term: new Terminal(pre), offset: 0, dirty: false };
    minions.set(name, m);
    const sorted = [...minions.keys()].sort();
    const idx = sorted.indexOf(name);
    const after = sorted[idx + 1] && minions.get(sorted[idx + 1]).card;
    list.insertBefore(card, after || null);
    return m;
  }

  function drawHeader() {
    const open = run.status === 'running' || run.status === 'pending';
    header.replaceChildren(
      h('nav.crumbs', { 'aria-label': 'Breadcrumb' }, h('a', { href: '#/' }, 'Jobs'), h('span', '/'), h('a', { href: `#/job/${encodeURIComponent(run.job)}` }, run.job), h('span', '/'), h('span.mono', run.instance)),
      h('div.page-head',
        h('div', h('h1', run.job, ' ', h('span.run-status', badge(run.status))), h('p.muted', `${run.trigger} run · scheduled ${fmtTime(run.scheduled)}`, run.reason ? ` · ${run.reason}` : '')),
        h('div.toolbar', open && can.operate() ? h('button.btn.btn-danger', { type: 'button', id: 'kill-run', onclick: () => kill(null) }, '■ Kill run') : null)));
    const results = run.results || [];
    const ok = results.filter((r) => r.retcode === 0).length;
    const bad = results.filter((r) => r.retcode !== null && r.retcode !== 0).length;
    summary.replaceChildren(
      statBox('Minions', String(results.length)),
      statBox('Succeeded', String(ok), 'ok'),
      statBox('Failed', String(bad), bad ? 'bad' : ''),
      statBox('Started', run.started ? fmtTime(run.started).slice(11) : '—', '', run.started ? fmtTime(run.started).slice(0, 10) : ''),
      statBox('Duration', h('span', { dataset: open && run.started ? { since: run.started } : {} }, fmtDuration(runDuration(run)))));
  }

  function drawMinion(r) {
    const m = minionCard(r.minion);
    const open = r.retcode === null && (run.status === 'running' || run.status === 'pending');
    const dur = r.started ? (r.finished ? new Date(r.finished) - new Date(r.started) : null) : null;
    m.card.classList.toggle('is-ok', r.retcode === 0);
    m.card.classList.toggle('is-bad', r.retcode !== null && r.retcode !== 0);
    m.head.replaceChildren(...[
      h('h2', r.minion),
      h('span.phase', r.phase),
      h('span.code-wrap', 'exit ', codeChip(r.retcode)),
      h('span.muted', dur !== null ? fmtDuration(dur) : r.started ? h('span', { dataset: { since: r.started } }, fmtDuration(Date.now() - new Date(r.started))) : ''),
      r.reason ? h('span.reason', r.reason) : null,
      r.output_dropped ? h('span.muted', `${r.output_dropped} bytes dropped by the output cap`) : null,
      h('span.spacer'),
      open && can.operate() ? h('button.btn.btn-small.btn-danger-ghost', { type: 'button', onclick: () => kill(r.minion), 'aria-label': `Kill ${r.minion}` }, 'Kill') : null,
    ].filter(Boolean));
  }

  function onRun(msg) {
    if (msg.run.instance !== instance) return;
    run = msg.run;
    drawHeader();
    for (const r of run.results || []) drawMinion(r);
    if (!(run.results || []).length) list.replaceChildren(h('p.empty', run.status === 'pending' ? 'Resolving the target…' : 'No minion took part in this run.'));
    else list.querySelector(':scope > p.empty')?.remove();
  }

  function onOutput(msg) {
    if (msg.instance !== instance) return;
    const m = minionCard(msg.minion);
    if (msg.offset === 0 && m.offset > 0) { m.term.clear(); m.offset = 0; }
    if (msg.offset !== m.offset) return;
    m.term.write(msg.data);
    m.offset += new TextEncoder().encode(msg.data).length;
    m.dirty = true;
    scheduleRender();
  }

  api(`/api/v1/runs/${encodeURIComponent(instance)}`).then((r) => onRun({ run: r }))
    .catch((e) => header.replaceChildren(h('div.empty.empty-error', h('strong', 'Could not load this run.'), h('p', e.message))));
  const offs = [live.on('run', onRun), live.on('output', onOutput), live.on('state', ({ state }) => {
    // After a reconnect the server sends the output again from the start.
    if (state === 'open') for (const m of minions.values()) { m.offset = 0; m.term.clear(); }
  })];
  live.watchRun(instance);
  return {
    el,
    dispose: () => { offs.forEach((f) => f()); live.unwatch(); if (frame) cancelAnimationFrame(frame); },
  };
}

function statBox(label, value, tone = '', hint = '') {
  return h(`div.stat${tone ? '.stat-' + tone : ''}`, h('div.stat-label', label), h('div.stat-value', value), hint ? h('div.stat-hint', hint) : null);
}

// The timeline: every run over a time range, one lane per job, a bar from start to finish
// coloured by outcome (running runs reach "now"). Runs come from GET /api/v1/runs by time range,
// a page at a time; the page follows the live stream and refreshes itself.

import { api, live } from './api.js';
import { fmtDuration, fmtTime, h, useUtc } from './util.js';

const RANGES = [['15m', 900e3, '15 minutes'], ['1h', 3600e3, '1 hour'], ['6h', 6 * 3600e3, '6 hours'], ['24h', 24 * 3600e3, '24 hours'], ['7d', 7 * 24 * 3600e3, '7 days']];
/** The most runs one view reads (5 pages of the API's largest). */
const MOST = 5000;
const STATUSES = ['succeeded', 'failed', 'killed', 'running', 'skipped'];

/** Tick spacing for a span: about 6 to 12 labelled ticks. */
function tickStep(span) {
  const steps = [60e3, 2 * 60e3, 5 * 60e3, 10 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 2 * 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 24 * 3600e3];
  return steps.find((s) => span / s <= 12) || 24 * 3600e3;
}

/** HH:MM within a day; with the date over longer ranges. */
function tickLabel(ms, step, width) {
  const text = fmtTime(new Date(ms).toISOString(), false);
  if (step >= 24 * 3600e3) return text.slice(5, 10);
  return width > 24 * 3600e3 ? text.slice(5) : text.slice(11);
}

/** Where a tick falls: whole steps in the shown zone (UTC or local). */
function firstTick(from, step) {
  const offset = useUtc() ? 0 : -new Date(from).getTimezoneOffset() * 60e3;
  return Math.ceil((from + offset) / step) * step - offset;
}

export function timelineView(_params) {
  const state = { range: sessionStorage.getItem('timeline.range') || '6h', q: '', runs: [], truncated: false, loadedAt: 0 };
  const lanes = h('div.tl-lanes');
  const axis = h('div.tl-axis');
  const summary = h('span.count');
  const chips = RANGES.map(([key, , label]) => h('button.chip', {
    type: 'button', 'aria-pressed': key === state.range ? 'true' : 'false', title: `The last ${label}`, dataset: { range: key },
    onclick: (e) => {
      state.range = key;
      sessionStorage.setItem('timeline.range', key);
      for (const c of chips) c.setAttribute('aria-pressed', c === e.currentTarget ? 'true' : 'false');
      load();
    },
  }, key));
  const search = h('input.search', { type: 'search', placeholder: 'Filter jobs…', 'aria-label': 'Filter timeline jobs',
    oninput: (e) => { state.q = e.target.value.toLowerCase(); draw(); } });

  function span() {
    const [, ms] = RANGES.find(([k]) => k === state.range) || RANGES[2];
    const to = Date.now();
    return { from: to - ms, to };
  }

  async function load() {
    const { from, to } = span();
    const runs = [];
    let cursor = '';
    let truncated = false;
    try {
      for (;;) {
        const params = new URLSearchParams({ since: new Date(from - 3600e3).toISOString(), until: new Date(to + 60e3).toISOString(), limit: 1000 });
        if (cursor) params.set('cursor', cursor);
        const page = await api(`/api/v1/runs?${params}`);
        runs.push(...page.runs);
        if (!page.next) break;
        if (runs.length >= MOST) { truncated = true; break; }
        cursor = page.next;
      }
    } catch (e) {
      lanes.replaceChildren(h('div.empty.empty-error', h('strong', 'Could not load the runs.'), h('p', e.message)));
      return;
    }
    Object.assign(state, { runs, truncated, from, to, loadedAt: Date.now() });
    draw();
  }

  function draw() {
    const { from, to } = state;
    if (!from) return;
    const width = to - from;
    const pos = (ms) => Math.min(100, Math.max(0, ((ms - from) / width) * 100));
    const step = tickStep(width);
    const ticks = [];
    for (let t = firstTick(from, step); t < to; t += step) ticks.push(t);
    axis.replaceChildren(h('div.tl-label', useUtc() ? 'UTC' : 'Local time'),
      h('div.tl-track', ticks.map((t) => h('span.tl-tick', { dataset: { left: pos(t) } }, tickLabel(t, step, width))),
        h('span.tl-now', { dataset: { left: 100 }, title: 'now' })));

    const byJob = new Map();
    let shown = 0;
    const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    for (const r of state.runs) {
      const start = Date.parse(r.started || r.scheduled);
      const end = r.finished ? Date.parse(r.finished) : (r.status === 'running' || r.status === 'pending' ? Date.now() : start);
      if (end < from || start > to) continue;
      if (state.q && !`${r.job} ${r.group}`.toLowerCase().includes(state.q)) continue;
      if (!byJob.has(r.job)) byJob.set(r.job, []);
      byJob.get(r.job).push({ r, start, end });
      shown += 1;
      const key = r.status === 'pending' ? 'running' : r.status === 'cancelled' ? 'skipped' : r.status;
      if (key in counts) counts[key] += 1;
    }
    summary.textContent = `${shown} runs of ${byJob.size} jobs${state.truncated ? ` (the newest ${MOST} runs only)` : ''}`;
    legend.replaceChildren(...STATUSES.map((s) => h('span.tl-key', h(`span.tl-swatch.s-${s}`), `${s} ${counts[s]}`)));
    if (!byJob.size) {
      lanes.replaceChildren(h('div.empty', h('strong', 'No runs in this range.'), h('p.muted', 'Pick a longer range, or wait for the next slot.')));
      return;
    }
    const grid = ticks.map((t) => h('span.tl-grid', { dataset: { left: pos(t) } }));
    lanes.replaceChildren(...[...byJob.keys()].sort().map((job) => h('div.tl-lane',
      h('a.tl-label', { href: `#/job/${encodeURIComponent(job)}`, title: job }, job),
      h('div.tl-track', grid.map((g) => g.cloneNode()), byJob.get(job).map(({ r, start, end }) => {
        const left = pos(start);
        const dur = r.started ? fmtDuration((r.finished ? Date.parse(r.finished) : Date.now()) - Date.parse(r.started)) : r.reason || r.status;
        return h(`a.tl-bar.s-${r.status}`, {
          href: `#/run/${encodeURIComponent(r.instance)}`,
          title: `${job} · ${r.status} · ${fmtTime(r.started || r.scheduled)} · ${dur}`,
          'aria-label': `${job} ${r.status} at ${fmtTime(r.started || r.scheduled)}`,
          dataset: { left, w: Math.max(0, pos(end) - left) },
        });
      })))));
    place(lanes);
    place(axis);
  }

  /** Positions come from data attributes (the page's CSP allows no inline styles in markup). */
  function place(root) {
    for (const el of root.querySelectorAll('[data-left]')) el.style.left = `${el.dataset.left}%`;
    for (const el of root.querySelectorAll('[data-w]')) el.style.width = `${el.dataset.w}%`;
  }

  const legend = h('div.tl-legend');
  const el = h('section.page',
    h('div.page-head', h('div', h('h1', 'Timeline'), summary),
      h('div.toolbar', search, h('div.chips', { role: 'group', 'aria-label': 'Time range' }, chips))),
    h('div.card.tl', axis, lanes, legend));
  lanes.append(h('div.loading', h('span.spinner'), 'Loading…'));
  load();
  const off = live.on('overview', () => { if (Date.now() - state.loadedAt > 2000) load(); });
  const timer = setInterval(load, 15_000);
  return { el, dispose: () => { off(); clearInterval(timer); } };
}

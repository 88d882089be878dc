// Small helpers: building elements, formatting times and durations, status badges.

/** Creates an element: h('a.link', {href: '#/'}, 'text', child). */
export function h(tag, attrs, ...children) {
  const [head, ...classes] = tag.split('.');
  const [name, id] = head.split('#');
  const el = document.createElement(name || 'div');
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className += (el.className ? ' ' : '') + v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const prefs = { utc: localStorage.getItem('saltpeter.utc') === '1' };

export function useUtc() { return prefs.utc; }
export function setUtc(on) {
  prefs.utc = on;
  localStorage.setItem('saltpeter.utc', on ? '1' : '0');
}

const pad = (n) => String(n).padStart(2, '0');

/** 2026-11-23 14:05:09 in the chosen zone. */
export function fmtTime(iso, withSeconds = true) {
  if (!iso) return '—';
  const d = new Date(iso);
  const [y, mo, da, hh, mi, ss] = prefs.utc
    ? [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()];
  return `${y}-${pad(mo)}-${pad(da)} ${pad(hh)}:${pad(mi)}${withSeconds ? ':' + pad(ss) : ''}`;
}

export function zoneName() { return prefs.utc ? 'UTC' : 'local'; }

/** 3h 05m, 42s, 1.2s */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  const neg = ms < 0; ms = Math.abs(ms);
  let out;
  if (ms < 1000) out = `${Math.round(ms)}ms`;
  else if (ms < 10_000) out = `${(ms / 1000).toFixed(1)}s`;
  else {
    const s = Math.floor(ms / 1000), d = Math.floor(s / 86400), hr = Math.floor(s / 3600) % 24,
      m = Math.floor(s / 60) % 60, sec = s % 60;
    out = d ? `${d}d ${hr}h` : hr ? `${hr}h ${pad(m)}m` : m ? `${m}m ${pad(sec)}s` : `${sec}s`;
  }
  return neg ? `-${out}` : out;
}

/** "in 4m 10s" / "3m ago" */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return '—';
  const diff = new Date(iso).getTime() - now;
  if (Math.abs(diff) < 1000) return 'now';
  return diff > 0 ? `in ${fmtDuration(diff)}` : `${fmtDuration(-diff)} ago`;
}

export function runDuration(run) {
  if (!run.started) return null;
  const end = run.finished ? new Date(run.finished) : new Date();
  return end - new Date(run.started);
}

const STATUS_LABEL = {
  pending: 'Pending', running: 'Running', succeeded: 'Succeeded', failed: 'Failed',
  skipped: 'Skipped', cancelled: 'Cancelled', killed: 'Killed',
};

export function badge(status) {
  return h(`span.badge.s-${status}`, { title: status }, STATUS_LABEL[status] || status);
}

/** Exit code chip: 0 green, 143 killed, others red; null while running. */
export function codeChip(code) {
  if (code === null || code === undefined) return h('span.code.code-none', { title: 'no exit code yet' }, '…');
  const cls = code === 0 ? 'ok' : code === 143 ? 'killed' : code === 124 ? 'timeout' : 'bad';
  const meaning = { 0: 'success', 124: 'timeout', 143: 'killed', 253: 'heartbeat lost', 255: 'error', 126: 'not executable', 127: 'not found' }[code];
  return h(`span.code.code-${cls}`, { title: meaning ? `exit ${code}: ${meaning}` : `exit ${code}` }, String(code));
}

export function pct(rate) {
  return rate === null || rate === undefined ? '—' : `${Math.round(rate * 100)}%`;
}

export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

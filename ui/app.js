// The shell: sign-in, the top bar, hash routes, the live connection, and one ticker that keeps
// countdowns and running durations current.

import { api, live, session, signOut } from './api.js';
import { runView } from './run.js';
import { timelineView } from './timeline.js';
import { fmtDuration, fmtRelative, h, setUtc, useUtc } from './util.js';
import { auditView, jobView, jobsView, loginView, maintenanceView, runsView } from './views.js';

const routes = [
  [/^#\/?$/, jobsView, 'jobs'],
  [/^#\/jobs$/, jobsView, 'jobs'],
  [/^#\/job\/(?<name>[^/]+)$/, jobView, 'jobs'],
  [/^#\/runs$/, runsView, 'runs'],
  [/^#\/run\/(?<instance>[^/]+)$/, runView, 'runs'],
  [/^#\/timeline$/, timelineView, 'timeline'],
  [/^#\/maintenance$/, maintenanceView, 'maintenance'],
  [/^#\/audit$/, auditView, 'audit'],
];

let current = null;
const app = document.getElementById('app');
const main = h('main#view', { id: 'view', tabindex: '-1' });
const liveDot = h('span.live', { title: 'live updates' }, h('span.dot'), 'Live');
const zoneBtn = h('button.btn.btn-small.btn-top', { type: 'button', 'aria-pressed': useUtc() ? 'true' : 'false', id: 'zone-toggle', title: 'Show times in UTC or in this browser\'s zone',
  onclick: () => { setUtc(!useUtc()); zoneBtn.textContent = useUtc() ? 'UTC' : 'Local time'; zoneBtn.setAttribute('aria-pressed', useUtc() ? 'true' : 'false'); route(); } },
useUtc() ? 'UTC' : 'Local time');
const who = h('span.who');
const nav = h('nav.mainnav', { 'aria-label': 'Main' },
  [['#/', 'Jobs', 'jobs'], ['#/runs', 'Runs', 'runs'], ['#/timeline', 'Timeline', 'timeline'], ['#/maintenance', 'Maintenance', 'maintenance'], ['#/audit', 'Audit', 'audit']]
    .map(([href, label, key]) => h('a', { href, dataset: { key } }, label)));
const shell = h('div.shell',
  h('header.topbar', h('a.brand', { href: '#/' }, h('img', { src: '/assets/favicon.svg', alt: '' }), 'Saltpeter'), nav, h('span.spacer'), liveDot, zoneBtn, who,
    h('button.btn.btn-small.btn-top', { type: 'button', onclick: () => { live.ws?.close(); signOut(); route(); } }, 'Sign out')),
  main, h('div#toasts', { id: 'toasts', 'aria-live': 'polite' }));

live.on('state', ({ state }) => liveDot.classList.toggle('off', state !== 'open'));

function mount(view, key) {
  if (current?.dispose) current.dispose();
  current = view;
  main.replaceChildren(view.el);
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.key === key);
}

function route() {
  const hash = location.hash || '#/';
  if (!session.me) {
    if (current?.dispose) current.dispose();
    current = loginView({}, { signedIn });
    app.replaceChildren(current.el);
    current.el.querySelector('input')?.focus();
    return;
  }
  if (hash === '#/login') { location.hash = '#/'; return; }
  if (!app.contains(shell)) app.replaceChildren(shell);
  for (const [re, view, key] of routes) {
    const m = hash.match(re);
    if (m) {
      const params = Object.fromEntries(Object.entries(m.groups || {}).map(([k, v]) => [k, decodeURIComponent(v)]));
      mount(view(params), key);
      return;
    }
  }
  mount({ el: h('section.page', h('div.empty', h('strong', 'Nothing here.'), h('p', h('a', { href: '#/' }, 'Back to the jobs')))) }, '');
}

function signedIn() {
  who.replaceChildren(h('span.who-name', session.me.name), h('span.role', session.me.role));
  live.connect();
  if (location.hash === '#/login') location.hash = '#/'; else route();
}

// One ticker for every countdown, "ago" and running duration on the page.
setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll('[data-at]')) el.textContent = fmtRelative(el.dataset.at, now);
  for (const el of document.querySelectorAll('[data-ago]')) el.textContent = fmtRelative(el.dataset.ago, now);
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = fmtDuration(now - new Date(el.dataset.since));
}, 1000);

window.addEventListener('hashchange', route);

(async () => {
  // With a remembered token, or on the master's loopback without tokens configured, the
  // sign-in page is skipped.
  try {
    session.me = await api('/api/v1/whoami');
    signedIn();
  } catch {
    session.me = null;
    route();
  }
})();

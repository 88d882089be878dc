// Talking to the sidecar: the token, JSON calls, the live WebSocket.

const KEY = 'saltpeter.token';

export const session = {
  token: localStorage.getItem(KEY) || sessionStorage.getItem(KEY) || '',
  me: null,
};

export function signIn(token, remember) {
  session.token = token;
  (remember ? localStorage : sessionStorage).setItem(KEY, token);
}

export function signOut() {
  session.token = '';
  session.me = null;
  localStorage.removeItem(KEY);
  sessionStorage.removeItem(KEY);
  location.hash = '#/login';
}

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API; answers parsed JSON (or text for non-JSON bodies). */
export async function api(path, { method = 'GET', body, raw = false } = {}) {
  const headers = {};
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && !path.endsWith('/whoami')) {
    signOut();
    throw new ApiError(401, 'Your token is no longer valid. Sign in again.');
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch { /* not JSON */ }
    throw new ApiError(res.status, message);
  }
  if (raw) return res;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

export const can = {
  operate: () => session.me && (session.me.role === 'operator' || session.me.role === 'admin'),
  admin: () => session.me && session.me.role === 'admin',
};

/** The live stream: reconnects with backoff; `on(type, fn)` subscribes to a message type. */
class Live {
  constructor() { this.handlers = new Map(); this.watch = null; this.backoff = 500; this.state = 'closed'; }
  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }
  emit(type, msg) { for (const fn of this.handlers.get(type) || []) fn(msg); }
  connect() {
    if (this.ws && this.ws.readyState <= 1) return;
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${proto}://${location.host}/ws${session.token ? `?token=${encodeURIComponent(session.token)}` : ''}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.send({ type: 'hello' });
      this.setState('open');
      if (this.watch) this.send({ type: 'watch_run', instance: this.watch });
    };
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this.emit(msg.type, msg);
    };
    ws.onclose = () => {
      this.setState('closed');
      if (!session.token && session.me === null) return;
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10_000);
    };
  }
  setState(s) { this.state = s; this.emit('state', { state: s }); }
  send(msg) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(msg)); }
  watchRun(instance) { this.watch = instance; this.send({ type: 'watch_run', instance }); }
  unwatch() { this.watch = null; this.send({ type: 'unwatch_run' }); }
}

export const live = new Live();

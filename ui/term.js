// A small terminal for job output: ANSI SGR styles (16, 256 and true colours, bold, dim,
// italic, underline), carriage return (progress bars redraw their line), erase-line, and
// backspace. Rendering is incremental: only lines that changed are rebuilt.

const MAX_LINES = 20_000;

const PALETTE_256 = (() => {
  const base = ['#1f2937', '#ef4444', '#22c55e', '#eab308', '#3b82f6', '#d946ef', '#06b6d4', '#e5e7eb',
    '#6b7280', '#f87171', '#4ade80', '#facc15', '#60a5fa', '#e879f9', '#22d3ee', '#ffffff'];
  const out = [...base];
  const steps = [0, 95, 135, 175, 215, 255];
  for (let r = 0; r < 6; r++) for (let g = 0; g < 6; g++) for (let b = 0; b < 6; b++)
    out.push(`rgb(${steps[r]},${steps[g]},${steps[b]})`);
  for (let i = 0; i < 24; i++) { const v = 8 + i * 10; out.push(`rgb(${v},${v},${v})`); }
  return out;
})();

function sameStyle(a, b) {
  return a.fg === b.fg && a.bg === b.bg && a.bold === b.bold && a.dim === b.dim && a.italic === b.italic && a.underline === b.underline;
}

export class Terminal {
  constructor(el) {
    this.el = el;
    this.lines = [[]]; // each line: array of {ch, st}
    this.col = 0;
    this.st = {};
    this.pending = '';
    this.dirtyFrom = 0;
    this.dropped = 0;
  }

  clear() { this.lines = [[]]; this.col = 0; this.st = {}; this.pending = ''; this.dirtyFrom = 0; this.el.textContent = ''; }

  write(text) {
    let s = this.pending + text;
    this.pending = '';
    const cur = () => this.lines[this.lines.length - 1];
    this.dirtyFrom = Math.min(this.dirtyFrom, this.lines.length - 1);
    for (let i = 0; i < s.length; i++) {
      const c = s[i];
      if (c === '\x1b') {
        if (i + 1 >= s.length) { this.pending = s.slice(i); break; }
        if (s[i + 1] !== '[') { i++; continue; }
        let j = i + 2;
        while (j < s.length && !/[@-~]/.test(s[j])) j++;
        if (j >= s.length) { this.pending = s.slice(i); break; }
        this.csi(s.slice(i + 2, j), s[j]);
        i = j;
      } else if (c === '\n') {
        this.lines.push([]);
        this.col = 0;
      } else if (c === '\r') {
        this.col = 0;
      } else if (c === '\b') {
        this.col = Math.max(0, this.col - 1);
      } else if (c === '\t') {
        const n = 8 - (this.col % 8);
        for (let k = 0; k < n; k++) this.put(cur(), ' ');
      } else if (c >= ' ' || c > '\x7f') {
        this.put(cur(), c);
      }
    }
    if (this.lines.length > MAX_LINES) {
      const cut = this.lines.length - MAX_LINES;
      this.lines.splice(0, cut);
      this.dropped += cut;
      this.dirtyFrom = 0;
      this.el.textContent = '';
    }
  }

  put(line, ch) {
    const cell = { ch, st: this.st };
    if (this.col < line.length) line[this.col] = cell; else {
      while (line.length < this.col) line.push({ ch: ' ', st: {} });
      line.push(cell);
    }
    this.col++;
  }

  csi(params, cmd) {
    const line = this.lines[this.lines.length - 1];
    if (cmd === 'K') {
      const mode = Number(params || 0);
      if (mode === 0) line.length = Math.min(line.length, this.col);
      else if (mode === 2) line.length = 0;
      return;
    }
    if (cmd === 'G') { this.col = Math.max(0, Number(params || 1) - 1); return; }
    if (cmd !== 'm') return;
    const p = params === '' ? [0] : params.split(';').map((x) => Number(x || 0));
    let st = { ...this.st };
    for (let k = 0; k < p.length; k++) {
      const n = p[k];
      if (n === 0) st = {};
      else if (n === 1) st.bold = true;
      else if (n === 2) st.dim = true;
      else if (n === 3) st.italic = true;
      else if (n === 4) st.underline = true;
      else if (n === 22) { st.bold = false; st.dim = false; }
      else if (n === 23) st.italic = false;
      else if (n === 24) st.underline = false;
      else if (n >= 30 && n <= 37) st.fg = PALETTE_256[n - 30];
      else if (n >= 90 && n <= 97) st.fg = PALETTE_256[n - 90 + 8];
      else if (n === 39) st.fg = undefined;
      else if (n >= 40 && n <= 47) st.bg = PALETTE_256[n - 40];
      else if (n >= 100 && n <= 107) st.bg = PALETTE_256[n - 100 + 8];
      else if (n === 49) st.bg = undefined;
      else if ((n === 38 || n === 48) && p[k + 1] === 5) {
        st[n === 38 ? 'fg' : 'bg'] = PALETTE_256[p[k + 2] & 255]; k += 2;
      } else if ((n === 38 || n === 48) && p[k + 1] === 2) {
        st[n === 38 ? 'fg' : 'bg'] = `rgb(${p[k + 2] | 0},${p[k + 3] | 0},${p[k + 4] | 0})`; k += 4;
      }
    }
    this.st = st;
  }

  lineElement(line) {
    const div = document.createElement('div');
    div.className = 'tl';
    let i = 0;
    while (i < line.length) {
      const st = line[i].st;
      let text = '';
      while (i < line.length && sameStyle(line[i].st, st)) { text += line[i].ch; i++; }
      if (!st.fg && !st.bg && !st.bold && !st.dim && !st.italic && !st.underline) {
        div.append(text);
      } else {
        const span = document.createElement('span');
        span.textContent = text;
        if (st.fg) span.style.color = st.fg;
        if (st.bg) span.style.backgroundColor = st.bg;
        if (st.bold) span.classList.add('b');
        if (st.dim) span.classList.add('d');
        if (st.italic) span.classList.add('i');
        if (st.underline) span.classList.add('u');
        div.append(span);
      }
    }
    if (!line.length) div.append('\u200b');
    return div;
  }

  /** Rebuilds the lines that changed since the last render. */
  render() {
    const stick = this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 40;
    // The trailing empty line after a final newline is not shown.
    const last = this.lines.length - (this.lines[this.lines.length - 1].length === 0 ? 1 : 0);
    while (this.el.childElementCount > this.dirtyFrom) this.el.lastElementChild.remove();
    const frag = document.createDocumentFragment();
    for (let i = this.dirtyFrom; i < last; i++) frag.append(this.lineElement(this.lines[i]));
    this.el.append(frag);
    this.dirtyFrom = Math.max(0, this.lines.length - 1);
    if (stick) this.el.scrollTop = this.el.scrollHeight;
  }

  text() { return this.lines.map((l) => l.map((c) => c.ch).join('')).join('\n'); }
}

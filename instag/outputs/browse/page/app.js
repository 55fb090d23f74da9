// instag browse: the page. Data arrive as <script>-loaded chunks (a file:// page may not
// fetch); every value from them is put in as text (textContent, attributes), never as HTML.
// Instrument names are data, never object keys (`__proto__`, `constructor` are names too):
// they arrive as lists of pairs and are kept in Maps and Sets.
"use strict";

const ROW = 76, STRIPS = 3, OVERSCAN = 8;
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// a row: [path, href, status, reason, duration, Map(instrument => [best, present, segments]),
//         playable, number] (its instruments arrive as [[instrument, best, present, segments]])
const INSTAG = window.INSTAG = {
  info: null, rows: [], shown: [], chunks: 0, loaded: false, selected: new Set(),
};

function load(src) {
  const s = document.createElement("script");
  s.src = src;
  s.onerror = () => { $("summary").textContent = "could not load " + src; };
  document.body.appendChild(s);
}

// called by data/meta.js, then by each data/chunk-NNNN.js, in order
INSTAG.meta = function (m) {
  INSTAG.info = m;
  const box = $("instruments");
  for (const [name, n] of m.counts) {
    const chip = el("span", "chip", `${name} ${n}`);
    chip.dataset.instrument = name;
    chip.addEventListener("click", () => {
      chip.classList.toggle("on");
      if (INSTAG.selected.has(name)) INSTAG.selected.delete(name); else INSTAG.selected.add(name);
      refilter();
    });
    box.appendChild(chip);
  }
  if (m.chunks) load("data/chunk-0000.js"); else finish();
};

INSTAG.chunk = function ([i, rows]) {
  for (const r of rows) {
    r[5] = new Map(r[5].map(([name, ...rest]) => [name, rest]));
    INSTAG.rows.push(r);
  }
  INSTAG.chunks = i + 1;
  if (i + 1 < INSTAG.info.chunks) load(`data/chunk-${String(i + 1).padStart(4, "0")}.js`);
  else finish();
  schedule();
};

function finish() { INSTAG.loaded = true; schedule(); }

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; refilter(); });
}

function best(r) {  // what "by probability" sorts on: the selected instruments', else any
  const names = INSTAG.selected.size ? [...INSTAG.selected] : [...r[5].keys()];
  let p = 0;
  for (const n of names) if (r[5].has(n)) p = Math.max(p, r[5].get(n)[0]);
  return p;
}

function matches(r, text, status, minp) {
  if (status === "ok" && r[2] !== "ok") return false;
  if (status === "failed" && r[2] === "ok") return false;
  if (text && !r[0].toLowerCase().includes(text)) return false;
  for (const n of INSTAG.selected) {
    const s = r[5].get(n);
    if (!s || (minp > 0 ? s[0] < minp : !s[1])) return false;
  }
  return true;
}

function refilter() {
  const text = $("search").value.trim().toLowerCase();
  const status = $("status").value, minp = parseFloat($("minp").value), sort = $("sort").value;
  $("minp-label").textContent = minp > 0 ? `≥ ${minp.toFixed(2)}` : "as tagged";
  const shown = INSTAG.rows.filter((r) => matches(r, text, status, minp));
  if (sort === "prob") shown.sort((a, b) => best(b) - best(a));
  else if (sort === "duration") shown.sort((a, b) => (b[4] || 0) - (a[4] || 0));
  else shown.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  INSTAG.shown = shown;
  const info = INSTAG.info || { files: 0, chunks: 0 };
  $("summary").textContent = `${shown.length} of ${INSTAG.rows.length} files` +
    (INSTAG.loaded ? "" : ` (loading: ${INSTAG.chunks} of ${info.chunks} parts, ${info.files} files)`);
  $("spacer").style.height = `${shown.length * ROW}px`;
  draw(true);
}

let drawn = "";
function draw(force) {
  const list = $("list"), spacer = $("spacer");
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - OVERSCAN);
  const last = Math.min(INSTAG.shown.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + OVERSCAN);
  const key = `${first}:${last}`;
  if (!force && key === drawn) return;
  drawn = key;
  spacer.replaceChildren();
  for (let i = first; i < last; i++) spacer.appendChild(row(INSTAG.shown[i], i));
}

function row(r, i) {
  const [path, , status, reason, duration, instruments, playable, num] = r;
  const div = el("div", "row" + (playable ? "" : " unplayable"));
  div.style.top = `${i * ROW}px`;
  div.dataset.num = num;
  const head = el("div", "head");
  head.appendChild(el("span", "path", path)).title = path;
  head.appendChild(el("span", "meta", duration == null ? "" : fmt(duration)));
  if (status !== "ok") head.appendChild(el("span", "failed", reason ? `${status}: ${reason}` : status));
  if (!playable) head.appendChild(el("span", "note", "not playable in a browser"));
  div.appendChild(head);
  const names = [...instruments.keys()].filter((n) => instruments.get(n)[1] || INSTAG.selected.has(n));
  names.sort((a, b) => (INSTAG.selected.has(b) - INSTAG.selected.has(a)) ||
    instruments.get(b)[0] - instruments.get(a)[0]);
  for (const n of names.slice(0, STRIPS)) {
    const [p, , segs] = instruments.get(n);
    const strip = el("div", "strip");
    strip.appendChild(el("span", "label", `${n} ${p.toFixed(2)}`));
    const track = el("div", "track");
    for (const [a, b] of segs) {
      const seg = el("div", "seg");
      seg.style.left = `${(100 * a) / (duration || b)}%`;
      seg.style.width = `${(100 * (b - a)) / (duration || b)}%`;
      seg.title = `${n}: ${fmt(a)}–${fmt(b)}, bag probability ${p.toFixed(3)}`;
      seg.dataset.start = a;
      seg.dataset.instrument = n;
      seg.addEventListener("click", () => play(r, a));
      track.appendChild(seg);
    }
    strip.appendChild(track);
    div.appendChild(strip);
  }
  if (names.length > STRIPS) div.appendChild(el("span", "note", `+${names.length - STRIPS} more`));
  return div;
}

function fmt(s) {
  const m = Math.floor(s / 60), r = s - 60 * m;
  return `${m}:${r.toFixed(1).padStart(4, "0")}`;
}

function play(r, start) {
  const [path, href, , , , , playable, num] = r;
  if (!playable) { $("playing").textContent = "not playable in a browser: " + path; return; }
  const player = $("player");
  // served: by number, relative to the page (its URL carries the server's token)
  const src = location.protocol.startsWith("http") ? `audio/${num}` : href;
  $("playing").textContent = path;
  const go = () => { player.currentTime = start; player.play().catch(() => {}); };
  if (player.dataset.src === src && player.readyState >= 1) { go(); return; }
  player.dataset.src = src;
  player.src = src;
  player.addEventListener("loadedmetadata", go, { once: true });
  player.load();
}

for (const id of ["search", "status", "minp", "sort"]) $(id).addEventListener("input", schedule);
$("list").addEventListener("scroll", () => requestAnimationFrame(() => draw(false)));
window.addEventListener("resize", () => draw(true));
load("data/meta.js");

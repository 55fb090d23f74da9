// instag browse: the page. Data arrive as <script>-loaded chunks (a file:// page may not
// fetch); every value from them is put in as text (textContent, attributes), never as HTML.
// Instrument names are data, never object keys (`__proto__`, `constructor` are names too):
// they arrive as lists of pairs and are kept in Maps and Sets. How a row looks: rows.js.
"use strict";

const OVERSCAN = 8;
const INSTAG = window.INSTAG = {
  info: null, rows: [], shown: [], chunks: 0, loaded: false, selected: new Set(),
  chips: new Map(), current: -1,  // the file playing or last played, by number
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
  const all = m.instruments || m.counts.map(([name]) => name);
  for (const name of all) colour(name);  // the model's order gives the colours
  const tagged = new Map(m.counts);
  const order = [...all].sort((a, b) => (tagged.get(b) || 0) - (tagged.get(a) || 0));
  for (const name of order) chip(name);
  if (m.chunks) load("data/chunk-0000.js"); else finish();
};

function chip(name) {  // every instrument of the model has one, also one tagged nowhere
  const c = el("button", "chip", name);
  c.type = "button";
  c.dataset.instrument = name;
  c.setAttribute("aria-pressed", "false");
  c.style.setProperty("--c", colour(name));
  c.addEventListener("click", () => {
    const on = !INSTAG.selected.has(name);
    if (on) INSTAG.selected.add(name); else INSTAG.selected.delete(name);
    c.classList.toggle("on", on);
    c.setAttribute("aria-pressed", String(on));
    refilter();
    if (VIEW.data) drawView();  // the view shows the instruments chosen too
  });
  $("instruments").appendChild(c);
  INSTAG.chips.set(name, c);
}

INSTAG.chunk = function ([i, rows]) {
  for (const r of rows) {
    r[5] = new Map(r[5].map(([name, ...rest]) => [name, rest]));
    r[9] = (r[0] + "\n" + (r[8] ? r[8].join("\n") : "")).toLowerCase();  // what search sees
    INSTAG.rows.push(r);
  }
  INSTAG.chunks = i + 1;
  if (i + 1 < INSTAG.info.chunks) load(`data/chunk-${String(i + 1).padStart(4, "0")}.js`);
  else finish();
  schedule();
};

function finish() { INSTAG.loaded = true; schedule(); }

// one redraw per frame; while the parts load, one every LOADING_MS after the first rows
const LOADING_MS = 250;
let pending = false, last = 0;
function schedule() {
  if (pending) return;
  pending = true;
  const wait = INSTAG.loaded || !last ? 0 : Math.max(0, last + LOADING_MS - performance.now());
  setTimeout(() => requestAnimationFrame(() => {
    pending = false;
    last = performance.now();
    refilter();
  }), wait);
}

// what each sort compares, per file by its number (computed once per file, when first asked);
// files without the key (no tags) come after those with it; equal keys keep the output's order
// (a stable sort)
const KEYS = {
  path: (r) => r[0],
  artist: (r) => r[8] && r[8][0] ? [r[8][0], r[8][2], r[8][1]].join("\0").toLowerCase() : null,
  album: (r) => r[8] && r[8][2] ? [r[8][2], r[8][1]].join("\0").toLowerCase() : null,
  title: (r) => r[8] && r[8][1] ? r[8][1].toLowerCase() : null,
  duration: (r) => -(r[4] || 0),
};
const keys = new Map();
function sortBy(shown, sort) {
  if (sort === "prob") {
    const p = new Map(shown.map((r) => [r, best(r)]));
    shown.sort((a, b) => p.get(b) - p.get(a));
    return;
  }
  const k = keys.get(sort) || keys.set(sort, []).get(sort), key = KEYS[sort];
  for (let i = k.length; i < INSTAG.rows.length; i++) k.push(key(INSTAG.rows[i]));
  shown.sort((a, b) => {
    const x = k[a[7]], y = k[b[7]];
    return x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1;
  });
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
  if (text && !r[9].includes(text)) return false;
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
  const rows = INSTAG.rows, shown = [], counts = new Map();
  for (const r of rows) {
    if (!matches(r, text, status, minp)) continue;
    shown.push(r);
    for (const [n, s] of r[5]) {  // the chips count what the filters show
      if (minp > 0 ? s[0] >= minp : s[1]) counts.set(n, (counts.get(n) || 0) + 1);
    }
  }
  sortBy(shown, sort);
  for (const [name, c] of INSTAG.chips) c.textContent = `${name} ${counts.get(name) || 0}`;
  INSTAG.shown = shown;
  const info = INSTAG.info || { files: 0, chunks: 0 };
  $("summary").textContent = `${shown.length} of ${rows.length} files` +
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
  for (let i = first; i < last; i++) {
    spacer.appendChild(row(INSTAG.shown[i], i, INSTAG.selected, INSTAG.current, play, openView));
  }
}

function play(r, start) {
  const [path, href, , , , , playable, num] = r;
  INSTAG.current = num;
  draw(true);
  if (!$("view").hidden && VIEW.num !== num && r[2] === "ok") followSoon(r);
  const name = songName(r) || path;
  if (r[2] !== "ok") { $("playing").textContent = "not tagged, so not played: " + name; return; }
  if (!playable) { $("playing").textContent = "not playable in a browser: " + name; return; }
  const player = $("player");
  // served: by number, relative to the page (its URL carries the server's token)
  const src = location.protocol.startsWith("http") ? `audio/${num}` : href;
  $("playing").textContent = name;
  $("playing").title = path;
  const go = () => { player.currentTime = start; player.play().catch(() => {}); };
  if (player.dataset.src === src && player.readyState >= 1) { go(); return; }
  player.dataset.src = src;
  player.dataset.num = num;
  player.src = src;
  starting = go;
  player.addEventListener("loadedmetadata", () => { if (starting === go) go(); starting = null; },
    { once: true });
  player.load();
}
let starting = null;  // the start of a file still loading (space before it plays: stays paused)

// keyboard: space plays or pauses, arrows go to the next or previous file shown; never while
// typing in the search box or choosing in a select (nor on a button, where space presses it)
function step(by) {
  const shown = INSTAG.shown;
  if (!shown.length) return;
  const at = shown.findIndex((r) => r[7] === INSTAG.current);
  const i = at < 0 ? (by > 0 ? 0 : shown.length - 1) : Math.min(shown.length - 1, Math.max(0, at + by));
  if (i === at) return;  // at an end of the list: nothing further
  const list = $("list");
  if (i * ROW < list.scrollTop || (i + 1) * ROW > list.scrollTop + list.clientHeight) {
    list.scrollTop = Math.max(0, i * ROW - list.clientHeight / 2);
  }
  play(shown[i], 0);
}

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, select, textarea, audio")) return;
  const player = $("player");
  if (e.key === " ") {
    if (e.target.closest("button")) return;
    e.preventDefault();
    const chosen = INSTAG.rows[INSTAG.current];  // opened in the view, or played before
    if (chosen && String(chosen[7]) !== player.dataset.num) play(chosen, 0);
    else if (!player.dataset.src) step(1);
    else if (starting) starting = null;
    else if (player.paused) player.play().catch(() => {});
    else player.pause();
  } else if (e.key === "ArrowDown" || e.key === "ArrowRight") {
    e.preventDefault();
    step(1);
  } else if (e.key === "ArrowUp" || e.key === "ArrowLeft") {
    e.preventDefault();
    step(-1);
  }
});

for (const id of ["search", "status", "minp", "sort"]) $(id).addEventListener("input", schedule);
$("list").addEventListener("scroll", () => requestAnimationFrame(() => draw(false)));
window.addEventListener("resize", () => draw(true));
load("data/meta.js");

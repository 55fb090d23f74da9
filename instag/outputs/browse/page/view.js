// instag browse: a file's view, as the paper's Figure 4. On top, the log-mel spectrogram VGGish
// heard; under it, on the same time axis, one row per instrument: each instance's attention as
// intensity (its share of the bag: 1 = an even share; full colour from 3), the bag's probability
// as a line, the segments outlined. A playhead follows the player; a click anywhere plays the
// file from there. Data: outputs/browse/view.py, loaded as a script (a file:// page may not
// fetch): data/view-N.js in a static site (the files given with --view), view/N.js served.
"use strict";

const VIEW = { num: -1, row: null, data: null, scale: 20, all: false, held: 0, ours: false, soon: 0 };
const MAX_WIDTH = 30000;  // px: a canvas wider than ~32k is blank in Chromium
const ROW_H = 24, LINE_PAD = 5;  // the probability line keeps clear of the segment outlines
const HOLD_MS = 4000;  // after a person scrolls the view, the playhead does not pull it back
const FOLLOW_MS = 250;  // the view follows the file played after this long (arrows held)

// magma-like: dark and quiet to bright and loud, readable on light and dark pages
const STOPS = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];
const LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let v = 0; v < 256; v++) {
    const x = (v / 255) * (STOPS.length - 1), i = Math.min(Math.floor(x), STOPS.length - 2), f = x - i;
    for (let c = 0; c < 3; c++) lut[v * 3 + c] = STOPS[i][c] + f * (STOPS[i + 1][c] - STOPS[i][c]);
  }
  return lut;
})();

// the view follows the file played, once the arrows rest (files skipped are not computed)
function followSoon(r) {
  clearTimeout(VIEW.soon);
  VIEW.soon = setTimeout(() => openView(r, false), FOLLOW_MS);
}

function openView(r, focus = true) {
  const num = r[7];
  VIEW.num = num;
  if (INSTAG.current !== num) { INSTAG.current = num; draw(true); }  // arrows go on from here
  VIEW.row = r;
  VIEW.data = null;
  $("view").hidden = false;
  if (focus) $("view-scroll").focus();  // space plays it, ← → scroll the view
  $("view-title").textContent = songName(r) || r[0];
  $("view-title").title = r[0];
  $("view-stack").replaceChildren();
  $("view-labels").replaceChildren();
  const served = location.protocol.startsWith("http");
  const included = INSTAG.info && (INSTAG.info.views || []).includes(num);
  if (!served && !included) {
    viewNote("this site has no view of this file: make the site with `instag browse TAGS --out FOLDER " +
      "--view FILE` for it, or open the page with `instag browse TAGS --serve`");
    return;
  }
  viewNote("computing the view…");
  const s = document.createElement("script");
  s.src = served ? `view/${num}.js` : `data/view-${num}.js`;
  s.onerror = () => { if (VIEW.num === num) viewNote("could not load the view of this file"); };
  s.onload = () => s.remove();
  document.body.appendChild(s);
}

function viewNote(text) { $("view-note").textContent = text; }

// called by a view's script
INSTAG.view = function ([num, data]) {
  if (num !== VIEW.num) return;
  if (data.error) { viewNote(`no view: ${data.error} (${data.fix})`); return; }
  VIEW.data = data;
  viewNote("");
  drawView();
};

function shownInstruments(data) {
  const rows = data.instruments.filter(([name, , present]) =>
    VIEW.all || present || INSTAG.selected.has(name));
  rows.sort((a, b) => (b[2] - a[2]) || (b[1] - a[1]));
  return rows.length ? rows : [...data.instruments].sort((a, b) => b[1] - a[1]).slice(0, 1);
}

function drawView() {
  const data = VIEW.data, stack = $("view-stack"), labels = $("view-labels");
  const fit = $("view-scroll").clientWidth / Math.max(data.duration, 1e-3);
  VIEW.scale = Math.min(Math.max(20, fit), MAX_WIDTH / Math.max(data.duration, 1e-3));
  const width = data.duration * VIEW.scale;
  stack.style.width = `${width}px`;
  stack.dataset.scale = VIEW.scale;
  stack.dataset.duration = data.duration;
  stack.replaceChildren(spectrogram(data));
  const spec = labels.appendChild(el("div", "vlabel spec"));
  labels.replaceChildren(spec);
  spec.append(el("span", "band", "7.5 kHz"), el("span", "", "log-mel as VGGish hears it"),
    el("span", "band", "125 Hz"));
  for (const inst of shownInstruments(data)) {
    stack.appendChild(attentionRow(data, inst, width));
    const [name, p, present] = inst;
    const label = labels.appendChild(el("div", "vlabel" + (present ? "" : " absent"), `${name} ${p.toFixed(2)}`));
    label.style.setProperty("--c", colour(name));
    label.title = `${name}: best bag probability ${p.toFixed(3)}` + (present ? ", present" : ", not present");
  }
  stack.appendChild(axis(data.duration, VIEW.scale));
  labels.appendChild(el("div", "vlabel axis", "time"));
  const head = stack.appendChild(el("div", "playhead"));
  head.id = "playhead";
  follow();
}

function spectrogram(data) {
  const bytes = Uint8Array.from(atob(data.spectrogram), (c) => c.charCodeAt(0));
  const bands = data.bands, columns = bands ? bytes.length / bands : 0;
  const c = el("canvas", "spectrogram");
  c.width = Math.max(columns, 1);
  c.height = bands || 1;
  c.style.width = `${columns * data.column_s * VIEW.scale}px`;
  c.setAttribute("role", "img");
  c.setAttribute("aria-label", "log-mel spectrogram as VGGish heard it, low bands at the bottom");
  if (!columns) return c;
  const ctx = c.getContext("2d"), img = ctx.createImageData(columns, bands);
  for (let x = 0; x < columns; x++) {
    for (let b = 0; b < bands; b++) {
      const v = bytes[x * bands + b], o = ((bands - 1 - b) * columns + x) * 4;
      img.data[o] = LUT[v * 3]; img.data[o + 1] = LUT[v * 3 + 1]; img.data[o + 2] = LUT[v * 3 + 2];
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function attentionRow(data, [name, best, present, segments, shares, probs], width) {
  const c = el("canvas", "attention");
  c.width = Math.ceil(width);
  c.height = ROW_H;
  c.dataset.instrument = name;
  c.setAttribute("role", "img");
  c.setAttribute("aria-label", `${name}: attention per instance, bag probability ${best.toFixed(2)}, ` +
    `${segments.length} segments`);
  // an instrument not present is drawn grey: its attention says where it would be, not that it is
  const ctx = c.getContext("2d"), s = VIEW.scale, step = data.instance_s * s;
  const col = present ? colour(name) : getComputedStyle(document.body).getPropertyValue("--muted");
  ctx.fillStyle = col;
  shares.forEach((share, i) => {
    if (share <= 0) return;
    ctx.globalAlpha = Math.min(1, share / 3);
    ctx.fillRect(i * step, 0, Math.max(step - 0.5, 0.5), ROW_H);
  });
  ctx.globalAlpha = 1;
  ctx.strokeStyle = getComputedStyle(document.body).color;  // the bag probability, in the text colour
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  data.bags.forEach(([a, b], i) => {
    const y = LINE_PAD + (1 - probs[i]) * (ROW_H - 2 * LINE_PAD);
    ctx.moveTo(a * s, y);
    ctx.lineTo(b * s, y);
  });
  ctx.stroke();
  ctx.strokeStyle = col;
  ctx.lineWidth = 2;
  for (const [a, b] of segments) ctx.strokeRect(a * s + 1, 1, Math.max((b - a) * s - 2, 1), ROW_H - 2);
  return c;
}

function axis(duration, scale) {
  const div = el("div", "axis");
  const tick = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800].find((t) => t * scale >= 60) || 3600;
  for (let t = 0; t <= duration; t += tick) {
    const mark = div.appendChild(el("span", "tick", fmt(t).replace(/\.0$/, "")));
    mark.style.left = `${t * scale}px`;
  }
  return div;
}

// the playhead, while the view's file is the one playing
function follow() {
  const head = $("playhead"), player = $("player");
  if (!head || !VIEW.data) return;
  const here = player.dataset.num === String(VIEW.num);  // the view's file is the one loaded
  head.hidden = !here;
  if (!here) return;
  const x = player.currentTime * VIEW.scale, scroll = $("view-scroll");
  head.style.left = `${x}px`;
  const away = x < scroll.scrollLeft || x > scroll.scrollLeft + scroll.clientWidth - 20;
  if (!player.paused && away && performance.now() > VIEW.held) {
    VIEW.ours = true;
    scroll.scrollLeft = Math.max(0, x - scroll.clientWidth / 4);
  }
}

function tick() {
  follow();
  if (!$("player").paused) requestAnimationFrame(tick);
}

$("player").addEventListener("play", () => requestAnimationFrame(tick));
for (const e of ["seeked", "timeupdate", "pause", "loadedmetadata"]) $("player").addEventListener(e, follow);
$("view-stack").addEventListener("click", (e) => {
  if (!VIEW.data) return;
  const x = e.clientX - $("view-stack").getBoundingClientRect().left;
  play(VIEW.row, Math.min(Math.max(x / VIEW.scale, 0), VIEW.data.duration));
});
$("view-scroll").addEventListener("scroll", () => {
  if (VIEW.ours) VIEW.ours = false; else VIEW.held = performance.now() + HOLD_MS;  // a person's
});
$("view-scroll").addEventListener("keydown", (e) => {  // ← → scroll the view (↑ ↓ change files)
  if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
  e.preventDefault();
  e.stopPropagation();
  $("view-scroll").scrollLeft += (e.key === "ArrowRight" ? 0.4 : -0.4) * $("view-scroll").clientWidth;
});
function closeView() { $("view").hidden = true; VIEW.num = -1; clearTimeout(VIEW.soon); }
$("view-close").addEventListener("click", closeView);
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("view").hidden) closeView(); });
$("view-all").addEventListener("change", () => { VIEW.all = $("view-all").checked; if (VIEW.data) drawView(); });

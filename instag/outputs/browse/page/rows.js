// instag browse: how a file looks in the list. Every value from the data is put in as text
// (textContent, attributes), never as HTML; instrument names stay data (Maps, never keys).
"use strict";

const ROW = 76, STRIPS = 3;
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// one colour per instrument, the same in chips, labels, segments, the file view and `instag
// plot`: meta.colours (outputs/colours.py), given in the model's order (meta.instruments)
const COLOURS = new Map();
function colour(name) {
  if (!COLOURS.has(name)) {  // one met outside meta.instruments: grey
    const given = INSTAG.info && INSTAG.info.colours ? INSTAG.info.colours[COLOURS.size] : null;
    COLOURS.set(name, given || "#888888");
  }
  return COLOURS.get(name);
}

// a row: [path, href, status, reason, duration, Map(instrument => [best, present, segments]),
//         playable, number, [artist, title, album] | null]
function songName(r) {  // "artist – title (album)", or null: the page shows the path
  const song = r[8];
  if (!song) return null;
  const [artist, title, album] = song;
  const base = r[0].split(/[\\/]/).pop();
  return `${artist || "unknown artist"} – ${title || base}` + (album ? ` (${album})` : "");
}

function fmt(s) {
  const m = Math.floor(s / 60), r = s - 60 * m;
  return `${m}:${r.toFixed(1).padStart(4, "0")}`;
}

// the row of file r at place i of the shown list; play(r, start) plays it, view(r) opens its view
function row(r, i, selected, current, play, view) {
  const [path, , status, reason, duration, instruments, playable, num] = r;
  const div = el("div", "row" + (playable ? "" : " unplayable") + (num === current ? " current" : ""));
  div.style.top = `${i * ROW}px`;
  div.dataset.num = num;
  if (num === current) div.setAttribute("aria-current", "true");
  const head = el("div", "head");
  const name = songName(r);
  if (status === "ok") {  // a file that failed is not played (nor served)
    const go = head.appendChild(el("button", "play", "▶"));
    go.type = "button";
    go.setAttribute("aria-label", `play ${name || path}`);
    go.addEventListener("click", () => play(r, 0));
    const look = head.appendChild(el("button", "look", "view"));
    look.type = "button";
    look.setAttribute("aria-label", `view ${name || path}: spectrogram and attention`);
    look.addEventListener("click", () => view(r));
  }
  const label = head.appendChild(el("span", name ? "name" : "name path", name || path));
  label.title = path;
  head.appendChild(el("span", "meta", duration == null ? "" : fmt(duration)));
  if (status !== "ok") head.appendChild(el("span", "failed", reason ? `${status}: ${reason}` : status));
  if (!playable) head.appendChild(el("span", "note", "not playable in a browser"));
  div.appendChild(head);
  const names = [...instruments.keys()].filter((n) => instruments.get(n)[1] || selected.has(n));
  names.sort((a, b) => (selected.has(b) - selected.has(a)) ||
    instruments.get(b)[0] - instruments.get(a)[0]);
  for (const n of names.slice(0, STRIPS)) div.appendChild(strip(r, n, play));
  if (names.length > STRIPS) div.appendChild(el("span", "note", `+${names.length - STRIPS} more`));
  return div;
}

function strip(r, n, play) {
  const duration = r[4], [p, , segs] = r[5].get(n);
  const div = el("div", "strip");
  div.style.setProperty("--c", colour(n));
  div.appendChild(el("span", "label", `${n} ${p.toFixed(2)}`));
  const track = el("div", "track");
  for (const [a, b] of segs) {
    const seg = el("button", "seg");
    seg.type = "button";
    seg.style.left = `${(100 * a) / (duration || b)}%`;
    seg.style.width = `${(100 * (b - a)) / (duration || b)}%`;
    seg.title = `${n}: ${fmt(a)}–${fmt(b)}, bag probability ${p.toFixed(3)}`;
    seg.setAttribute("aria-label", `play ${n} from ${fmt(a)}`);
    seg.dataset.start = a;
    seg.dataset.instrument = n;
    seg.addEventListener("click", () => play(r, a));
    track.appendChild(seg);
  }
  div.appendChild(track);
  return div;
}

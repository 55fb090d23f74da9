"""The browse page at 100,000 files in headless Chromium (Debian's): time from navigation to the
first rows, to every part loaded, and for a filter (an instrument chip, text in the search box,
a sort) to redraw. Legs: each `--code` folder (an instag checkout: the code before and after a
change) builds its site from the same synthetic documents (two in three with artist, title and
album) and the sites are measured alternately, `--rounds` times each.

    python bench/browse_page.py --code /tmp/base --code . [--files 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD = """
import sys, numpy as np
from instag.outputs.browse import build_site
rng = np.random.default_rng(0)
names = ["piano", "guitar", "voice", "drums", "saxophone", "violin", "bass", "synthesizer"]
def docs(n):
    for i in range(n):
        chosen = rng.choice(len(names), 3, replace=False)
        probs = {names[c]: float(rng.random()) for c in chosen}
        on = [names[c] for k, c in enumerate(chosen) if k < 2]
        d = {"path": f"/music/artist {i % 997}/album {i % 89}/{i:06d} song.flac",
             "status": "ok", "duration_s": float(rng.uniform(60, 400)), "size": 1,
             "mtime_ns": 1, "instruments": on,
             "segments": {n: [[float(k), k + 2.88]] for k, n in enumerate(on)},
             "bags": [{"start_s": 0, "end_s": 60, "present": on, "probabilities": probs,
                       "segments": {}}]}
        if i % 3:
            d.update(artist=f"Artist {i % 997}", title=f"Song {i}", album=f"Album {i % 89}")
        yield d
build_site(docs(int(sys.argv[2])), sys.argv[1], "synthetic")
"""
MEASURE = [("chip", lambda p: p.click(".chip[data-instrument=violin]")),
           ("search", lambda p: p.fill("#search", "artist 5")),
           ("sort", lambda p: p.select_option("#sort", "duration"))]


def measure(browser, site: Path) -> dict[str, float]:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    start = time.monotonic()
    page.goto(site.as_uri() + "/index.html", wait_until="commit")
    page.wait_for_selector(".row", timeout=60_000)
    took = {"first rows": time.monotonic() - start}
    page.wait_for_function("window.INSTAG && window.INSTAG.loaded", timeout=60_000)
    page.wait_for_function("!/loading/.test(document.getElementById('summary').textContent)")
    took["all loaded"] = time.monotonic() - start
    for step, act in MEASURE:
        before = page.inner_text("#summary"), page.inner_text("#spacer")
        start = time.monotonic()
        act(page)
        page.wait_for_function("([s, l]) => document.getElementById('summary').textContent !== s"
                               " || document.getElementById('spacer').innerText !== l",
                               arg=before)
        took[step] = time.monotonic() - start
    page.close()
    return took


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--code", action="append", required=True)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="browse-bench-"))
    sites = {}
    for i, code in enumerate(args.code):
        sites[code] = tmp / f"site-{i}"
        subprocess.run([sys.executable, "-c", BUILD, str(sites[code]), str(args.files)],
                       check=True, cwd=tmp, env={"PYTHONPATH": str(Path(code).absolute()),
                                        "PATH": "/usr/bin:/bin"})
    results: dict[str, list[dict]] = {code: [] for code in args.code}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        for _ in range(args.rounds):
            for code in args.code:  # legs alternated
                results[code].append(measure(browser, sites[code]))
        browser.close()
    sizes = {c: sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
             for c, site in sites.items()}
    shutil.rmtree(tmp)
    for code, runs in results.items():
        print(f"{code}: site {sizes[code] / 1e6:.1f} MB; " + ", ".join(
            f"{k} {sorted(r[k] for r in runs)[len(runs) // 2]:.2f} s" for k in runs[0]))


if __name__ == "__main__":
    main()

"""A file's view (the paper's Figure 4 in the browse page) under `instag browse --serve`: how long
a 5-minute song's view takes to appear in headless Chromium (Debian's), from the click on
"view" to the drawn spectrogram, the first time (computed: the song decoded through VGGish's
front end, its attention recomputed from the cache with the model: a CSV output has no
timeline) and again (remembered); and the server's part alone, split into timeline and
spectrogram. The song is a 44.1 kHz stereo FLAC tagged with the tests' committed stand-ins
(the front end is VGGish's whatever the network's weights: its cost is the real one), listed
after `--library` - 1 other (synthetic) documents: the view of the last file of a large library.

    python bench/file_view.py [--minutes 5] [--rounds 3] [--library 100000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--library", type=int, default=1, help="files the output lists")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="instag-view-bench-") as tmp:
        root = Path(tmp)
        os.environ["TFHUB_CACHE_DIR"] = str(root / "hub")
        import soundfile as sf
        from builders import SR, music
        from playwright.sync_api import sync_playwright
        from standins import COMMITTED, PCA_FILE, SCORING, install_committed_vggish
        from typer.testing import CliRunner

        from instag.cli import app
        from instag.jobs.views import FileViews, Spool, served
        from instag.outputs.browse import build_site
        from instag.outputs.browse.serve import server
        from instag.outputs.readback import checked_documents
        from instag.tagging.options import TagOptions

        vggish = install_committed_vggish(root / "vggish")
        opts = ["--model", str(COMMITTED / SCORING), "--vggish", str(vggish), "--pca",
                str(COMMITTED / PCA_FILE), "--cache", str(root / "cache.sqlite")]
        (root / "lib").mkdir()
        sf.write(root / "lib" / "song.flac", music(args.minutes * 60, 1), SR)
        tagged = CliRunner().invoke(app, ["tag", str(root / "lib"), "--out",
                                          str(root / "tags.csv"), *opts[:6], "--cache",
                                          str(root / "cache.sqlite")])
        assert tagged.exit_code == 0, tagged.output
        views = FileViews(TagOptions(model=COMMITTED / SCORING, vggish=str(vggish),
                                     pca=COMMITTED / PCA_FILE, cache=root / "cache.sqlite"))
        doc = next(iter(checked_documents(root / "tags.csv")))
        parts = []
        for _ in range(args.rounds):
            fresh = FileViews(views.options)
            t0 = time.perf_counter()
            with_timeline = fresh.timeline(doc)
            t1 = time.perf_counter()
            fresh.spectrogram(with_timeline, 12_000, 0.05)
            parts.append((t1 - t0, time.perf_counter() - t1))
        print(f"song: {args.minutes:g} min, 44.1 kHz stereo FLAC")
        for i, (timeline, spectrogram) in enumerate(parts):
            print(f"server's part, round {i + 1}: timeline {timeline:.2f} s, spectrogram "
                  f"{spectrogram:.2f} s (VGGish's front end loaded in this round)")
        others = ({**doc, "path": f"/music/{i:06d} other.flac", "size": None, "mtime_ns": None}
                  for i in range(args.library - 1))
        spool = Spool()
        started = time.perf_counter()
        site = build_site(spool.through(itertools.chain(others, [doc])), root / "site", "bench")
        print(f"site of {site.files} files made in {time.perf_counter() - started:.1f} s")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
            for i in range(args.rounds):
                httpd = server(site.folder, site.audio,
                               view_of=served(FileViews(views.options), spool))
                threading.Thread(target=httpd.serve_forever, daemon=True).start()
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(httpd.url)
                page.wait_for_function("() => window.INSTAG && INSTAG.loaded")
                page.fill("#search", "song.flac")  # the song, last of the library
                page.wait_for_function("() => document.querySelectorAll('.row').length === 1")
                took = []
                for _ in range(2):  # computed, then remembered
                    page.evaluate("() => { const v = document.getElementById('view');"
                                  " v.hidden = true; VIEW.num = -1; }")
                    start = time.perf_counter()
                    page.click(".row .look")
                    page.wait_for_selector("#view-stack canvas.attention", timeout=60_000)
                    took.append(time.perf_counter() - start)
                print(f"in Chromium, round {i + 1}: click to view drawn {took[0]:.2f} s "
                      f"(computed), {took[1]:.2f} s (remembered)")
                page.close()
                httpd.shutdown()
                httpd.server_close()
            browser.close()


if __name__ == "__main__":
    main()

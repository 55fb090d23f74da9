"""`instag setup`: from a fresh machine to a working tagger, one skippable step at a time.

1. the VGGish hub model into the hub cache; 2. the PCA parameters (md5-verified);
3. OpenMIC-2018 (Zenodo record 1432913): downloaded resumably and md5-verified, or taken from
   ``--openmic`` (archive or extracted directory); only the npz, class map and partitions are
   extracted, never members with absolute paths or ``..``;
4. the attention model trained with the paper's recipe (best validation loss across seeds),
   evaluated, and exported to ONNX with its model card as the installed scoring model;
5. the feature check against OpenMIC's released features; 6. the INT8 VGGish, judged by its
   tags (`provision.int8`; `--skip-int8` leaves it out, `--only-int8` does only it).
Each step is skipped when its result is already there and valid; each writes to a temp name and
renames, so a failed step leaves nothing half-written at a final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from instag.common import locations
from instag.common.atomic import atomic_write
from instag.common.devices import Device
from instag.common.downloads import download, file_digest
from instag.common.errors import InstagError, SetupError, UsageError
from instag.common.extras import MissingExtra
from instag.features import precision as at_precision
from instag.features import vggish_onnx
from instag.features.embed import Embedder
from instag.features.logmel import log_mel_beside
from instag.features.pca import load_pca
from instag.features.precision import Precision
from instag.features.vggish import load_vggish
from instag.learning.card import write_markdown
from instag.learning.data import load_openmic
from instag.learning.export import export_run
from instag.learning.train import Recipe, train_run
from instag.provision import int8 as int8_step
from instag.provision import verify
from instag.provision.doctor import cuda_usable
from instag.provision.openmic import NEEDED, extract_needed
from instag.provision.progress import Say, epoch_lines, ticking
from instag.tagging.options import TagOptions

OPENMIC_URL = "https://zenodo.org/records/1432913/files/openmic-2018-v1.0.0.tgz?download=1"
OPENMIC_ARCHIVE = "openmic-2018-v1.0.0.tgz"
OPENMIC_MD5 = "e4ccf187e2bb5ab2e115416e8aafe7f4"
OPENMIC_BYTES = 2_623_376_754


@dataclass(frozen=True)
class SetupOptions:
    openmic: Path | None = None  # an archive or extracted directory the user already has
    offline: bool = False
    seeds: tuple[int, ...] = (0,)
    epochs: int = 250
    device: Device = Device.AUTO
    vggish: str | None = None
    pca: Path | None = None
    force: bool = False  # redo steps whose results are there: fetch, extract, train again
    only_int8: bool = False  # only the INT8 step, on a machine already set up
    skip_int8: bool = False  # every step but the INT8 one (`--only-int8` makes it later)
    show_progress: bool = False  # bars on a terminal; otherwise a line every TICK_SECONDS
    # Sources, overridable by environment (how the tests point setup at a local server).
    openmic_url: str = field(default_factory=lambda: _env("INSTAG_OPENMIC_URL", OPENMIC_URL))
    openmic_md5: str = field(default_factory=lambda: _env("INSTAG_OPENMIC_MD5", OPENMIC_MD5))
    pca_url: str = field(default_factory=lambda: _env("INSTAG_PCA_URL", locations.PCA_URL))
    pca_md5: str = field(default_factory=lambda: _env("INSTAG_PCA_MD5", locations.PCA_MD5))


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


Progress = Callable[[int, int | None], None]
OFFLINE_HINT = ("no internet here? provision from local files: instag setup --vggish DIR "
                "--pca FILE --openmic PATH (the docs: getting-started/setup.md)")


def setup(opts: SetupOptions, say: Say = print, progress: Progress | None = None) -> Path:
    """Run every step; returns the installed model's path. Raises InstagError on the first
    step that cannot be done, naming what is missing; paths the user gave are checked before
    anything touches the network."""
    check_given(opts)
    if opts.only_int8 and opts.skip_int8:
        raise UsageError("--only-int8 with --skip-int8: one asks for only the INT8 step, the "
                         "other for every step but it", "give one of them")
    if opts.only_int8:
        model = locations.installed_model()
        if not model.is_file() or vggish_onnx.find(locations.vggish_handle(opts.vggish)) is None:
            raise SetupError("--only-int8: this machine is not set up yet (no model, or no "
                             "VGGish converted to ONNX)", "run `instag setup` first")
        step_int8(opts, say, model)
        return model
    handle = locations.vggish_handle(opts.vggish)
    missing: dict[str, InstagError] = {}

    def attempt(name: str, step, *args):
        """Offline, a missing piece is noted and the next step checked, so that one run says
        everything that is missing; online, the first failure stops setup."""
        try:
            return step(*args)
        except InstagError as e:
            if not opts.offline:
                raise InstagError(e.message, f"{e.fix}; {OFFLINE_HINT}" if e.fix else
                                  OFFLINE_HINT) from e
            missing[name] = e
            return None

    attempt("vggish", step_vggish, handle, opts, say)
    attempt("pca", step_pca, opts, say, progress)
    data_root = attempt("openmic", step_openmic, opts, say, progress)
    if data_root is not None:
        locations.remember(openmic=str(Path(data_root).resolve()))
    if missing:
        options = {"vggish": "--vggish DIR (a SavedModel of google/vggish/1)",
                   "pca": "--pca FILE (vggish_pca_params.npz)",
                   "openmic": "--openmic PATH (the OpenMIC-2018 .tgz or its folder)"}
        installs = sorted({e.fix for e in missing.values() if isinstance(e, MissingExtra)})
        wanted = [options[k] for k, e in missing.items() if not isinstance(e, MissingExtra)]
        raise InstagError("--offline, and missing:\n  - " + "\n  - ".join(
            e.message for e in missing.values()), "; ".join([
                *installs, *(["give the missing pieces from local files: " + ", ".join(wanted)]
                             if wanted else []),
                "or run without --offline on a machine with internet"]))
    model = step_model(data_root, opts, say)
    step_verify(data_root, opts, say, model)
    step_int8(opts, say, model)
    return model


def check_given(opts: SetupOptions) -> None:
    """Every local path the user gave exists (a typo must not cost a 2.6 GB download); all
    that do not are named at once."""
    vggish = opts.vggish or os.environ.get("INSTAG_VGGISH")
    given = [("--openmic", opts.openmic), ("--pca", locations.given_pca(opts.pca))]
    if vggish and not locations.is_url(vggish):
        given.append(("--vggish", Path(vggish).expanduser()))
    absent = [f"{option} {path}: no such file or folder" for option, path in given
              if path is not None and not Path(path).exists()]
    if absent:
        raise InstagError("; ".join(absent), "check the path" + ("s" if len(absent) > 1 else "")
                          + "; setup has done nothing yet")


def step_vggish(handle: str, opts: SetupOptions, say: Say) -> None:
    """A local SavedModel is checked and remembered; a hub URL fetched into the hub cache."""
    if not locations.is_url(handle):
        load_vggish(handle)  # says what is wrong with the folder
        say(f"[1/6] VGGish: the SavedModel in {handle} - remembered for tagging")
        locations.remember(vggish=str(Path(handle).expanduser().resolve()))
        return
    if locations.hub_cached(handle):
        say(f"[1/6] VGGish: already in {locations.hub_cached(handle)} - skipped")
    elif opts.offline:
        raise InstagError(f"VGGish ({handle}) is not in the cache {locations.tfhub_cache_dir()}",
                          "run `instag setup` without --offline on a machine with internet")
    else:
        handle = fetch_vggish(handle, say)
    locations.remember(vggish=handle)


def fetch_vggish(handle: str, say: Say) -> str:
    """Fetch VGGish into the hub cache from the first of its hosts that answers (tfhub.dev,
    else Kaggle Models, or the other way round); the name it came under."""
    def fetch(name: str) -> str:
        say(f"[1/6] VGGish: fetching {name} into {locations.tfhub_cache_dir()}")
        load_vggish(name)
        return name

    names = locations.mirrors(handle)
    for name, then in zip(names, names[1:], strict=False):  # all but the last
        try:
            return fetch(name)
        except MissingExtra:  # the same at every host
            raise
        except InstagError as e:
            say(f"[1/6] VGGish: {name} failed: {e.message}; trying the same model at {then}")
    return fetch(names[-1])


def step_pca(opts: SetupOptions, say: Say, progress: Progress | None) -> None:
    """A file the user gave is checked and remembered, never deleted; the official one is
    fetched once (md5-verified) and then stays, unless --force."""
    given = locations.given_pca(opts.pca)
    if given is not None:
        load_pca(given)  # says what is wrong with it
        kind = "the official file" if file_digest(given, "md5") == locations.PCA_MD5 else \
            "not the official file: used as given"
        say(f"[2/6] PCA parameters: {given} ({kind}) - remembered for tagging")
        locations.remember(pca=str(given.resolve()))
        return
    cached = locations.cache_dir() / locations.PCA_FILE
    if cached.is_file() and not opts.force:
        verified = file_digest(cached, "md5") == opts.pca_md5
        say(f"[2/6] PCA parameters: {cached} " + ("verified" if verified else
            f"kept (its md5 is not {opts.pca_md5}; --force fetches it again)") + " - skipped")
        return
    if opts.offline:
        raise InstagError(f"{cached}: missing", "run `instag setup` without --offline")
    say(f"[2/6] PCA parameters: fetching {opts.pca_url}")
    download(opts.pca_url, cached, opts.pca_md5, progress=progress)  # replaces only when valid


def openmic_dir() -> Path:
    return locations.data_dir() / "openmic-2018"


def step_openmic(opts: SetupOptions, say: Say, progress: Progress | None) -> Path:
    remembered = locations.openmic_data()
    if opts.openmic is None and remembered is not None and not opts.force:
        load_openmic(remembered)  # still valid: a re-run is a no-op
        say(f"[3/6] OpenMIC-2018: {remembered}, as a previous setup was given - skipped")
        return remembered
    if opts.openmic and Path(opts.openmic).is_dir():
        absent = [n for n in NEEDED if not (Path(opts.openmic) / n).is_file()]
        if absent:  # every missing file at once, not the first
            raise InstagError(f"--openmic {opts.openmic}: missing {', '.join(absent)}",
                              "pass the extracted OpenMIC-2018 folder, or its .tgz")
        data = load_openmic(opts.openmic)  # validates, naming what is wrong
        keys = {*data.train.keys, *data.test.keys}
        sampled = verify.sample_from_folder(Path(opts.openmic) / "audio", keys,
                                            verify.sample_dir())
        say(f"[3/6] OpenMIC-2018: using the directory {opts.openmic} ({sampled} clips of its "
            "audio kept for the feature check)")
        return Path(opts.openmic)
    target = openmic_dir()
    if all((target / n).is_file() for n in NEEDED) and not opts.force:
        say(f"[3/6] OpenMIC-2018: already extracted in {target} - skipped")
        return target
    archive = Path(opts.openmic) if opts.openmic else locations.cache_dir() / OPENMIC_ARCHIVE
    if opts.openmic is None and not archive.is_file():
        if opts.offline:
            raise InstagError(f"OpenMIC-2018 is neither extracted in {target} nor downloaded to "
                              f"{archive}", "pass --openmic PATH, or run without --offline "
                              f"(downloads {OPENMIC_BYTES / 1e9:.1f} GB)")
        say(f"[3/6] OpenMIC-2018: downloading {opts.openmic_url} to {archive} "
            f"(resumable; {OPENMIC_BYTES / 1e9:.1f} GB for the official archive)")
        download(opts.openmic_url, archive, opts.openmic_md5, progress=progress)
    elif not archive.is_file():
        raise InstagError(f"{archive}: no such file or directory",
                          "pass the OpenMIC-2018 .tgz or its extracted directory")
    elif archive.stat().st_size == OPENMIC_BYTES and \
            file_digest(archive, "md5") != opts.openmic_md5:
        raise InstagError(f"{archive}: the official archive's size but not its md5 "
                          f"({opts.openmic_md5})", "it is damaged: download it again")
    say(f"[3/6] OpenMIC-2018: extracting {', '.join(NEEDED)} from {archive}")
    extract_needed(archive, target)
    load_openmic(target)
    return target


def step_model(data_root: Path, opts: SetupOptions, say: Say) -> Path:
    installed = locations.installed_model()
    data = load_openmic(data_root)
    card = installed.with_suffix(".json")
    if installed.is_file() and card.is_file() and not opts.force:
        if json.loads(card.read_text()).get("training_data_sha256") == data.checksum:
            say(f"[4/6] model: {installed} was trained on this data - skipped")
            return installed
    runs_dir = locations.data_dir() / "runs"
    best = None
    for seed in opts.seeds:
        say(f"[4/6] model: training att, seed {seed}, {opts.epochs} epochs")
        recipe = Recipe(model="att", epochs=opts.epochs, seed=seed, device=opts.device)
        metrics = train_run(data, recipe, runs_dir / f"att-seed-{seed}",
                            progress=opts.show_progress, force=True,  # setup's own runs
                            on_epoch=None if opts.show_progress else
                            epoch_lines(say, f"[4/6] model: seed {seed}"))
        val = metrics["best_val_loss"]
        say(f"      seed {seed}: best validation loss {val:.4f}, test F1 "
            f"{metrics['overall']['f1']:.3f}, mAP {metrics['overall']['map']:.3f}")
        if best is None or val < best[0]:
            best = (val, seed)
    path = export_run(runs_dir / f"att-seed-{best[1]}", installed)
    say(f"[4/6] model: installed seed {best[1]} as {path}")
    return path


def step_verify(data_root: Path, opts: SetupOptions, say: Say,
                model: Path) -> verify.FeatureCheck | None:
    """Re-embed the sample of OpenMIC clips here and compare with the released features; the
    figure goes into the installed model's card. Below 99 % within one step, a loud warning."""
    embedder = Embedder(opts.vggish, opts.pca, device=opts.device,
                        note=lambda m: say(f"[5/6] {m}"))
    if opts.force and (path := vggish_onnx.converted_path(embedder.handle)) is not None:
        path.with_suffix(".refused").unlink(missing_ok=True)  # try the conversion again
    with ticking(say, "[5/6] VGGish: loading, and converting to ONNX once (a minute or two)",
                 opts.show_progress):
        embedder.model  # noqa: B018 - loads it: converted to ONNX here, once, if it can be
    say(f"[5/6] VGGish runs on {embedder.runtime}")
    if (converted := vggish_onnx.find(embedder.handle)) is not None:
        log_mel_beside(converted)  # plot's and browse's spectrogram: cut here, where onnx is
    card = model.with_suffix(".json")
    doc = json.loads(card.read_text()) if card.is_file() else {}
    done = doc.get("feature_check") or {}
    if done.get("features") == embedder.identity and not opts.force:
        say(f"[5/6] features: checked for this VGGish, PCA and resampler ({done['within_one']:.2%}"
            " within one step) - skipped; `instag doctor --verify` checks again")
        return None
    check = verify.check_features(data_root, verify.sample_dir(), embedder)
    say(f"[5/6] features: {check.line()}" + ("" if check.clips else " - skipped"))
    if not check.clips:
        return None
    if card.is_file():
        doc = {**doc, "feature_check": {**check.as_dict(), "features": embedder.identity}}
        with atomic_write(card) as f:
            json.dump(doc, f, indent=2)
        write_markdown(doc, model)
    return check


def step_int8(opts: SetupOptions, say: Say, model: Path) -> dict | None:
    """Make the INT8 VGGish (and where CUDA is usable the FP16 one) and keep each only where
    its tags are FP32's (`provision.int8`); the figures go into the installed model's card.
    A decision made before under today's rule (kept or refused) stands unless --force: a
    second setup does not spend minutes judging again. Skipped where VGGish runs on
    TensorFlow, and with --skip-int8."""
    if opts.skip_int8:
        say("[6/6] INT8 VGGish: --skip-int8 - skipped; `instag setup --only-int8` makes and "
            "judges it later")
        return None
    embedder = Embedder(opts.vggish, opts.pca, device=opts.device)
    if vggish_onnx.find(embedder.handle) is None:
        say("[6/6] INT8 VGGish: VGGish is not converted to ONNX here - skipped")
        return None
    decided = (at_precision.figures(embedder.handle, Precision.INT8)
               or at_precision.refused(embedder.handle, Precision.INT8))
    if int8_step.current(decided) and not opts.force:
        say(f"[6/6] {int8_step.decision_line(decided)} - decided before, skipped; `instag "
            "setup --only-int8 --force` judges again")
        return decided
    if decided:
        say("[6/6] INT8 VGGish: decided under an earlier rule (one that judged features, not "
            "tags); judging again")
    cuda = opts.device is not Device.CPU and cuda_usable(model)[0] is True
    try:
        with ticking(say, "[6/6] INT8 VGGish: judging", opts.show_progress):
            docs = int8_step.make_reduced(
                embedder, TagOptions(model=model, vggish=opts.vggish, pca=opts.pca,
                                     device=Device.CPU, precision=Precision.FP32),
                verify.sample_dir(), say=lambda m: say(f"[6/6] {m}"), cuda=cuda)
    except InstagError as e:  # optional: tagging runs in FP32 as before
        say(f"[6/6] INT8 VGGish: not made: {e.message}; VGGish stays FP32")
        return None
    for precision, doc in docs.items():
        say(f"[6/6] {int8_step.decision_line(doc, precision)}" + (
            f"; `instag tag --precision {precision}` uses it" if doc["kept"] else ""))
    card = model.with_suffix(".json")
    if card.is_file():
        card_doc = {**json.loads(card.read_text()),
                    **{str(precision): doc for precision, doc in docs.items()}}
        with atomic_write(card) as f:
            json.dump(card_doc, f, indent=2)
        write_markdown(card_doc, model)
    return docs[Precision.INT8]

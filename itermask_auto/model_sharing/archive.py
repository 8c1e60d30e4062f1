"""Sharing trained models between sites: `export_model` packs fold folders into one zip with a manifest (format
version, every file's SHA-256) and a model card; `install_model` checks a zip and unpacks it into the results
root, so another site predicts with no retraining.

Install refuses, with one line, a zip that is damaged (CRC or checksum), comes from a newer format, or would
overwrite a different model; the same model again is a no-op. Files are unpacked into a hidden staging folder
and moved into place only when all of them are there."""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from itermask_auto import __version__
from itermask_auto.experiment_planning.plans import FINGERPRINT_FILE
from itermask_auto.imageio.errors import InputError
from itermask_auto.model_sharing.model_card import TRAINING_DATA_NOTE, model_card, model_card_markdown
from itermask_auto.utilities.atomic import atomic_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "itermask_model.json"
# what a fold needs to predict, plus what explains it; other checkpoints stay home unless asked for
FOLD_FILES = ("plans.json", "splits.json", FINGERPRINT_FILE, "calibration.json", "progress.png", "training_log.txt",
              TRAINING_DATA_NOTE)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fold_files(fold_dir: Path, checkpoints: Sequence[str]) -> List[Path]:
    files = [fold_dir / name for name in FOLD_FILES if (fold_dir / name).is_file()]
    for path in sorted(fold_dir.rglob("checkpoint_*.pth")):
        if path.name in checkpoints:
            files.append(path)
    for sub in sorted(p for p in fold_dir.iterdir() if p.is_dir()):   # a method's later stages
        files += [sub / n for n in ("progress.png", "training_log.txt") if (sub / n).is_file()]
    return files


def export_model(fold_dirs: Sequence[Path], output_zip: Path,
                 checkpoints: Sequence[str] = ("checkpoint_final.pth",)) -> Path:
    """Pack trained fold folders (of one dataset) into `output_zip` with a manifest and a model card each."""
    fold_dirs = [Path(f) for f in fold_dirs]
    if not fold_dirs:
        raise ValueError("no fold folder to export")
    results_root = fold_dirs[0].parents[2]
    cards, files = {}, {}
    for fold in fold_dirs:
        if not (fold / "checkpoint_final.pth").is_file():
            raise FileNotFoundError(f"{fold / 'checkpoint_final.pth'}: not found - train this fold before exporting")
        rel = fold.relative_to(results_root).as_posix()
        card = model_card(fold)
        cards[rel] = card
        files.update({p.relative_to(results_root).as_posix(): p for p in _fold_files(fold, checkpoints)})
        files[f"{rel}/model_card.json"] = json.dumps(card, indent=2).encode()
        files[f"{rel}/MODEL_CARD.md"] = model_card_markdown(card).encode()
    checksums = {name: hashlib.sha256(src if isinstance(src, bytes) else src.read_bytes()).hexdigest()
                 for name, src in files.items()}
    manifest = {"format_version": FORMAT_VERSION, "itermask_auto_version": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "dataset": fold_dirs[0].parents[1].name, "models": sorted(cards), "files": checksums}
    with atomic_path(output_zip, ".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name, src in sorted(files.items()):
                if isinstance(src, bytes):
                    z.writestr(name, src)
                else:
                    z.write(src, name)
    logger.info("exported %d model(s) of %s to %s", len(cards), manifest["dataset"], output_zip)
    return Path(output_zip)


def read_manifest(zip_path: Path) -> Dict:
    """The manifest of a model zip, after checking the archive; InputError (one line) otherwise."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise InputError(zip_path, "not found")
    try:
        with zipfile.ZipFile(zip_path) as z:
            bad = z.testzip()
            if bad is not None:
                raise InputError(zip_path, f"damaged: {bad} fails its CRC check")
            manifest = json.loads(z.read(MANIFEST))
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InputError(zip_path, f"not a readable zip ({type(e).__name__})") from None
    except KeyError:
        raise InputError(zip_path, f"not an itermask model ({MANIFEST} missing)") from None
    except json.JSONDecodeError:
        raise InputError(zip_path, f"{MANIFEST} is not valid JSON") from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(zip_path, f"model format {version} is newer than this itermask_auto reads "
                                   f"({FORMAT_VERSION}): update itermask_auto")
    missing = sorted(set(manifest.get("files", {})) - names)
    if missing or any(n.startswith("/") or ".." in Path(n).parts for n in names):
        raise InputError(zip_path, f"damaged: {missing[0] if missing else 'unsafe path'} listed but not packed")
    return manifest


def install_model(zip_path: Path, results_root: Path, overwrite: bool = False) -> List[Path]:
    """Unpack a model zip into results_root; returns the installed fold folders."""
    zip_path, results_root = Path(zip_path), Path(results_root)
    manifest = read_manifest(zip_path)
    dataset = manifest["dataset"]
    dataset_id = dataset.split("_", 1)[0]
    clash = [p.name for p in results_root.glob(f"{dataset_id}_*") if p.is_dir() and p.name != dataset]
    if clash:
        raise InputError(zip_path, f"{results_root / clash[0]} already uses {dataset_id}; this model is {dataset} "
                                   "(rename one of them)")
    folds = [results_root / rel for rel in manifest["models"]]
    staging = results_root / f".install-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as z:
            for name, digest in manifest["files"].items():
                data = z.read(name)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise InputError(zip_path, f"damaged: {name} does not match its checksum")
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        todo = []
        for rel, fold in zip(manifest["models"], folds):
            if fold.exists():
                if _same_files(staging / rel, fold, manifest, rel):
                    logger.info("%s: already installed (identical)", fold)
                    continue
                if not overwrite:
                    raise InputError(zip_path, f"{fold} holds a different model; pass --overwrite to replace it")
            todo.append((staging / rel, fold))
        for src, fold in todo:
            if fold.exists():
                shutil.rmtree(fold)
            fold.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, fold)
            logger.info("installed %s", fold)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folds


def _same_files(new: Path, old: Path, manifest: Dict, rel: str) -> bool:
    """Every file of the packed fold is already there with the same checksum (card files aside)."""
    for name, digest in manifest["files"].items():
        if not name.startswith(rel + "/") or name.endswith(("model_card.json", "MODEL_CARD.md")):
            continue
        path = old / name[len(rel) + 1:]
        if not path.is_file() or sha256(path) != digest:
            return False
    return True


def exportable_folds(results_dataset: Path, method: Optional[str], configuration: Optional[str],
                     folds: Optional[Sequence[str]]) -> List[Path]:
    """Trained fold folders of a results dataset folder, filtered by method / configuration / fold."""
    found = []
    for model in sorted(p for p in Path(results_dataset).iterdir() if p.is_dir() and "__" in p.name):
        m, _, c = model.name.split("__")
        if (method and m != method) or (configuration and c != configuration):
            continue
        for fold in sorted(model.glob("fold_*")):
            if (fold / "checkpoint_final.pth").is_file() and (not folds or fold.name[5:] in folds):
                found.append(fold)
    return found

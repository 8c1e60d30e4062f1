"""Time itermask_plan_and_preprocess against nnUNetv2_plan_and_preprocess on the same IXI T1 scans, in one run.

    python benchmarks/preprocess_speed.py [--source /work/shared/data/ixi_t1_2mm] [--n 160] [--np 2]
                                          [--nnunet-venv /work/bench_pp/nnunet_venv] [--work /tmp/itermask_pp_bench]

Both tools get the same first N scans (sorted by name) and the same brain masks: ours as masksTr (given brain
masks, so no skull stripping), nnU-Net as labelsTr (label 1 = brain; the only way to hand it a mask).  Only the
plan-and-preprocess commands are timed, not building the raw folders.  nnU-Net v2 lives in its own virtual
environment (create it with benchmarks/setup_nnunet_env.sh); ours is taken from the interpreter running this
script (sys.executable's bin folder).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without `pip install -e .`

SUFFIX = "_T1.nii.gz"
OURS_DID = ("fingerprint (brain masks given) + plans, then per case: crop to brain + z-score + resample "
            "+ high-frequency FFT channel + compressed .npz")
NNUNET_DID = ("fingerprint + plans (2d/3d_fullres/3d_lowres planned), then per case (3d_fullres only): "
              "crop to nonzero + z-score + resample image and label + foreground sampling + blosc2 files")


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    """Run `cmd` with stdout+stderr to `log`; return (wall s, CPU s of it and its workers); exit if it fails.

    CPU time (user+sys of all waited-for descendants) is less disturbed than wall time by other jobs on the
    machine, so both are reported."""
    print(f"$ {' '.join(cmd)}   (load average before: {load_average()}; log: {log})", flush=True)
    cpu0, start = children_cpu(), time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu0
    print(f"  done in {seconds:.1f} s wall, {cpu:.1f} s CPU (load average after: {load_average()})", flush=True)
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        sys.exit(f"error: {cmd[0]} failed with exit code {rc}; last lines of {log}:\n" + "\n".join(tail))
    return seconds, cpu


def nnunet_version(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('nnunetv2'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def build_nnunet_raw(images: list[Path], source: Path, folder: Path) -> None:
    """Dataset001_IXI: symlinks to the same T1 files, brain masks as label 1."""
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for img in images:
        case = img.name[: -len(SUFFIX)]
        mask = source / "brainmasks" / f"{case}_brainmask.nii.gz"
        if not mask.is_file():
            sys.exit(f"error: {mask}: brain mask of {case} not found")
        (folder / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(img.resolve())
        (folder / "labelsTr" / f"{case}.nii.gz").symlink_to(mask.resolve())
    dataset = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1},
               "numTraining": len(images), "file_ending": ".nii.gz", "name": "IXI"}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=Path("/work/shared/data/ixi_t1_2mm"),
                   help="folder with images/*_T1.nii.gz and brainmasks/*_brainmask.nii.gz")
    p.add_argument("--n", type=int, default=None, help="first N scans (default: all)")
    p.add_argument("--np", dest="num_processes", type=int, default=2, help="worker processes for both tools")
    p.add_argument("--nnunet-venv", type=Path, default=Path("/work/bench_pp/nnunet_venv"),
                   help="virtual environment holding nnunetv2 (see benchmarks/setup_nnunet_env.sh)")
    p.add_argument("--work", type=Path, default=Path("/tmp/itermask_pp_bench"),
                   help="scratch folder; its ours/ and nnunet/ subfolders are wiped first")
    p.add_argument("--nnunet-first", action="store_true",
                   help="time nnU-Net before ours (to check that the order does not bias a loaded machine)")
    p.add_argument("--keep", action="store_true", help="keep the raw and preprocessed folders afterwards")
    args = p.parse_args(argv)

    nnunet_bin = args.nnunet_venv / "bin"
    nnunet_cli = nnunet_bin / "nnUNetv2_plan_and_preprocess"
    if not nnunet_cli.is_file():
        print(f"error: no nnU-Net environment at {args.nnunet_venv} ({nnunet_cli} missing).\n"
              f"Create it with:  bash benchmarks/setup_nnunet_env.sh {args.nnunet_venv}", file=sys.stderr)
        return 2
    ours_bin = Path(sys.executable).parent
    ours_cli = ours_bin / "itermask_plan_and_preprocess"
    if not ours_cli.is_file():
        print(f"error: {ours_cli} not found; run this script with the project's venv python "
              f"(pip install -e . provides itermask_plan_and_preprocess)", file=sys.stderr)
        return 2
    images = sorted((args.source / "images").glob(f"*{SUFFIX}"))
    if not images or not (args.source / "brainmasks").is_dir():
        print(f"error: no IXI data at {args.source} (expected images/*{SUFFIX} and brainmasks/)", file=sys.stderr)
        return 2
    images = images[: args.n] if args.n else images
    n, np_ = len(images), args.num_processes
    version = nnunet_version(nnunet_bin / "python")
    print(f"{n} IXI T1 scans, {np_} processes, {os.cpu_count()} CPU cores, nnunetv2 {version}", flush=True)

    # (a) ours: raw dataset from our converter (untimed)
    ours = fresh(args.work / "ours")
    env_ours = dict(os.environ, ITERMASK_raw=str(ours / "raw"), ITERMASK_preprocessed=str(ours / "preprocessed"),
                    ITERMASK_results=str(ours / "results"), PATH=f"{ours_bin}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([sys.executable, "-m", "itermask_auto.dataset_conversion.convert_ixi_t1", str(args.source),
                    "--raw", str(ours / "raw"), "-d", "1", "--limit", str(n)], env=env_ours, check=True)
    # (b) nnU-Net v2: equivalent raw dataset (untimed)
    nn = fresh(args.work / "nnunet")
    build_nnunet_raw(images, args.source, nn / "raw" / "Dataset001_IXI")
    env_nn = dict(os.environ, nnUNet_raw=str(nn / "raw"), nnUNet_preprocessed=str(nn / "preprocessed"),
                  nnUNet_results=str(nn / "results"), PATH=f"{nnunet_bin}{os.pathsep}{os.environ['PATH']}")
    env_nn.pop("PYTHONPATH", None)

    timed = {"ours": lambda: run_timed([str(ours_cli), "-d", "1", "-np", str(np_), "-c", "3d"], env_ours,
                                       ours / "log.txt"),
             "nnunet": lambda: run_timed([str(nnunet_cli), "-d", "1", "-c", "3d_fullres", "-npfp", str(np_),
                                          "-np", str(np_)], env_nn, nn / "log.txt")}
    order = ["nnunet", "ours"] if args.nnunet_first else ["ours", "nnunet"]
    results = {name: timed[name]() for name in order}
    (t_ours, c_ours), (t_nn, c_nn) = results["ours"], results["nnunet"]
    ours_out = len(list((ours / "preprocessed").rglob("*.npz")))
    nn_out = len(list((nn / "preprocessed").rglob("*.pkl")))

    # (c) report
    print()
    print(f"{'tool':<30} {'wall s':>7} {'cases/s':>8} {'s/case':>7} {'CPU s':>7}  output cases")
    for name, t, c, out in (("itermask_plan_and_preprocess", t_ours, c_ours, ours_out),
                            ("nnUNetv2_plan_and_preprocess", t_nn, c_nn, nn_out)):
        print(f"{name:<30} {t:7.1f} {n / t:8.2f} {t / n:7.2f} {c:7.1f}  {out}")
    print(f"ratio ours / nnU-Net: wall {t_ours / t_nn:.2f}, CPU {c_ours / c_nn:.2f}  (< 1: ours is faster)")
    print(f"ours:    {OURS_DID}")
    print(f"nnU-Net: {NNUNET_DID}")
    if not args.keep:
        shutil.rmtree(ours, ignore_errors=True)
        shutil.rmtree(nn, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Backup throughput vs ``cp -r`` on a 1 GiB checkpoint, verification on; cost of a no-change re-backup.

    python bench/backup_throughput.py [--size-mib 1024] [--repeats 3]

The checkpoint (``model.pt`` 70 %, ``optimizer.pt`` 28 %, a state file and 20
small tokenizer files) is written once into a temp dir and read once, so
every command reads it from the page cache. Each round times, in alternating
order, each command into a fresh destination (deleted untimed before the round):

- ``cp -r SRC DST`` (the baseline)
- ``cp -r`` then ``sync FILE...`` of every copied file (coreutils fsyncs each):
  ``cp -r`` made as durable as nbexec's default
- nbexec (``immediate_backup_if_needed``, default: sha256 on the fly, every
  file fsynced, read back and verified before its rename, manifest last)
- nbexec with ``durable=False`` (verified, no fsync): the like-for-like
  comparison with plain ``cp -r``
- (informational) one sha256 pass over the source and nothing else: the floor
  any backup that records a sha256 per file has on this CPU

then, untimed, a full backup, and times the same backup again (nothing
changed: 0 files copied). Every command is a fresh process (argv, no shell).
Target: nbexec default >= 0.8x the throughput of ``cp -r`` (ratio of times
cp / nbexec).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _common import median, noise_note, print_header, print_table, run_timed, verdict

MIB = 1 << 20
HASH_ONLY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nbexec.backup.copy import sha256_file
    for path in sorted(Path(sys.argv[1]).rglob("*")):
        if path.is_file():
            sha256_file(path)
    """
)
CHILD = textwrap.dedent(
    """
    import json, sys
    from nbexec.backup import immediate_backup_if_needed
    src, target, durable = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    r = immediate_backup_if_needed(src, backup_enabled=True, target=target, project="bench", run_name="r",
                                   durable=durable)
    assert r.verified
    print(json.dumps({"copied": r.files_copied, "skipped": r.files_skipped, "bytes": r.bytes_copied}))
    """
)


def make_checkpoint(root: Path, size: int) -> int:
    """Write the checkpoint; returns its total size in bytes."""
    root.mkdir(parents=True)
    block = bytearray(os.urandom(MIB))
    parts = {"model.pt": int(size * 0.70), "optimizer.pt": int(size * 0.28)}
    for name, nbytes in parts.items():
        with open(root / name, "wb") as fh:
            for i in range(nbytes // MIB):
                block[:8] = i.to_bytes(8, "little")  # every MiB distinct
                fh.write(block)
    (root / "trainer_state.json").write_text(json.dumps({"epoch": 3, "global_step": 1200}))
    tok = root / "tokenizer"
    tok.mkdir()
    for i in range(20):
        (tok / f"part{i}.txt").write_bytes(os.urandom(64 * 1024))
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def warm(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                while fh.read(8 * MIB):
                    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="checkpoint size (default 1024 = 1 GiB)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cp, sync = shutil.which("cp"), shutil.which("sync")
    assert cp and sync, "cp and sync (coreutils) are needed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    with tempfile.TemporaryDirectory(prefix="nbexec-bench-backup-") as tmp:
        root = Path(tmp)
        src = root / "checkpoint"
        total = make_checkpoint(src, args.size_mib * MIB)
        warm(src)
        files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
        print_header(
            "backup throughput vs cp -r (verification on)",
            [f"checkpoint: {total / MIB:.0f} MiB in {len(files)} files, in {root} (page cache warm)",
             f"repeats: {args.repeats}, order alternates per round"],
        )
        py = [sys.executable, "-c", CHILD]

        def dest(name: str) -> Path:
            return root / f"dst-{name}"

        commands = {
            "cp -r": lambda: [[cp, "-r", str(src), str(dest("cp"))]],
            "cp -r + sync files": lambda: [[cp, "-r", str(src), str(dest("cpsync"))],
                                           [sync, *(str(dest("cpsync") / f) for f in files)]],
            "nbexec (default)": lambda: [[*py, str(src), str(dest("nbexec")), "1"]],
            "nbexec durable=False": lambda: [[*py, str(src), str(dest("nbexec-nosync")), "0"]],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for rnd in range(args.repeats):
            names = list(commands) if rnd % 2 == 0 else list(reversed(commands))
            for name in names:
                for d in root.glob("dst-*"):
                    shutil.rmtree(d)
                subprocess.run([sync], check=True)  # earlier rounds' dirty pages are not this command's cost
                times[name].append(sum(run_timed(argv, cwd=tmp, env=env) for argv in commands[name]()))
        for d in root.glob("dst-*"):
            shutil.rmtree(d)

        # the no-change re-backup: a full backup (untimed), then the same again
        run_timed([*py, str(src), str(dest("again")), "1"], cwd=tmp, env=env)
        again = []
        for _ in range(args.repeats):
            proc = subprocess.run([*py, str(src), str(dest("again")), "1"], env=env, capture_output=True, text=True,
                                  check=True)
            assert json.loads(proc.stdout)["copied"] == 0, proc.stdout
            again.append(run_timed([*py, str(src), str(dest("again")), "1"], cwd=tmp, env=env))
        floor = [run_timed([sys.executable, "-c", HASH_ONLY, str(src)], cwd=tmp, env=env)
                 for _ in range(args.repeats)]
        noop = [run_timed([sys.executable, "-c", "import nbexec.backup"], cwd=tmp, env=env)
                for _ in range(args.repeats)]

    rows = []
    base = median(times["cp -r"])
    for name, values in times.items():
        med = median(values)
        rows.append([name, f"{med:.3f}", f"{min(values):.3f}", f"{total / MIB / med:.0f}", f"{base / med:.2f}"])
    rows.append(["nbexec re-backup, no change", f"{median(again):.3f}", f"{min(again):.3f}", "-",
                 f"{base / median(again):.2f}"])
    rows.append(["sha256 of the source only (floor)", f"{median(floor):.3f}", f"{min(floor):.3f}",
                 f"{total / MIB / median(floor):.0f}", f"{base / median(floor):.2f}"])
    rows.append(["python -c 'import nbexec.backup'", f"{median(noop):.3f}", f"{min(noop):.3f}", "-", "-"])
    print_table(["command", "median s", "min s", "MiB/s", "cp time / this"], rows)
    print(noise_note({**times, "re-backup": again}))
    ratio = base / median(times["nbexec (default)"])
    like = base / median(times["nbexec durable=False"])
    durable = median(times["cp -r + sync files"]) / median(times["nbexec (default)"])
    print(f"RATIO nbexec(default, verified+fsync) vs cp -r: {ratio:.2f}  target >= 0.8: {verdict(ratio >= 0.8)}")
    print(f"RATIO nbexec(durable=False, verified) vs cp -r: {like:.2f}  (informational)")
    print(f"RATIO nbexec(default) vs cp -r + sync of the files: {durable:.2f}  (informational)")
    print(f"RESULT no-change re-backup: {median(again):.3f} s = {median(again) / median(times['nbexec (default)']):.1%} "
          f"of a full backup (of which ~{median(noop):.2f} s is starting Python and importing nbexec.backup)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the temp storage walker against ``du -sb`` on a tree of small image files.

Both run as child processes (so both pay process start-up), alternately, with warm caches (one
unmeasured warm-up run of each first). Prints the median wall time of each, the ratio, and the
walker's peak RSS on the full tree and on a tree a tenth its size.

    python bench/temp_scan.py [--tree DIR] [--runs 5] [--files 200000] [--dirs 800]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif")
MATCHING = (".jpg", ".png", ".webp", ".JPG")
OTHER = (".json", ".part", ".txt")
MARKER = ".bench-tree.json"

# The child reports its own peak RSS (VmHWM): ru_maxrss from wait4 also counts what the forking
# parent had mapped before exec, which here is more than the walker ever uses.
PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
CHILD = f"""
import sys, time
from pixcrawler_exporter.collectors.temp_storage.scan import scan
start = time.perf_counter()
r = scan(sys.argv[1], sys.argv[2].split(","), True)
print(r.bytes, r.files, len(r.errors), time.perf_counter() - start, {PEAK})
"""
IDLE = f"import pixcrawler_exporter.collectors.temp_storage.scan; print({PEAK})"


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, process start to exit
    stdout: str

    def field(self, index: int) -> str:
        return self.stdout.split()[index]


def build(root: Path, files: int, dirs: int, seed: int) -> dict[str, int]:
    """A tree of ``dirs`` directories below ``root`` (tops holding chunks) and ``files`` files.

    Reused when its marker says it was built with the same parameters.
    """
    params = {"files": files, "dirs": dirs, "seed": seed}
    marker = root / MARKER
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved["params"] == params:
            return dict(saved["expected"])
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)  # noqa: S311 - a reproducible tree, not a secret
    blob = rng.randbytes(4096)
    tops = max(1, dirs // 20)
    leaf_dirs: list[Path] = []
    for t in range(tops):
        top = root / f"job-{t:04d}"
        top.mkdir(parents=True)
        leaf_dirs.append(top)
    for d in range(dirs - tops):
        sub = leaf_dirs[d % tops] / f"chunk-{d:05d}"
        sub.mkdir()
        leaf_dirs.append(sub)
    expected = {"bytes": 0, "files": 0}
    for i in range(files):
        directory = leaf_dirs[i % len(leaf_dirs)]
        size = rng.randint(1024, 4096)
        if rng.random() < 0.1:
            ext = rng.choice(OTHER)
        else:
            ext = rng.choice(MATCHING)
            expected["bytes"] += size
            expected["files"] += 1
        (directory / f"img-{i:07d}{ext}").write_bytes(blob[:size])
    marker.write_text(json.dumps({"params": params, "expected": expected}))
    return expected


def run(argv: list[str]) -> Run:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited with {proc.returncode}")
    return Run(wall, out.decode())


def ours(tree: Path) -> list[str]:
    # -S: no site-packages .pth hooks, which cost more start-up than du's whole process.
    return [sys.executable, "-S", "-c", CHILD, str(tree), ",".join(PATTERNS)]


def du(tree: Path) -> list[str]:
    return ["du", "-sb", str(tree)]


def find(tree: Path) -> list[str]:
    # The same work as ours, done by GNU find: match the names, stat the matches, print sizes.
    names: list[str] = []
    for pattern in PATTERNS:
        names += ["-o", "-iname", pattern] if names else ["-iname", pattern]
    return ["find", str(tree), "-xdev", "-type", "f", "(", *names, ")", "-printf", "%s\\n"]


def check(result: Run, expected: dict[str, int]) -> None:
    got_bytes, got_files, errors = result.stdout.split()[:3]
    if (int(got_bytes), int(got_files), int(errors)) != (expected["bytes"], expected["files"], 0):
        raise SystemExit(f"walker counted {result.stdout.strip()}, expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="where to build or reuse the trees")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--dirs", type=int, default=800)
    args = parser.parse_args()
    if shutil.which("du") is None:
        raise SystemExit("du is not installed")

    with tempfile.TemporaryDirectory(prefix="temp-scan-bench-") as scratch:
        base = args.tree or Path(scratch)
        big = base / f"files-{args.files}"
        small = base / f"files-{args.files // 10}"
        print(f"building or reusing {big} and {small} ...", flush=True)
        expected_big = build(big, args.files, args.dirs, seed=1)
        expected_small = build(small, args.files // 10, max(1, args.dirs // 10), seed=2)

        # Warm the page, dentry and inode caches for both, unmeasured.
        run(du(big))
        check(run(ours(big)), expected_big)

        du_walls: list[float] = []
        find_walls: list[float] = []
        our_walls: list[float] = []
        our_inner: list[float] = []
        rss_big: list[int] = []
        for _ in range(args.runs):
            du_walls.append(run(du(big)).wall)
            found = run(find(big))
            if sum(map(int, found.stdout.split())) != expected_big["bytes"]:
                raise SystemExit("find counted other bytes than the tree holds")
            find_walls.append(found.wall)
            result = run(ours(big))
            check(result, expected_big)
            our_walls.append(result.wall)
            our_inner.append(float(result.field(3)))
            rss_big.append(int(result.field(4)))
        small_run = run(ours(small))
        check(small_run, expected_small)
        idle = run([sys.executable, "-S", "-c", IDLE])

    du_med, our_med = statistics.median(du_walls), statistics.median(our_walls)
    inner_med = statistics.median(our_inner)
    print(f"tree: {args.files} files ({expected_big['files']} matching) in {args.dirs} dirs")
    print(f"{'wall seconds, ' + str(args.runs) + ' runs':38} {'median':>7} {'min':>7} {'max':>7}")
    rows = [
        ("du -sb (process)", du_walls),
        ("find -iname ... -printf %s (process)", find_walls),
        ("python -S -c scan() (process)", our_walls),
        ("scan() call only (in the child)", our_inner),
    ]
    for label, walls in rows:
        print(f"{label:38} {statistics.median(walls):7.3f} {min(walls):7.3f} {max(walls):7.3f}")
    print(
        f"peak RSS (VmHWM) of the walker child: {max(rss_big) / 1024:.1f} MiB for "
        f"{args.files} files, "
        f"{int(small_run.field(4)) / 1024:.1f} MiB for {args.files // 10} files, "
        f"{int(idle.field(0)) / 1024:.1f} MiB for importing it only"
    )
    print(f"ratio scan() call only/du process: {inner_med / du_med:.2f}")
    print(f"ratio ours/find: {our_med / statistics.median(find_walls):.2f}")
    print(f"ratio ours/du: {our_med / du_med:.2f}")


if __name__ == "__main__":
    main()

"""Dataset subcommands: ``build``, ``plan``, ``verify`` and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dataset.cli.common import (
    EXIT_NOTHING_DONE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    MAX_WORKERS,
    CliError,
    add_job_options,
    number_flag,
)

BUILD_EXIT_STATUSES = f"""exit status:
  {EXIT_OK}  every planned clip is committed and no scene failed (also a rerun of a finished build)
  {EXIT_PARTIAL}  partial: some clips are committed, other clips or scenes failed (see OUT/failures.parquet),
     or more than --max-failures failed and the build stopped early
  {EXIT_USAGE}  error: bad input (flags, job spec, output folder, cluster address), or the build had to stop
     (disk full, workers cannot start); one line on stderr says what to do
  {EXIT_NOTHING_DONE}  nothing was built: no clip is committed (every clip or every scene failed, or the build
     stopped at --max-failures before committing one)"""
"""The ``build`` help epilog; the README's CLI section has the same table."""


def cmd_build(args: argparse.Namespace) -> int:
    from dataset.core.jobspec import load_job_spec
    from dataset.jobs.build import run_build

    spec = load_job_spec(args.config)
    counts = run_build(spec, args.out, ray_address=args.ray_address, workers=args.workers, overwrite=args.overwrite,
                       checksums=args.checksums, limit=args.limit, max_failures=args.max_failures)
    see = " (see failures.parquet)" if (Path(args.out) / "failures.parquet").exists() else ""
    print(f"built {args.out}: {counts['clips_committed']} clips committed ({counts['accepted']} accepted, "
          f"{counts['rejected']} rejected) in {counts['shards']} shards, {counts['clips_failed']} clips and "
          f"{counts['scenes_failed']} scenes failed{see}, {counts['quarantined']} damaged shards "
          f"quarantined, {counts['seconds']} s", file=sys.stderr)
    return build_status(counts, Path(args.out))


def cmd_plan(args: argparse.Namespace) -> None:
    from dataset.core.jobspec import load_job_spec
    from dataset.jobs.plan import format_plan, plan_job

    plan = plan_job(load_job_spec(args.config), calibrate=not args.no_calibration, workers=args.workers)
    print(json.dumps(plan.to_json(), indent=1) if args.json else format_plan(plan))


def build_status(counts: dict, out: Path) -> int:
    """The exit status of a finished build (see ``BUILD_EXIT_STATUSES``); prints a one-line summary of what
    failed on stderr unless everything was built (naming ``failures.parquet`` only when it exists)."""
    committed, planned = counts["clips_committed"], counts["clips_planned"]
    stopped = counts.get("stopped", False)
    # committed counts every clip in the folder: more than planned after a --limit run over a bigger build
    if (committed and committed >= planned and not counts["clips_failed"] and not counts["scenes_failed"]
            and not stopped):
        return EXIT_OK
    scenes, clips, first = _failures(out)
    failed = f"{clips} clips and {scenes} of {counts['scenes']} scenes failed"
    first = f" (first: {first})" if first else ""
    path = out / "failures.parquet"
    see = f"; see {path}" if path.exists() else ""
    if stopped:
        print(f"matrix-pano build: stopped: more than --max-failures {counts['max_failures']} failed: {failed}"
              f"{first}; {committed} of {planned} planned clips committed{see}; fix the cause and rerun to continue",
              file=sys.stderr)
        return EXIT_PARTIAL if committed else EXIT_NOTHING_DONE
    if not committed:
        what = failed if scenes or clips else "no scene yielded a clip"
        print(f"matrix-pano build: nothing was built: {what}{first}{see}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    print(f"matrix-pano build: partial: {committed} of {planned} planned clips committed, {failed}{first}{see}",
          file=sys.stderr)
    return EXIT_PARTIAL


def _failures(out: Path) -> tuple[int, int, str]:
    """Failed scenes, failed clips and the first failure (``where: error``, one line) of ``failures.parquet``."""
    from dataset.runtime.failures import read_failures

    rows = read_failures(out)
    if not rows:
        return 0, 0, ""
    scenes = sum(r["clip_id"] is None for r in rows)
    r = rows[0]
    where = f"scene {r['scene']}" if r["clip_id"] is None else f"clip {r['clip_id']} of {r['scene']}"
    error = " ".join(str(r["error"]).split())
    return scenes, len(rows) - scenes, f"{where}: {error[:300]}"


def cmd_verify(args: argparse.Namespace) -> None:
    from dataset.store.reader import verify_dataset

    problems = verify_dataset(args.dir, decode=not args.no_decode)
    if problems:
        for p in problems[:50]:
            print(p, file=sys.stderr)
        more = " (first 50 shown)" if len(problems) > 50 else ""
        raise CliError(f"{args.dir}: {len(problems)} problems found{more}")
    print(f"{args.dir}: all committed shards are valid", file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> None:
    from dataset.store.stats import dataset_stats, write_previews
    from sampling.plot import plot_clip_paths

    stats = dataset_stats(args.dir)
    print(json.dumps(stats, indent=1))
    if not args.no_previews:
        for path in write_previews(args.dir, plot_paths=plot_clip_paths):
            print(f"wrote {path}", file=sys.stderr)


def add_build(sub) -> None:
    p = sub.add_parser("build", help="build a dataset of panoramic clips from a job spec (resumable)",
                       epilog=BUILD_EXIT_STATUSES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="job spec YAML (scenes, trajectories_per_scene, frames_per_clip, ...)")
    p.add_argument("--out", required=True, help="dataset folder: shards/, manifest.json, failures.parquet")
    add_job_options(p, "render workers (default: one per CPU of the cluster)")
    p.add_argument("--checksums", action="store_true",
                   help="on resume, check every committed shard's SHA-256, not only its size (reads them all); "
                        "damaged shards are moved to OUT/quarantine/ and their clips rendered again")
    p.add_argument("--limit", type=number_flag(int, ge=1), metavar="N",
                   help="build only the first N clips of the plan (scenes in spec order); a rerun without it "
                        "builds the rest into the same --out (`matrix-pano plan` shows the plan)")
    p.add_argument("--max-failures", type=number_flag(int, ge=0), metavar="N",
                   help="stop the build (non-zero exit) once more than N clips and scenes have failed; work in "
                        "flight finishes and is committed (default: failures never stop a build)")
    p.set_defaults(func=cmd_build)


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="show what a build would make (scenes, clips, frames) and estimate its bytes "
                                    "and time from a short calibration render; no Ray, writes nothing")
    p.add_argument("config", help="job spec YAML, as for build")
    p.add_argument("--workers", type=number_flag(int, ge=1, le=MAX_WORKERS),
                   help="render workers the time estimate assumes (default: this machine's CPUs)")
    p.add_argument("--no-calibration", action="store_true",
                   help="only plan (counts and planning time): no render, no byte or time estimate")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check every committed shard of a dataset; non-zero exit on problems")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-decode", action="store_true", help="skip decoding videos and depth (faster)")
    p.set_defaults(func=cmd_verify)


def add_stats(sub) -> None:
    p = sub.add_parser("stats", help="print dataset counts and rates; write previews/ contact sheets and plots")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--no-previews", action="store_true", help="only print the numbers")
    p.set_defaults(func=cmd_stats)

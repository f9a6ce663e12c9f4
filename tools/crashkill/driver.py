"""The driver: the loop over the cycles (plan, run and kill the writer,
reap orphans, cut the power, reopen, check), the run's figures, the
reliability-log line and the summary."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time

from power_cut_fs import HarnessError

import lsm
from crashkill.commandline import replay_command
from crashkill.cycle import plan_cycle, read_db, run_child
from crashkill.failure import Failure
from crashkill.oracle import verify
from crashkill.orphans import reap_orphans, set_subreaper
from crashkill.power import count_cut, cut_power, new_journal
from crashkill.workload import Workload, workload_from
from crashkill.zygote import Zygote


def _phase(phases: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    phases[name] = phases.get(name, 0.0) + now - since
    return now


def _log_json(a: argparse.Namespace, record: dict) -> None:
    if a.reliability_log:
        with open(a.reliability_log, "a") as f:
            f.write(json.dumps(record) + "\n")


def driver_main(a: argparse.Namespace) -> int:
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 32)
    w = workload_from(a)
    rng = random.Random(a.seed)
    power = a.mode == "power"
    own_dir = a.dir is None
    a.workdir = tempfile.mkdtemp(prefix="lsm-crash-kill-")
    if own_dir:
        a.dir = os.path.join(a.workdir, "db")
    elif os.path.exists(a.dir) and os.listdir(a.dir):
        print(f"crash_kill: --dir {a.dir} must be empty or absent (the model starts from an empty database)",
              file=sys.stderr)
        return 2
    a.dir = os.path.abspath(a.dir)
    a.shadow = a.dir + ".shadow"
    family = "kill9_power" if power else "kill9"
    print(f"crash_kill: mode={a.mode} seed={a.seed} cycles={a.cycles} background={a.background} "
          f"threads={a.threads} dir={a.dir}")
    print(f"crash_kill: replay with: {replay_command(a)}", flush=True)
    subreaper = set_subreaper()
    journal = None
    if power:
        journal = new_journal(a)
    stats = dict.fromkeys(
        ("acked", "acked_lost_allowed", "in_flight_recovered", "seqs", "promises", "early_kills", "work_timeouts",
         "tails_dropped", "orphans_reaped", "table_set_changes", "process_cycles", "threads_max", "flushes",
         "compactions", "manifest_rolls", "manifest_rolls_at_open", "cycles_with_flush", "cycles_with_compaction",
         "cycles_with_roll", "changes_reverted", "changes_applied", "unjournalled_creates"), 0)
    tails: dict[str, int] = {}
    phases: dict[str, float] = {}
    last_levels: list[int] = []
    model: dict[bytes, bytes] = {}
    start_seq = 0
    t0 = time.perf_counter()
    cycle = 0
    zygote = Zygote(a.workdir)
    status = 0
    try:
        for cycle in range(a.cycles):
            plan = plan_cycle(a, rng, cycle)
            stats["process_cycles"] += plan.background == "process"
            stats["threads_max"] = max(stats["threads_max"], plan.threads)
            tick = time.perf_counter()
            res, stderr = run_child(a, zygote, plan, stats)
            tick = _phase(phases, "writer", tick)
            if subreaper:
                reaped, stale = reap_orphans(a.orphan_timeout, {zygote.proc.pid})
                tick = _phase(phases, "reap", tick)
                stats["orphans_reaped"] += reaped
                if stale:
                    raise Failure("a background worker outlived the killed writer: " + "; ".join(stale))
            if res.errors or res.bad_lines:
                raise Failure("the writer failed: " + "; ".join(res.errors + res.bad_lines) +
                              (f"\n--- writer stderr ---\n{stderr}" if stderr else ""))
            e = res.edits
            stats["flushes"] += e["f"]
            stats["compactions"] += e["c"]
            stats["manifest_rolls"] += e["rolls"]
            stats["cycles_with_flush"] += e["f"] > 0
            stats["cycles_with_compaction"] += e["c"] > 0
            stats["manifest_rolls_at_open"] += e["o_rolls"]
            stats["cycles_with_roll"] += e["rolls"] > e["o_rolls"]
            cut = None
            dbfs = None
            if journal is not None:
                cut, dbfs = cut_power(a, journal, res, cycle)
                tick = _phase(phases, "cut", tick)
                count_cut(cut, stats, tails)
            cw = Workload(**{**w.__dict__, "seed": plan.seed})
            try:
                state, last_seq, report, levels = read_db(a, dbfs)
                tick = _phase(phases, "reopen", tick)
            except lsm.Error as err:
                raise Failure(f"reopening after the {'power cut' if power else 'kill'} failed: "
                              f"{type(err).__name__}: {err}") from None
            except HarnessError as err:
                raise Failure(f"the driver's reopen could not be journalled: {err}") from None
            if report["dropped"]:
                stats["tails_dropped"] += 1
            if levels != last_levels:
                stats["table_set_changes"] += 1
                last_levels = levels
            fig = verify(cw, cycle, res, plan.threads, model, start_seq, state, last_seq, power)
            tick = _phase(phases, "check", tick)
            for k, v in fig.items():
                stats[k] += v
            if a.verbose:
                print(f"cycle {cycle}: {plan.background} x{plan.threads} {plan.when}+"
                      f"{plan.delay * 1000:.0f} ms: {fig} edits={e} tables per level={levels} "
                      f"dropped={report['dropped']}" + (f" cut={dataclasses.replace(cut, notes=[])}" if cut else ""), flush=True)
            model, start_seq = state, last_seq
    except Failure as err:
        print(f"crash_kill: FAILED in cycle {cycle} (mode {a.mode}, seed {a.seed}): {err}", file=sys.stderr)
        print(f"crash_kill: database kept in {a.dir}" + (
            f" (the last cut's decisions: {a.dir}.cut.txt" + (f"; before it: {a.dir}.precut)" if a.keep_precut else
                                                             "; --keep-precut keeps the state before it)")
            if power else ""), file=sys.stderr)
        print(f"crash_kill: replay with: {replay_command(a, cycle + 1)}", file=sys.stderr)
        status = 1
    finally:
        zygote.close()
    dt = time.perf_counter() - t0
    done = a.cycles if status == 0 else cycle
    _log_json(a, {"family": family, "cycles": done, "flushes": stats["flushes"],
                  "compactions": stats["compactions"], "manifest_rolls": stats["manifest_rolls"],
                  "violations": 0 if status == 0 else 1, "seconds": round(dt, 1), "seed": str(a.seed), **stats,
                  **({"tails": tails} if power else {})})
    if status:
        if not own_dir:
            shutil.rmtree(a.workdir, ignore_errors=True)  # only the writer's stderr (printed on a writer failure)
        return status
    print(f"crash_kill: OK {a.cycles} {'power-cut' if power else 'kill'} cycles in {dt:.1f} s (seed {a.seed}): "
          f"{stats['acked']} acknowledged commits checked"
          + (f" ({stats['acked_lost_allowed']} lost as their level allows)" if power else "")
          + f", {stats['in_flight_recovered']} in-flight commits recovered, {stats['seqs']} sequence numbers, "
          f"{stats['promises']} durability promises, {stats['early_kills']} kills during open, "
          f"{stats['work_timeouts']} cycles that did not flush and compact within --work-timeout, "
          f"{stats['process_cycles']} cycles with worker processes, up to {stats['threads_max']} threads, "
          f"{stats['tails_dropped']} torn WAL tails dropped, {stats['orphans_reaped']} orphaned workers reaped")
    print(f"crash_kill: the writers completed {stats['flushes']} flushes, {stats['compactions']} compactions and "
          f"{stats['manifest_rolls']} manifest roll-overs ({stats['manifest_rolls_at_open']} of them by the open); "
          f"cycles with a flush {stats['cycles_with_flush']}, with a compaction {stats['cycles_with_compaction']}, "
          f"with a roll-over by a flush or compaction {stats['cycles_with_roll']} "
          f"(of {a.cycles}); {stats['table_set_changes']} cycles changed the table files, at the end "
          f"{last_levels} per level and {len(model)} keys")
    print("crash_kill: seconds by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    if power:
        print(f"crash_kill: power cuts reverted {stats['changes_reverted']} and applied {stats['changes_applied']} "
              f"unsynced directory changes ({stats['unjournalled_creates']} creates cut off before their journal "
              f"line); unsynced file contents: {dict(sorted(tails.items()))}")
    if own_dir and not a.keep:
        shutil.rmtree(a.workdir, ignore_errors=True)
    else:
        shutil.rmtree(a.workdir, ignore_errors=True)  # only the writer's stderr (the database is elsewhere)
        if not a.keep:
            shutil.rmtree(a.shadow, ignore_errors=True)
            shutil.rmtree(a.dir + ".precut", ignore_errors=True)
            if os.path.exists(a.dir + ".cut.txt"):
                os.remove(a.dir + ".cut.txt")
        print(f"crash_kill: database in {a.dir}")
    return 0

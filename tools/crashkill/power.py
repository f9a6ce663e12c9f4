"""Power-cut mode's glue between the writer's journal and the driver: the
durable model of the database directory (tools/power_cut_fs.py), the cut
after each kill (each unsynced change applied or reverted, each unsynced
file tail dropped, kept or torn; the decisions go to ``DIR.cut.txt``), and
the journalled filesystem of the driver's reopen."""

from __future__ import annotations

import argparse
import os
import random
import shutil

from power_cut_fs import CutFigures, DurableModel, HarnessError, SyncTrackingFS

from crashkill.failure import Failure
from crashkill.oracle import CycleResult


def new_journal(a: argparse.Namespace) -> DurableModel:
    """The durable model of ``a.dir``, which starts empty."""
    os.makedirs(a.dir, exist_ok=True)  # the model starts from this empty, durable directory
    return DurableModel([a.dir], a.shadow)


def cut_power(a: argparse.Namespace, journal: DurableModel, res: CycleResult,
              cycle: int) -> tuple[CutFigures, SyncTrackingFS]:
    """Apply the killed writer's journal, cut the power (roll ``a.dir`` back
    to a state the disk could hold), and return the cut and the journalled
    filesystem for the driver's reopen. Raises Failure if the cut cannot
    be simulated."""
    try:
        journal.start_process()
        for line in res.journal:
            journal.apply(line)
        if a.keep_precut:
            shutil.rmtree(a.dir + ".precut", ignore_errors=True)
            shutil.copytree(a.dir, a.dir + ".precut")
        cut = journal.cut(random.Random(f"{a.seed}/cut/{cycle}"))
        with open(a.dir + ".cut.txt", "w") as f:
            f.write(f"cycle {cycle}\n" + "".join(n + "\n" for n in cut.notes))
        journal.start_process()
        dbfs = SyncTrackingFS(journal.apply, a.shadow)  # the driver's reopen is journalled too
    except HarnessError as err:
        raise Failure(f"the power cut could not be simulated: {err}") from None
    return cut, dbfs


def count_cut(cut: CutFigures, stats: dict, tails: dict[str, int]) -> None:
    """Add what ``cut`` did to the run's figures."""
    stats["changes_reverted"] += cut.changes_reverted
    stats["changes_applied"] += cut.changes_applied
    stats["unjournalled_creates"] += cut.unjournalled_creates
    for k, v in cut.tails.items():
        tails[k] = tails.get(k, 0) + v

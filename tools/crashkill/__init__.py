"""The kill test of tools/crash_kill.py (its docstring, also ``--help``,
says what is tested and how), by concept. Lowest first; a module imports
only from the ones above it:

* ``failure``: the one exception a failed check raises;
* ``workload``: what the writers commit (a pure function of seed, cycle,
  thread and commit number), the tiny database options;
* ``commandline``: the tool's arguments, the writer's argv, the replay
  command line;
* ``child``: the writer process (runs until killed);
* ``zygote``: the process that forks one writer per cycle, and the
  driver's end of it;
* ``orphans``: background workers that outlive a killed writer (Linux);
* ``oracle``: what a writer reported, and the check of the reopened
  database against it;
* ``power``: power-cut mode's glue (the journal, the cut, the journalled
  reopen);
* ``cycle``: one cycle: plan it, run and kill the writer, reopen;
* ``driver``: the loop over the cycles, the figures and the summary.

Not a library: imported by tools/crash_kill.py, which puts tools/ and the
repository on ``sys.path`` (``power_cut_fs`` and ``lsm``).
"""

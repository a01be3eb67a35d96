"""The kernel lab: measure the real kernel, to check the guest memory simulator against it.

A root-only harness on real cgroups and zram; it imports nothing of the simulator.
:mod:`wsrl.lab.workload` is a standalone process that allocates page populations (anon or file, a
size and a per-page mean access interval each) and touches them with a known pattern.
:mod:`wsrl.lab.measure` (the command line; the ladder itself is :mod:`wsrl.lab.ladder`, the cgroup
and zram set-up :mod:`wsrl.lab.kernel`) runs it inside a real cgroup v1 memcg with zram swap under
a ladder of memory limits and records what the kernel did: refaults, major faults, swap traffic,
PSI stall and OOM kills. Its JSON output is the reference the simulator's predictions are compared
with, by :mod:`wsrl.sim.fidelity.compare`.
"""

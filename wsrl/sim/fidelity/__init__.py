"""Measure the real kernel, to check the guest memory simulator against it.

:mod:`wsrl.sim.fidelity.workload` is a standalone process that allocates page populations (anon
or file, a size and a per-page mean access interval each) and touches them with a known pattern.
:mod:`wsrl.sim.fidelity.measure` runs it inside a real cgroup v1 memcg with zram swap under a
ladder of memory limits and records what the kernel did: refaults, major faults, swap traffic,
PSI stall and OOM kills. Its JSON output is the reference the simulator's predictions are
compared with.
"""

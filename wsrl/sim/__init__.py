"""The simulator: guest and host memory models, workloads, scenarios and trace-driven guests.

Entry points: :func:`wsrl.sim.config.load_scenario` reads a scenario, :func:`wsrl.sim.build.build_setup`
turns it into batched arrays, :class:`wsrl.sim.simulator.Simulator` steps them and
:func:`wsrl.sim.run.run_simulation` runs one for a duration and records it as a trace.
See ``docs/simulator.md`` for the model.
"""

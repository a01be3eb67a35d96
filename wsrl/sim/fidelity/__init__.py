"""The simulator against the real kernel.

:mod:`wsrl.sim.fidelity.compare` runs the simulator on the populations, limits and timing that the
kernel lab (:mod:`wsrl.lab`, ``python -m wsrl.lab.measure``) measured on a real memcg with zram
swap, and compares its predictions with the measured JSON.
"""

"""Live backends: sources of guest state and actuators of targets (cgroups, QEMU, crosvm, simulator)."""

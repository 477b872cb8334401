"""Training: the pure step, the compiled data-parallel program, the one trainer every task runs on,
Orbax checkpoints, resume checks and signals."""

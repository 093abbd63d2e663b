"""RAMP training on the training host: datasets from sealed episodes, rewards and advantages,
the training stages (world model, policy, continual, BC and RECAP baselines), value metrics,
DDP, checkpoints and export of a run to a bundle.

Entry point: ``ramp-edge train wm|policy|continual|bc|recap --config run.toml --out RUN_DIR``
(:mod:`models.cli_train`), or :func:`models.training.stages.run_stage` from Python.
"""

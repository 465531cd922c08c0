"""Task evaluations: multiple-choice tasks scored in every trial (issue #28's first step).

- :mod:`workers.evals.config`: the spec's ``evals:`` section (typed once; never in trial ids);
- :mod:`workers.evals.tasks`: items and the JSONL reader (the project's and the harness's fields);
- :mod:`workers.evals.builtin`: tasks generated from the corpus's held-out text;
- :mod:`workers.evals.scoring`: summed log-probabilities, batched: task_bpb, acc, acc_norm;
- :mod:`workers.evals.suite`: a spec's tasks read once per worker, scored with any model.

Trainers score through ``Context.evaluate_tasks`` (workers.trainers.interface); rows land in the
``evals`` table (workers.store.EVALS_SCHEMA), which ``scalesweep downstream`` fits.
"""

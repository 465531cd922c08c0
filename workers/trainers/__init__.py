"""Trainers: the contract every trainer follows (:mod:`workers.trainers.interface`), how a trial
finds its trainer (:mod:`workers.trainers.loading`), and a lab's command as a trainer
(:mod:`workers.trainers.command`). Users import the contract from the ``scalesweep`` package."""

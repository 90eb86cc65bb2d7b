"""Run a sweep in its own process: ``python sweep_driver.py CONFIG_JSON SPACE_JSON N_TRIALS STUDY_PATH``."""

import json
import sys

from nbexec.hpo import run_hpo

config, space, n_trials, study_path = sys.argv[1:5]
result = run_hpo(json.loads(config), json.loads(space), int(n_trials), study_path=study_path, seed=5,
                 on_trial=lambda t: print(t.line("val_loss"), flush=True))
print(result.report(), flush=True)

"""Plain mlflow calls in user code, on rank 0.

    mlflow_plain.py [--hold HOLDING_FILE]

Without --hold: a `with mlflow.start_run()` block, then mlflow.log_metric()
after it ended (MLflow starts a run implicitly there). With --hold: also a
nested run, left open while the script waits to be cancelled (after writing
HOLDING_FILE).
"""

import argparse
import os
import time
from pathlib import Path

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--hold")
args = parser.parse_args()
if int(os.environ["RANK"]) == 0:
    with mlflow.start_run():
        mlflow.log_metric("inside_block", 1.0)
        mlflow.log_param("from_script", "yes")
    mlflow.log_metric("after_block", 2.0)  # no active run: MLflow starts one
    if args.hold:
        with mlflow.start_run(nested=True):
            mlflow.log_metric("nested_metric", 3.0)
            Path(args.hold).write_text("holding")
            while True:  # the test cancels the job here
                time.sleep(0.1)
print("MLFLOW_DONE")

"""Log metrics into an MLflow SQLite store until STOP exists (a live writer for snapshot tests).

    mlflow_writer.py TRACKING_URI RUN_ID_FILE STOP

Writes the run id to RUN_ID_FILE once the run exists, then logs a batch of
metrics per step as fast as it can.
"""

import sys
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

uri, run_id_file, stop = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
client = MlflowClient(tracking_uri=uri)
experiment = client.create_experiment("live-writer")
run = client.create_run(experiment)
run_id_file.write_text(run.info.run_id)
step = 0
while not stop.exists():
    metrics = [Metric(f"m{i}", float(step * i), 0, step) for i in range(20)]
    client.log_batch(run.info.run_id, metrics=metrics)
    step += 1
client.set_terminated(run.info.run_id)
print(f"logged {step} steps", flush=True)

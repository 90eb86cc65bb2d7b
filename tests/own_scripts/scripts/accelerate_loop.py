"""A plain accelerate loop that logs with log_with="mlflow", as its docs show."""

import torch
from accelerate import Accelerator

accelerator = Accelerator(cpu=True, log_with="mlflow")
accelerator.init_trackers("my-project", config={"lr": 0.1, "steps": 4})
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = accelerator.prepare(model, optimizer)
g = torch.Generator().manual_seed(accelerator.process_index)
for step in range(4):
    x = torch.randn(8, 4, generator=g)
    loss = model(x).pow(2).mean()
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    accelerator.log({"train_loss": loss.item()}, step=step)
accelerator.end_training()
accelerator.print("ACCELERATE_DONE")

"""A Lightning script with its MLFlowLogger left at its defaults (its own experiment, its own run)."""

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.TensorDataset(torch.randn(64, 4))
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=4, logger=MLFlowLogger(),
                     log_every_n_steps=1, enable_checkpointing=False, enable_model_summary=False)
trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
print("LIGHTNING_DONE")

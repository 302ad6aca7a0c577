"""Training logs: a CSV file always, TensorBoard event files when tensorboard is installed, and a
progress bar with the loss and throughput (process 0 only)."""
import csv
import logging
import os

from tqdm import tqdm

log = logging.getLogger("deadiff")
COLUMNS = ("step", "kind", "loss", "lr", "samples_per_s")


def _tensorboard_writer(folder):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard is not installed: logging to CSV only (pip install tensorboard for event files)")
        return None
    return SummaryWriter(folder)


class TrainingLog:
    def __init__(self, output_dir, start_step, max_steps, enabled):
        self.enabled = enabled
        self.progress = tqdm(total=max_steps, initial=start_step, unit="step", disable=not enabled, dynamic_ncols=True)
        if not enabled:
            return
        self.csv_path = os.path.join(output_dir, "log.csv")
        kept = self._rows_up_to(start_step)  # a resumed run rewrites the steps it repeats
        self.csv_file = open(self.csv_path, "w", newline="")
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(COLUMNS)
        self.csv.writerows(kept)
        self.tensorboard = _tensorboard_writer(os.path.join(output_dir, "tensorboard"))

    def _rows_up_to(self, step):
        if not os.path.isfile(self.csv_path):
            return []
        with open(self.csv_path, newline="") as f:
            return [row for row in list(csv.reader(f))[1:] if row and int(row[0]) <= step]

    def step(self, step, kind, loss, lr, samples_per_s, write):
        """Advance the bar; with `write`, also a CSV row (the loss exactly, as repr) and TensorBoard
        scalars for `step` (optimizer steps done)."""
        if not self.enabled:
            return
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.1f}", refresh=False)
        if write:
            self.csv.writerow((step, kind, repr(loss), f"{lr:.6g}", f"{samples_per_s:.3f}"))
            self.csv_file.flush()
            if self.tensorboard is not None:
                self.tensorboard.add_scalar("loss", loss, step)
                self.tensorboard.add_scalar(f"loss/{kind}", loss, step)
                self.tensorboard.add_scalar("lr", lr, step)
                self.tensorboard.add_scalar("samples_per_s", samples_per_s, step)

    def close(self):
        self.progress.close()
        if self.enabled:
            self.csv_file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def read_losses(output_dir):
    """{step: loss} from a run's log.csv."""
    with open(os.path.join(output_dir, "log.csv"), newline="") as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}

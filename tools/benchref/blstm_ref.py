"""PyTorch reference for HomeMole's BLSTM training throughput.

Same shape as pipeline/learn's BenchmarkTrain: 640 windows of 100 packets,
dport embedding 30 over 514 rows plus 12 other features, BLSTM hidden 64,
dropout 0.5, a linear layer per packet, Adam at 0.001, batch 64, one epoch;
as pipeline/learn trains: a class-weighted loss, the gradient norm clipped
at 5, the batch's accuracy read each step. One libtorch thread on both
sides: on a shared machine OpenMP's spinning threads measure the
neighbours' load more than the training.
Prints one line: windows/s <value>.
"""
import time

import torch
from torch import nn

WINDOWS, N, BATCH, CLASSES, PORTS = 640, 100, 64, 6, 514


class BLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(PORTS, 30)
        self.lstm = nn.LSTM(30 + 12, 64, num_layers=1, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(128, CLASSES)

    def forward(self, ports, feats):
        x = torch.cat([self.embed(ports), feats], dim=2)
        out, _ = self.lstm(x)
        return self.fc(self.drop(out))


def main():
    torch.set_num_threads(1)
    torch.manual_seed(1)
    ports = torch.randint(0, PORTS, (WINDOWS, N))
    feats = torch.randn(WINDOWS, N, 12)
    labels = torch.randint(0, CLASSES, (WINDOWS, N))
    model = BLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    counts = torch.bincount(labels.reshape(-1), minlength=CLASSES).float()
    weights = counts.sum() / (CLASSES * counts)
    loss_fn = nn.CrossEntropyLoss(weight=weights, ignore_index=-1)
    model.train()
    start = time.perf_counter()
    for lo in range(0, WINDOWS, BATCH):
        logits = model(ports[lo:lo + BATCH], feats[lo:lo + BATCH])
        loss = loss_fn(logits.reshape(-1, CLASSES), labels[lo:lo + BATCH].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        loss.item()
        (logits.argmax(-1) == labels[lo:lo + BATCH]).sum().item()
    elapsed = time.perf_counter() - start
    print(f"windows/s {WINDOWS / elapsed:.1f} threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()

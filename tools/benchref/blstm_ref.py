"""PyTorch reference for HomeMole's BLSTM training throughput.

Same shape as pipeline/learn's BenchmarkTrain: 640 windows of 100 packets,
dport embedding 30 over 514 rows plus 12 other features, BLSTM hidden 64,
dropout 0.5, a linear layer per packet, Adam at 0.001, batch 64, one epoch;
as pipeline/learn trains: a class-weighted loss, the gradient norm clipped
at 5, the batch's accuracy read each step. One libtorch thread on both
sides: on a shared machine OpenMP's spinning threads measure the
neighbours' load more than the training.
Prints one line: windows/s <value>.

With --device, --batch, --steps, --epochs, --model default and --infer it is
the reference tools/gpu/run.sh puts beside tools/gpu/bench: each batch is
copied to the device at its step (as a DataLoader's would be), the best epoch
after the first (warm-up) counts, and --infer adds inference (forward,
log-softmax, the result back on the host). --model default is HomeMole's
model: a frame-length embedding (16 over 514 rows) beside the port's, and
the stream context, relu(Linear(kinds of packet -> 64)) of a 0/1 vector per
window, concatenated to each packet's BLSTM output.
"""
import argparse
import time

import torch
from torch import nn

N, CLASSES, PORTS, LENS, BAG = 100, 6, 514, 514, 64
KINDS = 3 * LENS  # direction (in, out, local) x frame-length row, as pipeline/learn's bagRows


class BLSTM(nn.Module):
    def __init__(self, default):
        super().__init__()
        self.default = default
        self.embed = nn.Embedding(PORTS, 30)
        width = 30 + 12
        if default:
            self.lens = nn.Embedding(LENS, 16)
            self.stream = nn.Linear(KINDS, BAG)
            width += 16
        self.lstm = nn.LSTM(width, 64, num_layers=1, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(128 + (BAG if default else 0), CLASSES)

    def forward(self, ports, feats, lens=None, present=None):
        parts = [self.embed(ports)]
        if self.default:
            parts.append(self.lens(lens))
        x = torch.cat(parts + [feats], dim=2)
        out, _ = self.lstm(x)
        if self.default:
            ctx = torch.relu(self.stream(present)).unsqueeze(1).expand(-1, out.shape[1], -1)
            out = torch.cat([out, ctx], dim=2)
        return self.fc(self.drop(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--windows", type=int, default=640)
    ap.add_argument("--steps", type=int, default=0, help="windows = steps x batch (overrides --windows)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="0: PyTorch's default")
    ap.add_argument("--model", choices=["paper", "default"], default="paper")
    ap.add_argument("--infer", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    dev = torch.device(args.device)
    windows = args.steps * args.batch if args.steps else args.windows
    batch = args.batch
    default = args.model == "default"
    ports = torch.randint(0, PORTS, (windows, N))
    lens = torch.randint(0, LENS, (windows, N))
    present = (torch.rand(windows, KINDS) < 0.05).float()
    feats = torch.randn(windows, N, 12)
    labels = torch.randint(0, CLASSES, (windows, N))
    model = BLSTM(default).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    counts = torch.bincount(labels.reshape(-1), minlength=CLASSES).float()
    weights = counts.sum() / (CLASSES * counts)
    loss_fn = nn.CrossEntropyLoss(weight=weights.to(dev), ignore_index=-1)

    def inputs(lo):
        x = [ports[lo:lo + batch].to(dev), feats[lo:lo + batch].to(dev)]
        if default:
            x += [lens[lo:lo + batch].to(dev), present[lo:lo + batch].to(dev)]
        return x

    best = 0.0
    for epoch in range(max(args.epochs, 1)):
        model.train()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for lo in range(0, windows, batch):
            y = labels[lo:lo + batch].to(dev)
            logits = model(*inputs(lo))
            loss = loss_fn(logits.reshape(-1, CLASSES), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            loss.item()
            (logits.argmax(-1) == y).sum().item()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rate = windows / (time.perf_counter() - start)
        if epoch > 0 or args.epochs <= 1:
            best = max(best, rate)
    print(f"windows/s {best:.1f} threads {torch.get_num_threads()}")
    if args.infer:
        model.eval()
        with torch.no_grad():
            for rounds in (1, 2):  # the first warms up
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for lo in range(0, windows if rounds == 2 else batch, batch):
                    torch.log_softmax(model(*inputs(lo)), dim=-1).cpu()
                elapsed = time.perf_counter() - start
        print(f"inference windows/s {windows / elapsed:.1f}")


if __name__ == "__main__":
    main()

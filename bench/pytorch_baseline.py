#!/usr/bin/python3
"""PyTorch (CPU, eager) baseline for tbp's built-in workloads: one training step, timed and measured.

Usage:
  /usr/bin/python3 bench/pytorch_baseline.py --workload W --profile small|medium|large \\
      --mode store-all|checkpoint_sequential [--trials N] [--warmup W] [--min-time S] [--threads T] [--seed S]
  /usr/bin/python3 bench/pytorch_baseline.py --list

Models follow docs/benchmarks.md op for op (fp32, training mode, no dropout): Linear layers are
`x @ W + b` with W [in, out], qgelu is x*sigmoid(1.702*x), silu is x*sigmoid(x), attention is
matmul -> scale -> (gpt2/long_context: torch.where(keep, s, -1e9)) -> softmax -> matmul, BatchNorm2d
runs in train mode, resnet convs have no bias, unet convs have bias. `random_dag` has no PyTorch twin
and is rejected (exit 2). A step is forward, loss = mean of all output elements (fp32), backward;
no optimizer. Parameters and inputs come from --seed (token ids uniform in [0, V), images randn).

Modes:
  store-all              plain autograd.
  checkpoint_sequential  torch.utils.checkpoint.checkpoint_sequential (reentrant, the torch 1.13
      default) with round(sqrt(units)) segments over an nn.Sequential of the repeating units:
      gpt2/transformer/long_context: the L blocks plus the head (LNf + Wlm; transformer: Wout), the
      embedding running before, un-checkpointed; resnet: stem, each basic block, head; chain: each
      Linear+Relu layer. checkpoint_sequential leaves its last segment un-checkpointed.
      unet (long skips, not a Sequential): units are the k encoder blocks (block, then the 2x2 max
      pool for l < k-1) and the k-1 decoder blocks (ConvTranspose, concat with skip_l, block), in
      execution order, cut into round(sqrt(2k-1)) contiguous groups exactly as checkpoint_sequential
      cuts a Sequential. Each group but the last is one reentrant torch.utils.checkpoint.checkpoint
      call taking h plus the skips it consumes from earlier groups and returning h plus the skips it
      produces for later groups (stored, as any checkpoint output); the last group and the final 1x1
      conv run un-checkpointed. So the skips impose no restriction on the cut.
      With reentrant checkpointing a first segment whose input does not require grad gets no
      parameter gradients, so for the float-input workloads (resnet, unet, chain) the input is a
      leaf with requires_grad=True in this mode (one extra input-sized gradient, computed last).
      Every parameter is asserted to receive a gradient in both modes. BatchNorm running stats are
      updated twice per step under checkpointing (forward and recompute); outputs and gradients
      are unaffected because training-mode BN normalizes with batch statistics.

Measurement:
  step time: median over --trials steps (more until --min-time seconds of them) after --warmup
  unmeasured steps (time.perf_counter), as tbp's bench does.
  peak_bytes: peak of live tensor bytes during one further step, run under
      torch.profiler.profile(activities=[CPU], profile_memory=True). With memory profiling on,
      c10's CPU allocator reports every allocation (+nbytes) and every free of a block allocated
      while profiling (-nbytes) as a "[memory]" event; the raw events (profiler.kineto_results) are
      ordered by timestamp (stable, so one thread's order is kept) and summed; peak_bytes = bytes
      live at step start (unique storages of parameters, buffers and inputs; gradients are set to
      None first) + the maximum of that running sum. This counts what tbp's counting allocator
      counts: parameters, inputs, activations, gradients and op temporaries that go through the
      CPU allocator (both count whole allocations, not views). Differences come from the kernels:
      ATen allocates some tiny scalar temporaries, fused ATen ops (LayerNorm, softmax) skip
      intermediates tbp may materialize or vice versa, and memory that bypasses c10's allocator
      (library-internal scratch buffers) is invisible here. Validation: one step of a
      single nn.Linear(100, 50) on x [32, 100] (live at start: W 20000 + b 200 + x 12800 = 33000
      bytes) measures 59608 bytes: the output y (6400) is freed after the mean (no backward saves
      it), and the peak is when dW is allocated: 33000 + loss 4 + backward seed dL/dloss 4 +
      dL/dy 6400 + dW 20000 + db 200 = 59608, exactly. The profiled step is separate from the
      timed ones, so profiler overhead does not affect step times.
  peak_rss_bytes: resource.getrusage(RUSAGE_SELF).ru_maxrss * 1024, read after the timed steps
      and before the profiled step.

Output: one JSON line on stdout. --list prints "workload<TAB>profile<TAB>param_count" for every
workload and profile, counting parameters of models built on the meta device (no steps run).
"""

import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

PROFILES = {
    "gpt2": {"small": dict(B=8, S=128, D=128, H=4, L=4, V=512),
             "medium": dict(B=4, S=256, D=256, H=8, L=6, V=1024),
             "large": dict(B=16, S=512, D=512, H=8, L=12, V=8192)},
    "transformer": {"small": dict(B=8, S=128, D=128, H=4, L=4, V=512),
                    "medium": dict(B=4, S=256, D=256, H=8, L=6, V=1024),
                    "large": dict(B=32, S=512, D=512, H=8, L=12, V=8192)},
    "long_context": {"small": dict(B=1, S=1024, D=64, H=2, L=6, V=256),
                     "medium": dict(B=1, S=2048, D=128, H=4, L=6, V=512),
                     "large": dict(B=1, S=8192, D=128, H=4, L=4, V=512)},
    "resnet": {"small": dict(B=8, R=64, C=16, n=3),
               "medium": dict(B=16, R=128, C=32, n=3),
               "large": dict(B=32, R=224, C=64, n=3)},
    "unet": {"small": dict(B=2, R=64, C=16, k=3),
             "medium": dict(B=4, R=128, C=32, k=4),
             "large": dict(B=8, R=256, C=64, k=4)},
    "chain": {"small": dict(B=1024, D=128, L=16),
              "medium": dict(B=4096, D=256, L=24),
              "large": dict(B=16384, D=1024, L=64)},
}
MODES = ("store-all", "checkpoint_sequential")


def qgelu(x):
    return x * torch.sigmoid(x * 1.702)


class Dense(nn.Module):
    """x @ W + b with W [in, out] (MatMul then Add); no Add when bias=False."""

    def __init__(self, n_in, n_out, bias=True, device=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out, device=device).normal_(0.0, n_in ** -0.5))
        self.bias = nn.Parameter(torch.zeros(n_out, device=device)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y if self.bias is None else y + self.bias


class Silu(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Embedding(nn.Module):
    """wte[input_ids] (Gather) + wpe (broadcast over the batch)."""

    def __init__(self, V, S, D, device):
        super().__init__()
        self.wte = nn.Parameter(torch.empty(V, D, device=device).normal_(0.0, 0.02))
        self.wpe = nn.Parameter(torch.empty(S, D, device=device).normal_(0.0, 0.02))

    def forward(self, ids):
        return F.embedding(ids, self.wte) + self.wpe


class Attention(nn.Module):
    def __init__(self, D, H, keep, device):
        super().__init__()
        self.heads = H
        self.q, self.k, self.v, self.o = (Dense(D, D, device=device) for _ in range(4))
        self.register_buffer("keep", keep, persistent=False)  # bool [S, S] or None (no mask)

    def forward(self, a):
        B, S, D = a.shape
        H, Dh = self.heads, D // self.heads
        q = self.q(a).reshape(B, S, H, Dh).permute(0, 2, 1, 3)
        k = self.k(a).reshape(B, S, H, Dh).permute(0, 2, 3, 1)
        v = self.v(a).reshape(B, S, H, Dh).permute(0, 2, 1, 3)
        s = (q @ k) * (1.0 / math.sqrt(Dh))
        if self.keep is not None:
            s = torch.where(self.keep, s, -1e9)
        o = torch.softmax(s, dim=-1) @ v
        return self.o(o.permute(0, 2, 1, 3).reshape(B, S, D))


class Block(nn.Module):
    """Transformer block: pre-LN (gpt2, long_context) or post-LN (transformer)."""

    def __init__(self, D, H, keep, pre_ln, device):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn = Attention(D, H, keep, device)
        self.ln1 = nn.LayerNorm(D, eps=1e-5, device=device)
        self.ln2 = nn.LayerNorm(D, eps=1e-5, device=device)
        self.fc1 = Dense(D, 4 * D, device=device)
        self.fc2 = Dense(4 * D, D, device=device)

    def mlp(self, x):
        return self.fc2(qgelu(self.fc1(x)))

    def forward(self, h):
        if self.pre_ln:
            h = h + self.attn(self.ln1(h))
            return h + self.mlp(self.ln2(h))
        h = self.ln1(h + self.attn(h))
        return self.ln2(h + self.mlp(h))


class SeqModel(nn.Module):
    """prefix (not checkpointed; None = identity) followed by `body`, an nn.Sequential of units."""

    def __init__(self, prefix, body):
        super().__init__()
        self.prefix = prefix
        self.body = body
        self.num_units = len(body)

    def forward(self, x, segments=None):
        h = x if self.prefix is None else self.prefix(x)
        return self.body(h) if segments is None else checkpoint_sequential(self.body, segments, h)


def build_token_model(p, causal, device):
    D, S = p["D"], p["S"]
    keep = torch.ones(S, S, dtype=torch.bool, device=device).tril() if causal else None
    blocks = [Block(D, p["H"], keep, causal, device) for _ in range(p["L"])]
    head = Dense(D, p["V"], bias=False, device=device)
    if causal:  # gpt2 / long_context: final LayerNorm, then Wlm
        head = nn.Sequential(nn.LayerNorm(D, eps=1e-5, device=device), head)
    return SeqModel(Embedding(p["V"], S, D, device), nn.Sequential(*blocks, head))


def conv_bn(cin, cout, k, stride, device):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False, device=device),
            nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1, device=device)]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, device):
        super().__init__()
        self.main = nn.Sequential(*conv_bn(cin, cout, 3, stride, device), nn.ReLU(),
                                  *conv_bn(cout, cout, 3, 1, device))
        self.shortcut = nn.Sequential(*conv_bn(cin, cout, 1, stride, device)) if stride != 1 else None

    def forward(self, x):
        short = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.main(x) + short)


def build_resnet(p, device):
    C, n = p["C"], p["n"]
    units = [nn.Sequential(*conv_bn(3, C, 3, 1, device), nn.ReLU())]
    cin = C
    for stage in range(4):
        cout = C << stage
        for i in range(n):
            units.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, device))
            cin = cout
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * C, 100, device=device))
    return SeqModel(None, nn.Sequential(*units, head))


def build_chain(p, device):
    layers = [nn.Sequential(Dense(p["D"], p["D"], device=device), nn.ReLU()) for _ in range(p["L"])]
    return SeqModel(None, nn.Sequential(*layers))


def unet_block(cin, cout, device):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, device=device),
                         nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1, device=device), Silu(),
                         nn.Conv2d(cout, cout, 3, padding=1, device=device),
                         nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1, device=device), Silu())


class UNet(nn.Module):
    def __init__(self, p, device):
        super().__init__()
        C, k = p["C"], p["k"]
        ch = [C << level for level in range(k)]
        self.k = k
        self.enc = nn.ModuleList(unet_block(3 if l == 0 else ch[l - 1], ch[l], device) for l in range(k))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ch[l + 1], ch[l], 2, stride=2, device=device)
                                for l in range(k - 1))
        self.dec = nn.ModuleList(unet_block(2 * ch[l], ch[l], device) for l in range(k - 1))
        self.out = nn.Conv2d(C, 3, 1, device=device)
        self.units = [("enc", l) for l in range(k)] + [("dec", l) for l in reversed(range(k - 1))]
        self.num_units = len(self.units)

    def run(self, units, h, skips):
        """Run `units` in order; skips (level -> tensor) is consumed and extended in place."""
        for kind, l in units:
            if kind == "enc":
                h = self.enc[l](h)
                if l < self.k - 1:
                    skips[l] = h
                    h = F.max_pool2d(h, 2, 2)
            else:
                h = self.dec[l](torch.cat([self.up[l](h), skips.pop(l)], dim=1))
        return h

    def run_checkpointed(self, units, h, skips):
        needs = [l for kind, l in units if kind == "dec" and l in skips]
        makes = [l for kind, l in units if kind == "enc" and l < self.k - 1 and ("dec", l) not in units]

        def segment(h, *needed):
            local = dict(zip(needs, needed))
            h = self.run(units, h, local)
            return (h, *(local[l] for l in makes))

        outs = checkpoint(segment, h, *[skips.pop(l) for l in needs])
        skips.update(zip(makes, outs[1:]))
        return outs[0]

    def forward(self, x, segments=None):
        groups = [self.units]
        if segments is not None:
            size = len(self.units) // segments
            groups = [self.units[i * size:(i + 1) * size] for i in range(segments - 1)]
            groups.append(self.units[(segments - 1) * size:])
        skips, h = {}, x
        for group in groups[:-1]:
            h = self.run_checkpointed(group, h, skips)
        return self.out(self.run(groups[-1], h, skips))


def build_model(workload, profile, device):
    p = PROFILES[workload][profile]
    if workload in ("gpt2", "long_context", "transformer"):
        return build_token_model(p, causal=workload != "transformer", device=device)
    return {"resnet": build_resnet, "unet": UNet, "chain": build_chain}[workload](p, device)


def make_inputs(workload, profile, requires_grad):
    p = PROFILES[workload][profile]
    if workload in ("gpt2", "long_context", "transformer"):
        return torch.randint(0, p["V"], (p["B"], p["S"]), dtype=torch.int64)
    shape = (p["B"], p["D"]) if workload == "chain" else (p["B"], 3, p["R"], p["R"])
    return torch.randn(*shape).requires_grad_(requires_grad)


def train_step(model, x, segments):
    """Forward, loss = mean of the output (fp32), backward. Returns the loss value."""
    model.zero_grad(set_to_none=True)
    x.grad = None
    loss = model(x, segments).float().mean()
    loss.backward()
    return loss.item()


def check_grads(model):
    missing = [name for name, prm in model.named_parameters() if prm.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def live_bytes(tensors):
    storages = {t.storage().data_ptr(): t.storage().nbytes() for t in tensors}
    return sum(storages.values())


def profiled_peak_bytes(model, x, segments):
    """Peak live tensor bytes of one step (see the module docstring)."""
    model.zero_grad(set_to_none=True)  # free the last step's gradients before profiling starts
    x.grad = None
    base = live_bytes([*model.parameters(), *model.buffers(), x])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        train_step(model, x, segments)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_us())
    running = high = 0
    for e in events:
        running += e.nbytes()
        high = max(high, running)
    return base + high


def list_param_counts():
    for workload, profiles in PROFILES.items():
        for profile in profiles:
            model = build_model(workload, profile, torch.device("meta"))
            print(f"{workload}\t{profile}\t{sum(prm.numel() for prm in model.parameters())}")


def run(args):
    torch.manual_seed(args.seed)
    model = build_model(args.workload, args.profile, torch.device("cpu")).train()
    checkpointed = args.mode == "checkpoint_sequential"
    float_input = args.workload in ("resnet", "unet", "chain")
    x = make_inputs(args.workload, args.profile, requires_grad=checkpointed and float_input)
    segments = max(1, round(math.sqrt(model.num_units))) if checkpointed else None
    times, loss = [], None
    i = 0
    # At least --trials measured steps, and more (up to 1000) until they took --min-time seconds.
    while i < args.warmup + args.trials or (sum(times) < args.min_time and len(times) < 1000):
        t0 = time.perf_counter()
        loss = train_step(model, x, segments)
        dt = time.perf_counter() - t0
        check_grads(model)
        if i >= args.warmup:
            times.append(dt)
        i += 1
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_bytes = profiled_peak_bytes(model, x, segments)
    check_grads(model)
    params = list(model.parameters())
    return {"workload": args.workload, "profile": args.profile, "mode": args.mode, "segments": segments,
            "threads": torch.get_num_threads(), "trials": args.trials,
            "median_step_s": statistics.median(times), "step_times_s": times,
            "peak_bytes": peak_bytes, "peak_rss_bytes": peak_rss,
            "param_count": sum(prm.numel() for prm in params),
            "param_bytes": sum(prm.numel() * prm.element_size() for prm in params),
            "loss": loss, "torch_version": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload")
    ap.add_argument("--profile", choices=("small", "medium", "large"))
    ap.add_argument("--mode", choices=MODES)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-time", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--list", action="store_true", help="print param counts of every workload x profile")
    args = ap.parse_args()
    if args.list:
        list_param_counts()
        return 0
    if args.workload == "random_dag":
        ap.error("random_dag is tbp-only: it has no PyTorch twin")
    if args.workload not in PROFILES:
        ap.error(f"--workload must be one of {', '.join(PROFILES)} (got {args.workload!r})")
    if args.profile is None or args.mode is None:
        ap.error("--profile and --mode are required (unless --list)")
    if args.trials < 1 or args.warmup < 0 or args.threads < 0:
        ap.error("need --trials >= 1, --warmup >= 0, --threads >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

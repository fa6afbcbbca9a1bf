"""Reference model architectures used by tbp's tests and benchmarks.

Three small, self-contained PyTorch architectures that are representative of
the workloads tbp has to compile:

* ``GPT2``  -- GPT-2-style decoder: token + learned position embeddings,
  pre-LayerNorm blocks with causal multi-head self-attention (explicit
  lower-triangular mask, ``masked_fill`` + softmax), GELU MLP, final
  LayerNorm and a tied or untied LM head.
* ``Bert``  -- BERT-style encoder: word + position + token-type embeddings,
  post-LayerNorm blocks with an optional padding/attention mask (additive
  ``finfo.min`` bias), GELU MLP, tanh pooler and an optional classification
  head.
* ``UNet``  -- diffusion-style (DDPM-like) U-Net: sinusoidal timestep
  embedding + MLP, ResBlocks with GroupNorm/SiLU and a per-channel timestep
  bias, stride-2 conv downsampling, nearest-neighbour upsampling + conv,
  long skip connections by channel concatenation, and an optional
  self-attention block in the middle.

Each architecture has a ``*Config`` dataclass with ``default()`` (benchmark
size) and ``tiny()`` (unit-test fixture size, a few hundred KB as ONNX)
constructors, and an ``example_inputs(batch, ...)`` helper on the module that
returns deterministic example tensors.

This module only depends on ``torch``; it is imported by
``models/export_models.py`` and ``models/make_fixtures.py`` and is meant to
be imported by a PyTorch baseline as well::

    import sys; sys.path.insert(0, "models")
    from archs import GPT2, GPT2Config
    model = GPT2(GPT2Config.default()).eval()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "GPT2Config", "GPT2",
    "BertConfig", "Bert",
    "UNetConfig", "UNet",
]


def _neg_large(dtype: torch.dtype) -> float:
    """Most negative finite value of ``dtype`` (used instead of -inf in masks)."""
    return float(torch.finfo(dtype).min)


# --------------------------------------------------------------------------
# GPT-2 style decoder
# --------------------------------------------------------------------------

@dataclass
class GPT2Config:
    vocab_size: int = 1024
    max_seq: int = 128          # size of the position table / causal mask
    seq: int = 64               # default sequence length for example inputs
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5

    @classmethod
    def default(cls) -> "GPT2Config":
        return cls()

    @classmethod
    def tiny(cls) -> "GPT2Config":
        return cls(vocab_size=128, max_seq=32, seq=16, hidden=32, layers=2, heads=2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        assert cfg.hidden % cfg.heads == 0, "hidden must be divisible by heads"
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        mask = torch.tril(torch.ones(cfg.max_seq, cfg.max_seq, dtype=torch.bool))
        self.register_buffer("causal_mask", mask.view(1, 1, cfg.max_seq, cfg.max_seq),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)   # B,H,T,D
        k = k.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        mask = self.causal_mask[:, :, :t, :t]
        att = att.masked_fill(~mask, _neg_large(att.dtype))
        att = F.softmax(att, dim=-1)
        att = self.attn_drop(att)
        y = torch.matmul(att, v)                                       # B,H,T,D
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_drop(self.proj(y))


class GPT2Block(nn.Module):
    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.mlp_ratio * cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.hidden, cfg.hidden),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    """input_ids [batch, seq] int64 -> logits [batch, seq, vocab] float32."""

    def __init__(self, cfg: GPT2Config):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.wpe = nn.Embedding(cfg.max_seq, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        pos = torch.arange(t, dtype=torch.long, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos).unsqueeze(0))
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.ln_f(x))

    def example_inputs(self, batch: int = 2, seq: Optional[int] = None) -> Tuple[torch.Tensor]:
        seq = self.cfg.seq if seq is None else seq
        g = torch.Generator().manual_seed(1234)
        return (torch.randint(0, self.cfg.vocab_size, (batch, seq), generator=g),)


# --------------------------------------------------------------------------
# BERT style encoder
# --------------------------------------------------------------------------

@dataclass
class BertConfig:
    vocab_size: int = 1024
    max_seq: int = 128
    seq: int = 64
    type_vocab_size: int = 2
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    use_attention_mask: bool = True   # adds a second graph input `attention_mask`
    head: str = "classification"      # "classification" -> logits; "pooler" -> pooled output
    num_labels: int = 2

    @classmethod
    def default(cls) -> "BertConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "BertConfig":
        return cls(vocab_size=128, max_seq=32, seq=16, hidden=32, layers=2, heads=2,
                   intermediate=64)


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        assert cfg.hidden % cfg.heads == 0, "hidden must be divisible by heads"
        self.heads = cfg.heads
        self.head_dim = cfg.hidden // cfg.heads
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        new_shape = x.size()[:-1] + (self.heads, self.head_dim)
        return x.view(new_shape).permute(0, 2, 1, 3)                     # B,H,T,D

    def forward(self, x: torch.Tensor, mask_bias: Optional[torch.Tensor]) -> torch.Tensor:
        q = self._split(self.query(x))
        k = self._split(self.key(x))
        v = self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = self.drop(F.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.heads * self.head_dim,))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attn = BertSelfAttention(cfg)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.attn_ln = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.inter = nn.Linear(cfg.hidden, cfg.intermediate)
        self.act = nn.GELU()
        self.out = nn.Linear(cfg.intermediate, cfg.hidden)
        self.out_drop = nn.Dropout(cfg.dropout)
        self.out_ln = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask_bias: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.attn_ln(x + self.attn_drop(self.attn_out(self.attn(x, mask_bias))))
        x = self.out_ln(x + self.out_drop(self.out(self.act(self.inter(x)))))
        return x


class Bert(nn.Module):
    """input_ids [batch, seq] int64 (+ attention_mask [batch, seq] int64) ->
    logits [batch, num_labels] (head="classification") or
    pooled [batch, hidden] (head="pooler")."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        if cfg.head not in ("classification", "pooler"):
            raise ValueError(f"unknown BERT head {cfg.head!r}")
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position_embeddings = nn.Embedding(cfg.max_seq, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.emb_ln = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))
        self.pooler = nn.Linear(cfg.hidden, cfg.hidden)
        self.cls_drop = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, cfg.num_labels) if cfg.head == "classification" else None
        self.register_buffer("position_ids", torch.arange(cfg.max_seq).unsqueeze(0), persistent=False)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        t = input_ids.shape[1]
        pos = self.position_ids[:, :t]
        token_type = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(pos)
             + self.token_type_embeddings(token_type))
        x = self.emb_drop(self.emb_ln(x))
        mask_bias = None
        if attention_mask is not None:
            m = attention_mask[:, None, None, :].to(x.dtype)             # B,1,1,T
            mask_bias = (1.0 - m) * _neg_large(x.dtype)
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        if self.classifier is None:
            return pooled
        return self.classifier(self.cls_drop(pooled))

    def example_inputs(self, batch: int = 2, seq: Optional[int] = None) -> Tuple[torch.Tensor, ...]:
        seq = self.cfg.seq if seq is None else seq
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(0, self.cfg.vocab_size, (batch, seq), generator=g)
        if not self.cfg.use_attention_mask:
            return (ids,)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1:, seq - seq // 4:] = 0                    # pad the tail of all but the first row
        return (ids, mask)


# --------------------------------------------------------------------------
# Diffusion-style U-Net
# --------------------------------------------------------------------------

@dataclass
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    image_size: int = 32
    base_channels: int = 64
    channel_mult: Sequence[int] = (1, 2, 4)
    num_res_blocks: int = 2
    groups: int = 32
    dropout: float = 0.1
    mid_attention: bool = True
    attention_heads: int = 4

    @classmethod
    def default(cls) -> "UNetConfig":
        return cls()

    @classmethod
    def tiny(cls) -> "UNetConfig":
        return cls(in_channels=3, out_channels=3, image_size=16, base_channels=16,
                   channel_mult=(1, 2), num_res_blocks=1, groups=4, attention_heads=2)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of a [batch] float timestep tensor -> [batch, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Spatial multi-head self-attention over H*W positions."""

    def __init__(self, ch: int, groups: int, heads: int):
        super().__init__()
        assert ch % heads == 0
        self.heads = heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, d, h * w).unbind(1)
        att = torch.einsum("bhdi,bhdj->bhij", q, k) * (1.0 / math.sqrt(d))
        att = F.softmax(att, dim=-1)
        y = torch.einsum("bhij,bhdj->bhdi", att, v).reshape(b, c, h, w)
        return x + self.proj(y)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """x [batch, C, H, W] float32, timestep [batch] float32 -> [batch, C_out, H, W]."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        temb = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_ch = [ch]
        cur = ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(ResBlock(cur, ch * mult, temb, cfg.groups, cfg.dropout))
                cur = ch * mult
                skip_ch.append(cur)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(Downsample(cur))
                skip_ch.append(cur)

        self.mid1 = ResBlock(cur, cur, temb, cfg.groups, cfg.dropout)
        self.mid_attn = AttnBlock(cur, cfg.groups, cfg.attention_heads) if cfg.mid_attention else None
        self.mid2 = ResBlock(cur, cur, temb, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(ResBlock(cur + skip_ch.pop(), ch * mult, temb, cfg.groups, cfg.dropout))
                cur = ch * mult
            if level != 0:
                self.up.append(Upsample(cur))
        assert not skip_ch

        self.norm_out = nn.GroupNorm(cfg.groups, cur)
        self.conv_out = nn.Conv2d(cur, cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        temb = self.temb(timestep_embedding(timestep, self.cfg.base_channels))
        h = self.conv_in(x)
        skips = [h]
        for m in self.down:
            h = m(h, temb) if isinstance(m, ResBlock) else m(h)
            skips.append(h)
        h = self.mid1(h, temb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, temb)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def example_inputs(self, batch: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1234)
        s = self.cfg.image_size
        x = torch.randn(batch, self.cfg.in_channels, s, s, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g).to(torch.float32)
        return (x, t)

"""SMGA: the MMGT Stage-I audio-to-pose transformer (the official ``GestureDecoder``), weight-compatible.

The module tree and every state-dict key match ``src/audio2pose_model/model.py`` of the official code, so the
released ``ema_state_dict`` loads strictly (473 keys at full size). Quirks kept on purpose (MMGT_SPEC 1.5, Q14):

* one shared ``input_projection`` for the face and body streams, each the concat ``[x_masked ‖ cond_frame_masked]``;
* interleaved rotary embedding on the full latent vector *before* the attention in-projection (q = k rotated,
  v not); one ``RotaryEmbedding`` shared by every layer, so its ``freqs`` buffer appears under every path;
* the body stream of every decoder layer sees the *layer-0* body input (``DecoderLayerStack`` quirk);
* ``self_attn``, ``norm_*_3`` and ``film_*_3`` exist in the checkpoint but are never used.

Attention layers are ``nn.MultiheadAttention`` only as parameter containers (their key layout is the official
one); the math runs through ``F.scaled_dot_product_attention``.

Besides the official forward, :meth:`GestureDecoder.prepare_guidance` / :meth:`GestureDecoder.guided_x0` give a
fast classifier-free-guidance path for sampling: the audio encoding, the normalised audio memory and its
cross-attention keys/values do not depend on the timestep or on x_t, so they are computed once per window; the
body self-attention and the first face self-attention do not depend on the condition, so they run once for
both guidance passes. Both paths run the same layer body (:meth:`SplitDecoderLayer.layer_body`); they differ only
in where the cross-attention keys/values come from and in which self-attentions are precomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio.stage1 import RELEASED_STAGE1_FEATURE_DIM
from ..constants import SMGA_WINDOW_FRAMES
from ..tiny_models import init_weights_recipe as init_weights_recipe  # the fixtures' recipe; imported from here too

FACE_DIMS = slice(72, 276)  # keypoints 24..91 (68 face landmarks) x 3 channels: the face stream M^f
KeysValues = Callable[[str], tuple[Tensor, Tensor]]  # stream name -> in-projected cross-attention keys, values


@dataclass(frozen=True)
class SMGAConfig:
    """Shape of a ``GestureDecoder``; the defaults are the released MMGT model (``SMGA.py``)."""

    nfeats: int = 402
    seq_len: int = SMGA_WINDOW_FRAMES
    latent_dim: int = 512
    ff_size: int = 1024
    num_layers: int = 8
    num_heads: int = 8
    dropout: float = 0.1
    cond_feature_dim: int = RELEASED_STAGE1_FEATURE_DIM

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored as JSON in our safetensors metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SMGAConfig:
        """Build from a dict, ignoring keys that are not config fields (e.g. official ``activation``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> SMGAConfig:
        """Infer the config from weight shapes. The head count is not in the shapes: the official 8 is assumed,
        so pass an explicit config (or use our safetensors, which store it) for other sizes."""
        latent, in_feats = state_dict["input_projection.weight"].shape
        layers = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("seqTransDecoder.stack."))
        return cls(
            nfeats=int(in_feats) // 2,
            seq_len=int(state_dict["null_cond_embed"].shape[1]),
            latent_dim=int(latent),
            ff_size=int(state_dict["seqTransDecoder.stack.0.linear1.weight"].shape[0]),
            num_layers=layers,
            num_heads=8,
            cond_feature_dim=int(state_dict["cond_projection.weight"].shape[1]),
        )


TINY_TEST_CONFIG = SMGAConfig(latent_dim=40, ff_size=96, num_layers=2, num_heads=4)
"""The config of the official tiny parity fixtures (280,986 parameters, 155 keys)."""


# --------------------------------------------------------------------------------------------------------------
# Building blocks


class RotaryEmbedding(nn.Module):
    """Interleaved rotary position embedding over the full vector (EDGE ``RotaryEmbedding``, 'lang' freqs)."""

    def __init__(self, dim: int, theta: int = 10000) -> None:
        super().__init__()
        self.register_buffer("freqs", self.frequencies(dim, theta))  # persistent: the official checkpoint has it
        self.dim, self.theta = dim, theta
        self._tables: dict[tuple, tuple[Tensor, Tensor]] = {}

    @staticmethod
    def frequencies(dim: int, theta: int) -> Tensor:
        return 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))

    def tables(self, length: int, offset: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin tables (length, dim) for positions offset..offset+length-1, cached.

        Angles and cos/sin are computed in float32 from the formula (equal to the checkpoint buffer, see the
        parity tests), so a bf16 model does not round its frequencies or large angles to bf16.
        """
        key = (length, offset, device, dtype)
        cached = self._tables.get(key)
        if cached is None:
            positions = torch.arange(offset, offset + length).float()
            freqs = self.frequencies(self.dim, self.theta)
            angles = torch.einsum("n,f->nf", positions, freqs).repeat_interleave(2, dim=-1)
            cached = (angles.cos().to(device, dtype), angles.sin().to(device, dtype))
            if len(self._tables) > 64:
                self._tables.clear()
            self._tables[key] = cached
        return cached

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate (..., L, dim) by position along dim -2; pairs (2i, 2i+1) rotate together."""
        cos, sin = self.tables(x.shape[-2], offset, x.device, x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * cos + rotated_half * sin


class SinusoidalPosEmb(nn.Module):
    """Diffusion-timestep embedding: [sin ‖ cos] of t·exp(-i·ln(1e4)/(half-1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, times: Tensor) -> Tensor:
        half = self.dim // 2
        scale = math.log(10000) / (half - 1)
        freqs = torch.exp(torch.arange(half, device=times.device) * -scale)
        angles = times[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class DenseFiLM(nn.Module):
    """FiLM generator: Mish → Linear(D, 2D) → (scale, shift), each (B, 1, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, dim * 2))

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = self.block(t).unsqueeze(1).chunk(2, dim=-1)
        return scale, shift


def featurewise_affine(x: Tensor, scale_shift: tuple[Tensor, Tensor]) -> Tensor:
    """(scale + 1)·x + shift, as the official code writes it."""
    scale, shift = scale_shift
    return (scale + 1) * x + shift


def _split_heads(x: Tensor, heads: int) -> Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, L, D) -> (B, H, L, d)


def attention_from_projected(attn: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attend with already in-projected q (B,Lq,D), k and v (B,Lk,D); apply the output projection."""
    heads = attn.num_heads
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(
        _split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads), dropout_p=dropout
    )
    return attn.out_proj(out.transpose(1, 2).flatten(-2))


def project_keys_values(attn: nn.MultiheadAttention, keys_in: Tensor, values_in: Tensor) -> tuple[Tensor, Tensor]:
    """In-project keys and values with the key/value thirds of the packed MHA weight."""
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    return F.linear(keys_in, w_k, b_k), F.linear(values_in, w_v, b_v)


def rotary_self_attention(attn: nn.MultiheadAttention, rotary: RotaryEmbedding, x: Tensor) -> Tensor:
    """Official self-attention: q = k = rotary(x), v = x (one fused q/k projection)."""
    dim = x.shape[-1]
    qk = F.linear(rotary.rotate(x), attn.in_proj_weight[: 2 * dim], attn.in_proj_bias[: 2 * dim])
    v = F.linear(x, attn.in_proj_weight[2 * dim:], attn.in_proj_bias[2 * dim:])
    q, k = qk.chunk(2, dim=-1)
    return attention_from_projected(attn, q, k, v)


def cross_attention_query(
    attn: nn.MultiheadAttention, rotary: RotaryEmbedding, x: Tensor, k: Tensor, v: Tensor
) -> Tensor:
    """Rotary cross-attention (q = rotary(x)) on in-projected keys k = rotary(memory) and values v = memory."""
    dim = x.shape[-1]
    q = F.linear(rotary.rotate(x), attn.in_proj_weight[:dim], attn.in_proj_bias[:dim])
    return attention_from_projected(attn, q, k, v)


class CondEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer with rotary q/k (official ``TransformerEncoderLayer``)."""

    def __init__(self, dim: int, heads: int, ff_size: int, dropout: float, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_size)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_size, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.rotary = rotary  # shared module: its buffer is saved under this path too

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout1(rotary_self_attention(self.self_attn, self.rotary, self.norm1(x)))
        feed = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x)))))
        return x + self.dropout2(feed)


class SplitDecoderLayer(nn.Module):
    """One face/body split decoder layer (official ``FiLMTransformerDecoderLayer_split``, norm_first=True)."""

    def __init__(self, dim: int, heads: int, ff_size: int, dropout: float, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.face_self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.face_cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.body_self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.body_cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)  # unused (Q14)
        self.linear1 = nn.Linear(dim, ff_size)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff_size, dim)
        for stream in ("face", "body"):
            for index in (1, 2, 3):  # *_3 are unused but in the checkpoint
                setattr(self, f"norm_{stream}_{index}", nn.LayerNorm(dim))
        self.norm_final = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        for stream in ("face", "body"):
            for index in (1, 2, 3):
                setattr(self, f"film_{stream}_{index}", DenseFiLM(dim))
        self.film_final = DenseFiLM(dim)
        self.rotary = rotary

    def forward(self, x_face: Tensor, x_body: Tensor, memory: Tensor, t: Tensor) -> Tensor:
        """Official layer: both streams cross-attend to the normalised memory (B, L + 2, D)."""
        def keys_values(name: str) -> tuple[Tensor, Tensor]:
            return project_keys_values(self.cross_attn(name), self.rotary.rotate(memory), memory)

        return self.layer_body(x_face, x_body, t, keys_values)

    def layer_body(self, x_face: Tensor, x_body: Tensor, t: Tensor, keys_values: KeysValues,
                   face_attended: Optional[Tensor] = None, body_attended: Optional[Tensor] = None) -> Tensor:
        """The layer for any cross-attention keys/values source and, optionally, precomputed self-attentions
        (the official forward and the cached guidance path both run this)."""
        face = self.stream(x_face, "face", t, keys_values, face_attended)
        body = self.stream(x_body, "body", t, keys_values, body_attended)
        return self.merge(face + body, t)

    def stream(self, x: Tensor, name: str, t: Tensor, keys_values: KeysValues,
               attended: Optional[Tensor] = None) -> Tensor:
        """One branch: FiLM'd rotary self-attention, then FiLM'd cross-attention on the memory's keys/values."""
        if attended is None:
            attended = self.self_attention(x, name)
        x = x + featurewise_affine(attended, self.film(name, 1)(t))
        attn = self.cross_attn(name)
        cross = cross_attention_query(attn, self.rotary, self.norm(name, 2)(x), *keys_values(name))
        return x + featurewise_affine(self.dropout2(cross), self.film(name, 2)(t))

    def self_attention(self, x: Tensor, name: str) -> Tensor:
        """The branch's self-attention output before FiLM (depends on x only, not on t or the audio)."""
        attn = self.face_self_attn if name == "face" else self.body_self_attn
        return self.dropout1(rotary_self_attention(attn, self.rotary, self.norm(name, 1)(x)))

    def merge(self, merged: Tensor, t: Tensor) -> Tensor:
        """Residual FF + FiLM on face_out + body_out."""
        feed = self.linear2(self.dropout(F.gelu(self.linear1(self.norm_final(merged)))))
        return merged + featurewise_affine(self.dropout3(feed), self.film_final(t))

    def cross_attn(self, name: str) -> nn.MultiheadAttention:
        return self.face_cross_attn if name == "face" else self.body_cross_attn

    def norm(self, name: str, index: int) -> nn.LayerNorm:
        return getattr(self, f"norm_{name}_{index}")

    def film(self, name: str, index: int) -> DenseFiLM:
        return getattr(self, f"film_{name}_{index}")


class DecoderLayerStack(nn.Module):
    """Official stack: every layer gets the running stream as face input and the layer-0 body input (Q14)."""

    def __init__(self, stack: nn.ModuleList) -> None:
        super().__init__()
        self.stack = stack

    def forward(self, x: Tensor, y: Tensor, memory: Tensor, t: Tensor) -> Tensor:
        for layer in self.stack:
            x = layer(x, y, memory, t)
        return x


# --------------------------------------------------------------------------------------------------------------
# The model


@dataclass
class AudioCondition:
    """Encoded audio for a window: ``tokens`` (B, L, D) after the cond encoder, ``hidden`` (B, D) pooled."""

    tokens: Tensor
    hidden: Tensor


@dataclass
class GuidanceContext:
    """Everything of one sampling window that does not change across diffusion steps (see ``prepare_guidance``).

    Rows are ``[unconditional × N, conditional × N]`` for the 2N guidance rows; face/body frame terms have N rows.
    """

    batch: int
    guidance_weight: float
    face_frame_term: Tensor  # (N, 1, D): input-projection contribution of the masked cond frame + bias
    body_frame_term: Tensor
    cond_hidden: Tensor  # (2N, D): null_cond_hidden rows, then projected pooled audio rows
    audio_keys: list[dict[str, Tensor]]  # per layer, per stream: (2N, L, D) keys of the normalised audio memory
    audio_values: list[dict[str, Tensor]]


class GestureDecoder(nn.Module):
    """The SMGA network: x_t (B,80,402), cond_frame (B,402), audio (B,80,1059), t (B,) → x0 prediction."""

    def __init__(self, config: SMGAConfig = SMGAConfig()) -> None:
        super().__init__()
        self.config = config
        dim = config.latent_dim
        # registration order = official order, so state_dict() and named_parameters() order match it too
        self.rotary = RotaryEmbedding(dim)
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), nn.Mish())
        self.to_time_cond = nn.Sequential(nn.Linear(dim * 4, dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(dim * 4, dim * 2))  # 2 time tokens
        self.null_cond_embed = nn.Parameter(torch.randn(1, config.seq_len, dim))
        self.null_cond_hidden = nn.Parameter(torch.randn(1, dim))
        self.norm_cond = nn.LayerNorm(dim)
        self.input_projection = nn.Linear(config.nfeats * 2, dim)
        self.cond_encoder = nn.Sequential(
            *[CondEncoderLayer(dim, config.num_heads, config.ff_size, config.dropout, self.rotary) for _ in range(2)]
        )
        self.cond_projection = nn.Linear(config.cond_feature_dim, dim)
        self.non_attn_cond_projection = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim)
        )
        layers = [
            SplitDecoderLayer(dim, config.num_heads, config.ff_size, config.dropout, self.rotary)
            for _ in range(config.num_layers)
        ]
        self.seqTransDecoder = DecoderLayerStack(nn.ModuleList(layers))
        self.final_layer = nn.Linear(dim, config.nfeats)
        face_mask = torch.zeros(config.nfeats)
        face_mask[FACE_DIMS] = 1.0
        self.register_buffer("face_mask", face_mask, persistent=False)

    # ---- pieces shared by both paths ------------------------------------------------------------------------

    def encode_audio(self, cond: Tensor) -> AudioCondition:
        """Audio features (B, L, cond_dim) → cond-encoder tokens and pooled hidden; independent of t and x_t."""
        tokens = self.cond_encoder(self.cond_projection(cond))
        return AudioCondition(tokens=tokens, hidden=self.non_attn_cond_projection(tokens.mean(dim=-2)))

    def null_audio(self, batch: int) -> AudioCondition:
        """The learned 'no audio' condition used by classifier-free guidance."""
        return AudioCondition(
            tokens=self.null_cond_embed.expand(batch, -1, -1), hidden=self.null_cond_hidden.expand(batch, -1)
        )

    def time_embedding(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """t (B,) → (FiLM vector (B, D), 2 time tokens (B, 2, D)); before the audio hidden is added."""
        sinusoid, linear, mish = self.time_mlp
        hidden = mish(linear(sinusoid(times).to(linear.weight.dtype)))
        return self.to_time_cond(hidden), self.to_time_tokens(hidden).unflatten(-1, (2, -1))

    def split_streams(self, x: Tensor, cond_frame: Tensor) -> tuple[Tensor, Tensor]:
        """Official input: [x·M ‖ cond_frame·M] through the shared projection, for M = face and M = body."""
        face_mask = self.face_mask.to(x.dtype)
        frame = cond_frame.unsqueeze(1).expand(-1, x.shape[1], -1)
        face = self.input_projection(torch.cat([x * face_mask, frame * face_mask], dim=-1))
        body = self.input_projection(torch.cat([x * (1 - face_mask), frame * (1 - face_mask)], dim=-1))
        return face, body

    # ---- official forward (training, parity) ----------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        cond_frame: Tensor,
        cond: Tensor,
        times: Tensor,
        cond_keep: Optional[Tensor] = None,
        cond_drop_prob: float = 0.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """x0 prediction (B, L, nfeats). ``cond_keep`` (B,) bool chooses audio vs null per row; when it is None,
        rows keep their audio with probability 1 - ``cond_drop_prob`` (drawn from ``generator``)."""
        batch = x.shape[0]
        keep = cond_keep if cond_keep is not None else draw_keep_mask(batch, cond_drop_prob, x.device, generator)
        keep = keep.to(device=x.device, dtype=torch.bool)
        null = self.null_audio(batch)
        if bool(keep.any()):
            audio = self.encode_audio(cond.expand(batch, -1, -1) if cond.shape[0] == 1 else cond)
            tokens = torch.where(keep[:, None, None], audio.tokens, null.tokens.to(audio.tokens.dtype))
            hidden = torch.where(keep[:, None], audio.hidden, null.hidden.to(audio.hidden.dtype))
        else:  # all rows unconditional: skip the audio encoder (its output would be discarded)
            tokens, hidden = null.tokens, null.hidden
        return self.forward_with_audio(x, cond_frame, AudioCondition(tokens, hidden), times)

    def forward_with_audio(self, x: Tensor, cond_frame: Tensor, audio: AudioCondition, times: Tensor) -> Tensor:
        """Forward with an already encoded (or null) audio condition."""
        x_face, x_body = self.split_streams(x, cond_frame)
        t, time_tokens = self.time_embedding(times)
        t = t + audio.hidden
        memory = self.norm_cond(torch.cat((audio.tokens, time_tokens), dim=-2))
        return self.final_layer(self.seqTransDecoder(x_face, x_body, memory, t))

    def guided_forward(
        self, x: Tensor, cond_frame: Tensor, cond: Tensor, times: Tensor, guidance_weight: float
    ) -> Tensor:
        """Official CFG output unc + (cond − unc)·w, with both passes in one batch."""
        batch = x.shape[0]
        keep = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)])
        cond = cond.expand(batch, -1, -1) if cond.shape[0] == 1 else cond
        out = self(torch.cat([x, x]), torch.cat([cond_frame, cond_frame]), torch.cat([cond, cond]),
                   torch.cat([times, times]), cond_keep=keep)
        unconditional, conditional = out.chunk(2)
        return unconditional + (conditional - unconditional) * guidance_weight

    # ---- fast guided sampling path ---------------------------------------------------------------------------

    @torch.no_grad()
    def prepare_guidance(self, cond_frame: Tensor, cond: Tensor, guidance_weight: float, batch: int = 1
                         ) -> GuidanceContext:
        """Precompute the step-independent part of CFG sampling for one window.

        cond_frame: (N or 1, nfeats); cond: (N or 1, L, cond_dim); N = ``batch`` samples drawn together.
        """
        dtype = self.input_projection.weight.dtype
        cond_frame = cond_frame.to(dtype).expand(batch, -1)
        cond = cond.to(dtype)
        w_frame = self.input_projection.weight[:, self.config.nfeats:]
        face_mask = self.face_mask.to(dtype)
        face_term = F.linear(cond_frame * face_mask, w_frame, self.input_projection.bias).unsqueeze(1)
        body_term = F.linear(cond_frame * (1 - face_mask), w_frame, self.input_projection.bias).unsqueeze(1)
        audio = self.encode_audio(cond)
        null = self.null_audio(1)
        tokens = torch.cat([null.tokens.expand(batch, -1, -1), audio.tokens.expand(batch, -1, -1)])
        hidden = torch.cat([null.hidden.expand(batch, -1), audio.hidden.expand(batch, -1)])
        memory = self.norm_cond(tokens)  # LayerNorm is per token, so the audio rows never change with t
        rotated = self.rotary.rotate(memory)
        keys, values = [], []
        for layer in self.seqTransDecoder.stack:
            layer_keys, layer_values = {}, {}
            for name in ("face", "body"):
                layer_keys[name], layer_values[name] = project_keys_values(layer.cross_attn(name), rotated, memory)
            keys.append(layer_keys)
            values.append(layer_values)
        return GuidanceContext(batch, float(guidance_weight), face_term, body_term, hidden, keys, values)

    @torch.no_grad()
    def guided_x0(self, context: GuidanceContext, x_t: Tensor, times: Tensor) -> Tensor:
        """CFG x0 prediction (N, L, nfeats) in the model dtype, equal to ``guided_forward`` up to float rounding."""
        n, dtype = context.batch, self.input_projection.weight.dtype
        x = x_t.to(dtype)
        w_x = self.input_projection.weight[:, : self.config.nfeats]
        face_mask = self.face_mask.to(dtype)
        x_face = F.linear(x * face_mask, w_x) + context.face_frame_term  # (N, L, D)
        x_body = F.linear(x * (1 - face_mask), w_x) + context.body_frame_term
        t_vec, time_tokens = self.time_embedding(times.to(x.device).expand(n))
        t2 = t_vec.repeat(2, 1) + context.cond_hidden  # (2N, D)
        time_memory = self.norm_cond(time_tokens)  # (N, 2, D), the last two memory rows
        time_rotated = self.rotary.rotate(time_memory, offset=self.config.seq_len)
        stream, body_input = x_face, x_body.repeat(2, 1, 1)
        for index, layer in enumerate(self.seqTransDecoder.stack):
            face_attended = layer.self_attention(stream, "face")
            if index == 0:  # the layer-0 face input is the same for both guidance rows
                stream, face_attended = stream.repeat(2, 1, 1), face_attended.repeat(2, 1, 1)
            body_attended = layer.self_attention(x_body, "body").repeat(2, 1, 1)  # body sees layer-0 input (Q14)

            def keys_values(name: str, layer: SplitDecoderLayer = layer, index: int = index) -> tuple[Tensor, Tensor]:
                """Cached audio keys/values of this layer and stream, then this step's two time tokens."""
                time_keys, time_values = project_keys_values(layer.cross_attn(name), time_rotated, time_memory)
                return (torch.cat([context.audio_keys[index][name], time_keys.repeat(2, 1, 1)], dim=1),
                        torch.cat([context.audio_values[index][name], time_values.repeat(2, 1, 1)], dim=1))

            stream = layer.layer_body(stream, body_input, t2, keys_values, face_attended, body_attended)
        out = self.final_layer(stream)
        unconditional, conditional = out[:n], out[n:]
        return unconditional + (conditional - unconditional) * context.guidance_weight


def draw_keep_mask(batch: int, drop_prob: float, device: torch.device | str,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Per-row 'keep the audio' mask: True with probability 1 - drop_prob (official ``prob_mask_like``)."""
    if drop_prob <= 0:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if drop_prob >= 1:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    draw = torch.rand(batch, generator=generator, device=generator.device if generator is not None else "cpu")
    return (draw < 1 - drop_prob).to(device)


# --------------------------------------------------------------------------------------------------------------
# Construction and loading


def load_smga(path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              config: Optional[SMGAConfig] = None) -> GestureDecoder:
    """Load an SMGA checkpoint (official ``.pt`` with ``ema_state_dict``, or our safetensors) strictly.

    The config comes from, in order: the argument, our safetensors metadata, the weight shapes.
    """
    from ..weights import COMPONENT_SMGA, load_weights, read_config, require_component, strict_load

    state, metadata = load_weights(path)
    require_component(state, metadata, COMPONENT_SMGA, str(path))
    if config is None:
        stored = read_config(metadata)
        config = SMGAConfig.from_dict(stored) if stored else SMGAConfig.from_state_dict(state)
    with torch.device("meta"):
        model = GestureDecoder(config)
    model = model.to_empty(device="cpu")
    model.face_mask.zero_()[FACE_DIMS] = 1.0  # non-persistent buffer: not in the file
    strict_load(model, state, COMPONENT_SMGA, str(path))
    return model.to(device=device, dtype=dtype).eval()

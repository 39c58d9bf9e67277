"""Selective Query Recollection (SQR) for RT-DETR's decoder: a training strategy, inference unchanged.

Chen, Zhang, Hu, Huang, Zhu, Savvides, "Enhanced Training of Query-Based Object Detection via Selective Query
Recollection", CVPR 2023 (arXiv 2212.07593). Facts checked against the official code (Fangyi-Chen/SQR, the
Deformable-DETR decoder ``QRDeformableDetrTransformerDecoder`` and head ``QRDeformableDETRHead``).

A DETR decoder refines one query set stage by stage, q_s = D_s(q_{s-1}), and supervises every stage. SQR also feeds
each stage the sets that earlier stages produced, and supervises every output. With O(s) the sets stage s outputs
(O(-1) = {q_0}, the encoder's selected queries, O(-2) = {}):

    selective (the paper's method):  inputs(s) = O(s-2) + O(s-1)        sets per stage 1, 2, 3, 5, 8, 13 (6 stages)
    dense (the paper's ablation):    inputs(s) = O(-1) + ... + O(s-1)   sets per stage 1, 2, 4, 8, 16, 32

so 6 stages supervise 32 (selective) or 63 (dense) sets instead of 6. On RT-DETR each set is a (query, reference
box) pair, since RT-DETR refines its boxes stage by stage:

- stage s runs its layer on every input set (the sets are stacked along the batch, like the official fast path);
  each set's box is refined from its own reference box, b = sigmoid(Δ_s + logit(ref)), and its class logits come
  from stage s's score head (the official head's query-stage alignment: every set a stage outputs uses that
  stage's heads);
- what is detached is what RT-DETR detaches: the reference box passed on is b.detach(); the query is not; the box
  supervised is RT-DETR's "look forward twice" box sigmoid(Δ_s + logit(b_prev)) with b_prev the producing stage's
  box with its gradient (the refined box itself for sets coming straight from q_0);
- every set's loss has weight 1 (the official head supervises all sets alike). The sets are returned stage by
  stage, each stage's in input order; the last one is the plain chain q_0 -> D_0 -> ... -> D_5, so Ultralytics'
  DETR loss takes it as the main loss and the other sets as auxiliary ones, denoising queries included.

In eval mode the forward is Ultralytics' own, so validation, prediction and export are RT-DETR's exactly.
Training cost: the decoder runs 32/6 = 5.3x (selective) or 63/6 = 10.5x (dense) the query sets.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules.transformer import DeformableTransformerDecoder
from ultralytics.nn.modules.utils import inverse_sigmoid

MODES = ("selective", "dense")


def mode_of(value) -> str | None:
    """The model YAML key ``sqr``: ``selective`` (or ``true``) or ``dense``; ``false``/``null`` switch it off."""
    if value is None or value is False:
        return None
    if value is True:
        return "selective"
    if value not in MODES:
        raise ValueError(f"unknown recollection mode {value!r}; expected selective (the paper's method), dense "
                         "(its ablation), or false")  # fmt: skip
    return value


def schedule(mode: str, num_layers: int) -> list[list[int]]:
    """For each decoder stage, the indices of the query sets it takes, numbering the sets in the order they are made
    (0 = the encoder's queries, then each stage's outputs in order). Stage s outputs one set per input set."""
    if mode not in MODES:
        raise ValueError(f"unknown recollection mode {mode!r}; expected one of {', '.join(MODES)}")
    made = [[0]]  # O(-1), then O(0), O(1), ...
    plan, count = [], 1
    for _ in range(num_layers):
        take = (made[-2] if len(made) > 1 else []) + made[-1] if mode == "selective" else [j for o in made for j in o]
        plan.append(take)
        made.append(list(range(count, count + len(take))))
        count += len(take)
    return plan


class SQRDecoder(DeformableTransformerDecoder):
    """RT-DETR's ``DeformableTransformerDecoder`` trained with query recollection.

    It takes over a built decoder's layers (the same modules, so the state dict is RT-DETR's key for key).
    Training forward: returns (boxes, logits) of shapes (S, bs, nq, 4) and (S, bs, nq, nc), S = the number of
    supervised sets (32 for 6 stages, selective). Eval forward: Ultralytics' own, (1, bs, nq, 4) and (1, bs, nq, nc).
    """

    def __init__(self, decoder: DeformableTransformerDecoder, mode: str = "selective"):
        super().__init__(decoder.hidden_dim, decoder.layers[0], decoder.num_layers, decoder.eval_idx)
        self.layers = decoder.layers
        self.mode = mode
        self.plan = schedule(mode, self.num_layers)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, sets per stage={[len(t) for t in self.plan]}"

    def forward(self, embed, refer_bbox, feats, shapes, bbox_head, score_head, pos_mlp, attn_mask=None, padding_mask=None):  # noqa: E501
        if not self.training:
            return super().forward(embed, refer_bbox, feats, shapes, bbox_head, score_head, pos_mlp, attn_mask, padding_mask)
        bs = embed.shape[0]
        sets = [(embed, refer_bbox.sigmoid(), None)]  # (query, reference box, box with gradient of the last stage)
        boxes, logits = [], []
        for i, layer in enumerate(self.layers):
            taken = [sets[j] for j in self.plan[i]]
            k = len(taken)
            query = torch.cat([t[0] for t in taken])
            ref = torch.cat([t[1] for t in taken])
            out = layer(
                query,
                ref,
                feats.repeat(k, 1, 1),
                shapes,
                None if padding_mask is None else padding_mask.repeat(k, 1),
                attn_mask,
                pos_mlp(ref),
            )
            delta = bbox_head[i](out)
            refined = torch.sigmoid(delta + inverse_sigmoid(ref))
            logits.append(score_head[i](out))
            for q, d, b, (_, _, prev) in zip(out.split(bs), delta.split(bs), refined.split(bs), taken):
                boxes.append(b if prev is None else torch.sigmoid(d + inverse_sigmoid(prev)))
                sets.append((q, b.detach(), b))
        logits = torch.cat(logits).unflatten(0, (-1, bs))
        return torch.stack(boxes), logits

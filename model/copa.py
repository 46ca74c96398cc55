"""COPA (Jiang et al., ACM MM 2023, arXiv 2308.03475): ViT-TPD + BERT text towers trained with five losses.

One training forward, for a batch of B image-caption pairs:

1. Text encoder on the captions; the text [CLS] (or the token mean: ``itc_pool``, ``query_pool``) gives the ITC
   text embedding and, projected to the ViT width (``query_proj``), the query of the Text-aware Patch Detector.
2. ViT blocks before the first detect layer, once (``forward_shared``). The text-aware tail (detector driven by
   the paired caption) gives the visual tokens [CLS, kept..., fused] of the positive pairs and the detector logits
   that PTA supervises.
3. ITC image embedding, by ``itc_image_path``. "cls_query" (default): the same detectors driven by the image
   [CLS], keeping ``itc_keep_ratio`` of the patches (default 0.1, plus the fused token), so retrieval never sees
   the paired text (DESIGN section 7) and its own ViT tail stays small; "text_query": the text-aware tokens of
   step 2 (an ablation that peeks at the caption); "unpruned": the tail without detectors.
4. ITM over B positives and 2B hard negatives (one negative text per image, one negative image per text, sampled
   from the ITC similarities). With ``itm_negatives="reuse"`` (default) a negative pair takes the tokens its image
   got with its own caption, as ALBEF and mPLUG reuse image features: no extra tail. With "requery" a negative
   pair's own text drives the detector, exactly as ``itm_score`` does at inference, at the price of 2B more tails.
5. MLM and PrefixLM fuse the masked caption / the caption prefix with the positive pairs' visual tokens. They reuse
   the tokens selected with the full caption as query, as mPLUG reuses its image features, which saves two ViT
   tails per step; the price is that the choice of kept patches may carry a trace of the masked words.
6. PTA on the text-aware detector logits, for the samples that have labels.

The step's random text choices (MLM masking, PrefixLM split) are drawn first, so they are the same whatever the
detector keeps, and ``component`` marks every pass for the cost accounting (``model/cost.py``) and profiler traces.

When every keep ratio is 1.0 (and the retrieval path keeps all patches too) the detectors are identities and all
paths give the same visual tokens, so the tail runs once: that is the unpruned baseline the benchmark compares
against.

Cost, and why the defaults are what they are (``copa bench model``, ``base`` at 256 px, counted per sample: FLOPs
with PyTorch's counter, activation bytes saved for backward; the unpruned step costs 281 GFLOPs and 332 MiB).
The cheapest a step can be at a detect layer and keep ratio is one text-aware tail ("text_query" + "reuse", which
peeks at the caption for ITC). Before this accounting the defaults ran a full-size retrieval tail and re-queried
negatives (three more tails): at block 6 / keep 0.5 that step cost more than the unpruned one (x1.04 FLOPs at
block 3). Measured, option by option, at block 3 / keep 0.5 (+ over the one-tail step):

- re-queried negatives: +54% FLOPs (2B tails with gradients); reused: +0. Reuse is measured not to hurt ITM at
  inference: on held-out scenes where the text decides what the detector keeps, a model trained on reused
  negatives ranks pairs by ``itm_score`` as well as one trained on re-queried negatives, and learns ITM sooner
  (``tests/model/test_itm_negatives.py``);
- a retrieval tail keeping the fusion path's 0.5: +27%; keeping 0.1 (plus the fused token that averages the rest):
  +6%, at most +7% at 256 px over blocks 3/6/9 and keep 0.3/0.5/0.7. The demo's retrieval stays where it was
  (R@1 over 208 held-out images, two seeds each: text-to-image 0.027/0.045 at 0.1 against 0.037/0.038 at 0.5);
- the detector before block 3 instead of 6: x0.71 instead of x0.76 of the unpruned FLOPs. The keep ratio stays at
  0.5, where the demo's held-out detector recall is 0.81 (0.66 at 0.3).

The default therefore costs x0.71 the unpruned step's FLOPs and x0.73 its activation bytes at 256 px (x0.66 /
x0.68 at 384 px). Not built yet: with reused negatives every fusion pass (ITM, MLM, PrefixLM prefix) cross-attends
to the same B visual token sets, so their keys and values could be projected once instead of five times per
sample: by hand count (2 x 768^2 per token, layer and pass) about 11% of this step's FLOPs and 16% of the unpruned
step's, which would move the ratio from 0.71 to about 0.75. It needs a cross-attention that takes projected keys
and values, which transformers' ``BertLayer`` does not.

Batch (dict): ``image`` float [B, 3, H, W]; ``input_ids`` long [B, T] ([CLS] ... [SEP], padded); ``attention_mask``
[B, T]; ``coverage`` uint8 [B, G, G] (zeros without labels); ``has_labels`` bool [B].

Shape legend: B batch, T text tokens, N patches, K kept, M visual tokens (K + 2, or N + 1), D width, E ITC width.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model import distributed
from model.config import COPAConfig
from model.cost import MOMENTUM, component
from model.losses import (
    IGNORE,
    box_loss,
    caption_split,
    itc_loss,
    itm_loss,
    mask_tokens,
    pta_loss,
    sample_hard_negatives,
    split_prefix,
    token_loss,
)
from model.momentum import MomentumITC
from model.text import FusionEncoder, LMHead, TextDecoder, TextEncoder, init_text_weights, load_bert
from model.tpd import detector_boxes
from model.vision import VisionOutput, VisionTPD

ITC_TOWERS = ("vision", "text_encoder", "query_proj", "itc_vision_proj", "itc_text_proj")


def pool_text(text_BTD: Tensor, mask_BT: Tensor, how: str) -> Tensor:
    """One vector [B, D] per text: the [CLS] state ("cls") or the mean over its real tokens ("mean")."""
    if how == "mean":
        return (text_BTD * mask_BT[..., None]).sum(1) / mask_BT.sum(1, keepdim=True)
    return text_BTD[:, 0]


def init_copa_weights(model: COPA) -> None:
    """BERT-style init for everything outside the timm ViT (which keeps timm's own init)."""
    for module in (model.text_encoder, model.fusion, model.decoder, model.mlm_head, model.lm_head):
        module.apply(init_text_weights)
    for module in (model.vision.detectors, model.query_proj, model.itc_vision_proj, model.itc_text_proj):
        module.apply(init_text_weights)
    model.itm_head.apply(init_text_weights)
    model.box_head.apply(init_text_weights)


class COPA(nn.Module):
    def __init__(self, cfg: COPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        v, t = cfg.vision, cfg.text
        self.vision = VisionTPD(v)
        self.text_encoder = TextEncoder(t)
        self.fusion = FusionEncoder(t, v.embed_dim)
        self.decoder = TextDecoder(t)
        self.query_proj = nn.Linear(t.hidden, v.embed_dim)  # pooled text -> detector query
        self.itc_vision_proj = nn.Linear(v.embed_dim, cfg.embed_dim)
        self.itc_text_proj = nn.Linear(t.hidden, cfg.embed_dim)
        self.itm_head = nn.Linear(t.hidden, 2)
        self.box_head = nn.Sequential(nn.Linear(t.hidden, t.hidden), nn.GELU(), nn.Linear(t.hidden, 4))  # grounding
        self.mlm_head = LMHead(t)
        self.lm_head = LMHead(t)
        self.temp = nn.Parameter(torch.tensor(cfg.loss.temp_init))
        init_copa_weights(self)
        if t.bert_dir:
            load_bert(self.text_encoder, self.fusion, self.decoder, t)
        self.momentum: MomentumITC | None = None
        if cfg.loss.itc_queue_size:  # built last: the momentum copies start equal to the initialized towers
            towers = {name: getattr(self, name) for name in ITC_TOWERS}
            lc = cfg.loss
            self.momentum = MomentumITC(towers, cfg.embed_dim, lc.itc_queue_size, lc.itc_momentum, lc.itc_distill_alpha)

    @classmethod
    def from_pretrained(cls, folder: str) -> COPA:
        """A model written by ``copa export`` (``model.checkpoint.export_model``; a run folder or checkpoint file
        works too), in eval mode on the CPU; its tokenizer: ``CaptionTokenizer.from_dir(folder)``. No pickles."""
        from model.checkpoint import load_checkpoint, load_model  # checkpoint builds COPA: import at call time

        return load_model(load_checkpoint(folder))[0]

    def set_detection(self, detect_layers: tuple[int, ...], keep_ratios: tuple[float, ...]) -> None:
        """Move the detectors or change their keep ratios (see ``VisionTPD.set_detection``)."""
        self.vision.set_detection(detect_layers, keep_ratios)
        if self.momentum is not None:
            self.momentum.towers.vision.set_detection(detect_layers, keep_ratios)
        self.cfg = dataclasses.replace(self.cfg, vision=self.vision.cfg)

    def set_checkpointing(self, vision: bool, text: bool) -> None:
        """Turn activation checkpointing of the ViT blocks and of the text towers on or off."""
        self.vision.cfg = dataclasses.replace(self.vision.cfg, grad_checkpointing=vision)
        for tower in (self.text_encoder, self.fusion, self.decoder):
            tower.recompute = text
        self.cfg = dataclasses.replace(
            self.cfg, vision=self.vision.cfg, text=dataclasses.replace(self.cfg.text, grad_checkpointing=text)
        )

    # ---- shared pieces -------------------------------------------------------------------------------------

    def _embedding(self) -> Tensor:
        return self.text_encoder.embeddings.word_embeddings.weight

    def _itc_image_tokens(self, towers: nn.Module, shared_BND: Tensor, query_BD: Tensor | None) -> Tensor:
        """Visual tokens of the ITC image path; ``towers`` is ``self`` or the momentum copies."""
        path = self.cfg.itc_image_path
        if path == "cls_query":
            return towers.vision.forward_tail(shared_BND, None, keep_ratios=self.cfg.itc_keep_ratios()).tokens
        if path == "unpruned":
            return towers.vision.forward_tail(shared_BND, prune=False).tokens
        if query_BD is None:
            raise ValueError('itc_image_path "text_query" needs the paired text (input_ids, attention_mask)')
        return towers.vision.forward_tail(shared_BND, query_BD).tokens

    def _itc_needs_own_tail(self) -> bool:
        """False when the ITC image path gives the fusion path's tokens anyway (no detector prunes, or the
        "text_query" ablation), so the training step runs one tail for both."""
        if self.cfg.itc_image_path == "text_query":
            return False
        itc_prunes = self.cfg.itc_image_path == "cls_query" and (self.cfg.itc_keep_ratio or 1.0) < 1.0
        return self.vision.prunes or itc_prunes

    def _itc_text(self, towers: nn.Module, text_BTD: Tensor, mask_BT: Tensor) -> Tensor:
        """Normalized ITC text embedding [B, E]: the [CLS] state, or the mean over the caption's tokens."""
        pooled_BD = pool_text(text_BTD, mask_BT, self.cfg.itc_pool)
        return F.normalize(towers.itc_text_proj(pooled_BD).float(), dim=-1)

    def _query(self, towers: nn.Module, text_BTD: Tensor, mask_BT: Tensor) -> Tensor:
        """The detector query [B, D_vision] of each text (``query_pool``)."""
        return towers.query_proj(pool_text(text_BTD, mask_BT, self.cfg.query_pool))

    def _itc_image(self, towers: nn.Module, visual_BMD: Tensor) -> Tensor:
        """Normalized ITC image embedding [B, E]: the [CLS] token, or the mean over the visual tokens."""
        pooled_BD = visual_BMD.mean(1) if self.cfg.itc_pool == "mean" else visual_BMD[:, 0]
        return F.normalize(towers.itc_vision_proj(pooled_BD).float(), dim=-1)

    def _temperature(self) -> Tensor:
        if self.training:  # clamp the parameter itself, as ALBEF does, so it never sticks outside the range
            with torch.no_grad():
                self.temp.clamp_(self.cfg.loss.temp_min, self.cfg.loss.temp_max)
        return self.temp

    # ---- training ------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The weighted sum of the losses whose weight is not 0 (the others are not computed), each loss, and
        diagnostics. ``batch["prompt_ids"]`` ([1, P], optional) is the captioning prompt ([CLS] and its words)."""
        image, ids_BT, mask_BT = batch["image"], batch["input_ids"], batch["attention_mask"]
        lc = self.cfg.loss
        as_float = {"dtype": torch.float32, "device": ids_BT.device}
        losses: dict[str, Tensor] = {}
        out: dict[str, Tensor] = {}
        # The step's random text choices first, so that they do not depend on how many tokens the vision path
        # keeps (dropout draws scale with it): every detector setting masks and splits the same captions.
        if lc.w_mlm:
            mlm_ids_BT, mlm_labels_BT = mask_tokens(ids_BT, mask_BT, self.cfg.text, lc.mlm_prob)
        if lc.w_prefixlm:
            split = split_prefix(ids_BT, mask_BT, self.cfg.text)
        if lc.w_caption:
            losses["caption"] = self._caption_loss(image, ids_BT, mask_BT, batch.get("prompt_ids"))
        if lc.w_vqa:
            losses["vqa"] = self._answer_loss(image, ids_BT, mask_BT, batch["answer_ids"], batch["answer_mask"])
        if lc.w_itc or lc.w_itm or lc.w_mlm or lc.w_prefixlm or lc.w_pta or lc.w_ground:  # on caption-aware tokens
            text_BTD, query_BD, shared_BND, pos = self._text_aware(image, ids_BT, mask_BT)
            visual_BMD = pos.tokens
            out["visual_tokens"] = torch.tensor(float(visual_BMD.shape[1]), **as_float)
        if lc.w_itc or lc.w_itm:
            itc, itc_out = self._itc(image, ids_BT, mask_BT, text_BTD, shared_BND, query_BD, visual_BMD)
            out |= itc_out
            if lc.w_itc:
                losses["itc"] = itc[3]
        if lc.w_itm:
            losses["itm"], out["itm_acc"], out["itm_negatives_from_other_ranks"] = self._itm(
                itc[:3], (text_BTD, mask_BT, visual_BMD), shared_BND, query_BD
            )
        if lc.w_mlm:
            with component("text_encoder.masked"):
                mlm_text_BTD = self.text_encoder(mlm_ids_BT, mask_BT)
            with component("fusion.mlm"):
                mlm_BTD = self.fusion(mlm_text_BTD, mask_BT, visual_BMD)
            with component("heads"):
                losses["mlm"] = token_loss(self.mlm_head, mlm_BTD, mlm_labels_BT, self._embedding())
        if lc.w_prefixlm:
            decoder_BLD = self._decode(visual_BMD, *split[:4])
            with component("heads"):
                losses["prefixlm"] = token_loss(self.lm_head, decoder_BLD, split.targets, self._embedding())
        if lc.w_pta:
            coverage, has_labels = batch["coverage"], batch["has_labels"]
            with component("heads"):
                losses["pta"] = pta_loss(pos.logits, pos.scored_idx, coverage, has_labels, lc.tau, lc.soft_pta)
            out["pta_samples"] = has_labels.float().sum().detach()
        if lc.w_ground:
            with component("fusion"):
                fused_cls = self.fusion(text_BTD, mask_BT, visual_BMD)[:, 0]
            with component("heads"):
                box = self._box(fused_cls, pos)
                losses["ground"], out["ground_iou"] = box_loss(box, batch["box"].float(), batch["has_box"])
        total = sum(getattr(lc, f"w_{name}") * loss for name, loss in losses.items())
        return {"loss": total} | {f"loss_{name}": loss.detach() for name, loss in losses.items()} | out

    def _itc(
        self,
        image: Tensor,
        ids_BT: Tensor,
        mask_BT: Tensor,
        text_BTD: Tensor,
        shared_BND: Tensor,
        query_BD: Tensor,
        visual_BMD: Tensor,
    ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], dict[str, Tensor]]:
        """ITC of the batch: ((image embeddings, text embeddings, temperature, loss), diagnostics). Each pair is
        contrasted with the batch's pairs; in training under DDP, with every rank's (``itc_global_batch``)."""
        B, lc = ids_BT.shape[0], self.cfg.loss
        temp = self._temperature()
        rank, world_size = distributed.world() if self.training else (0, 1)
        gather_itc = lc.itc_global_batch and world_size > 1
        if self._itc_needs_own_tail():
            with component("vit_tail.itc"):
                itc_visual = self._itc_image_tokens(self, shared_BND, query_BD)
        else:
            itc_visual = visual_BMD
        with component("heads"):
            img_BE = self._itc_image(self, itc_visual)
            txt_BE = self._itc_text(self, text_BTD, mask_BT)
        if self.momentum is not None:
            with component(MOMENTUM):
                loss = self._momentum_itc(image, ids_BT, mask_BT, img_BE, txt_BE, temp, gather_itc)
        elif gather_itc:
            img_CE, txt_CE = distributed.gather_with_grad(img_BE), distributed.gather_with_grad(txt_BE)
            loss = itc_loss(img_BE, txt_BE, temp, img_CE, txt_CE, offset=rank * B)
        else:
            loss = itc_loss(img_BE, txt_BE, temp)
        as_float = {"dtype": torch.float32, "device": ids_BT.device}
        diagnostics = {
            "temp": temp.detach(),
            "itc_visual_tokens": torch.tensor(float(itc_visual.shape[1]), **as_float),
            "itc_candidates": torch.tensor(float(B * (world_size if gather_itc else 1)), **as_float),
        }
        return (img_BE, txt_BE, temp, loss), diagnostics

    def _itm(
        self,
        itc: tuple[Tensor, Tensor, Tensor],
        fused_inputs: tuple[Tensor, Tensor, Tensor],
        shared_BND: Tensor,
        query_BD: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """ITM over the B positives, then (image i, hard negative text), then (hard negative image, text i):
        (loss, accuracy, fraction of negatives from other ranks)."""
        B = itc[0].shape[0]
        world_size = distributed.world()[1] if self.training else 1
        global_pool = self.cfg.itm_negative_pool == "global" and world_size > 1
        text_BTD, mask_BT, visual_BMD = fused_inputs
        if B * (world_size if global_pool else 1) >= 2:
            texts, masks, visuals, from_other_ranks = self._itm_pairs(
                itc, fused_inputs, shared_BND, query_BD, global_pool
            )
            with component("fusion.itm"):
                fused_cls = self.fusion(texts, masks, visuals)[:, 0]
        else:  # a single pair has no negative to contrast with; ITM sees the positive only
            from_other_ranks = torch.zeros((), device=text_BTD.device)
            with component("fusion.itm"):
                fused_cls = self.fusion(text_BTD, mask_BT, visual_BMD)[:, 0]
        with component("heads"):
            loss, acc = itm_loss(self.itm_head(fused_cls), B)
        return loss, acc, from_other_ranks.float()

    def _caption_loss(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor, prompt_ids: Tensor | None) -> Tensor:
        """Captioning (fine-tuning): the decoder writes the whole caption after the prompt, which is all the
        text that drives the detector, as at inference (``generate``)."""
        split = caption_split(ids_BT, mask_BT, self.cfg.text, prompt_ids)
        memory_BMD, memory_mask = self._prefix_memory(image, split.prefix_ids, split.prefix_mask)
        with component("decoder"):
            h_BLD = self.decoder(
                self.text_encoder.embed(split.decoder_ids), split.decoder_mask, memory_BMD, memory_mask
            )
        with component("heads"):
            return token_loss(self.lm_head, h_BLD, split.targets, self._embedding())

    def _answer_loss(
        self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor, answer_ids: Tensor, answer_mask: Tensor
    ) -> Tensor:
        """VQA (fine-tuning, mPLUG's generative answering): the question drives the detector and is fused with the
        kept patches; the decoder writes the answer ([CLS] answer [SEP] in ``answer_ids``) from that memory."""
        split = caption_split(answer_ids, answer_mask, self.cfg.text)
        memory_BMD, memory_mask = self._prefix_memory(image, ids_BT, mask_BT)
        with component("decoder"):
            h_BLD = self.decoder(
                self.text_encoder.embed(split.decoder_ids), split.decoder_mask, memory_BMD, memory_mask
            )
        with component("heads"):
            return token_loss(self.lm_head, h_BLD, split.targets, self._embedding())

    def _box(self, fused_cls_BD: Tensor, vis: VisionOutput) -> Tensor:
        """The referent's box [B, 4], normalized x0, y0, x1, y1: the box around the patches the first detector finds
        relevant to the expression (``detector_boxes``, what PTA teaches it), moved by the box head's correction
        from the fused [CLS] (X-VLM's head, here a bounded offset of each side: at most half the picture)."""
        anchor_B4 = detector_boxes(vis.logits[0].detach(), vis.scored_idx[0], self.cfg.vision.grid_size)
        moved_B4 = anchor_B4 + 0.5 * torch.tanh(self.box_head(fused_cls_BD).float())
        x0, y0, x1, y1 = moved_B4.clamp(0, 1).unbind(-1)
        return torch.stack(
            [torch.minimum(x0, x1), torch.minimum(y0, y1), torch.maximum(x0, x1), torch.maximum(y0, y1)], -1
        )

    def _momentum_itc(
        self,
        image: Tensor,
        ids_BT: Tensor,
        mask_BT: Tensor,
        img_BE: Tensor,
        txt_BE: Tensor,
        temp: Tensor,
        global_batch: bool,
    ) -> Tensor:
        m = self.momentum.towers
        with torch.no_grad():
            if self.training:
                self.momentum.update(self)
            text_m_BTD = m.text_encoder(ids_BT, mask_BT)
            shared_m = m.vision.forward_shared(image)
            query_m = self._query(m, text_m_BTD, mask_BT) if self.cfg.itc_image_path == "text_query" else None
            img_m_BE = self._itc_image(m, self._itc_image_tokens(m, shared_m, query_m))
            txt_m_BE = self._itc_text(m, text_m_BTD, mask_BT)
        return self.momentum.loss(img_BE, txt_BE, img_m_BE, txt_m_BE, temp, global_batch)

    def _itm_pairs(
        self,
        itc: tuple[Tensor, Tensor, Tensor],
        fused_inputs: tuple[Tensor, Tensor, Tensor],
        shared_BND: Tensor,
        query_BD: Tensor,
        global_pool: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The fusion inputs of ITM: texts [3B, T, D], masks [3B, T] and visual tokens [3B, M, D] of the B positive
        pairs, then (image i, a hard negative text), then (a hard negative image, text i), negatives drawn from the
        ITC similarities (``itc`` = image and text embeddings, temperature) over this rank's batch or, with
        ``global_pool``, every rank's (their text states and visual tokens gathered with gradients). Also returns
        the fraction of negatives that came from another rank."""
        img_BE, txt_BE, temp = itc
        text_BTD, mask_BT, visual_BMD = fused_inputs
        B = img_BE.shape[0]
        offset = distributed.world()[0] * B if global_pool else 0
        if global_pool:
            img_CE, txt_CE = distributed.gather_all(img_BE.detach()), distributed.gather_all(txt_BE.detach())
            text_BTD = distributed.pad_to_longest(text_BTD, 0.0)
            mask_BT = distributed.pad_to_longest(mask_BT, 0)
            text_pool, mask_pool = distributed.gather_with_grad(text_BTD), distributed.gather_all(mask_BT)
            visual_pool = distributed.gather_with_grad(visual_BMD)
        else:
            img_CE, txt_CE = img_BE, txt_BE
            text_pool, mask_pool, visual_pool = text_BTD, mask_BT, visual_BMD
        sims = ((img_BE @ txt_CE.t() / temp).detach(), (txt_BE @ img_CE.t() / temp).detach())
        neg_text_B, neg_image_B = sample_hard_negatives(*sims, offset=offset)
        own_B = offset + torch.arange(B, device=img_BE.device)  # this rank's pairs among the candidates
        if self.vision.prunes and self.cfg.itm_negatives == "requery":  # rank pool only (COPAConfig checks)
            img_idx, txt_idx = torch.cat([own_B, neg_image_B]), torch.cat([neg_text_B, own_B])
            with component("vit_tail.itm_negatives"):
                neg_visual = self.vision.forward_tail(shared_BND[img_idx], query_BD[txt_idx]).tokens
        else:
            neg_visual = torch.cat([visual_BMD, visual_pool[neg_image_B]])
        texts = torch.cat([text_BTD, text_pool[neg_text_B], text_BTD])
        masks = torch.cat([mask_BT, mask_pool[neg_text_B], mask_BT])
        visuals = torch.cat([visual_BMD, neg_visual])
        negatives = torch.cat([neg_text_B, neg_image_B])
        from_other_ranks = ((negatives < offset) | (negatives >= offset + B)).float().mean()
        return texts, masks, visuals, from_other_ranks

    def _decode(
        self, visual_BMD: Tensor, prefix_ids: Tensor, prefix_mask: Tensor, decoder_ids: Tensor, decoder_mask: Tensor
    ) -> Tensor:
        """Decoder states for ``decoder_ids``, cross-attending to [visual tokens, fused prefix states]."""
        with component("text_encoder.prefix"):
            prefix_text_BPD = self.text_encoder(prefix_ids, prefix_mask)
        memory_BMD, memory_mask = self._memory(visual_BMD, prefix_text_BPD, prefix_mask)
        with component("decoder"):
            return self.decoder(self.text_encoder.embed(decoder_ids), decoder_mask, memory_BMD, memory_mask)

    def _memory(self, visual_BMD: Tensor, prefix_text_BPD: Tensor, prefix_mask: Tensor) -> tuple[Tensor, Tensor]:
        """What the decoder cross-attends to: [visual tokens, the prefix fused with them], and its mask."""
        with component("fusion.prefix"):
            prefix_BPD = self.fusion(prefix_text_BPD, prefix_mask, visual_BMD)
        memory_BMD = torch.cat([self.fusion.vision_proj(visual_BMD), prefix_BPD], dim=1)
        visual_mask = torch.ones(visual_BMD.shape[:2], dtype=prefix_mask.dtype, device=prefix_mask.device)
        return memory_BMD, torch.cat([visual_mask, prefix_mask], dim=1)

    def _prefix_memory(self, image: Tensor, prefix_ids: Tensor, prefix_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's memory when the prefix (the prompt, or [CLS] alone) is all the text there is: the prefix
        drives the detector, then ``_memory``."""
        with component("text_encoder.prefix"):
            text_BPD = self.text_encoder(prefix_ids, prefix_mask)
        with component("vit"):
            visual_BMD = self.vision(image, self._query(self, text_BPD, prefix_mask)).tokens
        return self._memory(visual_BMD, text_BPD, prefix_mask)

    # ---- inference -----------------------------------------------------------------------------------------

    def encode_text(self, ids_BT: Tensor, mask_BT: Tensor) -> Tensor:
        """Normalized ITC text embeddings [B, E]."""
        return self._itc_text(self, self.text_encoder(ids_BT, mask_BT), mask_BT)

    def encode_image(self, image: Tensor, ids_BT: Tensor | None = None, mask_BT: Tensor | None = None) -> Tensor:
        """Normalized ITC image embeddings [B, E]; the text is used (and required) only by "text_query"."""
        query_BD = None
        if self.cfg.itc_image_path == "text_query" and ids_BT is not None:
            query_BD = self._query(self, self.text_encoder(ids_BT, mask_BT), mask_BT)
        visual = self._itc_image_tokens(self, self.vision.forward_shared(image), query_BD)
        return self._itc_image(self, visual)

    def _text_aware(
        self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, VisionOutput]:
        """The caption's text states [B, T, D] and detector query [B, D], the shared ViT blocks' tokens [B, N, D], and
        the tail whose detectors that query drives."""
        with component("text_encoder.caption"):
            text_BTD = self.text_encoder(ids_BT, mask_BT)
        query_BD = self._query(self, text_BTD, mask_BT)
        with component("vit_shared"):
            shared_BND = self.vision.forward_shared(image)
        with component("vit_tail.fusion"):
            vis = self.vision.forward_tail(shared_BND, query_BD)
        return text_BTD, query_BD, shared_BND, vis

    def fused_states(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor) -> tuple[Tensor, VisionOutput]:
        """Text encoder, text-aware ViT-TPD and fusion (the VQA-like forward): [B, T, D] and the vision output."""
        text_BTD, _, _, vis = self._text_aware(image, ids_BT, mask_BT)
        with component("fusion"):
            return self.fusion(text_BTD, mask_BT, vis.tokens), vis

    def itm_score(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor) -> Tensor:
        """Probability [B] that each caption matches its image."""
        fused_BTD, _ = self.fused_states(image, ids_BT, mask_BT)
        return self.itm_head(fused_BTD[:, 0]).float().softmax(dim=-1)[:, 1]

    def itm_score_shared(self, shared_BND: Tensor, ids_BT: Tensor, mask_BT: Tensor) -> Tensor:
        """``itm_score`` from the images' ``vision.forward_shared`` tokens: re-ranking pairs many captions with each
        image, and the blocks before the detector do not depend on the text, so they run once per image."""
        with component("text_encoder.caption"):
            text_BTD = self.text_encoder(ids_BT, mask_BT)
        with component("vit_tail.fusion"):
            visual_BMD = self.vision.forward_tail(shared_BND, self._query(self, text_BTD, mask_BT)).tokens
        with component("fusion"):
            fused_cls = self.fusion(text_BTD, mask_BT, visual_BMD)[:, 0]
        return self.itm_head(fused_cls).float().softmax(dim=-1)[:, 1]

    def ground(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor) -> tuple[Tensor, VisionOutput]:
        """The box [B, 4] (normalized x0, y0, x1, y1) each expression refers to, and the vision output whose
        detectors it drove (their patch scores are the detector's own guess of the referent)."""
        fused_BTD, vis = self.fused_states(image, ids_BT, mask_BT)
        return self._box(fused_BTD[:, 0], vis), vis

    @torch.no_grad()
    def rank_answers(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor, answers_AL: Tensor, k: int = 128) -> Tensor:
        """The index [B] of each question's answer among the candidates ``answers_AL`` ([A, L]: [CLS] answer [SEP],
        padded), as ALBEF ranks a fixed answer list: the ``k`` candidates whose first token the decoder finds
        likeliest, re-scored by the summed log-probability of the whole answer."""
        t = self.cfg.text
        memory_BMD, memory_mask = self._prefix_memory(image, ids_BT, mask_BT)
        B, A = image.shape[0], answers_AL.shape[0]
        k = min(k, A)
        split = caption_split(answers_AL, (answers_AL != t.pad_id).long(), t)  # [A, L'] decoder inputs, targets
        start = torch.full((B, 1), t.bos_id, dtype=torch.long, device=image.device)
        first_BA = self._next_logits(start, memory_BMD, memory_mask).log_softmax(-1)[:, split.targets[:, 0]]
        top_BK = first_BA.topk(k, dim=1).indices
        flat = top_BK.flatten()
        h = self.decoder(
            self.text_encoder.embed(split.decoder_ids[flat]),
            split.decoder_mask[flat],
            memory_BMD.repeat_interleave(k, 0),
            memory_mask.repeat_interleave(k, 0),
        )
        logp = self.lm_head(h, self._embedding()).float().log_softmax(-1)
        targets = split.targets[flat]
        picked = logp.gather(2, targets.clamp(min=0)[..., None])[..., 0] * (targets != IGNORE)
        best_B = picked.sum(1).view(B, k).argmax(1)
        return top_BK.gather(1, best_B[:, None])[:, 0]

    def detect(self, image: Tensor, ids_BT: Tensor, mask_BT: Tensor) -> VisionOutput:
        """The text-aware detectors' logits, scored and kept patch indices (per detect layer), for pictures."""
        return self.vision(image, self._query(self, self.text_encoder(ids_BT, mask_BT), mask_BT))

    @torch.no_grad()
    def generate(
        self,
        image: Tensor,
        max_len: int | None = None,
        prefix_ids: Tensor | None = None,
        beams: int = 1,
        length_penalty: float = 1.0,
    ) -> Tensor:
        """The caption [B, L] written after ``prefix_ids`` ([1, P] or [B, P]: [CLS] w1..ws, padded) or after [CLS]
        alone: greedy (``beams`` 1) or beam search. Each row ends at its first [SEP] (kept), padded after it.

        Beam search keeps the ``beams`` best unfinished captions by summed log-probability; a caption that ends
        scores that sum divided by its length (with [SEP]) to the power ``length_penalty`` (0: the plain sum, which
        favours short captions; 1: the mean, as transformers' default). It stops when no unfinished caption can
        still beat the best finished one of its image (exact for ``length_penalty`` 0) or at ``max_len`` tokens.
        """
        t = self.cfg.text
        B, device = image.shape[0], image.device
        max_len = max_len or t.max_len
        if prefix_ids is None:
            prefix_ids = torch.full((1, 1), t.cls_id, dtype=torch.long, device=device)
        prefix_ids = prefix_ids.expand(B, -1)
        memory_BMD, memory_mask = self._prefix_memory(image, prefix_ids, (prefix_ids != t.pad_id).long())
        if beams > 1:
            return self._beam_search(memory_BMD, memory_mask, max_len, beams, length_penalty)
        out = torch.full((B, 1), t.bos_id, dtype=torch.long, device=device)
        done_B = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_len):
            next_B = self._next_logits(out, memory_BMD, memory_mask).argmax(dim=-1)
            next_B = next_B.masked_fill(done_B, t.pad_id)
            out = torch.cat([out, next_B[:, None]], dim=1)
            done_B |= next_B == t.sep_id
            if done_B.all():
                break
        return out[:, 1:]

    def _next_logits(self, ids_BL: Tensor, memory_BMD: Tensor, memory_mask: Tensor) -> Tensor:
        """The decoder's logits [B, V] for the token after ``ids_BL`` (the whole sequence is re-run: no cache)."""
        h_BLD = self.decoder(self.text_encoder.embed(ids_BL), torch.ones_like(ids_BL), memory_BMD, memory_mask)
        return self.lm_head(h_BLD[:, -1], self._embedding()).float()

    def _beam_search(
        self, memory_BMD: Tensor, memory_mask: Tensor, max_len: int, beams: int, length_penalty: float
    ) -> Tensor:
        t, B, device = self.cfg.text, memory_BMD.shape[0], memory_BMD.device
        memory_RMD, memory_mask = memory_BMD.repeat_interleave(beams, 0), memory_mask.repeat_interleave(beams, 0)
        seqs = [[[t.bos_id]] for _ in range(B)]  # per image, its unfinished captions (bos first)
        sums = [[0.0] for _ in range(B)]  # their summed log-probabilities
        best: list[tuple[float, list[int]] | None] = [None] * B  # per image, its best finished caption and score

        def finished_score(total: float, length: int) -> float:
            return total / length**length_penalty

        for step in range(1, max_len + 1):
            live = [b for b in range(B) if seqs[b]]
            if not live:
                break
            ids = torch.tensor([s for b in live for s in seqs[b]], device=device)
            rows = torch.tensor([b * beams + k for b in live for k in range(len(seqs[b]))], device=device)
            logp_RV = self._next_logits(ids, memory_RMD[rows], memory_mask[rows]).log_softmax(dim=-1).cpu()
            r = 0
            for b in live:
                n = len(seqs[b])
                cand_KV = logp_RV[r : r + n] + torch.tensor(sums[b])[:, None]
                r += n
                values, flat = cand_KV.flatten().topk(min(2 * beams, cand_KV.numel()))
                grown, grown_sums = [], []
                for value, index in zip(values.tolist(), flat.tolist(), strict=True):
                    k, token = divmod(index, cand_KV.shape[1])
                    seq = seqs[b][k] + [token]
                    if token == t.sep_id or step == max_len:
                        score = finished_score(value, step)
                        if best[b] is None or score > best[b][0]:
                            best[b] = (score, seq)
                    elif len(grown) < beams:
                        grown.append(seq)
                        grown_sums.append(value)
                # unfinished sums only fall, so with length_penalty 0 none can beat a better finished caption
                if best[b] is not None and grown and finished_score(max(grown_sums), step) <= best[b][0]:
                    grown = []
                seqs[b], sums[b] = grown, grown_sums
        out = torch.full((B, max_len), t.pad_id, dtype=torch.long)
        for b, found in enumerate(best):
            caption = found[1][1:]
            out[b, : len(caption)] = torch.tensor(caption)
        return out[:, : max(1, max(len(f[1]) - 1 for f in best))].to(device)

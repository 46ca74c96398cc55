"""The streaming COPA trainer (DESIGN section 8): shards -> ``StreamingLoader`` -> ``COPA`` -> checkpoints.

One process per device, started by ``torchrun`` for DDP (gloo on CPU, nccl on GPU) or on its own for one device.
Per optimizer step: ``accum`` micro-batches (gradients synchronised on the last only), bf16 autocast on GPU, a
non-finite guard (a step whose loss or gradient norm is not finite is skipped on every rank together, and too many
in a row stop the run), gradient clipping, AdamW, and a linear-warmup cosine schedule.

Epochs: a rank's loader ends when its shards are done. Ranks may hold different numbers of batches (shards are split
whole), so every micro-step the ranks agree (one tiny all-reduce) whether all of them still have a batch; when one
does not, all of them move to the next epoch together and no rank waits for a gradient that never comes. The
samples a rank still holds at that point are not seen in this epoch (the next epoch's shard shuffle deals them
again): with unequal shards an epoch is what every rank could batch in step.

Exact resume: a checkpoint (``model.checkpoint``) stores model, optimizer, scheduler, step, every rank's loader
position and the RNG states, so training N steps, saving, and resuming for M more gives the same losses as N + M
steps in one go (CPU, same world size and ``num_workers``). With a different world size the loader restarts the
saved epoch from its beginning, which the log says.

Run folder: ``train_config.json`` (resolved train and model configs), ``tokenizer.json``, ``metrics.jsonl`` (one
JSON line per ``log_every`` steps, averaged over the window and the ranks), ``checkpoints/step-NNNNNNNN.pt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import webdataset as wds
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from model.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from model.config import TASK_LOSSES, COPAConfig
from model.copa import COPA
from model.loader import (
    LoaderConfig,
    StreamingLoader,
    answers_table,
    batches_per_epoch,
    check_datasets,
    resolve_shards,
)
from model.tokenizer import TOKENIZER_FILE, CaptionTokenizer, build_wordpiece
from model.utils import seed_everything

PRECISIONS = ("auto", "bf16", "fp32")
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
# Settings that may change when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = {"steps", "epochs", "ckpt_every", "keep_checkpoints", "log_every", "progress", "out"}


SPATIAL_TASKS = ("vqa", "grounding")  # their texts say "left" and "right": no horizontal flips


@dataclass
class TrainConfig:
    """One training run; the model itself is a ``COPAConfig`` (a preset plus overrides)."""

    shards: str | list[str]  # dataset folder (its NNNNNN.tar), brace pattern, or list of shard paths/URLs
    out: str  # run folder: config, tokenizer, metrics, checkpoints
    steps: int = 0  # optimizer steps; 0: ``epochs`` passes over the training shards
    epochs: float = 1.0  # used when steps is 0
    batch_size: int = 32  # samples per micro-batch per rank
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100  # linear warmup from 0
    weight_decay: float = 0.02  # AdamW decay of weight matrices (not biases, norms or the temperature)
    clip_grad: float = 1.0  # max global gradient norm; 0 disables clipping
    holdout_shards: int = 0  # the last N shards of a dataset folder are left out of training, for evaluation
    num_workers: int = 2  # loader worker processes per rank
    shuffle_buffer: int = 1000  # samples per worker in the shuffle buffer
    augment: bool = False  # random resized crop + flip, labels moved with the image
    resampled: bool = False  # draw shards with replacement (multi-node runs, so no rank starves)
    tokenizer: str | None = None  # local tokenizer folder (tokenizer.json or BERT vocab.txt); None: build one
    task: str = "pretrain"  # what the losses serve (``TASK_LOSSES``); the model's loss weights say what is computed
    init_from: str | None = None  # start from this model's weights and tokenizer (a checkpoint, run or export)
    prompt: str = ""  # captioning: the text the decoder continues, e.g. "a picture of" (BLIP); "" is [CLS] alone
    vocab_size: int = 8000  # WordPiece size when building from the shards' captions
    tokenizer_captions: int = 200_000  # captions read from the shards to build the vocabulary
    seed: int = 0  # model init, dropout, masking, data order
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU), "bf16" or "fp32"
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    threads: int = 0  # torch CPU threads per process; 0: torch's default
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept; 0 keeps all
    log_every: int = 10  # steps per metrics line
    max_nonfinite: int = 10  # consecutive skipped (non-finite) steps before the run stops
    progress: bool = True  # a progress bar on rank 0 (a metrics line per log step when stderr is not a terminal)

    def __post_init__(self):
        if isinstance(self.shards, tuple):
            self.shards = list(self.shards)
        for name in ("batch_size", "accum", "ckpt_every", "log_every", "max_nonfinite", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("steps", "warmup_steps", "holdout_shards", "num_workers", "keep_checkpoints", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.steps == 0 and self.epochs <= 0:
            raise ValueError(f"TrainConfig.epochs must be > 0 when steps is 0, got {self.epochs}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"TrainConfig.lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}"
            )
        if self.task not in TASK_LOSSES:
            raise ValueError(f"TrainConfig.task must be one of {list(TASK_LOSSES)}, got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")


def split_holdout(shards: str | list[str], holdout: int) -> tuple[list[str], list[str]]:
    """(training shards, held-out shards): the last ``holdout`` shards in name order are held out. Shards of a
    dataset of another schema version are refused here, before anything is trained or evaluated."""
    urls = resolve_shards(shards)
    check_datasets(urls)
    if holdout and holdout >= len(urls):
        raise ValueError(f"holdout_shards {holdout} leaves no training shard out of {len(urls)}")
    return (urls[:-holdout], urls[-holdout:]) if holdout else (urls, [])


def shard_captions(urls: list[str], limit: int) -> Iterator[str]:
    """Up to ``limit`` captions from the shards' json members, in shard order (to build a vocabulary)."""
    seen = 0
    for sample in wds.tarfile_to_samples(handler=wds.warn_and_continue)({"url": u} for u in urls):
        if "json" not in sample:
            continue
        for caption in json.loads(sample["json"]).get("captions", []):
            yield caption
            seen += 1
            if seen >= limit:
                return


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then a cosine to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "embeddings" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused into one kernel per step on CPU and CUDA: on the ``base`` model's 330M
    parameters a 2-core CPU takes 0.3-0.4 s per step instead of 2.3 s with the default multi-tensor update."""
    device = next(model.parameters()).device
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, fused=device.type in ("cpu", "cuda"))


def wrap_ddp(model: COPA, device_ids: list[int] | None = None) -> DistributedDataParallel:
    """``model`` in DDP. No buffer broadcast: the only buffers that change are the momentum queues, which every rank
    fills with the same gathered features (model/momentum.py); at ``base`` broadcasting them would send 128 MiB
    from rank 0 every step. A loss of weight 0 is not computed, so the parameters only it uses get no gradient
    (fine-tuning tasks): DDP must then look for them, or it would leave their bucket's gradients un-averaged. The box
    head serves grounding alone: without it, it is frozen, so that DDP leaves it out instead of looking for it in
    every pretraining step."""
    lc = model.cfg.loss
    if not lc.w_ground:
        model.box_head.requires_grad_(False)
    unused = not all(getattr(lc, w) for w in ("w_itc", "w_itm", "w_mlm", "w_prefixlm", "w_pta"))
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False, find_unused_parameters=unused)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_min(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(values)
            values = values / self.world_size
        return values


def setup_distributed(device: str) -> Distributed:
    """Rank and device from torchrun's environment; initialises the process group for more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device is cuda but torch sees no CUDA device")
    if cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Distributed(rank, world, local_rank, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


class Trainer:
    """Builds everything from the configs, resumes from the run folder's latest checkpoint, and trains."""

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: COPAConfig,
        on_checkpoint: Callable[[Path], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ):
        """``prepare`` runs on rank 0 once the process group is up and before any rank looks for a checkpoint (the
        job clears an ``--overwrite`` run with it); ``on_checkpoint`` runs on rank 0 after each save."""
        self.cfg, self.on_checkpoint = cfg, on_checkpoint
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self.dist = setup_distributed(cfg.device)
        if prepare is not None and self.dist.main:
            prepare()
        self.dist.barrier()
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.dist.device.type == "cuda")
        self.train_urls, self.holdout_urls = split_holdout(cfg.shards, cfg.holdout_shards)
        resume = latest_checkpoint(self.out)
        self.state = load_checkpoint(resume) if resume else None
        # a fine-tuning run starts from another model's weights and tokenizer; resumed, its own checkpoint has both
        start = load_checkpoint(cfg.init_from) if cfg.init_from and self.state is None else None
        self.tokenizer = self._tokenizer(model_cfg.text.max_len, start)
        self.prompt_ids = self.tokenizer.prompt(cfg.prompt).to(self.dist.device)  # [1, P], every batch's
        text = dataclasses.replace(model_cfg.text, vocab_size=self.tokenizer.vocab_size, **self.tokenizer.special_ids())
        self.model_cfg = dataclasses.replace(model_cfg, text=text)
        self._check_resume()
        if self.dist.main:  # the resolved configs, beside the outputs
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=1) + "\n")

        seed_everything(cfg.seed)  # the same initial weights on every rank
        self.model = COPA(self.model_cfg)
        if start is not None:
            load_weights(self.model, start["model"], start["path"])
            del start
        self.model.to(self.dist.device)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        v = self.model_cfg.vision
        self.loader = StreamingLoader(
            LoaderConfig(
                shards=self.train_urls,
                img_size=v.img_size,
                patch_size=v.patch_size,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                shuffle_buffer=cfg.shuffle_buffer,
                augment=cfg.augment,
                num_workers=cfg.num_workers,
                drop_last=True,  # full micro-batches only: ITM needs negatives, and steps stay comparable
                resampled=cfg.resampled,
                flip_p=0.0 if cfg.task in SPATIAL_TASKS else 0.5,
                answers=answers_table(self.train_urls) if cfg.task == "vqa" else None,
            ),
            self.tokenizer,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.steps_per_epoch = max(1, batches_per_epoch(self.loader.cfg, self.dist.world_size) // cfg.accum)
        self.total_steps = cfg.steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        warmup, total, floor = min(cfg.warmup_steps, self.total_steps), self.total_steps, cfg.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup, total, floor)
        )
        self.step = 0
        if self.state is not None:
            self._restore(self.state)
            self.state = None  # its tensors live in the model and optimizer now; do not hold a second copy
        else:
            seed_everything(cfg.seed + self.dist.rank)  # dropout and masking differ across ranks
        self.ddp = None
        if self.dist.world_size > 1:
            cuda = self.dist.device.type == "cuda"
            self.ddp = wrap_ddp(self.model, [self.dist.local_rank] if cuda else None)

    # ---- set-up ---------------------------------------------------------------------------------------------

    def _tokenizer(self, max_len: int, start: dict | None) -> CaptionTokenizer:
        """From the checkpoint when resuming; else a local folder; else the model fine-tuning starts from; else
        built from the shards by rank 0."""
        saved = self.out / TOKENIZER_FILE
        if self.state is not None:
            return CaptionTokenizer.from_str(self.state["tokenizer"], max_len)
        if self.cfg.tokenizer:
            return CaptionTokenizer.from_dir(self.cfg.tokenizer, max_len)
        if start is not None:
            tokenizer = CaptionTokenizer.from_str(start["tokenizer"], max_len)
            if self.dist.main:
                tokenizer.save(str(self.out))
            return tokenizer
        if self.dist.main:
            captions = shard_captions(self.train_urls, self.cfg.tokenizer_captions)
            CaptionTokenizer(build_wordpiece(captions, self.cfg.vocab_size), max_len).save(str(self.out))
        self.dist.barrier()
        return CaptionTokenizer.from_dir(str(saved.parent), max_len)

    def config_dict(self) -> dict:
        return {"train": dataclasses.asdict(self.cfg), "model": dataclasses.asdict(self.model_cfg)}

    def _check_resume(self) -> None:
        """A resumed run must compute the same thing: only ``RESUMABLE_CHANGES`` may differ."""
        now = json.loads(json.dumps(self.config_dict()))
        if self.state is not None:
            saved = json.loads(self.state["config"])
            diff = sorted(
                [
                    f"train.{k}"
                    for k in now["train"]
                    if k not in RESUMABLE_CHANGES and now["train"][k] != saved["train"].get(k)
                ]
                + [f"model.{k}" for k in now["model"] if now["model"][k] != saved["model"].get(k)]
            )
            if diff:
                raise ValueError(
                    f"{self.state['path']}: cannot resume, these settings differ from the saved run: {diff} "
                    "(use another --out, or --overwrite to start afresh)"
                )

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        positions = [json.loads(p) for p in state["loader"]]
        if len(positions) == self.dist.world_size:
            self.loader.load_state_dict(positions[self.dist.rank])
        else:
            epoch = positions[0]["epoch"]
            self.log(f"world size changed {len(positions)} -> {self.dist.world_size}: the loader restarts epoch "
                     f"{epoch} from its beginning (not an exact resume)")  # fmt: skip
            self.loader.set_epoch(epoch)
        set_rng_state(state["rng"][self.dist.rank % len(state["rng"])])
        if self.dist.main:
            self._truncate_metrics(self.step)
        self.log(f"resumed from {state['path']} at step {self.step}")

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines past the checkpoint (written by the run that stopped), so curves have no repeats."""
        path = self.out / METRICS_FILE
        if path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            path.write_text("".join(ln + "\n" for ln in lines))

    def log(self, message: str) -> None:
        if self.dist.main:
            print(f"[train] {message}", file=sys.stderr, flush=True)

    # ---- the loop -------------------------------------------------------------------------------------------

    def batches(self) -> Iterator[dict]:
        """Batches forever, epoch after epoch, with every rank changing epoch at the same micro-step."""
        it, empty_epochs = iter(self.loader), 0
        while True:
            batch = next(it, None)
            if self.dist.all_min(batch is not None):
                empty_epochs = 0
                yield batch
                continue
            it.close()
            empty_epochs += 1
            if empty_epochs > 1:
                raise RuntimeError(f"no full batch of {self.cfg.batch_size} in a whole epoch of {self.cfg.shards}")
            self.loader.set_epoch(self.loader.epoch + 1)
            it = iter(self.loader)

    def forward_backward(self, batch: dict, sync: bool) -> dict[str, torch.Tensor]:
        device = self.dist.device
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        inputs["prompt_ids"] = self.prompt_ids
        model = self.ddp or self.model
        with (
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16),
            model.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext(),
        ):
            out = model(inputs)
        (out["loss"] / self.cfg.accum).backward()
        return {k: v.detach().float() for k, v in out.items()}

    def optimizer_step(self, loss: torch.Tensor) -> tuple[bool, float]:
        """Clip and step unless the loss or the gradient norm is non-finite on any rank; returns (stepped, norm)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.cfg.clip_grad if self.cfg.clip_grad > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        finite = self.dist.all_min(bool(torch.isfinite(loss)) and bool(torch.isfinite(norm)))
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return finite, float(norm)

    def save(self) -> Path:
        positions = [json.dumps(self.loader.state_dict())]
        rngs = [rng_state()]
        if self.dist.world_size > 1:
            positions = [None] * self.dist.world_size
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(positions, json.dumps(self.loader.state_dict()))
            dist.all_gather_object(rngs, rng_state())
        path = checkpoint_path(self.out, self.step)
        if self.dist.main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "loader": positions,
                "rng": rngs,
                "config": json.dumps(self.config_dict()),
                "tokenizer": self.tokenizer.to_str(),
            }
            save_checkpoint(path, state, keep=self.cfg.keep_checkpoints)
            if self.on_checkpoint is not None:
                self.on_checkpoint(path)
        self.dist.barrier()
        return path

    def run(self) -> dict:
        """Train to ``total_steps``; returns the last metrics line plus the run's totals."""
        cfg, start = self.cfg, self.step
        self.model.train()
        self.log(
            f"{self.dist.world_size} process(es) on {self.dist.device}, {'bf16' if self.bf16 else 'fp32'}; "
            f"{len(self.train_urls)} training shards ({len(self.holdout_urls)} held out), about "
            f"{self.steps_per_epoch} steps per epoch; steps {start} -> {self.total_steps}; global batch "
            f"{cfg.batch_size * cfg.accum * self.dist.world_size} pairs at peak lr {cfg.lr:g}"
        )
        bar_on = self.dist.main and cfg.progress and sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=start, disable=not bar_on, desc="train", unit="step")
        batches = self.batches()
        window: dict[str, torch.Tensor] = {}
        window_steps, window_start, nonfinite_in_a_row, skipped_total = 0, time.perf_counter(), 0, 0
        data_wait = 0.0  # seconds of the window spent waiting for the loader (the GPU idles meanwhile: the
        # optimizer step synchronises, so the next batch is fetched only after the device has finished)
        last: dict = {}
        while self.step < self.total_steps:
            sums: dict[str, torch.Tensor] = {}
            for micro in range(cfg.accum):
                wait_start = time.perf_counter()
                batch = next(batches)
                data_wait += time.perf_counter() - wait_start
                out = self.forward_backward(batch, sync=micro == cfg.accum - 1)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0) + v / cfg.accum
            stepped, norm = self.optimizer_step(sums["loss"])
            self.step += 1
            nonfinite_in_a_row = 0 if stepped else nonfinite_in_a_row + 1
            skipped_total += not stepped
            if nonfinite_in_a_row >= cfg.max_nonfinite:
                raise RuntimeError(f"{nonfinite_in_a_row} steps in a row had a non-finite loss or gradient; stopping")
            if stepped:
                for k, v in sums.items():
                    window[k] = window.get(k, 0) + v
                window_steps += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                seconds = time.perf_counter() - window_start
                last = self._log_window(window, window_steps, seconds, norm, skipped_total, data_wait)
                bar.set_postfix(loss=f"{last.get('loss', float('nan')):.3f}", pta=f"{last.get('loss_pta', 0):.3f}")
                window, window_steps, window_start, data_wait = {}, 0, time.perf_counter(), 0.0
            if self.step % cfg.ckpt_every == 0 or self.step == self.total_steps:
                self.save()
        bar.close()
        return last | {
            "steps": self.step,
            "skipped_steps": skipped_total,
            "checkpoint": str(checkpoint_path(self.out, self.step)),
        }

    def _log_window(self, window: dict, steps: int, seconds: float, norm: float, skipped: int, wait: float) -> dict:
        """One metrics line: losses and diagnostics averaged over the window and the ranks; throughput, the fraction
        of time spent waiting for data (loader starvation), and on CUDA the peak memory allocated (max over ranks)."""
        device = self.dist.device
        names = sorted(window)
        per_step = [window[k] / max(1, steps) for k in names]
        values = self.dist.mean(torch.stack([*per_step, torch.tensor(wait / max(seconds, 1e-9), device=device)]))
        if device.type == "cuda":
            peak = torch.tensor(float(torch.cuda.max_memory_allocated(device)), device=device)
            if self.dist.world_size > 1:
                dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        samples = steps * self.cfg.batch_size * self.cfg.accum * self.dist.world_size
        line = {"step": self.step, "epoch": self.loader.epoch, "lr": self.scheduler.get_last_lr()[0]}
        line |= {k: round(float(v), 6) for k, v in zip(names, values[:-1], strict=True)}
        line |= {
            "grad_norm": round(norm, 4),
            "samples_per_s": round(samples / max(seconds, 1e-9), 2),
            "data_wait_frac": round(float(values[-1]), 4),
            "skipped_steps": skipped,
            "loader_skipped": self.loader.stats.num_skipped,
        }
        if device.type == "cuda":
            line["peak_mem_gib"] = round(float(peak) / 2**30, 3)
        if self.dist.main:
            with open(self.out / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            if self.cfg.progress and not sys.stderr.isatty():
                keys = ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta", "loss_caption")
                parts = " ".join(f"{k.removeprefix('loss_')}={line[k]:.3f}" for k in keys if k in line)
                self.log(f"step {self.step}/{self.total_steps} {parts} {line['samples_per_s']:.1f} samples/s")
        return line

    def close(self) -> None:
        if self.dist.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

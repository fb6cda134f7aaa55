"""The batched training loop: every expert takes one step on a batch of its own spots, in one module.

Epoch structure: expert e has ``steps_e = ceil(n_e / B)`` batches per epoch (a fresh seeded permutation of its
own spots each epoch; the last batch may be short and is masked). A global epoch runs ``max_e steps_e``
steps and expert e is active in the first ``steps_e`` of them, so each expert sees its data exactly once per
epoch, with its own per-step cosine schedule over ``steps_e * epochs`` steps, as if trained alone.
Under torchrun each rank takes a slice of every expert's batch; negatives are all-gathered so the loss is
that of the global batch. :class:`Trainer` runs the epochs: state, best-so-far per expert, early stop and
checkpoints, on arrays or a row store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from .._dist import DistInfo, barrier
from .._validation import SpadeInputError
from ..experts.loss import bleep_loss, infonce_loss


class ExpertBatches:
    """Seeded per-expert permutations and the (E, B) index/mask arrays of each step."""

    def __init__(self, expert_rows: list[np.ndarray], batch_size: int, seed: int):
        self.rows, self.B, self.seed = expert_rows, batch_size, seed
        self.steps = np.array([int(np.ceil(len(r) / batch_size)) for r in expert_rows])

    @property
    def n_steps(self) -> int:
        return int(self.steps.max())

    def epoch(self, epoch: int):
        """Yield (step, idx (E, B) int64, mask (E, B) bool, active (E,) bool) for one epoch."""
        perms = [np.random.default_rng([self.seed, epoch, e]).permutation(r) for e, r in enumerate(self.rows)]
        for t in range(self.n_steps):
            idx, mask = step_arrays(perms, t, self.B)
            yield t, idx, mask, mask.any(1)


def step_arrays(orders: list[np.ndarray], t: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (E, B) int64 and validity mask (E, B) of step ``t``: expert e takes rows
    ``orders[e][t*B:(t+1)*B]``; a short batch is padded with its first row (or 0) and masked."""
    idx = np.zeros((len(orders), batch_size), np.int64)
    mask = np.zeros((len(orders), batch_size), bool)
    for e, rows in enumerate(orders):
        chunk = rows[t * batch_size : (t + 1) * batch_size]
        idx[e, : len(chunk)] = chunk
        idx[e, len(chunk) :] = chunk[0] if len(chunk) else 0
        mask[e, : len(chunk)] = True
    return idx, mask


def read_rows(rows, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` (any shape) of a store array (:class:`RowFile` or ndarray), shape ``idx.shape + (cols,)``.

    Only I/O and a copy, in the store's dtype: this part runs in the loader thread (it releases the GIL).
    """
    out = np.ascontiguousarray(rows[idx.ravel()])
    return out.reshape(*idx.shape, out.shape[-1])  # explicit width: no rows (every expert stopped) is valid


def to_device(block: np.ndarray, device) -> torch.Tensor:
    """A block read by :func:`read_rows` as float32 on ``device`` (the conversion runs in the training thread).

    On an accelerator the block travels in the store's dtype (float16: half the bytes) and is converted
    there; ``Tensor.to(device, float32)`` would convert on the CPU first.
    """
    t = torch.from_numpy(block)
    if torch.device(device).type == "cpu":
        return t.to(torch.float32)
    return t.to(device, non_blocking=True).to(torch.float32)


def step_mask(mask: np.ndarray, device, cols: slice = slice(None)) -> torch.Tensor | None:
    """Columns ``cols`` (this rank's slice) of a step's validity mask (A, b) on ``device``, or None when every
    row of the global ``mask`` is valid: the losses then skip the masking ops. Decided on the host (no device
    sync) and from the global mask, so under torchrun every rank agrees on None."""
    return None if mask.all() else torch.from_numpy(np.ascontiguousarray(mask[:, cols])).to(device)


def gather_rows(rows, idx: np.ndarray, device) -> torch.Tensor:
    """Rows ``idx`` (any shape) of a store array as float32 on ``device``."""
    return to_device(read_rows(rows, idx), device)


def prefetch(items, load, depth: int = 1):
    """Yield ``(item, load(item))`` with the next ``depth`` loads running in a background thread.

    Give it I/O only (:func:`read_rows`) and convert in the training thread (:func:`to_device`): reads wait on
    the disk or copy from the page cache with the GIL released, while a CPU-heavy conversion in the thread
    would preempt torch's own threads (measured on 2 cores: a step with the conversion in the loader thread
    is ~20 % slower than loading in line; with reads only it is as fast when the store is cached, and the
    disk waits of a store larger than RAM overlap the step).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        queue: deque = deque()
        for item in items:
            queue.append((item, pool.submit(load, item)))
            if len(queue) > depth:
                it, fut = queue.popleft()
                yield it, fut.result()
        while queue:
            it, fut = queue.popleft()
            yield it, fut.result()


def _gather_with_local(x: torch.Tensor, info: DistInfo, dim: int = 1) -> torch.Tensor:
    """All-gather along ``dim``; this rank's slice keeps its autograd graph, the others are constants."""
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[info.rank] = x
    return torch.cat(parts, dim=dim)


def expert_losses(
    model, feats, genes, mask, loss: str, tau: float, info: DistInfo | None = None, experts=None
) -> torch.Tensor:
    """Per-expert loss (E,) of one step's batches (E, b, ·); with ``info`` the global batch across ranks.

    ``mask`` (E, b) marks valid rows, or None when all are (see :func:`step_mask`).

    With ``experts`` (A indices), the batches are those experts' (A, b, ·) and only they run: loss (A,).
    """
    z = model.image_side(feats, experts)
    s = model.gene_side(genes, experts)
    recon = _reconstruction(model, z, genes, mask, info) if model.config.recon_weight > 0 else 0.0
    m = mask
    if info is not None and info.world_size > 1:
        z, s = _gather_with_local(z, info), _gather_with_local(s, info)
        m = None if mask is None else _gather_with_local(mask, info)
    if loss == "infonce":
        scale = model.logit_scale if experts is None else model.logit_scale[experts]
        return infonce_loss(z, s, scale, m) + recon
    return bleep_loss(z, s, tau, m) + recon


def _reconstruction(model, z, genes, mask, info: DistInfo | None) -> torch.Tensor:
    """``recon_weight`` x per-expert mean squared error of the shared decoder's prediction of the gene input.

    Computed on this rank's rows and scaled so that the ranks' terms sum to the mean over the global batch.
    """
    err = (model.decode(z) - genes).pow(2).mean(-1)  # (A, b)
    if mask is not None:
        err = err * mask
        n = mask.sum(-1).clamp(min=1)
    else:
        n = torch.full(err.shape[:1], err.shape[1], dtype=err.dtype, device=err.device)
    world = info.world_size if info is not None else 1
    return model.config.recon_weight * err.sum(-1) / (n * world)


def allreduce_grads(params, info: DistInfo, replicated=()) -> None:
    """Combine gradients across ranks.

    Head parameters reach the global loss only through this rank's slice of the batch, so their gradients
    are summed. Parameters in ``replicated`` (the InfoNCE temperature) enter the global loss directly on
    every rank, where each rank already holds the full gradient: those are averaged.
    """
    if info.world_size <= 1:
        return
    rep = {id(p) for p in replicated}
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            if id(p) in rep:
                p.grad /= info.world_size


@torch.no_grad()
def validation_losses(
    model, features, expression, val_rows: list[np.ndarray], batch_size: int, loss: str, tau: float, device
):
    """Mean loss per expert over its validation spots (NaN for an expert with none), dropout off."""
    was = model.training
    model.eval()
    E = len(val_rows)
    total, count = np.zeros(E), np.zeros(E)
    n_steps = max((int(np.ceil(len(r) / batch_size)) for r in val_rows), default=0)
    for t in range(n_steps):
        idx, mask = step_arrays(val_rows, t, batch_size)
        act = np.flatnonzero(mask.any(1))  # experts that still have validation rows at this step
        sub = None if len(act) == E else torch.from_numpy(act).to(device)
        per = expert_losses(
            model,
            gather_rows(features, idx[act], device),
            gather_rows(expression, idx[act], device),
            step_mask(mask[act], device),
            loss,
            tau,
            experts=sub,
        )
        k = mask[act].sum(1)
        total[act] += per.cpu().numpy() * k
        count[act] += k
    model.train(was)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class Trainer:
    """The epoch loop of the batched experts: state, best-so-far per expert, early stop, checkpoints.

    Parameters
    ----------
    model
        A :class:`~spade_st.experts.SpadeModel` (initialised; trained in place).
    optim
        :class:`~spade_st.train.config.OptimConfig` (lr, weight decay, epochs, batch size, early stop).
    loss, tau
        The contrastive loss ("bleep" or "infonce") and its temperature.
    seed
        Seeds the batches' order and the dropout masks: each epoch's are a function of (seed, epoch) only, so a
        resumed run ends bit-identical (on CPU) to an uninterrupted one.
    device, info
        Where to train; ``info`` (:func:`~spade_st._dist.init_distributed`) under torchrun, else one process.
    checkpoint_dir, checkpoint_key
        With a folder, the state is saved after every epoch and resumed from it; ``checkpoint_key`` (settings
        that must match to resume) is hashed into the checkpoint.
    progress
        Progress bars (rank 0).

    Attributes
    ----------
    state_ : dict
        ``epoch`` (epochs done), ``history`` (rows: epoch, expert, train_loss, val_loss, lr), per expert
        ``best_val``, ``best_epoch``, ``since_best``, ``stopped``; ``best_params``.
    history_ : pandas.DataFrame
        ``state_["history"]`` as a table.
    """

    def __init__(
        self,
        model,
        optim,
        loss: str = "bleep",
        tau: float = 1.0,
        seed: int = 0,
        device="cpu",
        info: DistInfo | None = None,
        checkpoint_dir=None,
        checkpoint_key: dict | None = None,
        progress: bool = False,
    ):
        self.model, self.optim, self.loss, self.tau, self.seed = model, optim, loss, tau, seed
        self.device, self.info = torch.device(device), info or DistInfo(0, 1, 0)
        self.checkpoint_dir, self.checkpoint_key, self.progress = checkpoint_dir, checkpoint_key or {}, progress

    def fit(self, features, expression, train_rows: list[np.ndarray], val_rows: list[np.ndarray]) -> Trainer:
        """Train (or resume) on row arrays: ``features`` (N, D) and ``expression`` (N, G), ndarrays or a row
        store's files; ``train_rows[e]`` / ``val_rows[e]`` are expert e's rows. The best epoch's parameters of
        each expert (the shared ones: of the best summed loss) are in the model at the end; returns self."""
        from .._fault import maybe_die
        from .._progress import progress as tqdm
        from .checkpoint import config_hash, load_checkpoint, save_checkpoint
        from .optim import StackedAdamW, cosine_lr

        model, o, info, E = self.model, self.optim, self.info, len(train_rows)
        if o.batch_size % info.world_size:
            msg = f"batch size {o.batch_size} is not divisible by the {info.world_size} ranks"
            raise SpadeInputError(msg)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = StackedAdamW(params, E, lr=o.lr, weight_decay=o.weight_decay)
        batches = ExpertBatches(train_rows, o.batch_size, self.seed)
        total = torch.as_tensor(batches.steps * o.epochs)
        shared_total = torch.as_tensor([batches.n_steps * o.epochs])  # parameters shared by the experts
        chash = config_hash(self.checkpoint_key)
        state = load_checkpoint(self.checkpoint_dir, model, opt, chash) if self.checkpoint_dir else None
        show = self.progress and info.is_main
        if state is not None and show:
            where = Path(self.checkpoint_dir) / "last.safetensors"
            print(f"pretrain: resuming from epoch {state['epoch']} of {o.epochs} ({where})", file=sys.stderr)
        state = state if state is not None else self._fresh_state(E)
        b_local = o.batch_size // info.world_size
        sl = slice(info.rank * b_local, (info.rank + 1) * b_local)
        bar = tqdm(range(state["epoch"], o.epochs), desc="pretrain", unit="epoch", disable=not show,
                   initial=state["epoch"], total=o.epochs)  # fmt: skip
        for epoch in bar:
            torch.manual_seed(self.seed * 100_003 + epoch)  # dropout masks: a function of (seed, epoch) only
            model.train()
            run_loss, run_n = np.zeros(E), np.zeros(E)
            stopped = state["stopped"].copy()  # fixed within an epoch

            def load(b, stopped=stopped):
                _, idx, _, active = b
                act = np.flatnonzero(active & ~stopped)  # only the experts that train at this step are read and run
                return act, read_rows(features, idx[act][:, sl]), read_rows(expression, idx[act][:, sl])

            steps = tqdm(prefetch(batches.epoch(epoch), load), total=batches.n_steps, desc=f"epoch {epoch}",
                         unit="step", leave=False, disable=not show)  # fmt: skip
            for (step, _, mask, _), (act, feats, genes) in steps:
                maybe_die(f"epoch{epoch}-step{step}")
                if not len(act):
                    continue
                feats, genes = to_device(feats, self.device), to_device(genes, self.device)
                active = np.zeros(E, bool)
                active[act] = True
                sub = None if len(act) == E else torch.from_numpy(act).to(self.device)
                opt.zero_grad()
                per = expert_losses(
                    model, feats, genes, step_mask(mask[act], self.device, sl), self.loss, self.tau, info, experts=sub
                )
                per.sum().backward()
                allreduce_grads(params, info, replicated=[model.logit_scale] if self.loss == "infonce" else ())
                lr = cosine_lr(o.lr, opt.steps, total)
                opt.step(lr, torch.from_numpy(active), float(cosine_lr(o.lr, opt.shared_steps, shared_total)[0]))
                run_loss[act] += per.detach().cpu().numpy()
                run_n[act] += 1
            with np.errstate(invalid="ignore"):
                tr_loss = run_loss / np.maximum(run_n, 1)
            val = validation_losses(
                model, features, expression, val_rows, o.batch_size, self.loss, self.tau, self.device
            )
            self._update_best(state, epoch, tr_loss, val, lr=cosine_lr(o.lr, opt.steps, total).numpy())
            if self.checkpoint_dir is not None and info.is_main:
                save_checkpoint(self.checkpoint_dir, model, opt, state, chash)
            if show:
                kind, shown = ("val", val) if not np.isnan(val).all() else ("train", tr_loss)
                bar.set_postfix_str(
                    f"{kind} loss per expert: mean {np.nanmean(shown):.2f}, min {np.nanmin(shown):.2f}, "
                    f"max {np.nanmax(shown):.2f}"
                )
            barrier(info)
        bar.close()
        with torch.no_grad():
            for k, v in model.named_parameters():
                v.copy_(state["best_params"][k].to(v.device))
        self.state_ = state
        self.history_ = pd.DataFrame(state["history"], columns=["epoch", "expert", "train_loss", "val_loss", "lr"])
        return self

    def _fresh_state(self, E: int) -> dict:
        return {
            "epoch": 0,
            "history": [],
            "best_val": np.full(E, np.inf),
            "best_epoch": np.full(E, -1),
            "since_best": np.zeros(E, np.int64),
            "stopped": np.zeros(E, bool),
            "best_params": {k: v.detach().cpu().clone() for k, v in self.model.named_parameters()},
            "best_total": np.full(1, np.inf),
        }

    def _update_best(self, state: dict, epoch: int, tr_loss, val, lr) -> None:
        """Keep each expert's best parameters (by validation loss, else training loss), count patience, log."""
        E = len(tr_loss)
        score = np.where(np.isnan(val), tr_loss, val)  # an expert without validation spots keeps its last epoch
        improved = (score < state["best_val"]) & ~state["stopped"]
        total_improved = bool(score.sum() < state["best_total"][0])  # shared parameters: the experts' summed loss
        state["best_total"] = np.minimum(state["best_total"], score.sum())
        for k, v in self.model.named_parameters():
            best = state["best_params"][k]
            if v.shape[0] != E:  # shared by every expert
                if total_improved:
                    best.copy_(v.detach().cpu())
                continue
            best[torch.from_numpy(improved)] = v.detach().cpu()[torch.from_numpy(improved)]
        state["best_val"] = np.where(improved, score, state["best_val"])
        state["best_epoch"] = np.where(improved, epoch, state["best_epoch"])
        state["since_best"] = np.where(improved, 0, state["since_best"] + 1)
        if self.optim.early_stop is not None:
            state["stopped"] = state["stopped"] | (state["since_best"] >= self.optim.early_stop)
        state["history"] += [
            {"epoch": epoch, "expert": e, "train_loss": float(tr_loss[e]), "val_loss": float(val[e]),
             "lr": float(lr[e])}
            for e in range(E)
        ]  # fmt: skip
        state["epoch"] = epoch + 1

"""The learner group: ``placement.learner_ranks`` ranks of torch.distributed (gloo on CPU, NCCL on GPU), each a Ray
actor running the serial ``Learner.update`` on its share of each minibatch, with the policy either sharded by FSDP2
(``placement.learner_strategy=fsdp2``: ``fully_shard`` on every decoder layer, then on the whole policy) or
replicated by DDP (``ddp``: a whole copy per rank, gradients all-reduced in backward).

Every rank gets the trainer's minibatch generator (pickled: the same state), so all draw the same minibatches;
each computes its contiguous ``learner.share`` with its loss scaled by the world size, so the mean over ranks (FSDP's
and DDP's reduction) is the serial gradient, and the metrics are averaged over ranks (``target_kl`` stops every rank
at the same step). Weights leave the group as a full state dict gathered on rank 0 (weight sync and checkpoints), so
checkpoints keep the serial layout; the optimizer state is saved as a full (name-keyed) state dict, so a run resumes
with the same number of ranks. Not offered with several ranks: a KL penalty's reference copy (``algo.kl_coef``).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlarl.algorithms.estimate import estimator_name
from vlarl.distributed.placement import current_node
from vlarl.rollout.schema import Batch
from vlarl.utils.threads import apply_thread_plan


def shard_policy(policy: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 in place: each decoder layer its own unit, then the policy (its ``evaluate`` gathers the rest)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for module in policy.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module)
    fully_shard(policy)
    register_fsdp_forward_method(policy, "evaluate")
    return policy


class _Evaluate(torch.nn.Module):
    """``forward`` = the policy's ``evaluate``, so DDP's hooks wrap the call the learner's loss goes through."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, *args: Any) -> Any:
        return self.policy.evaluate(*args)


class ReplicatedPolicy:
    """DDP: the policy whole on every rank; ``evaluate`` runs through ``DistributedDataParallel``, so each backward
    all-reduces (averages) the gradients over the ranks. Every other attribute is the policy's own. Parameters no
    rank used (``find_unused_parameters``) keep no gradient, as serially."""

    def __init__(self, policy: torch.nn.Module):
        from torch.nn.parallel import DistributedDataParallel

        self.module = policy
        self.ddp = DistributedDataParallel(_Evaluate(policy), find_unused_parameters=True)

    def evaluate(self, *args: Any) -> Any:
        return self.ddp(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def distribute(policy: torch.nn.Module, strategy: str) -> Any:
    """The rank's training view of ``policy`` (built on every rank from the same checkpoint): FSDP2 or DDP."""
    return shard_policy(policy) if strategy == "fsdp2" else ReplicatedPolicy(policy)


class LearnerRank:
    """One rank (a Ray actor, possibly on another node): ``setup`` joins the process group at rank 0's address,
    builds the policy from ``checkpoint`` and distributes it; then it learns. ``module`` is the policy whose state
    dicts are read and written (FSDP2 shards it in place; DDP wraps it)."""

    def __init__(self, cfg: Any, checkpoint: str, dims: tuple[int, int], temperature: float, rank: int):
        apply_thread_plan("learner_rank", cfg)
        self.cfg, self.checkpoint, self.dims, self.temperature, self.rank = cfg, checkpoint, dims, temperature, rank

    def address(self) -> str:
        """``host:port`` for the process group's store: this node's IP and a free port on it."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            return f"{ray.util.get_node_ip_address()}:{s.getsockname()[1]}"

    def node(self) -> str:
        return current_node()

    def setup(self, addr: str) -> None:
        import torch.distributed as dist

        from vlarl.learner import Learner
        from vlarl.policies import make_policy

        cfg, world = self.cfg, self.cfg.placement.learner_ranks
        host, port = addr.rsplit(":", 1)
        os.environ.update(MASTER_ADDR=host, MASTER_PORT=port)
        backend = "nccl" if torch.cuda.is_available() and cfg.policy.device != "cpu" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=world)
        self.module = make_policy(dataclasses.replace(cfg.policy, checkpoint=self.checkpoint), *self.dims)
        self.policy = distribute(self.module, cfg.placement.learner_strategy)
        self.learner = Learner(self.policy, cfg, self.temperature, self.rank, world)

    def update(self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor, rng: np.random.Generator, warmup: bool):
        return self.learner.update(batch, adv, ret, rng, warmup)

    def full_state(self, optimizer: bool = False) -> tuple[dict, dict | None] | None:
        """Rank 0: the policy's full state dict (CPU) and, with ``optimizer``, the optimizer's; other ranks None.
        Every rank must call it (the gather is collective)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model = get_model_state_dict(self.module, options=options)
        optim = get_optimizer_state_dict(self.module, self.learner.optimizer, options=options) if optimizer else None
        return (model, optim) if self.rank == 0 else None

    def load_state(self, model: dict, optim: dict, scheduler: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        set_model_state_dict(self.module, model, options=StateDictOptions(full_state_dict=True))
        # parameters that never got a gradient (e.g. an unused last vision layer) have no Adam state, as serially
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self.module, self.learner.optimizer, optim, options=options)
        self.learner.scheduler.load_state_dict(scheduler)

    def scheduler_state(self) -> dict:
        return self.learner.scheduler.state_dict()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class LearnerGroup:
    """The trainer's learner when ``placement.learner_ranks > 1``: ``update``, ``sync``, ``save`` and ``load`` as the
    serial ``Learner``'s, the ranks as Ray actors. ``policy`` is the driver's (rollout) copy the weights sync into."""

    def __init__(self, policy: Any, cfg: Any, checkpoint: str, dims: tuple[int, int], temperature: float):
        import ray

        from vlarl.distributed.collector import wait_started
        from vlarl.distributed.placement import cluster_check, node_labels, start_ray

        if cfg.algo.kl_coef > 0:
            raise ValueError("algo.kl_coef > 0 keeps a reference copy, not offered with placement.learner_ranks > 1")
        start_ray(cfg.placement)
        cluster_check(cfg.placement)
        self.policy, self.cfg = policy, cfg
        self.use_value = estimator_name(cfg.algo) == "gae"  # as the serial Learner's
        actor = ray.remote(LearnerRank).options(
            num_cpus=cfg.placement.learner_cpus, **node_labels(cfg.placement.learner_nodes)
        )
        self.ranks = [actor.remote(cfg, checkpoint, dims, temperature, r) for r in range(cfg.placement.learner_ranks)]
        wait_started([rank.node.remote() for rank in self.ranks], f"{len(self.ranks)} learner ranks")
        self._all("setup", ray.get(self.ranks[0].address.remote()))

    def _all(self, method: str, *args: Any) -> list[Any]:
        import ray

        refs = [getattr(rank, method).remote(*args) for rank in self.ranks]
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(
                f"a learner rank died ({err.__class__.__name__}); the run stops here: resume it from its last "
                "checkpoint (trainer.resume=auto)"
            ) from err

    def update(self, batch: Batch, adv: torch.Tensor, ret: torch.Tensor, rng: np.random.Generator, warmup: bool):
        """Every rank's update of the same minibatches; the metrics (averaged over ranks) of rank 0."""
        import ray

        args = [ray.put(x) for x in (batch, adv, ret)]
        return self._all("update", *args, rng, warmup)[0]

    def sync(self) -> None:
        """The group's weights into the driver's policy (gathered on rank 0)."""
        model, _ = self._all("full_state")[0]
        self.policy.load_state_dict(model)

    def save(self, folder: Path) -> None:
        """The serial ``Learner.save`` layout: ``policy/`` from the gathered weights, ``optimizer.pt`` (name-keyed),
        ``scheduler.pt``, ``rng.safetensors``."""
        model, optim = self._all("full_state", True)[0]
        self.policy.load_state_dict(model)
        self.policy.save(folder / "policy")
        torch.save(optim, folder / "optimizer.pt")
        torch.save(self._all("scheduler_state")[0], folder / "scheduler.pt")
        save_file({"torch_rng": torch.get_rng_state()}, folder / "rng.safetensors")

    def load(self, folder: Path) -> None:
        self.policy.load(folder / "policy")
        optim = torch.load(folder / "optimizer.pt", weights_only=True)
        scheduler = torch.load(folder / "scheduler.pt", weights_only=True)
        self._all("load_state", self.policy.state_dict(), optim, scheduler)
        torch.set_rng_state(load_file(folder / "rng.safetensors")["torch_rng"])

    def close(self) -> None:
        import ray

        self._all("close")
        for rank in self.ranks:
            ray.kill(rank)
        self.ranks = []

"""Config dataclasses, one per component, composed into one root config per command.

Every field carries its help text in ``metadata["help"]``; ``vlarl <command> --help`` prints it.
OmegaConf turns these dataclasses into structured configs, which check keys and types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def doc(
    default: Any,
    help: str,
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    rule: tuple[Callable[[Any], bool], str] | None = None,
    rl_only: bool = False,
    eval_only: bool = False,
) -> Any:
    """A dataclass field with a default (lists/dicts are copied per instance), its help text and what values
    are valid: ``choices``, bounds (``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <) or a ``rule`` (predicate, what it
    accepts in words). ``config.loader.validate`` checks them at load. ``rl_only``: SFT does not read it;
    ``eval_only``: only evaluation reads it (not the expert, not SFT). The cached demos' and SFT checkpoint's keys
    leave such fields out (``config.run.at_defaults``)."""
    meta = {"help": help, "choices": choices, "rule": rule, "bounds": {"ge": ge, "gt": gt, "le": le, "lt": lt}}
    meta.update(rl_only=rl_only, eval_only=eval_only)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _is_label(item: Any) -> bool:
    """A ``key=value`` node label (both parts non-empty)."""
    key, eq, value = str(item).partition("=")
    return bool(key and eq and value)


LABELS = (lambda v: all(_is_label(x) for x in v), "key=value items")


@dataclass
class RunConfig:
    """Where a run writes and how it is seeded."""

    name: str = doc("", "Run name; empty means '<command>-<preset>-<timestamp>'.")
    output_dir: str = doc("runs", "Parent folder of run folders; the resolved config is saved in each.")
    seed: int = doc(0, "Global seed (envs, sampling, initialisation).")
    threads: int = doc(
        0,
        "Torch/OpenMP threads of the policy process; 0: the machine's cores minus one per env worker (at least 1). "
        "Env workers always use 1 (vlarl.utils.threads).",
        ge=0,
    )
    wandb_project: str = doc(
        "", "Also log metrics to this Weights & Biases project (needs vlarl[wandb]); empty: TensorBoard only."
    )


@dataclass
class EnvConfig:
    """A vector of simulator instances behind the `VectorEnv` interface."""

    backend: str = doc("metaworld", "Simulator backend name (see `vlarl.envs.available()`).")
    task_set: str = doc(
        "MT10",
        "Task set. MetaWorld: 'MT1' (one task, given in `tasks`), 'MT10', 'MT50'; LIBERO: a suite ('libero_spatial', "
        "...); ManiSkill: 'all'; any backend: 'custom' (the tasks in `tasks`).",
    )
    tasks: list[str] = doc([], "Task names; required for MT1/custom, a subset filter otherwise.")
    num_envs: int = doc(10, "Number of parallel envs B; env b runs task b % len(tasks).", ge=1)
    num_workers: int = doc(1, "Worker processes; 0 runs the envs in this process (no subprocess).", ge=0)
    cameras: list[str] = doc(["corner"], "Camera names rendered into obs['image'] (V views); [] renders nothing.")
    image_size: int = doc(128, "Square image side in pixels (16-512; 64-224 typical).", ge=16, le=512)
    shadows: bool = doc(False, "Render shadows (about 4x slower on software GL).")
    reflections: bool = doc(False, "Render reflections (about 1.3x slower on software GL).")
    antialias: bool = doc(False, "4x multisample anti-aliasing (about 1.7x slower on software GL).")
    render_meshes: str = doc(
        "full",
        "'full': MetaWorld's meshes; 'simplified': meshes drawn from copies simplified once (cached) for ~2.5x "
        "faster software rendering; physics identical.",
        choices=("full", "simplified"),
    )
    goal_marker_size: float = doc(
        0.05,
        "Radius (m) of the rendered green goal marker (0.05: reach's success radius, ~3 px at 64 px); "
        "0 keeps MetaWorld's own (often hidden) sites.",
        ge=0,
    )
    max_episode_steps: int = doc(
        200, "Env steps before an episode is truncated (each is `action_repeat` simulator steps).", ge=1
    )
    action_repeat: int = doc(
        1,
        "Simulator steps per env step: the action is held, rewards are summed, only the last frame is rendered, "
        "and a success ends the repeat. Fewer decisions per episode: 4x fewer policy calls and renders at 4.",
        ge=1,
    )
    terminate_on_success: bool = doc(True, "End the episode (terminated=True) on the first success.")
    gripper: str = doc(
        "env",
        "The gripper action dim: 'env' passes it through; 'openvla' reads OpenVLA's dataset convention (0 close, "
        "1 open) and binarises it to the simulator's sign (LIBERO: +1 close, -1 open), as OpenVLA's LIBERO eval.",
        choices=("env", "openvla"),
    )
    reward: str = doc(
        "sparse",
        "'sparse': 1 on the success step, else 0; 'dense': the simulator's shaped reward; 'shaped' (MetaWorld): "
        "sparse plus potential-based shaping by MetaWorld's reward / 10 (an episode's return: success + the "
        "potential at its end).",
        choices=("sparse", "dense", "shaped"),
        rl_only=True,
    )
    num_eval_init_states: int = doc(
        50, "Size of the fixed, seeded evaluation initial-state set per task.", ge=1, eval_only=True
    )
    eval_seed: int = doc(
        1234, "Seed of the evaluation initial-state sets (disjoint from training draws).", eval_only=True
    )


@dataclass
class DemosConfig:
    """Scripted-expert demonstration collection."""

    episodes_per_task: int = doc(20, "Episodes attempted per task.", ge=1)
    action_noise: float = doc(0.0, "Std of Gaussian noise added to expert actions (then clipped to [-1, 1]).", ge=0)
    keep: str = doc("success", "Which episodes to write: 'success' or 'all'.", choices=("success", "all"))
    source: str = doc(
        "",
        "Empty: run the backend's scripted experts. A folder of LIBERO HDF5 demo files (<task name>_demo.hdf5) "
        "to import instead (env.backend=libero, env.task_set=<their suite>).",
    )
    output: str = doc("", "Dataset folder; empty means 'data/demos/<preset>'.")
    overwrite: bool = doc(False, "Recollect even when a dataset with the same config exists.")


@dataclass
class OpenVLAOptions:
    """Options of the Prismatic families (``openvla``, ``openvla_oft``): where the value is read."""

    value_position: str = doc(
        "last_prompt",
        "Hidden state the value head reads: 'last_prompt', 'first_action' or 'mean' (of the prefix).",
        choices=("last_prompt", "first_action", "mean"),
    )
    critic: str = doc(
        "shared",
        "'shared': value head on the policy's backbone; 'separate': on a copy of the VLA.",
        choices=("shared", "separate"),
    )


@dataclass
class OFTOptions:
    """Options of the ``openvla_oft`` family (``policies/openvla_oft/``); it also reads ``policy.openvla``'s."""

    chunk_len: int = doc(
        4, "Actions per decision K, decoded in one pass and run open-loop by the env (OFT's LIBERO models: 8).", ge=1
    )
    action_head: str = doc(
        "discrete",
        "'discrete': 256-bin tokens from the LM head (what RL trains); 'l1': OFT's L1-regression head gives the "
        "(continuous) actions and SFT trains it with the L1 loss (OFT's released fine-tunes carry one).",
        choices=("discrete", "l1"),
    )


@dataclass
class Pi0Options:
    """Options of the ``pi0`` family (``policies/pi0/``): a flow-matching action expert on the Prismatic prefix."""

    chunk_len: int = doc(4, "Actions per decision K, denoised together and run open-loop (pi0's released: 50).", ge=1)
    noise_method: str = doc(
        "flow_sde",
        "How rollouts get log-probs (piRL): 'flow_sde' (the ODE turned into an SDE of `noise_level`) or 'flow_noise' "
        "(a learnt noise head's std at each step). Greedy evaluation runs the deterministic ODE.",
        choices=("flow_sde", "flow_noise"),
    )
    denoise_steps: int = doc(4, "Euler steps from noise to action (piRL: 4).", ge=1)
    noise_level: float = doc(0.5, "Flow-SDE's noise level a (sigma_t = a sqrt(t / (1 - t))).", gt=0, rl_only=True)
    value_source: str = doc(
        "prefix_mean",
        "What the value head reads: 'prefix_mean' / 'prefix_last' (the expert's outputs over the VLM prefix) or "
        "'expert' (its action tokens' features at the start of denoising).",
        choices=("prefix_mean", "prefix_last", "expert"),
    )
    detach_critic: bool = doc(
        False, "The value loss does not train what the value head reads (piRL's option).", rl_only=True
    )
    joint_logprob: bool = doc(
        True,
        "Log-prob of a chunk: true sums every (stochastic) denoising step's; false makes one uniformly drawn step "
        "per decision stochastic, the others following the ODE, and scores that step alone (RLinf's default).",
        rl_only=True,
    )


@dataclass
class PolicyConfig:
    """The VLA policy: family, architecture or checkpoint, decoding, LoRA, device; then one section per family
    (``policy.<family>.*``) with the options only that family reads."""

    family: str = doc(
        "openvla",
        "Policy family (one folder per family under vlarl/policies): 'openvla' decodes one action token by token; "
        "'openvla_oft' decodes a chunk of `openvla_oft.chunk_len` actions in one parallel pass; 'pi0' denoises a "
        "chunk of `pi0.chunk_len` actions by flow matching.",
        choices=("openvla", "openvla_oft", "pi0"),
    )
    arch: str = doc(
        "tiny",
        "Named architecture of the family, built from scratch: openvla has 'tiny', "
        "'tiny-fused', 'micro' and 'openvla-7b'.",
    )
    checkpoint: str = doc("", "OpenVLA-layout checkpoint folder to start from (overrides `arch`).")
    unnorm_key: str = doc("", "Key of the checkpoint's norm_stats to un-normalise actions with; empty: the only one.")
    use_proprio: bool = doc(False, "Feed proprio as one projected token after the image patches.")
    prompt: str = doc("In: What action should the robot take to {instruction}?\nOut:", "Prompt template.")
    top_k: int = doc(
        0,
        "Rollouts sample among the k most likely action tokens; 0 disables (at trainer.temperature).",
        ge=0,
        rl_only=True,
    )
    top_p: float = doc(1.0, "Rollouts sample within this nucleus mass; 1 disables.", gt=0, le=1, rl_only=True)
    lora_rank: int = doc(0, "LoRA rank on the language model; 0 trains all weights (full fine-tuning).", ge=0)
    lora_alpha: int = doc(16, "LoRA alpha.", gt=0)
    lora_targets: list[str] = doc(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "LoRA target modules."
    )
    train_projector: bool = doc(True, "With LoRA: also train the vision-to-language projector.")
    train_vision: bool = doc(False, "With LoRA: also train the vision towers.")
    device: str = doc(
        "auto",
        "'auto' (cuda if available), 'cpu' or 'cuda[:n]'.",
        rule=(lambda v: v in ("auto", "cpu", "cuda") or v.startswith("cuda:"), "auto, cpu, cuda or cuda:<n>"),
    )
    precision: str = doc(
        "auto",
        "'auto' (bf16 autocast on GPUs that support it, else fp32), 'fp32' or 'bf16'.",
        choices=("auto", "fp32", "bf16"),
    )
    openvla: OpenVLAOptions = field(default_factory=OpenVLAOptions)
    openvla_oft: OFTOptions = field(default_factory=OFTOptions)
    pi0: Pi0Options = field(default_factory=Pi0Options)


@dataclass
class SFTConfig:
    """Supervised warm-up on a demonstrations dataset."""

    dataset: str = doc("", "Demos dataset folder; empty: collect (or reuse) the preset's demos first.")
    steps: int = doc(2000, "Optimizer steps.", ge=1)
    batch_size: int = doc(32, "Frames per optimizer step.", ge=1)
    grad_accum: int = doc(1, "Micro-batches accumulated per optimizer step (batch_size is split).", ge=1)
    lr: float = doc(3e-4, "Peak learning rate (AdamW).", gt=0)
    weight_decay: float = doc(0.01, "AdamW weight decay.", ge=0)
    warmup_steps: int = doc(100, "Linear warm-up steps before the cosine decay.", ge=0)
    min_lr_ratio: float = doc(0.1, "Final learning rate as a fraction of `lr`.", ge=0, le=1)
    grad_clip: float = doc(1.0, "Gradient-norm clip; 0 disables.", ge=0)
    log_every: int = doc(20, "Steps between TensorBoard/progress updates.", ge=1)
    save_every: int = doc(500, "Steps between checkpoints (the last one is always written).", ge=1)
    eval_at_end: bool = doc(True, "Evaluate in the simulator when training ends.")


@dataclass
class EvalConfig:
    """Evaluation on the fixed initial states of each task."""

    checkpoint: str = doc("", "Policy checkpoint folder (OpenVLA layout, as written by sft/train).")
    trials_per_task: int = doc(10, "Episodes per task, on the first N fixed evaluation initial states.", ge=1)
    greedy: bool = doc(True, "Greedy decoding (argmax); false samples at `temperature`.")
    temperature: float = doc(1.0, "Sampling temperature when not greedy.", gt=0)
    videos_per_task: int = doc(1, "Episodes per task saved as mp4 (0: none).", ge=0)
    video_size: int = doc(
        256,
        "Video frame side (px): each saved episode is replayed (deterministic: same initial state and actions) "
        "and rendered at this size from the same camera, beside the policy's input enlarged; 0: the input only.",
        ge=0,
    )
    output: str = doc("", "Report folder; empty: <run folder>/eval.")


@dataclass
class AlgoConfig:
    """RL algorithm: advantages, losses and optimisation (see vlarl.algorithms)."""

    name: str = doc(
        "ppo", "'ppo' (GAE with the value head) or 'grpo' (group-normalised episode success).", choices=("ppo", "grpo")
    )
    advantage: str = doc(
        "",
        "Advantage estimator; empty: 'gae' for ppo, 'grpo' for grpo (also 'rloo').",
        choices=("", "gae", "grpo", "rloo", "reinforce_pp"),
    )
    score: str = doc(
        "success",
        "Episode score of grpo/rloo: 'success'; 'return' (discounted return sum gamma^t r_t: under sparse reward "
        "gamma^(steps to success), so faster successes rank higher); or 'max_reward' (best step reward; with "
        "env.reward=dense, how close the episode came to success).",
        choices=("success", "return", "max_reward"),
    )
    group_std: bool = doc(
        True,
        "grpo: divide by the group's score std. False is Dr. GRPO (score - group mean): under score=return an "
        "all-success group's tiny speed differences stay tiny instead of weighing as much as a success.",
    )
    neg_adv_weight: float = doc(
        1.0,
        "Scale of negative advantages: 1 keeps the estimator's; 0 reinforces only better-than-baseline steps "
        "(self-imitation learning); in between weighs failures less than successes.",
        ge=0,
        le=1,
    )
    gamma: float = doc(0.99, "Discount.", ge=0, le=1)
    lam: float = doc(0.95, "GAE lambda.", ge=0, le=1)
    discount_unit: str = doc(
        "decision",
        "What `gamma` discounts at reward_granularity=chunk: 'decision' (once per policy call, i.e. per chunk) or "
        "'env_step' (a chunk of n env steps by gamma^n). The same for K = 1. Action granularity discounts per env "
        "step.",
        choices=("decision", "env_step"),
    )
    reward_granularity: str = doc(
        "chunk",
        "The RL step of advantages and values (RLinf's reward_type): 'chunk' (one per decision: the chunk's rewards "
        "summed, V of its first observation) or 'action' (one per env step: each action of a chunk has its own "
        "reward, value (the value head gives K) and advantage; needs logprob_granularity token or action). The "
        "same for K = 1.",
        choices=("chunk", "action"),
    )
    group_size: int = doc(8, "GRPO: episodes per group (same task and initial state); divides env.num_envs.", ge=1)
    norm_adv: bool = doc(True, "Whiten advantages over the batch (ppo).")
    policy_loss: str = doc(
        "ppo",
        "Policy loss from the registry (algorithms.POLICY_LOSSES; register_policy_loss adds one with the same "
        "signature): 'ppo' is the clipped surrogate with clip-higher and dual clip.",
        choices=("ppo",),
    )
    logprob_granularity: str = doc(
        "action",
        "'token': one ratio per action token; 'action': sum over the A tokens of each action; 'chunk': sum over "
        "the K x A tokens of a decision (the same as 'action' for single-step policies).",
        choices=("token", "action", "chunk"),
    )
    clip_low: float = doc(0.2, "PPO clip below (ratio >= 1 - clip_low).", gt=0, lt=1)
    clip_high: float = doc(0.28, "PPO clip above (ratio <= 1 + clip_high; clip-higher).", gt=0)
    clip_c: float = doc(
        0.0,
        "Dual-clip constant for negative advantages (> 1); 0 disables.",
        rule=(lambda v: v == 0 or v > 1, "0 (off) or > 1"),
    )
    agg: str = doc(
        "token-mean",
        "Loss aggregation: token-mean, seq-mean-token-sum, seq-mean-token-mean.",
        choices=("token-mean", "seq-mean-token-sum", "seq-mean-token-mean"),
    )
    step_weight: str = doc(
        "step",
        "Weight of a step in the loss: 'step' (every step alike, so long episodes weigh more) or 'episode' "
        "(advantages scaled by mean length / episode length: every episode weighs alike, and a GRPO group's "
        "advantage-weighted step count sums to zero).",
        choices=("step", "episode"),
    )
    vf_coef: float = doc(0.5, "Value-loss weight.", ge=0)
    vf_clip: float = doc(0.0, "Value clipping range around the old values; 0 disables.", ge=0)
    value_loss: str = doc("huber", "'squared' or 'huber'.", choices=("squared", "huber"))
    huber_delta: float = doc(1.0, "Huber delta.", gt=0)
    ent_coef: float = doc(0.0, "Entropy bonus weight.", ge=0)
    kl_coef: float = doc(0.0, "KL penalty to the initial (reference) policy; 0 disables (no reference copy).", ge=0)
    kl_kind: str = doc("k3", "KL estimator: k1, k2 or k3.", choices=("k1", "k2", "k3"))
    epochs: int = doc(1, "Passes over each batch.", ge=1)
    target_kl: float = doc(
        0.0,
        "Stop an update at the first minibatch whose approx-KL to the rollout policy exceeds this (its step is "
        "not taken; `train/steps_taken` logs the share taken); 0 disables (CleanRL's early stop). At 0.1 it did "
        "not keep toy fixed-state PPO (4 epochs) from collapsing (RESULTS.md).",
        ge=0,
    )
    freeze_vision: bool = doc(False, "RL leaves the vision towers as SFT left them (no backward through them).")
    freeze_backbone: bool = doc(
        False,
        "RL leaves the whole VLM backbone (vision, projector, language model) as SFT left it and trains the action "
        "expert and the value head; the learner runs the prefix without a backward pass (pi0 only: the other "
        "families act through the language model). A tiny-pi0 micro-batch: 1.67x faster (benchmarks/pi0_update.py).",
    )
    update_fraction: float = doc(
        1.0,
        "Fraction of a batch's trainable steps the update uses, drawn uniformly each iteration (0-1]: the "
        "advantage signal lives in the episodes, and neighbouring steps of one episode are near-duplicates, so "
        "a large batch of episodes can be learnt from at a fraction of the backward passes.",
        gt=0,
        le=1,
    )
    minibatch_size: int = doc(64, "Steps per optimizer step.", ge=1)
    grad_accum: int = doc(2, "Micro-batches per minibatch (minibatch_size is split).", ge=1)
    grad_clip: float = doc(1.0, "Gradient-norm clip.", gt=0)
    lr: float = doc(5e-5, "Policy learning rate (AdamW).", gt=0)
    value_lr: float = doc(1e-3, "Value-head learning rate.", gt=0)
    lr_warmup_steps: int = doc(
        0,
        "Policy optimizer steps of linear learning-rate warm-up (a fresh Adam's first steps move every weight by "
        "~lr); critic warm-up steps do not count, the value head never warms up.",
        ge=0,
    )
    critic_warmup: int = doc(0, "First N iterations train only the value head (VLA-RL); ppo only, grpo has none.", ge=0)
    dynamic_sampling: bool = doc(False, "GRPO: keep only groups whose success rate is in [ds_low, ds_high].")
    ds_low: float = doc(0.1, "Dynamic sampling: lowest kept group success rate.", ge=0, le=1)
    ds_high: float = doc(0.9, "Dynamic sampling: highest kept group success rate.", ge=0, le=1)
    ds_max_rounds: int = doc(3, "Dynamic sampling: collection rounds per iteration at most.", ge=1)


@dataclass
class TrainerConfig:
    """The RL driver: iterations, evaluation, checkpoints, resume."""

    iterations: int = doc(20, "RL iterations (collect, advantages, update).", ge=0)
    rounds: int = doc(
        1,
        "Collection rounds per iteration, each one episode per env: an update sees rounds x env.num_envs "
        "episodes (peer-scale batches without holding that many simulators; each holds a GL context).",
        ge=1,
    )
    time_budget_min: float = doc(0.0, "Stop after this many minutes of RL (evaluations excluded); 0: no limit.", ge=0)
    temperature: float = doc(1.0, "Rollout sampling temperature (eval uses eval.temperature/greedy).", gt=0)
    curriculum: str = doc(
        "none",
        "'none': tasks in turn; 'success': sample tasks by recent rollout success (envs/curriculum.py).",
        choices=("none", "success"),
    )
    curriculum_window: int = doc(20, "Curriculum: rollouts per task remembered.", ge=1)
    curriculum_floor: float = doc(
        0.05, "Curriculum: least weight of a task (solved or hopeless ones stay in the mix).", ge=0, le=1
    )
    eval_every: int = doc(0, "Iterations between evaluations; 0: only before and after training.", ge=0)
    save_every: int = doc(5, "Iterations between checkpoints (the last is always written).", ge=1)
    resume: str = doc("", "Checkpoint folder (<run>/checkpoints/...) to resume from; 'auto': the run's latest.")
    init: str = doc(
        "sft",
        "Starting policy: 'sft' (run or reuse `vlarl sft` on the demos), or 'checkpoint'.",
        choices=("sft", "checkpoint"),
    )
    fixed_states: list[str] = doc(
        [],
        "Train on these (task, initial state) groups, 'task@seed' each (e.g. 'reach-v3@17'), the same every "
        "iteration: group g of an iteration runs entry g % len. A diagnostic: transitions are deterministic given "
        "the actions, so a working learner drives rollout success on them up (benchmarks/fixed_state.py).",
    )


@dataclass
class PlacementConfig:
    """Who runs each stage (vlarl.distributed): the rollout in this process (serial) or on Ray actors, on which CPU
    shares; the learner in this process or over FSDP2 ranks."""

    mode: str = doc(
        "serial",
        "'serial': envs and policy in this process, no Ray (the reference). Ray actors: 'collocated' (env workers "
        "and the rollout worker share the CPUs and take turns), 'disaggregated' (disjoint CPU shares; the policy "
        "infers for one env worker while the others step), 'hybrid' (disjoint shares, each worker's envs split "
        "into `pipeline_stages` groups: the policy infers for one stage while the simulator steps the other).",
        choices=("serial", "collocated", "disaggregated", "hybrid"),
    )
    env_workers: int = doc(1, "Env-worker actors; each steps a contiguous slice of env.num_envs.", ge=1)
    pipeline_stages: int = doc(
        1, "hybrid: groups each worker's envs are split into (>= 2, dividing its envs); 1 in other modes.", ge=1
    )
    env_cpus: float = doc(1.0, "CPUs each env worker takes from Ray's pool (its simulators run 1 thread).", gt=0)
    rollout_cpus: float = doc(1.0, "CPUs of the rollout (inference) worker; its torch threads (at least 1).", gt=0)
    rollout_gpus: float = doc(0.0, "GPUs of the rollout worker; 0 infers on CPU.", ge=0)
    learner_ranks: int = doc(
        1,
        "Learner ranks: 1 learns in the driver (serial); N > 1 spreads the policy over N Ray actors of "
        "torch.distributed (gloo on CPU, NCCL on GPU), each computing its share of every minibatch.",
        ge=1,
    )
    learner_strategy: str = doc(
        "fsdp2",
        "With learner_ranks > 1: 'fsdp2' shards parameters, gradients and Adam's state over the ranks (for models "
        "one device cannot hold); 'ddp' keeps a whole copy per rank and all-reduces the gradients.",
        choices=("fsdp2", "ddp"),
    )
    learner_cpus: int = doc(1, "CPUs (and torch threads) of each learner rank.", ge=1)
    env_nodes: list[str] = doc(
        [],
        "Node labels the env workers must run on, as key=value (nodes started with `ray start --labels "
        "key=value`); []: any node.",
        rule=LABELS,
    )
    rollout_nodes: list[str] = doc(
        [],
        "Node labels of the rollout worker (key=value items).",
        rule=LABELS,
    )
    learner_nodes: list[str] = doc(
        [],
        "Node labels of the learner ranks (key=value items).",
        rule=LABELS,
    )
    num_cpus: int = doc(0, "CPUs of a local Ray instance; 0: this machine's cores. Ignored when joining.", ge=0)
    ray_address: str = doc(
        "",
        "Empty: start a local Ray instance (no dashboard, no auth token; stopped at exit). 'auto' or 'host:port': "
        "join the cluster started by `ray start --head`.",
    )
    log_level: str = doc("error", "Ray's log level.", choices=("debug", "info", "warning", "error"))


@dataclass
class DemosCommand:
    """`vlarl demos`: run scripted experts and write a demonstrations dataset."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)


@dataclass
class SFTCommand:
    """`vlarl sft`: supervised warm-up of the policy on scripted-expert demonstrations."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class EvalCommand:
    """`vlarl eval`: success per task on the fixed evaluation initial states, with videos."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class TrainCommand:
    """`vlarl train`: online RL (PPO/GRPO) from the SFT policy; eval before and after."""

    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)


COMMANDS: dict[str, type] = {"demos": DemosCommand, "sft": SFTCommand, "train": TrainCommand, "eval": EvalCommand}

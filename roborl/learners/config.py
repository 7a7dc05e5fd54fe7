"""The learners' hyperparameters: frozen config dataclasses that do not import torch.

Each learner file (``roborl/learners/<algo>.py``) holds losses and updates only and imports its
config from here, so loading, validating and printing a run config (``roborl config show``,
``roborl --help``) never imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roborl.config import field, non_negative, open_unit_interval, positive, unit_interval

__all__ = ["SACConfig", "PPOConfig", "EncoderConfig", "EncoderPretrainConfig", "TD3Config", "DDPGConfig",
           "DiscreteSACConfig", "OnPolicyCommon", "ReinforceConfig", "A2CConfig", "NPGConfig", "TRPOConfig", "MBPOConfig"]


@dataclass(frozen=True)
class EncoderConfig:
    """The image encoder of SAC on Dict observations with cameras (DrQ, Kostrikov 2020; DrQ-v2, Yarats 2021).

    Ignored for flat observations. ``weights: null`` trains the encoder end to end with the critic;
    a path loads a frozen encoder whose embeddings are cached once per stored frame.
    """

    shared: bool = field(False, doc="One conv encoder for all cameras (else one per camera).")
    channels: int = field(32, doc="Conv channels per layer (DrQ: 32).", check=positive)
    layers: int = field(4, doc="Conv layers (first stride 2, the rest stride 1; DrQ: 4).", check=positive)
    feature_dim: int = field(50, doc="Features per camera after Linear + LayerNorm + tanh (DrQ: 50).", check=positive)
    pad: int = field(4, doc="Random-shift augmentation: replicate-pad by this many pixels, crop back (0 = off).",
                     check=non_negative)
    tau: float = field(0.05, doc="Polyak rate of the target encoder (DrQ: 0.05).", check=unit_interval)
    weights: str | None = field(None, doc="A frozen encoder (safetensors written by roborl.learners.encoders.save_encoder); "
                                "null = train end to end.")
    cache_size: int = field(200_000, doc="Frozen encoder: embedding cache slots (rows of the store, obs and next_obs "
                            "each).", check=positive)
    downsample: int = field(1, doc="How many of the first conv layers have stride 2 (DrQ: 1; 2 is ~4x cheaper, for "
                                   "CPU training).", check=positive)
    arch: Literal["conv", "keypoints"] = field(
        "conv", doc="conv: DrQ's head (Linear + LayerNorm + tanh). keypoints: a 1x1 conv to feature_dim/2 channels and a "
        "spatial softmax; the features are each channel's expected image (x, y) (Levine et al. 2016; the bottleneck of "
        "Finn et al. 2016's deep spatial autoencoder). feature_dim must be even. A weights file must have this arch.")
    pretrain_steps: int = field(0, doc="With weights null and this > 0: before learning, pretrain the encoder on the "
                                       "demo partition for this many steps (pretrain_objective, the other "
                                       "settings EncoderPretrainConfig's defaults), save it as <run dir>/encoder.safetensors and use it frozen (reused on "
                                       "resume). 0 = off.", check=non_negative)
    pretrain_objective: Literal["bc", "autoencoder", "contrastive"] = field(
        "bc", doc="Objective of that startup pretraining (EncoderPretrainConfig.objective): bc on the demos, "
        "autoencoder (arch keypoints; demo frames plus pretrain_random_episodes), or contrastive (episodes told "
        "apart: what the reset randomised, e.g. the goal marker; demo frames plus pretrain_random_episodes).")
    pretrain_random_episodes: int = field(
        0, doc="autoencoder, contrastive: before pretraining, also record this many random-action episodes of the env (images, "
        "proprio and actions only: what an operator can record on a bench without labels) into <run dir>/"
        "pretrain_frames and train on their frames too. Their env steps are extra interaction, reported apart from "
        "train.total_steps. 0 = demo frames only.", check=non_negative)
    pretrain_val_episodes: int = field(0, doc="Startup pretraining: episodes held out for early stopping (0 = none).",
                                       check=non_negative)
    pretrain_bc_steps: int = field(0, doc="With pretrain_objective autoencoder or contrastive: then fine-tune that "
                                   "encoder by BC on the demos for this many steps (as roborl encoder pretrain "
                                   "--init), early-stopped on pretrain_val_episodes when > 0. The label-free stage "
                                   "finds the objects, BC shapes the features to the demonstrator's actions. 0 = off.",
                                   check=non_negative)


@dataclass(frozen=True)
class EncoderPretrainConfig:
    """``roborl encoder pretrain``: fit an image encoder on the frames of the stores' demo partitions.

    ``objective=bc``: the encoder (:class:`roborl.learners.encoders.PixelEncoder`) feeds a small MLP head
    that predicts the demonstrator's action; every frame is randomly shifted (DrQ, Kostrikov et al. 2020).
    ``objective=autoencoder``: a deep spatial autoencoder (Finn et al. 2016) through the keypoint head,
    no actions needed. ``objective=contrastive``: InfoNCE between two frames of one episode against the
    other episodes' (no actions needed). ``--init`` chains them (autoencoder on many frames, then BC on the demos). The
    architecture fields must equal the ``sac.encoder`` that loads the file (a mismatch is refused).
    """

    objective: Literal["bc", "autoencoder", "contrastive"] = field(
        "bc", doc="bc: behaviour cloning of the stores' actions with random shift (the stores should hold "
        "demonstrations). autoencoder: reconstruct each camera's image, downsampled to recon_size, through the "
        "keypoint bottleneck plus the vector observations (Finn et al. 2016); needs arch=keypoints and uses no "
        "actions, so frames of any episodes (random-action rollouts) may be added with more --store. contrastive: "
        "InfoNCE telling episodes apart from two shifted frames of each (what a reset randomises: goal marker, "
        "object); no actions either; needs >= 2 episodes with >= 2 steps.")
    temperature: float = field(0.1, doc="contrastive: InfoNCE temperature.", check=positive)
    arch: Literal["conv", "keypoints"] = field("conv", doc="Encoder head (sac.encoder.arch): conv or keypoints "
                                                          "(spatial softmax).")
    recon_size: int = field(32, doc="autoencoder: side of the downsampled RGB image the decoder reconstructs.",
                            check=positive)
    fg_weight: float = field(0.0, doc="autoencoder: extra loss weight of the pixels that differ from the background "
                                     "(the per-pixel median of the training frames) by > 0.1: small objects a plain MSE "
                                     "ignores. 0 = plain MSE.", check=non_negative)
    cameras: tuple[str, ...] = field((), doc="Cameras to encode: names (front) or store keys (pixels.front); empty "
                                             "= every camera of the store.")
    steps: int = field(1500, doc="Gradient steps.", check=positive)
    batch_size: int = field(64, doc="Demo steps per batch.", check=positive)
    lr: float = field(3e-4, doc="Adam learning rate.", check=positive)
    pad: int = field(4, doc="Random-shift augmentation pad in pixels (0 = off).", check=non_negative)
    hidden: tuple[int, ...] = field((256, 256), doc="Hidden sizes of the BC head (discarded after pretraining).")
    shared: bool = field(False, doc="One conv encoder for all cameras (sac.encoder.shared).")
    channels: int = field(32, doc="Conv channels per layer (sac.encoder.channels).", check=positive)
    layers: int = field(4, doc="Conv layers (sac.encoder.layers).", check=positive)
    feature_dim: int = field(50, doc="Features per camera (sac.encoder.feature_dim).", check=positive)
    downsample: int = field(1, doc="Stride-2 conv layers (sac.encoder.downsample).", check=positive)
    val_episodes: int = field(0, doc="Episodes held out to report a validation loss (0 = train on all).",
                              check=non_negative)
    eval_every: int = field(0, doc="With val_episodes > 0: measure the held-out loss every this many steps and keep "
                                   "the encoder of the best one (early stopping); 0 = keep the last.",
                            check=non_negative)
    seed: int = field(0, doc="Seed of initialisation, batches and augmentation.")


@dataclass(frozen=True)
class SACConfig:
    """SAC / RLPD hyperparameters (Haarnoja 2018; Ball 2023 for the ensemble and demo mix)."""

    hidden: tuple[int, ...] = field((256, 256), doc="Hidden layer sizes of actor and critics.")
    lr: float = field(3e-4, doc="Adam learning rate for actor and critics.", check=positive)
    alpha_lr: float = field(3e-4, doc="Adam learning rate for the temperature.", check=positive)
    batch_size: int = field(256, doc="Transitions per update.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    reward_scale: float = field(1.0, doc="Rewards are multiplied by this before the TD target (Haarnoja 2018's main "
                                "SAC hyperparameter: it sets the reward/entropy balance).", check=positive)
    tau: float = field(0.005, doc="Polyak rate of the target critics.", check=unit_interval)
    n_critics: int = field(2, doc="Critic ensemble size (2 = twin min; >2 = REDQ/RLPD random subset).", check=positive)
    critic_subset: int = field(2, doc="Critics in the min for the target when n_critics > 2.", check=positive)
    layer_norm: bool = field(False, doc="LayerNorm in the critics (RLPD).")
    init_alpha: float = field(1.0, doc="Initial temperature.", check=positive)
    learn_alpha: bool = field(True, doc="Tune the temperature toward target_entropy.")
    target_entropy: float | None = field(None, doc="Target entropy; null = -|A|.")
    utd: int = field(1, doc="Gradient updates per env step (update-to-data ratio).", check=positive)
    actor_delay: int = field(0, doc="Critic-only updates before the actor starts learning (lets the critic fit the "
                             "demo-seeded data before it steers a BC-initialised policy).", check=non_negative)
    actor_every: int = field(1, doc="Critic updates per actor/temperature update.", check=positive)
    grad_clip: float | None = field(None, doc="Max global grad norm (null = off).", check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    # Demos: RLPD-style demo mix, BC pretraining and the residual policy
    bc_pretrain_steps: int = field(0, doc="BC gradient steps on the demo partition before RL.", check=non_negative)
    bc_weight: float = field(0.0, doc="Weight of a BC term on demo samples in the actor loss (0 = off).", check=non_negative)
    residual: bool = field(False, doc="Residual mode: act = clip(a_base + beta*a_res) over a frozen BC base policy.")
    residual_beta: float = field(0.2, doc="Residual scale beta (Policy Decorator / ResiP use 0.1-0.3).", check=positive)
    residual_beta_final: float | None = field(None, doc="If set, beta ramps linearly to this value (progressive schedule).", check=positive)
    residual_ramp_steps: int = field(10_000, doc="Env steps over which beta ramps to residual_beta_final.", check=positive)
    precision: Literal["auto", "fp32", "bf16"] = field(
        "fp32", doc="Matmul precision of the gradient updates. bf16 runs the hidden layers' forward and backward "
        "matmuls under bfloat16 autocast (weights, Adam state, output layers, losses and targets stay float32; acting "
        "stays float32): ~3x faster matmuls on CPUs with AVX512-BF16/AMX (BENCHMARKS.md); on a GPU our updates are "
        "launch-bound and bf16 measured slower. auto = bf16 on a CPU that runs it natively, else fp32 (always on CUDA).")
    normalize_obs: bool = field(True, doc="Normalise observations with mean/std fitted once when learning starts (saved in checkpoints).")
    encoder: EncoderConfig = field(default_factory=EncoderConfig, doc="Image encoder for camera observations.")
    critic_loss: Literal["mse", "huber"] = field(
        "mse", doc="Critic loss on the TD error: mse = td^2/2; huber = td^2/2 for |td| < 1, |td| - 1/2 beyond (the loss "
        "LAP prioritisation is defined with, Fujimoto et al. 2020; use it with store.sampler.kind=lap).")
    compile: Literal["auto", "on", "off"] | bool = field(
        "auto", doc="torch.compile the critic and actor losses of the update (flat observations; the same math as the "
        "plain update): on (YAML reads it as true), off (false), or auto = on for CUDA only (on a CPU the 256-wide update is bound by its matmuls and "
        "compiling measured no faster; BENCHMARKS.md: learner throughput). If compiling fails the update runs "
        "uncompiled after one logged line.")
    value_net: bool = field(False, doc="Soft policy iteration in its original form (Haarnoja et al. 2018, v1): a state-value "
                            "network V(s) fitted to E_a~pi[min Q(s, a) - alpha log pi(a|s)], a Polyak target V' and critic "
                            "targets r + discount * V'(s').")

    def __post_init__(self) -> None:
        if self.n_critics > 2 and self.critic_subset > self.n_critics:
            raise ValueError(f"critic_subset ({self.critic_subset}) must be <= n_critics ({self.n_critics})")


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters and rollout settings. Defaults follow SB3/CleanRL MuJoCo PPO."""

    # --- rollouts (read by the runner)
    n_envs: int = field(8, doc="Parallel envs in the gymnasium vector env.", check=positive)
    vector: Literal["sync", "async"] = field(
        "sync", doc="sync: envs stepped in this process; async: one subprocess per env (pays off for slow envs / many cores).")
    rollout_steps: int = field(256, doc="Steps per env per iteration (SB3's n_steps); batch = n_envs * rollout_steps.",
                               check=positive)
    # --- network
    hidden: tuple[int, ...] = field((64, 64), doc="Hidden layer sizes of the actor (and of the critic unless critic_hidden).")
    critic_hidden: tuple[int, ...] | None = field(None, doc="Hidden layer sizes of the critic (null = same as hidden).")
    activation: Literal["tanh", "relu", "elu"] = field("tanh", doc="Hidden activation (tanh is the SB3/CleanRL default).")
    init_log_std: float = field(0.0, doc="Initial log-std of the state-independent Gaussian.")
    action_squash: Literal["clip", "tanh"] = field(
        "clip", doc="How a Gaussian sample u becomes an action in [-1, 1]: clip(u) (SB3/CleanRL) or tanh(u).")
    asymmetric: bool = field(False, doc="Critic also sees privileged state (info keys in privileged_keys); actor does not.")
    privileged_keys: tuple[str, ...] = field(
        ("dr_params",), doc="info keys concatenated into the critic's privileged input when asymmetric (dict or array values).")
    norm_obs: bool = field(True, doc="Running mean/std observation normalization inside the model (saved in checkpoints).")
    obs_clip: float = field(10.0, doc="Clip normalized observations to [-obs_clip, obs_clip].", check=positive)
    norm_reward: bool = field(False, doc="Scale rewards by the running std of the discounted return (SB3 VecNormalize).")
    # --- optimisation
    lr: float = field(3e-4, doc="Adam learning rate (initial value when kl_control=adaptive_lr or anneal_lr).", check=positive)
    anneal_lr: bool = field(False, doc="Linearly anneal the learning rate to 0 over train.total_steps.")
    epochs: int = field(10, doc="Passes over each rollout batch.", check=positive)
    minibatch_size: int = field(64, doc="Samples per gradient step.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    gae_lambda: float = field(0.95, doc="GAE lambda (0 = one-step TD, 1 = Monte Carlo).", check=unit_interval)
    norm_adv: bool = field(True, doc="Standardize advantages over the batch (makes eps=0.2 task-independent).")
    vf_coef: float = field(0.5, doc="Value-loss coefficient (loss is the plain MSE, as SB3).", check=non_negative)
    ent_coef: float = field(0.0, doc="Entropy-bonus coefficient.", check=non_negative)
    max_grad_norm: float | None = field(0.5, doc="Global gradient-norm clip (null = off).", check=positive)
    # --- surrogate
    loss: Literal["clip", "kl"] = field("clip", doc="clip: PPO-clip (min of clipped/unclipped); kl: PPO-KL with adaptive beta.")
    clip_eps: float = field(0.2, doc="PPO-clip ratio range [1-eps, 1+eps].", check=open_unit_interval)
    clip_value: float | None = field(None, doc="Clip the value prediction to old_value +- this (null = no value clipping).",
                                     check=positive)
    kl_beta: float = field(1.0, doc="PPO-KL: initial penalty coefficient beta.", check=positive)
    kl_target: float = field(0.01, doc="PPO-KL: target KL d_targ; beta doubles above 1.5 d_targ, halves below d_targ/1.5.",
                             check=positive)
    # --- trust-region control on top of either surrogate
    target_kl: float | None = field(None, doc="Target KL per update for kl_control (null = off).", check=positive)
    kl_control: Literal["early_stop", "adaptive_lr"] = field(
        "early_stop", doc="early_stop: stop the epochs when a minibatch KL > 1.5 target_kl (SB3); "
                          "adaptive_lr: lr /1.5 above 2 target_kl, x1.5 below target_kl/2 (rsl_rl).")
    lr_min: float = field(1e-5, doc="Lower bound of the adaptive learning rate.", check=positive)
    lr_max: float = field(1e-2, doc="Upper bound of the adaptive learning rate.", check=positive)
    torch_threads: int | None = field(
        None, doc="torch.set_num_threads for the runner (null = leave torch's default). 1 is fastest for small MLPs on CPU.",
        check=positive)
    compile: Literal["auto", "on", "off"] | bool = field(
        "auto", doc="torch.compile the minibatch gradient step (forward, backward and gradient clip as one graph; the "
        "same math as the plain step): on (YAML reads it as true), off (false), or auto = on for a single process (no DDP) with the fused actor-critic "
        "pair when the run has at least 20,000 gradient steps (roborl.learners.ppo.COMPILE_MIN_STEPS). Compiling takes seconds once per process (torch caches the graphs on disk); if it fails the step runs "
        "uncompiled after one logged line (BENCHMARKS.md: learner throughput).")
    numpy_act: bool = field(
        True, doc="Rollout inference on a CPU through numpy views of the fused actor-critic's weights (tanh/relu "
        "MLPs, vector observations): the same math as the torch ops with less per-step overhead, equal to float32 "
        "rounding (not bit for bit); false = torch ops (roborl.learners.ppo._NumpyAct).")

    def __post_init__(self) -> None:
        if self.lr_min > self.lr_max:
            raise ValueError("lr_min must be <= lr_max")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError("hidden must be a non-empty list of positive sizes")
        if self.critic_hidden is not None and (not self.critic_hidden or any(h <= 0 for h in self.critic_hidden)):
            raise ValueError("critic_hidden must be a non-empty list of positive sizes (or null)")


@dataclass(frozen=True)
class TD3Config:
    """TD3 hyperparameters (Fujimoto et al. 2018; defaults as the paper and CleanRL)."""

    hidden: tuple[int, ...] = field((256, 256), doc="Hidden layer sizes of actor and critics.")
    actor_lr: float = field(3e-4, doc="Adam learning rate of the actor.", check=positive)
    critic_lr: float = field(3e-4, doc="Adam learning rate of the critics.", check=positive)
    batch_size: int = field(256, doc="Transitions per update.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    reward_scale: float = field(1.0, doc="Rewards are multiplied by this before the TD target.", check=positive)
    tau: float = field(0.005, doc="Polyak rate of the target actor and critics.", check=unit_interval)
    n_critics: int = field(2, doc="Critics; the target takes the min over all of them (clipped double-Q).", check=positive)
    exploration_noise: float = field(0.1, doc="Std of the Gaussian noise added to mu(s) when acting (actions in [-1, 1]).",
                                     check=non_negative)
    policy_noise: float = field(0.2, doc="Target-policy smoothing: std of the noise added to mu'(s') in the target.",
                                check=non_negative)
    noise_clip: float = field(0.5, doc="Target-policy smoothing noise is clipped to [-noise_clip, noise_clip].",
                              check=non_negative)
    policy_delay: int = field(2, doc="Critic updates per actor (and target) update.", check=positive)
    utd: int = field(1, doc="Gradient updates per env step (update-to-data ratio).", check=positive)
    grad_clip: float | None = field(None, doc="Max global grad norm (null = off).", check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    normalize_obs: bool = field(True, doc="Normalise observations with mean/std fitted once when learning starts (saved in checkpoints).")


@dataclass(frozen=True)
class DDPGConfig:
    """DDPG hyperparameters (Lillicrap et al. 2016; learning rates, tau and Gaussian noise as CleanRL)."""

    hidden: tuple[int, ...] = field((256, 256), doc="Hidden layer sizes of actor and critic.")
    actor_lr: float = field(3e-4, doc="Adam learning rate of the actor.", check=positive)
    critic_lr: float = field(3e-4, doc="Adam learning rate of the critic.", check=positive)
    batch_size: int = field(256, doc="Transitions per update.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    reward_scale: float = field(1.0, doc="Rewards are multiplied by this before the TD target.", check=positive)
    tau: float = field(0.005, doc="Polyak rate of the target actor and critic.", check=unit_interval)
    exploration_noise: float = field(0.1, doc="Std of the Gaussian noise added to mu(s) when acting (actions in [-1, 1]).",
                                     check=non_negative)
    utd: int = field(1, doc="Gradient updates per env step (update-to-data ratio).", check=positive)
    grad_clip: float | None = field(None, doc="Max global grad norm (null = off).", check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    normalize_obs: bool = field(True, doc="Normalise observations with mean/std fitted once when learning starts (saved in checkpoints).")


@dataclass(frozen=True)
class DiscreteSACConfig:
    """Discrete-action SAC hyperparameters (Christodoulou 2019; learning rates and entropy ratio as CleanRL's sac_atari)."""

    hidden: tuple[int, ...] = field((256, 256), doc="Hidden layer sizes of actor and critics.")
    actor_lr: float = field(3e-4, doc="Adam learning rate of the actor.", check=positive)
    critic_lr: float = field(3e-4, doc="Adam learning rate of the critics.", check=positive)
    alpha_lr: float = field(3e-4, doc="Adam learning rate of the temperature.", check=positive)
    batch_size: int = field(256, doc="Transitions per update.", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    reward_scale: float = field(1.0, doc="Rewards are multiplied by this before the TD target.", check=positive)
    tau: float = field(0.005, doc="Polyak rate of the target critics.", check=unit_interval)
    n_critics: int = field(2, doc="Critics; target and policy loss use the min over them.", check=positive)
    init_alpha: float = field(1.0, doc="Initial temperature.", check=positive)
    learn_alpha: bool = field(True, doc="Tune the temperature toward target_entropy_ratio * log|A|.")
    target_entropy_ratio: float = field(
        0.89, doc="Target entropy as a fraction of the maximum log|A| (Christodoulou 2019 uses 0.98; CleanRL found "
        "0.89 more robust).", check=unit_interval)
    utd: int = field(1, doc="Gradient updates per env step (update-to-data ratio).", check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    normalize_obs: bool = field(True, doc="Normalise observations with mean/std fitted once when learning starts (saved in checkpoints).")


# ============================================================================= the policy-gradient family


@dataclass(frozen=True)
class OnPolicyCommon:
    """What every on-policy learner's section holds besides its own update: the rollout settings the
    on-policy runner reads (its own section's, never PPO's) and the Gaussian actor-critic's layout
    (the same model as PPO's, :class:`roborl.learners.ppo.ActorCritic`)."""

    # --- rollouts (read by the runner)
    n_envs: int = field(8, doc="Parallel envs in the gymnasium vector env.", check=positive)
    vector: Literal["sync", "async"] = field("sync", doc="sync: envs stepped in this process; async: one subprocess per env.")
    rollout_steps: int = field(256, doc="Steps per env per iteration; batch = n_envs * rollout_steps.", check=positive)
    asymmetric: bool = field(False, doc="Critic also sees privileged state (info keys in privileged_keys); actor does not.")
    privileged_keys: tuple[str, ...] = field(("dr_params",), doc="info keys of the critic's privileged input when asymmetric.")
    norm_reward: bool = field(False, doc="Scale rewards by the running std of the discounted return (SB3 VecNormalize).")
    anneal_lr: bool = field(False, doc="Linearly anneal the learning rate to 0 over train.total_steps.")
    torch_threads: int | None = field(None, doc="torch.set_num_threads for the runner (null = leave torch's default).",
                                      check=positive)
    # --- model (roborl.learners.ppo.ActorCritic)
    hidden: tuple[int, ...] = field((64, 64), doc="Hidden layer sizes of the actor (and of the critic unless critic_hidden).")
    critic_hidden: tuple[int, ...] | None = field(None, doc="Hidden layer sizes of the critic (null = same as hidden).")
    activation: Literal["tanh", "relu", "elu"] = field("tanh", doc="Hidden activation.")
    init_log_std: float = field(0.0, doc="Initial log-std of the state-independent Gaussian.")
    action_squash: Literal["clip", "tanh"] = field("clip", doc="Gaussian sample u -> action: clip(u) or tanh(u).")
    norm_obs: bool = field(True, doc="Running mean/std observation normalisation inside the model (saved in checkpoints).")
    obs_clip: float = field(10.0, doc="Clip normalised observations to [-obs_clip, obs_clip].", check=positive)
    # --- returns
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    lr: float = field(3e-4, doc="Learning rate (of the whole model; of the critic alone for NPG/TRPO).", check=positive)

    def __post_init__(self) -> None:
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError("hidden must be a non-empty list of positive sizes")
        if self.critic_hidden is not None and (not self.critic_hidden or any(h <= 0 for h in self.critic_hidden)):
            raise ValueError("critic_hidden must be a non-empty list of positive sizes (or null)")


@dataclass(frozen=True)
class ReinforceConfig(OnPolicyCommon):
    """REINFORCE (Williams 1992) on vector envs: one gradient step per rollout on sum_t log pi(a_t|s_t) Psi_t.

    Episodes longer than a rollout are cut at its end: ``baseline`` bootstraps the cut (and time-limit
    truncations) from V, ``reward_to_go`` has no critic and sums the rewards seen in the rollout only,
    so keep ``rollout_steps`` >= the episode length with it.
    """

    rollout_steps: int = field(1000, doc="Steps per env per iteration (>= the episode length: whole episodes).",
                               check=positive)
    weighting: Literal["reward_to_go", "baseline"] = field(
        "baseline", doc="Psi_t: reward_to_go G_t; baseline G_t - V(s_t) with a learned V (same mean, lower variance).")
    lr: float = field(1e-3, doc="Adam learning rate of the policy and the baseline.", check=positive)
    vf_coef: float = field(0.5, doc="Weight of the baseline's MSE in the loss.", check=non_negative)
    value_epochs: int = field(5, doc="Extra full-batch regression steps of the baseline per rollout.", check=non_negative)
    norm_adv: bool = field(True, doc="Standardise Psi over the batch (a per-batch baseline and scale).")
    ent_coef: float = field(0.0, doc="Entropy-bonus coefficient.", check=non_negative)
    max_grad_norm: float | None = field(1.0, doc="Global gradient-norm clip (null = off).", check=positive)


@dataclass(frozen=True)
class A2CConfig(OnPolicyCommon):
    """A2C (Mnih et al. 2016, the synchronous variant): one gradient step per short rollout on the actor-critic loss.
    Defaults as stable-baselines3's A2C (RMSprop, 5 steps per env, no GAE)."""

    rollout_steps: int = field(5, doc="Steps per env per iteration (SB3's n_steps).", check=positive)
    lr: float = field(7e-4, doc="Learning rate.", check=positive)
    optimizer: Literal["rmsprop", "adam"] = field("rmsprop", doc="rmsprop (alpha 0.99, eps 1e-5, as SB3) or adam.")
    gae_lambda: float = field(1.0, doc="GAE lambda (1 = n-step returns, SB3's A2C default).", check=unit_interval)
    norm_adv: bool = field(False, doc="Standardise advantages over the batch.")
    vf_coef: float = field(0.5, doc="Value-loss coefficient.", check=non_negative)
    ent_coef: float = field(0.0, doc="Entropy-bonus coefficient.", check=non_negative)
    max_grad_norm: float | None = field(0.5, doc="Global gradient-norm clip (null = off).", check=positive)


@dataclass(frozen=True)
class NPGConfig(OnPolicyCommon):
    """Natural policy gradient (Kakade 2001): the step F^-1 g scaled to a KL of max_kl in the quadratic model;
    the critic is fitted separately with Adam. Defaults as sb3-contrib's TRPO where they overlap."""

    rollout_steps: int = field(256, doc="Steps per env per iteration; batch = n_envs * rollout_steps.", check=positive)
    lr: float = field(1e-3, doc="Adam learning rate of the critic.", check=positive)
    gae_lambda: float = field(0.95, doc="GAE lambda.", check=unit_interval)
    norm_adv: bool = field(True, doc="Standardise advantages over the batch.")
    max_kl: float = field(0.01, doc="delta: the KL of the step in the quadratic model 0.5 s^T F s.", check=positive)
    cg_iters: int = field(15, doc="Conjugate-gradient iterations for F x = g.", check=positive)
    cg_damping: float = field(0.1, doc="Damping added to F (F + damping I) in the CG solve.", check=non_negative)
    vf_epochs: int = field(10, doc="Critic passes over each rollout.", check=positive)
    vf_minibatch: int = field(128, doc="Critic minibatch size.", check=positive)


@dataclass(frozen=True)
class TRPOConfig(NPGConfig):
    """TRPO (Schulman et al. 2015): the natural step with a backtracking line search that accepts only a
    step whose exact mean KL <= max_kl and whose surrogate improves (else the policy stays)."""

    backtrack: float = field(0.8, doc="Line-search shrink factor per try (sb3-contrib: 0.8).", check=open_unit_interval)
    max_backtracks: int = field(10, doc="Line-search tries.", check=positive)


# ============================================================================= model-based


@dataclass(frozen=True)
class MBPOConfig:
    """MBPO (Janner et al. 2019): an ensemble of probabilistic dynamics models fitted to the real data,
    short branched rollouts from real states into a model buffer, SAC on a real/model mix.

    The runner reads batch_size, gamma, utd and warmup_steps (as for every off-policy learner).
    """

    batch_size: int = field(256, doc="Real transitions the runner samples per SAC update (the real share is "
                            "real_ratio of sac.batch_size; this batch supplies it).", check=positive)
    gamma: float = field(0.99, doc="Discount.", check=open_unit_interval)
    utd: int = field(10, doc="SAC updates per env step (MBPO uses 20; the model data makes many affordable).",
                     check=positive)
    warmup_steps: int = field(1_000, doc="Random-action env steps before learning starts.", check=non_negative)
    ensemble_size: int = field(7, doc="Dynamics models in the ensemble.", check=positive)
    elites: int = field(5, doc="Models with the lowest held-out loss used for rollouts.", check=positive)
    model_hidden: tuple[int, ...] = field((200, 200, 200), doc="Hidden sizes of each dynamics model (SiLU).")
    model_lr: float = field(1e-3, doc="Adam learning rate of the models.", check=positive)
    model_weight_decay: float = field(5e-5, doc="Adam weight decay of the models.", check=non_negative)
    model_batch: int = field(256, doc="Transitions per model gradient step.", check=positive)
    model_train_every: int = field(250, doc="Env steps between model refits (and rollout rounds).", check=positive)
    model_steps: int = field(200, doc="Gradient steps per model refit.", check=positive)
    rollout_batch: int = field(1_000, doc="Real start states per rollout round.", check=positive)
    rollout_min_length: int = field(1, doc="Branched rollout length k at rollout_min_step.", check=positive)
    rollout_max_length: int = field(1, doc="k at rollout_max_step (linear in between; MBPO Hopper: 1 -> 15).",
                                    check=positive)
    rollout_min_step: int = field(20_000, doc="Env step where the length schedule starts.", check=non_negative)
    rollout_max_step: int = field(100_000, doc="Env step where k reaches rollout_max_length.", check=non_negative)
    model_retain: int = field(5, doc="Rollout rounds kept in the model buffer (its capacity is retain * rollout_batch * k).",
                              check=positive)
    real_ratio: float = field(0.05, doc="Share of real transitions in each SAC batch.", check=unit_interval)
    sac: SACConfig = field(default_factory=SACConfig, doc="The SAC agent trained on the mix (its batch_size, lr, alpha, ...).")

    def __post_init__(self) -> None:
        if self.elites > self.ensemble_size:
            raise ValueError(f"elites ({self.elites}) must be <= ensemble_size ({self.ensemble_size})")
        if self.rollout_max_step < self.rollout_min_step:
            raise ValueError("rollout_max_step must be >= rollout_min_step")

"""``replens train --ddm``: the Domain-Disentanglement Module as a training plug-in (paper chapter 2).

With any SSL recipe of the engine, DDM

1. splits the encoder's representation h (r features) into the domain prefix
   h^d (the first k, default k = r / 16 as 24 of 384 in section 2.4.1) and the
   invariant part h^p; the recipe's heads and loss see only h^p
   (:class:`~replens.ddm.backbone.DomainSplitBackbone`);
2. adds L_d_var on h^d over the 2N views (section 2.4, temperature tau);
3. adds the encoder's side of the Wasserstein term L_d_invar =
   D(h^p, y) - D(h^p, y_rand), y_rand ~ P(y), and after each encoder step
   updates the critic D (an MLP with LeakyReLU) by ascending the same term
   with the gradient penalty of Gulrajani et al.: alternating gradient
   descent-ascent, the critic with its own Adam at lr 0.005 and cosine
   annealing (section 2.4.1); by default 5 critic updates per encoder step
   (Gulrajani et al.'s n_critic) on h^p / ||h^p|| (see ``critic_normalize``);
4. weights the SSL loss by lambda = 0.5 (Eq. 2.1: lambda L_ssl + L_d_var +
   L_d_invar; the engine adds plug-in terms to the recipe's loss, so the
   plug-in contributes ``(lambda - 1) L_ssl``, logged as ``ddm/ssl_scale``).

Eq. 2.1 is printed as one ``max_f`` of the sum; we read it, as the surrounding
text says, as: the encoder maximises L_d_var, minimises the SSL loss, and
minimises the Wasserstein estimate L_d_invar that the critic maximises.

Without domain labels (``--ddm-domains M``, section 2.5) the first
``warmup_fraction`` of training runs the SSL loss alone; then the
representations h are clustered into M pseudo-domains by K-Means with the
Eq. 2.2 outlier rule (:class:`~replens.ddm.clustering.RobustClustering`),
re-clustered every ``recluster_fraction`` of training with epsilon decaying
from 1. The representations clustered are those the encoder produced for
each sample during training (the mean over its views, kept in a bank indexed
by ``batch["index"]``), so no extra pass over the data is needed. Outliers
(label -1) are left out of both DDM losses; samples not yet in the bank at a
clustering are labelled on the fly with the last centroids and epsilon. When
the true domains are known, the clustering purity is logged
(``ddm/purity``).

Monitors see the full representation: :meth:`DDMPlugin.loss` replaces
``out["representation"]`` (the recipe's h^p of the first view) by the full h
of that view, which is what the engine's online probe is sized for and what
downstream probes of ``backbone.safetensors`` see.

Resume is exact: the critic and the bank are module state (checkpointed with
the model); the critic's Adam state, the sampling generator and the clustering
schedule are :meth:`DDMPlugin.extra_state`. Not supported: multi-process
(DDP) training, where each process would train its own critic.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from replens.ddm.backbone import DomainSplitBackbone
from replens.ddm.clustering import OutlierRule, RobustClustering, clustering_purity
from replens.ddm.critic import DomainCritic, critic_loss, encoder_invariance_loss
from replens.ddm.losses import domain_variant_loss
from replens.ssl.base import SSLMethod, TrainPlugin, register_plugin


def default_prefix_dim(feature_dim: int, prefix_fraction: float = 1 / 16) -> int:
    """k = round(r * prefix_fraction), at least 1 (24 of 384 in section 2.4.1)."""
    return max(1, round(feature_dim * prefix_fraction))


@register_plugin("ddm", "Domain-Disentanglement Module: domain prefix + Wasserstein critic (paper ch. 2)")
class DDMPlugin(TrainPlugin):
    """The DDM training plug-in (paper sections 2.4 and 2.5).

    Args:
        prefix_dim: k, the size of the domain prefix (default ``r * prefix_fraction``).
        prefix_fraction: k / r when ``prefix_dim`` is not given (1/16).
        temperature: tau of L_d_var's ``sim``. The paper does not give it; 0.5 (SimCLR's value on
            CIFAR): at 0.1 the prefix loss's pull (~1 / tau) dominated the critic's in short CPU
            runs on Colored-CIFAR and leaked more of the tint into h^p (domain share of h^p's
            variance 0.88 vs 0.71 at 0.5, 4 epochs of 2048 images).
        ssl_weight: lambda of Eq. 2.1, the weight of the SSL loss (0.5).
        variant_weight: Weight of L_d_var (1 in Eq. 2.1).
        invariance_weight: Weight of L_d_invar (1 in Eq. 2.1).
        critic_lr: Peak learning rate of the critic's Adam (0.005), cosine-annealed to 0.
        critic_hidden: Width of the critic's hidden layers.
        critic_layers: Number of hidden layers of the critic.
        critic_steps: Critic updates after each encoder step (5: n_critic of Gulrajani et al.'s
            Algorithm 1; the paper only says "alternating", and one update per step leaves the
            critic unable to measure anything in short runs).
        gp_weight: Gradient-penalty weight (10, Gulrajani et al.).
        num_pseudo_domains: M: discover M pseudo-domains by robust clustering
            instead of using the data's domain labels (section 2.5).
        warmup_fraction: Fraction of training before the first clustering.
        recluster_fraction: Fraction of training between clusterings.
        epsilon_start: Outlier threshold at the first clustering (1).
        epsilon_decay: epsilon's factor per re-clustering.
        outlier_rule: ``"eq2.2"`` or ``"second_nearest"`` (see ``replens.ddm.clustering``).
        kmeans_init: K-Means restarts.
        critic_normalize: Feed the critic h^p / ||h^p|| rather than h^p (the paper does not say).
            The critic is 1-Lipschitz (gradient penalty), so on raw features its pull on the
            encoder does not grow as features shrink, while the cosine-based L_d_var and SSL
            losses pull with 1 / ||h||; on the unit sphere all terms share one scale.
        seed: Seed of y_rand, of the gradient-penalty interpolation and of K-Means.
    """

    cli_options = {
        "ddm-domains": ("num_pseudo_domains", int,
                        "DDM without domain labels: discover M pseudo-domains by robust clustering (paper 2.5)"),
    }

    def __init__(self, prefix_dim: int | None = None, prefix_fraction: float = 1 / 16, temperature: float = 0.5,
                 ssl_weight: float = 0.5, variant_weight: float = 1.0, invariance_weight: float = 1.0,
                 critic_lr: float = 0.005, critic_hidden: int = 256, critic_layers: int = 2, critic_steps: int = 5,
                 gp_weight: float = 10.0, num_pseudo_domains: int | None = None, warmup_fraction: float = 0.2,
                 recluster_fraction: float = 0.1, epsilon_start: float = 1.0, epsilon_decay: float = 0.5,
                 outlier_rule: OutlierRule = "eq2.2", kmeans_init: int = 4, critic_normalize: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"ddm temperature must be positive, got {temperature}")
        if critic_steps < 0:
            raise ValueError(f"ddm critic_steps must be >= 0, got {critic_steps}")
        if num_pseudo_domains is not None and num_pseudo_domains < 2:
            raise ValueError(f"--ddm-domains needs M >= 2 pseudo-domains, got {num_pseudo_domains}")
        if not 0 <= warmup_fraction < 1 or not 0 < recluster_fraction <= 1:
            raise ValueError(f"need 0 <= warmup_fraction < 1 and 0 < recluster_fraction <= 1, got "
                             f"{warmup_fraction} and {recluster_fraction}")
        self.prefix_dim, self.prefix_fraction, self.temperature = prefix_dim, prefix_fraction, temperature
        self.ssl_weight, self.variant_weight, self.invariance_weight = ssl_weight, variant_weight, invariance_weight
        self.critic_lr, self.critic_hidden, self.critic_layers = critic_lr, critic_hidden, critic_layers
        self.critic_steps, self.gp_weight, self.critic_normalize = critic_steps, gp_weight, critic_normalize
        self.num_pseudo_domains = num_pseudo_domains
        self.warmup_fraction, self.recluster_fraction = warmup_fraction, recluster_fraction
        self.seed = seed
        self.clustering = (RobustClustering(num_pseudo_domains, epsilon_start, epsilon_decay, outlier_rule,
                                            n_init=kmeans_init, seed=seed) if num_pseudo_domains else None)
        self.generator = torch.Generator().manual_seed(seed)
        self.critic: DomainCritic | None = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None
        self._wrapper: list[DomainSplitBackbone] = []  # a plain list: not a sub-module of the plug-in
        self._cache: dict[str, torch.Tensor] = {}
        self._true_domains: np.ndarray | None = None
        self.history: list[dict[str, float]] = []
        self._last: dict[str, float] = {}

    # ---------------------------------------------------------------- engine hooks
    def wrap_backbone(self, backbone: nn.Module) -> nn.Module:
        """Hand the recipe h^p only (section 2.4); the prefix is read from the recorded forwards."""
        k = self.prefix_dim if self.prefix_dim is not None else default_prefix_dim(int(backbone.feature_dim),
                                                                                     self.prefix_fraction)
        wrapper = DomainSplitBackbone(backbone, k)
        self.prefix_dim = k
        self._wrapper = [wrapper]
        return wrapper

    @property
    def wrapper(self) -> DomainSplitBackbone:
        if not self._wrapper:
            raise RuntimeError("the ddm plug-in's wrap_backbone was not called before use")
        return self._wrapper[0]

    @property
    def num_domains(self) -> int:
        """M: the number of (pseudo-)domains the critic distinguishes."""
        if self.critic is None:
            raise RuntimeError("the ddm plug-in is not set up yet")
        return self.critic.num_domains

    def setup(self, method: SSLMethod, data_info: dict[str, Any]) -> None:
        """Build the critic (and, without labels, the representation bank) once the data is known."""
        wrapper = self.wrapper
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise ValueError("ddm: multi-process (DDP) training is not supported (each process would train its own "
                             "critic and cluster its own share of the data); train with devices=1")
        true_domains = np.asarray(data_info.get("domains", []), dtype=np.int64)
        num_true = int(data_info.get("num_domains", 0))
        num_samples = int(data_info.get("num_samples", len(true_domains)))
        if self.clustering is not None:
            num = self.clustering.num_clusters
            self._true_domains = true_domains if num_true > 1 and len(true_domains) == num_samples else None
            self.register_buffer("bank", torch.zeros(num_samples, wrapper.full_dim))
            self.register_buffer("bank_filled", torch.zeros(num_samples, dtype=torch.bool))
            self.register_buffer("pseudo_labels", torch.full((num_samples,), -1, dtype=torch.int64))
            self.register_buffer("clustered", torch.zeros(num_samples, dtype=torch.bool))
            counts = torch.ones(num)
        else:
            if num_true < 2:
                raise ValueError(f"ddm: the training data has {num_true} domain(s); DDM with domain labels needs "
                                 "at least 2 (use --ddm-domains M to discover M pseudo-domains instead)")
            if len(true_domains) and (true_domains.min() < 0 or true_domains.max() >= num_true):
                raise ValueError(f"ddm: domain labels must be in [0, {num_true - 1}], got "
                                 f"{sorted(set(true_domains.tolist()))[:10]}")
            num = num_true
            counts = torch.as_tensor(np.bincount(true_domains, minlength=num), dtype=torch.float32)
            if counts.sum() == 0:
                counts = torch.ones(num)
        self.register_buffer("domain_counts", counts)
        self.critic = DomainCritic(wrapper.feature_dim, num, self.critic_hidden, self.critic_layers)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr)
        wrapper.clear_records()
        wrapper.recording = True

    def private_parameters(self) -> list[nn.Parameter]:
        """The critic's parameters: trained by the plug-in's own Adam, never by the encoder's optimiser."""
        return list(self.critic.parameters()) if self.critic is not None else []

    def _full_h(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The full h of the views behind ``out["h"]`` from the wrapper's records."""
        hp = out["h"]
        records = self.wrapper.take_records()
        used, rows = [], 0
        for record in records:
            if rows >= hp.shape[0]:
                break
            used.append(record)
            rows += record.shape[0]
        if rows != hp.shape[0]:
            raise RuntimeError(f"ddm: the recipe's out['h'] has {hp.shape[0]} rows but the recorded forwards give "
                               f"{[r.shape[0] for r in records]}; out['h'] must be the first online forwards")
        full = used[0] if len(used) == 1 else torch.cat(used)
        if not torch.equal(full[:, self.prefix_dim:].detach(), hp.detach()):
            raise RuntimeError("ddm: out['h'] does not match the recorded online forwards (a recipe must return "
                               "the online backbone outputs of the main views as out['h'])")
        return full

    def _domain_prior(self) -> torch.Tensor:
        counts = self.domain_counts.float().cpu()
        return counts / counts.sum() if counts.sum() > 0 else torch.full_like(counts, 1 / len(counts))

    def _sample_y_rand(self, n: int, device: torch.device) -> torch.Tensor:
        """y_rand ~ P(y): the (pseudo-)domain label distribution of the training data."""
        return torch.multinomial(self._domain_prior(), n, replacement=True, generator=self.generator).to(device)

    def _batch_domains(self, batch: dict[str, Any], full: torch.Tensor, n_main: int) -> torch.Tensor:
        """Domain (or pseudo-domain, -1 = outlier/unknown) of each of the batch's samples."""
        index = batch["index"]
        if self.clustering is None:
            domains = batch["domain"].long()
            if bool(((domains < 0) | (domains >= self.num_domains)).any()):
                raise ValueError(f"ddm: batch domain labels {domains.unique().tolist()} are outside "
                                 f"[0, {self.num_domains - 1}]")
            return domains
        index = index.to(self.bank.device)
        per_sample = full.detach().float().view(n_main, -1, full.shape[1]).mean(0).to(self.bank.device)
        self.bank[index] = per_sample
        self.bank_filled[index] = True
        labels = self.pseudo_labels[index].clone()
        unseen = ~self.clustered[index]
        if self.clustering.centroids is not None and bool(unseen.any()):
            # samples the last clustering did not see: label them with its centroids and epsilon (Eq. 2.2)
            labels[unseen] = self.clustering.assign(per_sample[unseen]).to(labels.device)
        return labels.to(full.device)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any], step: int) -> dict[str, torch.Tensor]:
        """lambda-scaling of L_ssl, L_d_var on h^d and the encoder's L_d_invar on h^p (Eq. 2.1)."""
        full = self._full_h(out).float()
        batch_size = batch["index"].shape[0]
        if full.shape[0] % batch_size:
            raise RuntimeError(f"ddm: {full.shape[0]} representations for a batch of {batch_size}")
        n_main = full.shape[0] // batch_size
        # monitors (the engine's online probe, sized from the plain encoder) see the full representation h
        out["representation"] = full[:batch_size].detach()
        domains = self._batch_domains(batch, full, n_main).repeat(n_main)
        prefix, invariant = full[:, : self.prefix_dim], full[:, self.prefix_dim:]
        terms: dict[str, torch.Tensor] = {}
        if self.ssl_weight != 1.0:
            terms["ssl_scale"] = (self.ssl_weight - 1.0) * out["loss"]
        keep = domains >= 0
        active = self.clustering is None or self.clustering.centroids is not None
        zero = full.sum() * 0.0
        if active and int(keep.sum()) > 1:
            terms["d_var"] = self.variant_weight * domain_variant_loss(prefix, domains, self.temperature)
            y = domains[keep]
            y_rand = self._sample_y_rand(len(y), full.device)
            critic_in = self._critic_input(invariant[keep])
            terms["d_invar"] = self.invariance_weight * encoder_invariance_loss(self.critic, critic_in, y, y_rand)
            self._cache = {"h": critic_in.detach(), "y": y}
        else:
            terms["d_var"], terms["d_invar"] = zero, zero
            self._cache = {}
        return terms

    def _critic_input(self, invariant: torch.Tensor) -> torch.Tensor:
        """What the critic sees of h^p: L2-normalised per view (``critic_normalize``) or as is."""
        return F.normalize(invariant, dim=1) if self.critic_normalize else invariant

    def _critic_lr(self, step: int, total_steps: int) -> float:
        # cosine annealing as a pure function of the step (no scheduler state, so resume is exact by construction)
        return self.critic_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))

    def _critic_update(self, step: int, total_steps: int) -> dict[str, float]:
        optimizer = self.critic_optimizer
        if self._pending_optimizer_state is not None:  # loaded here, once the critic is on its final device
            optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None
        lr = self._critic_lr(step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        h, y = self._cache["h"], self._cache["y"]
        stats: dict[str, float] = {"critic_lr": lr}
        for _ in range(self.critic_steps):
            y_rand = self._sample_y_rand(len(y), h.device)
            alpha = torch.rand(len(y), generator=self.generator).to(h.device)
            with torch.enable_grad():
                loss, parts = critic_loss(self.critic, h, y, y_rand, alpha, self.gp_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            stats.update(critic_loss=float(loss.detach()), wasserstein=float(parts["wasserstein"]),
                         gp=float(parts["gp"]))
        return stats

    def _schedule(self, total_steps: int) -> tuple[int, int]:
        warmup = max(1, round(self.warmup_fraction * total_steps))
        every = max(1, round(self.recluster_fraction * total_steps))
        return warmup, every

    def _recluster(self, done: int) -> dict[str, float]:
        filled = self.bank_filled.nonzero().squeeze(1)
        if len(filled) < self.clustering.num_clusters:
            return {}
        labels = self.clustering.fit(self.bank[filled].cpu())
        pseudo = torch.full_like(self.pseudo_labels, -1)
        pseudo[filled] = torch.as_tensor(labels, device=pseudo.device)
        self.pseudo_labels.copy_(pseudo)
        self.clustered.copy_(self.bank_filled)
        assigned = labels[labels >= 0]
        self.domain_counts.copy_(torch.as_tensor(np.bincount(assigned, minlength=self.clustering.num_clusters)
                                                 if len(assigned) else np.ones(self.clustering.num_clusters)))
        record = {"step": float(done), "epsilon": float(self.clustering.last_epsilon),
                  "outlier_fraction": float((labels < 0).mean()), "clustered": float(len(filled))}
        if self._true_domains is not None:
            record["purity"] = clustering_purity(labels, self._true_domains[filled.cpu().numpy()])
        self.history.append(record)
        return record

    def after_step(self, step: int, total_steps: int, out: dict[str, torch.Tensor],
                   batch: dict[str, Any]) -> dict[str, float]:
        """Alternate: one (or ``critic_steps``) critic update(s); re-cluster when due (section 2.5)."""
        self.wrapper.clear_records()
        stats: dict[str, float] = {}
        if self._cache and self.critic_steps:
            stats.update(self._critic_update(step, total_steps))
        self._cache = {}
        if self.clustering is not None:
            done = step + 1
            warmup, every = self._schedule(total_steps)
            if done < total_steps and done >= warmup and (done - warmup) % every == 0:
                self._last = {k: v for k, v in self._recluster(done).items() if k != "step"}
            stats.update(self._last)
        return stats

    # ---------------------------------------------------------------- resume
    def extra_state(self) -> dict[str, Any]:
        """The critic's Adam state, the sampling generator and the clustering schedule."""
        optimizer_state = self._pending_optimizer_state
        if optimizer_state is None and self.critic_optimizer is not None:
            optimizer_state = self.critic_optimizer.state_dict()
        state: dict[str, Any] = {"critic_optimizer": optimizer_state, "generator": self.generator.get_state(),
                                 "history": [dict(r) for r in self.history], "last": dict(self._last)}
        if self.clustering is not None:
            state["clustering"] = self.clustering.state_dict()
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` (the optimiser state is applied at the next critic update)."""
        if not state:
            return
        self._pending_optimizer_state = state.get("critic_optimizer")
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self.history = [dict(r) for r in state.get("history", [])]
        self._last = dict(state.get("last", {}))
        if self.clustering is not None and state.get("clustering") is not None:
            self.clustering.load_state_dict(state["clustering"])

"""Orthogonal Gradient Descent (Farajtabar, Azizan, Mott, Li, AISTATS 2020), Algorithm 1.

    after task t:  for a sample of its examples x (n_examples), take the gradient of the model
                   OUTPUT (not the loss) with respect to all parameters,
                       GTL  ∇θ f_y(x)                 (ground-truth logit; the paper's choice)
                       ALL  ∇θ f_j(x) for every logit j of the task
                       AVE  ∇θ mean_j f_j(x)
                   orthonormalise each against the stored basis S (Gram–Schmidt, dropping
                   residuals that are ~0) and append it to S.
    every step:    g ← g − Σ_{v∈S} (g·v) v  =  g − Sᵀ(S g)   on the flattened loss gradient.

To first order a step along the projected gradient leaves f(x) unchanged for every stored x:
f(x; θ − ηg) = f(x; θ) − η ∇f(x)·g + O(η²) and ∇f(x)·g = 0 once g ⟂ ∇f(x).

The basis is one flat matrix S [k, P] (rows orthonormal, P = number of parameters): the memory
cost is 4·k·P bytes, k ≤ n_examples·(logits per example)·tasks. In Task-IL only the task's
own output units (its head) are used, as the loss does.

Factored storage (storage="factored", not in the paper; same projection, up to rounding). For a
model made only of nn.Linear layers (and elementwise activations), every stored gradient ∇θ f(x)
is rank one per layer l: ∂f/∂W_l = δ_l a_lᵀ and ∂f/∂b_l = δ_l, with a_l the layer's input for x
and δ_l = ∂f/∂z_l the gradient at its output. So the raw gradients G [k, P] are kept as factors
Δ_l [k, out_l] and A_l [examples, in_l], and the basis as S = C G with coefficients C [k, k]:
Gram–Schmidt runs on the Gram matrix K = G Gᵀ (float64, computed from the factors:
K_ij = Σ_l (Δ_l Δ_lᵀ)_ij ((A_l A_lᵀ)_ij + 1[bias])), and the projection is
g − Gᵀ Cᵀ C (G g), where G g and Gᵀ u are small per-layer matrix products. The loss gradient
of a batch of B examples has the same structure (W_l.grad = E_lᵀ X_l, rank ≤ B), so G g is
formed from the batch's own factors, (A_l X_lᵀ)(E_l) row-wise against Δ_l, in k·B·(in + out)
operations instead of k·in·out; only Gᵀ u needs a full per-layer product. It stores
k·Σ_l out_l + examples·Σ_l in_l numbers plus the k×k matrices C and K, instead of k·P, and a
step is several times faster (benchmarks/ogd_projection.py). Note what that store holds: the
first layer's factor a_1 IS the input image x, so the factored store contains the sampled
examples themselves; OGD's "no data is stored" is a property of the flat storage only.

Deferred projection (defer=True, factored storage under plain SGD; not in the paper; the same
updates in exact arithmetic, up to rounding in floats). The projection's change to a layer's
weights is Δᵀ diag(u) A, with u = Cᵀ C (G g) one number per stored vector, and Δ and A do not
change within a task. So instead of forming Δᵀ diag(u) A every step (k·in·out operations),
the step adds lr·u to a vector c [k] and the layer computes with W + Δᵀ diag(c) A and
b + Δᵀ c: x ↦ x Wᵀ + b + ((x Aᵀ) ⊙ c) Δ + cᵀΔ costs B·k·(in + out) for a batch of B, and
x Aᵀ is the product G g needs anyway. SGD then steps W with the raw gradient g, computed at the
corrected weights: W + Δᵀdiag(c + lr·u)A − lr·g = (W + Δᵀdiag(c)A) − lr·(g − Δᵀdiag(u)A), the
projected step. c is folded into W (and reset) at the end of each task, before any forward pass
without gradients (evaluation) and whenever the optimiser is rebuilt, so the model's weights are
the true ones wherever anything outside the training step looks at them. Momentum or weight
decay would act on the raw gradient, so any other optimiser projects W.grad every step instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from clrepro.config import ConfigError
from clrepro.methods import register
from clrepro.methods.base import Batch, Method

VARIANTS = ("GTL", "ALL", "AVE")
STORAGES = ("flat", "factored")


@dataclass(frozen=True)
class OGDParams:
    variant: str = "GTL"
    n_examples: int = 200  # examples per task whose output gradients are stored
    tolerance: float = 1e-4  # drop a vector whose residual norm is below tolerance × its norm
    chunk: int = 50  # examples per vmap call (bounds the memory of per-example gradients)
    storage: str = "flat"  # "flat": the paper's S [k, P]; "factored": per-layer factors (Linear-only models)
    defer: bool = True  # factored storage under plain SGD: keep the projection's weight change as k coefficients

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"method_params.variant: unknown {self.variant!r}; one of {VARIANTS}")
        if self.n_examples < 1:
            raise ConfigError(f"method_params.n_examples: must be >= 1, got {self.n_examples}")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"method_params.tolerance: must be in (0, 1), got {self.tolerance}")
        if self.chunk < 1:
            raise ConfigError(f"method_params.chunk: must be >= 1, got {self.chunk}")
        if self.storage not in STORAGES:
            raise ConfigError(f"method_params.storage: unknown {self.storage!r}; one of {STORAGES}")


def output_gradients(model, x: torch.Tensor, y: torch.Tensor, variant: str,
                     units: torch.Tensor | None = None, chunk: int = 50) -> torch.Tensor:
    """Per-example gradients of the model output w.r.t. all parameters, flattened: [m, P].

    GTL: one row per example (∇ f_y); AVE: one row per example (∇ mean over `units`); ALL: one
    row per example and unit (example-major). `units` are the logits the task uses (None: all).
    """
    names = [k for k, _ in model.named_parameters()]
    params = {k: v.detach() for k, v in model.named_parameters()}

    def outputs(p, xi):
        out = functional_call(model, p, (xi.unsqueeze(0),))[0]
        return out if units is None else out[units]

    def truth_logit(p, xi, yi):  # y holds output-unit indices, so index the full output
        return functional_call(model, p, (xi.unsqueeze(0),))[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    def flatten(per_param: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
        return torch.cat([per_param[k].reshape(lead, -1) for k in names], dim=1)

    rows = []
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        if variant == "GTL":
            rows.append(flatten(vmap(grad(truth_logit), in_dims=(None, 0, 0))(params, xb, yb), len(xb)))
        elif variant == "AVE":
            g = vmap(grad(lambda p, xi: outputs(p, xi).mean()), in_dims=(None, 0))(params, xb)
            rows.append(flatten(g, len(xb)))
        elif variant == "ALL":
            jac = vmap(jacrev(outputs), in_dims=(None, 0))(params, xb)  # name → [n, units, *shape]
            n_units = next(iter(jac.values())).shape[1]
            rows.append(flatten(jac, len(xb) * n_units))
        else:
            raise ValueError(f"unknown OGD variant {variant!r}")
    return torch.cat(rows)


def extend_orthonormal_basis(basis: torch.Tensor, vectors: torch.Tensor, tolerance: float,
                             block: int = 32) -> torch.Tensor:
    """Append to the orthonormal rows of `basis` [k, P] the Gram–Schmidt residuals of `vectors`
    [m, P] that are not ~0 (norm below tolerance × the vector's norm); returns [k + m', P].

    Block classical Gram–Schmidt, each projection applied twice ("twice is enough" in float32):
    the new vectors against the stored basis, then `block` at a time against the vectors already
    accepted (matrix–matrix products, fast), then one by one inside the block.
    """
    norms = vectors.norm(dim=1)
    residual = vectors.clone()
    if len(basis):
        for _ in range(2):
            residual -= (residual @ basis.T) @ basis
    out = torch.empty_like(residual)
    count = 0
    for start in range(0, len(residual), block):
        chunk = residual[start:start + block]
        for _ in range(2):  # against everything accepted from earlier chunks
            chunk -= (chunk @ out[:count].T) @ out[:count]
        first = count
        for v, norm in zip(chunk, norms[start:start + block], strict=True):
            for _ in range(2):  # against what this chunk has accepted so far
                v = v - (out[first:count] @ v) @ out[first:count]
            r = v.norm()
            if norm > 0 and r > tolerance * norm:
                out[count] = v / r
                count += 1
    return torch.cat([basis, out[:count]]) if count else basis


def project_out(g: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """g − Sᵀ(S g): the component of g orthogonal to every row of the orthonormal basis S."""
    return g - basis.T @ (basis @ g)


def extend_orthonormal_coefficients(coef: torch.Tensor, gram: torch.Tensor, m: int, tolerance: float,
                                    block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """extend_orthonormal_basis on S = C G, done on coefficients: the raw vectors G [n, P] are seen
    only through their Gram matrix K = G Gᵀ [n, n] (float64), whose last m rows are the new vectors.

    coef: C [r, n − m], rows orthonormal under K (S Sᵀ = C K Cᵀ = I). Returns the new C [r', n]
    and a bool mask over the m new vectors, True where one was accepted (a rejected one has an
    all-zero column in C). Same rule and order as the flat path: two projections against the
    stored basis, then block by block, then one by one inside the block; a residual c is kept
    when sqrt(cᵀ K c) > tolerance · sqrt(K_ii). Each candidate c carries y = K c along, so an
    inner product with a basis row is y·c_q and no step costs more than O(n) per basis row.
    """
    n = gram.shape[0]
    old = n - m
    coef = torch.cat([coef, coef.new_zeros(len(coef), m)], dim=1)
    dual = coef @ gram  # W = C K: S_q · (G c) = W_q · c
    residual = torch.zeros(m, n, dtype=gram.dtype, device=gram.device)
    residual[:, old:] = torch.eye(m, dtype=gram.dtype, device=gram.device)
    carried = gram[old:].clone()  # K c for each candidate c
    norms = gram.diagonal()[old:].clamp(min=0).sqrt()
    if len(coef):
        for _ in range(2):
            h = carried @ coef.T
            residual -= h @ coef
            carried -= h @ dual
    out, out_dual = torch.empty_like(residual), torch.empty_like(residual)
    keep = torch.zeros(m, dtype=torch.bool, device=gram.device)
    count = 0
    for start in range(0, m, block):
        chunk, chunk_k = residual[start:start + block], carried[start:start + block]
        for _ in range(2):  # against everything accepted from earlier chunks
            h = chunk_k @ out[:count].T
            chunk -= h @ out[:count]
            chunk_k -= h @ out_dual[:count]
        first = count
        for j, (v, vk) in enumerate(zip(chunk, chunk_k, strict=True)):
            for _ in range(2):  # against what this chunk has accepted so far
                h = out[first:count] @ vk
                v, vk = v - h @ out[first:count], vk - h @ out_dual[first:count]
            r = (v @ vk).clamp(min=0).sqrt()
            norm = norms[start + j]
            if norm > 0 and r > tolerance * norm:
                out[count], out_dual[count] = v / r, vk / r
                keep[start + j] = True
                count += 1
    return torch.cat([coef, out[:count]]), keep


@dataclass
class LinearFactors:
    """One nn.Linear's share of the stored raw gradients: row i is δ_i a_{ex(i)}ᵀ (weight), δ_i (bias)."""

    module: nn.Linear
    weight: bool  # the weight is trained (so its inputs are stored)
    bias: bool  # there is a trained bias
    delta: torch.Tensor  # Δ [k, out]: ∂f_i/∂z, one row per raw vector
    inputs: torch.Tensor | None  # A [examples, in]: the layer's input, one row per stored example


def _linear_layers(model: nn.Module, trainable: list[torch.Tensor]) -> list[LinearFactors]:
    """The nn.Linear modules holding the trainable parameters; ConfigError if one is not in one."""
    layers, owned = [], set()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.requires_grad
            bias = module.bias is not None and module.bias.requires_grad
            if weight or bias:
                if any(id(p) in owned for p in module.parameters()):  # tied: its gradient is a sum of terms
                    raise ConfigError("method_params.storage: 'factored' needs each parameter in one nn.Linear")
                layers.append(LinearFactors(module, weight, bias, module.weight.new_zeros(0, module.out_features),
                                            module.weight.new_zeros(0, module.in_features) if weight else None))
                owned |= {id(p) for p in module.parameters() if p.requires_grad}
    names = {id(p): name for name, p in model.named_parameters()}
    stray = [names.get(id(p), "?") for p in trainable if id(p) not in owned]
    if stray:
        raise ConfigError(f"method_params.storage: 'factored' needs a model whose trainable parameters are all "
                          f"nn.Linear weights and biases; not so for {stray}")
    return layers


@register
class OGD(Method):
    name = "ogd"
    Params = OGDParams

    def __init__(self, model, stream, params) -> None:
        super().__init__(model, stream, params)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self._params)
        first = self._params[0]
        self._basis = torch.zeros(0, self.n_params, dtype=first.dtype, device=first.device)  # S (flat storage)
        self.basis_sizes: list[int] = []  # k after each task (the storage-cost figure)
        self.stored_bytes: list[int] = []  # memory_bytes after each task
        # Deferred projection (factored storage): the optimiser, set by make_optimizer when it is
        # plain SGD, and the coefficients c not yet folded into the weights.
        self._deferring: torch.optim.SGD | None = None
        self._pending = torch.zeros(0, dtype=first.dtype, device=first.device)
        self._pending_active = False
        if params.storage == "factored":
            self._layers = _linear_layers(model, self._params)
            self._example_of = torch.zeros(0, dtype=torch.long, device=first.device)  # raw vector → stored example
            self._one_per_example = True  # example_of is arange: skip the gathers
            self._gram = torch.zeros(0, 0, dtype=torch.float64, device=first.device)  # K = G Gᵀ
            self._coef = torch.zeros(0, 0, dtype=torch.float64, device=first.device)  # C: S = C G
            self._coef_fast = self._coef.to(first.dtype)  # C in the parameters' dtype, for the projection
            self._coef_lower = True  # C is lower triangular (see _normal_product)
            # The training batch's factors (layer input X, gradient at the output E), captured by
            # hooks during `loss` and its backward pass, so G g never touches W.grad.
            self._batch_inputs: dict[int, torch.Tensor] = {}
            self._batch_grads: dict[int, torch.Tensor] = {}
            self._capturing = False
            self._batch_products: dict[int, torch.Tensor] = {}  # each layer's x Aᵀ of the batch
            for i, layer in enumerate(self._layers):
                layer.module.register_forward_pre_hook(self._fold_before_evaluation)
                layer.module.register_forward_hook(self._batch_hook(i))

    def _batch_hook(self, index: int):
        def hook(module, args, out):
            x = args[0]
            if self._pending_active:
                out = out + self._correction(index, x)
            if not self._capturing or not out.requires_grad:
                return out
            if index in self._batch_inputs or x.dim() != 2:  # not one rank-B term: use W.grad
                self._batch_inputs[index] = None
                return out
            self._batch_inputs[index] = x.detach()
            out.register_hook(lambda g: self._batch_grads.__setitem__(index, g.detach()))
            return out
        return hook

    # --- deferred projection --------------------------------------------------------------
    def make_optimizer(self, cfg):
        self._fold()
        optimizer = super().make_optimizer(cfg)
        plain_sgd = cfg.optimizer == "sgd" and cfg.momentum == 0 and cfg.weight_decay == 0
        self._deferring = optimizer if self.params.storage == "factored" and self.params.defer and plain_sgd else None
        return optimizer

    def _correction(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """((x Aᵀ) ⊙ c) Δ + cᵀΔ: what Δᵀ diag(c) A adds to this layer's output for input x."""
        layer = self._layers[index]
        correction = 0
        if layer.weight:
            products = x @ layer.inputs.T  # [B, examples]
            if not self._one_per_example:
                products = products[..., self._example_of]
            if self._capturing:
                self._batch_products[index] = products.detach()
            correction = (products * self._pending) @ layer.delta
        if layer.bias:
            correction = correction + self._pending @ layer.delta
        return correction

    def _fold_before_evaluation(self, module, args) -> None:
        if self._pending_active and not torch.is_grad_enabled():
            self._fold()

    @torch.no_grad()
    def _fold(self) -> None:
        """W ← W + Δᵀ diag(c) A, b ← b + Δᵀ c, c ← 0: the weights the steps so far have made."""
        if not self._pending_active:
            return
        for layer in self._layers:
            w = layer.module
            if layer.weight:
                w.weight.addmm_(self._weighted(layer, self._pending).T, layer.inputs)
            if layer.bias:
                w.bias.addmv_(layer.delta.T, self._pending)
        self._pending.zero_()
        self._pending_active = False

    def _weighted(self, layer: LinearFactors, u: torch.Tensor) -> torch.Tensor:
        """diag(u) Δ with rows summed per stored example: [examples, out], against A's rows."""
        weighted = layer.delta * u[:, None]
        if not self._one_per_example:  # ALL: sum the rows of one example, which share its a
            weighted = weighted.new_zeros(len(layer.inputs), weighted.shape[1]).index_add_(
                0, self._example_of, weighted)
        return weighted

    def loss(self, batch: Batch) -> torch.Tensor:
        if self.params.storage != "factored" or self.rank == 0:
            return super().loss(batch)
        self._batch_inputs.clear()
        self._batch_grads.clear()
        self._batch_products.clear()
        self._capturing = True
        try:
            return super().loss(batch)
        finally:
            self._capturing = False

    @property
    def basis(self) -> torch.Tensor:
        """S [r, P], rows orthonormal, in model.parameters() order. Flat storage: the stored tensor.
        Factored storage: materialised from the factors on each access (r·k·P work, r·P memory)."""
        if self.params.storage == "flat":
            return self._basis
        return self._materialise()

    @property
    def rank(self) -> int:
        return len(self._basis) if self.params.storage == "flat" else len(self._coef)

    @property
    def flat_bytes(self) -> int:
        """What the paper's flat S [r, P] takes, for either storage."""
        return self.rank * self.n_params * self._params[0].element_size()

    @property
    def memory_bytes(self) -> int:
        """What is actually stored: flat S; or factors, coefficients (float64 and a fast copy) and K."""
        if self.params.storage == "flat":
            return self._basis.numel() * self._basis.element_size()
        tensors = [self._example_of, self._gram, self._coef, self._coef_fast]
        for layer in self._layers:
            tensors += [layer.delta] + ([] if layer.inputs is None else [layer.inputs])
        return sum(t.numel() * t.element_size() for t in tensors)

    def transform_gradients(self, batch: Batch) -> None:
        if self.rank == 0:  # nothing stored yet: plain SGD, bit for bit
            return
        if self.params.storage == "factored":
            self._project_factored()
            return
        grads = [p.grad for p in self._params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        projected = project_out(flat, self._basis)
        for g, v in zip(grads, projected.split([g.numel() for g in grads]), strict=True):
            g.copy_(v.view_as(g))

    def end_task(self, task, x, y) -> None:
        if self.params.storage == "factored":
            self._fold()  # the true weights, before their output gradients are taken
        n = min(self.params.n_examples, len(x))
        idx = torch.randperm(len(x), device=x.device)[:n]
        mask = self._masks[task.index]
        units = None if mask is None else mask.nonzero().flatten()
        was_training = self.model.training
        self.model.eval()  # deterministic outputs (dropout off) for the stored gradients
        if self.params.storage == "factored":
            deltas, inputs, example_of = self._output_factors(x[idx], y[idx], units)
            self.model.train(was_training)
            self._extend_factored(deltas, inputs, example_of)
            self.basis_sizes.append(self.rank)
            self.stored_bytes.append(self.memory_bytes)
            return
        vectors = output_gradients(self.model, x[idx], y[idx], self.params.variant, units, self.params.chunk)
        self.model.train(was_training)
        self._basis = extend_orthonormal_basis(self._basis, vectors.to(self._basis.dtype), self.params.tolerance)
        self.basis_sizes.append(len(self._basis))
        self.stored_bytes.append(self.memory_bytes)

    # --- factored storage ----------------------------------------------------------------
    def _output_factors(self, x: torch.Tensor, y: torch.Tensor, units: torch.Tensor | None
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The output gradients of `output_gradients`, as factors: per layer Δ [m, out] (one row per
        raw vector, same rows and order) and A [len(x), in], and the example of each row [m]."""
        modules = [layer.module for layer in self._layers]
        deltas: list[list[torch.Tensor]] = [[] for _ in modules]
        inputs: list[list[torch.Tensor]] = [[] for _ in modules]
        captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def capture(index):
            def hook(module, args, out):
                if index in captured or args[0].dim() != 2:  # then ∂f/∂W is not one rank-one term
                    raise ConfigError("method_params.storage: 'factored' needs each nn.Linear applied once "
                                      "per forward pass to a [batch, features] input")
                captured[index] = (args[0].detach().clone(), out)
                return out.clone()  # keeps `out` intact should a later layer work in place
            return hook

        rows_per_example = 1
        for start in range(0, len(x), self.params.chunk):
            xb, yb = x[start:start + self.params.chunk], y[start:start + self.params.chunk]
            captured.clear()
            handles = [m.register_forward_hook(capture(i)) for i, m in enumerate(modules)]
            try:
                with torch.enable_grad():
                    out = self.model(xb)
            finally:
                for h in handles:
                    h.remove()
            outs = [captured[i][1] for i in range(len(modules))]
            # Examples do not interact (no batch norm), so the gradient of a sum over the batch at
            # z_l holds each example's own δ_l in its row.
            if self.params.variant == "GTL":
                functionals = [out.gather(1, yb[:, None]).sum()]
            elif self.params.variant == "AVE":
                functionals = [(out if units is None else out[:, units]).mean(1).sum()]
            else:  # ALL: one backward per unit, never per example
                chosen = torch.arange(out.shape[1], device=out.device) if units is None else units
                functionals = [out[:, u].sum() for u in chosen]
            rows_per_example = len(functionals)
            per_unit = [torch.autograd.grad(f, outs, retain_graph=j + 1 < len(functionals))
                        for j, f in enumerate(functionals)]
            for i, layer in enumerate(self._layers):
                d = torch.stack([g[i] for g in per_unit], dim=1)  # [chunk, units, out]: example-major rows
                deltas[i].append(d.reshape(-1, d.shape[-1]))
                if layer.weight:
                    inputs[i].append(captured[i][0])
            captured.clear()
        example_of = torch.arange(len(x), device=x.device).repeat_interleave(rows_per_example)
        return ([torch.cat(d) for d in deltas], [torch.cat(a) if a else None for a in inputs], example_of)

    def _extend_factored(self, deltas: list[torch.Tensor], inputs: list[torch.Tensor | None],
                         example_of: torch.Tensor) -> None:
        """Gram rows of the new raw vectors (float64, from the factors), Gram–Schmidt on
        coefficients, then keep the factors of the accepted vectors only."""
        old, m = len(self._coef), len(example_of)
        n_examples = max((len(la.inputs) for la in self._layers if la.inputs is not None), default=0)
        all_examples = torch.cat([self._example_of, example_of + n_examples])
        rows = torch.zeros(m, old + m, dtype=torch.float64, device=example_of.device)
        for layer, d, a in zip(self._layers, deltas, inputs, strict=True):
            d64 = d.double()
            term = d64 @ torch.cat([layer.delta.double(), d64]).T
            if layer.weight:
                a64 = a.double()
                products = (a64 @ torch.cat([layer.inputs.double(), a64]).T)[example_of][:, all_examples]
                term *= products + 1 if layer.bias else products
            rows += term
        gram = rows.new_empty(old + m, old + m)
        gram[:old, :old] = self._gram
        gram[old:] = rows
        gram[:old, old:] = rows[:, :old].T
        gram[old:, old:] = (rows[:, old:] + rows[:, old:].T) / 2  # exactly symmetric
        coef, keep = extend_orthonormal_coefficients(self._coef, gram, m, self.params.tolerance)
        # A rejected vector has a zero column in C: drop it, and any example left without a row.
        kept = torch.cat([torch.ones(old, dtype=torch.bool, device=keep.device), keep])
        self._gram = gram[kept][:, kept]
        self._coef = coef[:, kept]
        self._coef_fast = self._coef.to(self._params[0].dtype)
        self._coef_lower = bool((self._coef_fast.triu(1) == 0).all())  # always, by construction (tested)
        self._pending = self._coef_fast.new_zeros(len(self._coef_fast))
        used, local = torch.unique(example_of[keep], return_inverse=True)
        self._example_of = torch.cat([self._example_of, local + n_examples])
        self._one_per_example = torch.equal(self._example_of, torch.arange(len(self._example_of),
                                                                           device=self._example_of.device))
        for layer, d, a in zip(self._layers, deltas, inputs, strict=True):
            layer.delta = torch.cat([layer.delta, d[keep]])
            if layer.weight:
                layer.inputs = torch.cat([layer.inputs, a[used]])

    def _project_factored(self) -> None:
        """g ← g − Gᵀ Cᵀ C (G g), with G g and Gᵀ u as per-layer products of the factors; when
        deferring, W.grad stays g and c ← c + lr·u instead (see the module docstring)."""
        gg = self._coef_fast.new_zeros(len(self._coef_fast))
        for i, layer in enumerate(self._layers):
            w = layer.module
            if layer.weight:
                x_batch, e_batch = self._batch_inputs.get(i), self._batch_grads.get(i)
                products = self._batch_products.get(i)
                if x_batch is not None and e_batch is not None and products is not None:
                    at = products.T @ e_batch  # the forward pass's x Aᵀ, one row per raw vector
                elif x_batch is not None and e_batch is not None:  # W.grad = Eᵀ X: A W.gradᵀ = (A Xᵀ) E
                    at = (layer.inputs @ x_batch.T) @ e_batch
                else:
                    at = layer.inputs @ w.weight.grad.T  # [examples, out]: smaller than Δ W.grad [k, in]
                if products is None and not self._one_per_example:
                    at = at[self._example_of]
                gg += (layer.delta * at).sum(1)
            if layer.bias:
                gg.addmv_(layer.delta, w.bias.grad)
        u = self._normal_product(gg)
        if self._deferring is not None:
            self._pending.add_(u, alpha=self._deferring.param_groups[0]["lr"])
            self._pending_active = True
            return
        for layer in self._layers:
            w = layer.module
            if layer.weight:
                w.weight.grad.addmm_(self._weighted(layer, u).T, layer.inputs, alpha=-1)
            if layer.bias:
                w.bias.grad.addmv_(layer.delta.T, u, alpha=-1)

    def _normal_product(self, gg: torch.Tensor, block: int = 256) -> torch.Tensor:
        """Cᵀ (C gg): two products with C, not one with CᵀC (C is well scaled, CᵀC = K⁻¹ is not,
        in float32). Gram–Schmidt makes C lower triangular (vector i combines raw vectors ≤ i),
        so one pass over its nonzero half does both, a block of rows at a time while the block
        is in cache: a quarter of the memory traffic of two full products, which bound the step."""
        coef = self._coef_fast
        if not self._coef_lower:
            return coef.T @ (coef @ gg)
        u = torch.zeros_like(gg)
        for start in range(0, len(coef), block):
            end = min(start + block, len(coef))
            rows = coef[start:end, :end]
            u[:end].addmv_(rows.T, rows @ gg[:end])
        return u

    def stored_gradients(self, rows: slice = slice(None), dtype: torch.dtype | None = None) -> torch.Tensor:
        """Factored storage: the raw gradients G [k, P] (model.parameters() order), rebuilt densely
        (the products δ aᵀ formed in `dtype`, by default the parameters')."""
        if self.params.storage != "factored":
            raise ValueError("stored_gradients: the flat storage keeps only the basis")
        owner = {}
        for layer in self._layers:
            if layer.weight:
                owner[id(layer.module.weight)] = (layer, True)
            if layer.bias:
                owner[id(layer.module.bias)] = (layer, False)
        example_of = self._example_of[rows]
        parts = []
        for p in self._params:
            layer, is_weight = owner[id(p)]
            d = layer.delta[rows].to(dtype)
            if is_weight:
                d = (d[:, :, None] * layer.inputs[example_of].to(dtype)[:, None, :]).flatten(1)
            parts.append(d)
        return torch.cat(parts, dim=1)

    def _materialise(self, chunk: int = 256) -> torch.Tensor:
        """S = C G as a flat [r, P] tensor, accumulated in float64 over chunks of raw vectors."""
        first = self._params[0]
        basis = torch.zeros(len(self._coef), self.n_params, dtype=torch.float64, device=first.device)
        for start in range(0, len(self._example_of), chunk):
            rows = slice(start, start + chunk)
            # float64 products: K was computed from the unrounded δ_i a_iᵀ, and C amplifies any mismatch
            basis.addmm_(self._coef[:, rows], self.stored_gradients(rows, torch.float64))
        return basis.to(first.dtype)

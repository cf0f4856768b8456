"""How a conjugate prior enters each covariance model's M-step: mclust's ``priorControl()`` rules.

With a prior (:class:`jaxgmm.ConjugatePrior`: mean ``μ₀``, shrinkage ``κ``,
degrees of freedom ``ν``, scale ``Λ``), MAP-EM's M-step is the model's own
maximum-likelihood M-step applied to *posterior* statistics
(:func:`jaxgmm.conjugate.conjugate_posterior`)::

    Ψ_k = s_k Λ + W_k + κ n_k / (κ + n_k) · (x̄_k − μ₀)(x̄_k − μ₀)ᵀ     (the scatter)
    ñ_k = n_k + a_k                                                    (the count)

``W_k`` is the scatter about the component's sample mean ``x̄_k``. Each model
says two things, read off mclust's Fortran routines (``me*p``, the EM loops
that ``me(..., prior = priorControl())`` runs):

* ``shared_scale``: whether ``Λ`` is added once to the model (``s_k = 1/K``;
  EEE, EEI, EII) or to every component's scatter (``s_k = 1``);
* ``pseudo_count(ν, t, K, D)``: the extra count ``a_k`` of each component,
  with ``t = 1`` when ``κ > 0`` (each mean's Normal prior) and ``0`` otherwise.

Whatever the rule, the M-step is then the exact maximiser of the expected
complete-data log-posterior with the prior kernel

    log p(θ) = Σ_k [(α − 1) log π_k
               − ½ (a_k log|Σ_k| + s_k tr(Λ Σ_k⁻¹) + κ (μ_k − μ₀)ᵀ Σ_k⁻¹ (μ_k − μ₀))]

(the means' optimum ``(κ μ₀ + n_k x̄_k)/(κ + n_k)`` does not depend on
``Σ_k``, and the covariance part is the model's ML problem with ``Ψ_k, ñ_k``),
so MAP-EM never decreases the log-posterior — for the closed forms and the
warm-started iterative M-steps alike. For VVV, EEE, VII and VVI this kernel is
the Normal–inverse-Wishart (inverse-gamma) density of Fraley & Raftery
(2007); for the other models it is mclust's choice of pseudo-counts.

Where jaxgmm differs from mclust 6.0.0, on purpose:

* **EII**: mclust's ``meeiip`` never adds the scale (its log-prior uses it,
  its M-step does not; its one-feature twin ``me1ep`` and VII do). Here it
  is added, ``σ² = (ς + Σ_k tr S_k) / (ν + 2 + (n + tK) D)``; with
  ``scale = 0`` the two agree (tested).
* **EEI**: mclust's ``meeeip`` leaves the means unshrunk (``x̄_k``) while
  its scatter includes the shrinkage term, which is not the maximiser of
  any log-posterior. Here the means are shrunk as in every other model; with
  ``shrinkage = 0`` the two agree (tested).

mclust gives no prior for VEE, EVE, VVE and EVV (their M-steps came later,
in ``mclust2.f``); jaxgmm refuses them too (``CovarianceModel.prior_rule``
is ``None``).
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class PriorRule:
    """How a conjugate prior enters one covariance model's M-step (see the module docstring).

    Attributes
    ----------
    shared_scale : bool
        The prior's scale is added once to the model (split over the ``K``
        active components) instead of once per component.
    pseudo_count : callable
        ``pseudo_count(dof, t, n_active, n_features)`` — the extra count
        ``a_k`` of every active component; ``t`` is 1 when the shrinkage is
        positive, else 0. Traced scalars in, a traced scalar out.
    mclust_routine : str
        The mclust Fortran routine whose M-step this follows.
    """

    shared_scale: bool
    pseudo_count: Callable
    mclust_routine: str

    def scale_share(self, n_active):
        """``s_k`` of an active component: 1, or ``1/K`` for a scale shared by the model."""
        return 1.0 / n_active if self.shared_scale else 1.0


# letters -> rule. nu = ν, t = [κ > 0], k = active components, d = features.
MAP_RULES = {
    "VVV": PriorRule(False, lambda nu, t, k, d: nu + d + 1 + t, "mevvvp"),
    "EEE": PriorRule(True, lambda nu, t, k, d: (nu + d + 1) / k + t, "meeeep"),
    "VII": PriorRule(False, lambda nu, t, k, d: (nu + 2) / d + t, "meviip"),
    "EII": PriorRule(True, lambda nu, t, k, d: (nu + 2) / (d * k) + t, "meeiip"),
    "VVI": PriorRule(False, lambda nu, t, k, d: nu + 2 + t, "mevvip"),
    "EEI": PriorRule(True, lambda nu, t, k, d: (nu + 1 + t) / k, "meeeip"),
    "EVI": PriorRule(False, lambda nu, t, k, d: (nu + 1 + t) / k, "meevip"),
    "VEI": PriorRule(False, lambda nu, t, k, d: (nu + 2 + t) / d, "meveip"),
    "EEV": PriorRule(False, lambda nu, t, k, d: (nu + d + 1 + t) / k, "meeevp"),
    # mclust's mevevp adds the scale to each scatter and keeps the counts: ν plays no part.
    "VEV": PriorRule(False, lambda nu, t, k, d: 0.0 * nu, "mevevp"),
}
"""mclust's rule per model (by its letters); VEE, EVE, VVE and EVV have none."""

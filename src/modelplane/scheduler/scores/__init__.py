"""Node score plugins. Importing this package registers every scorer by name in ``scoring``.

``random``, ``dotprod``, ``gpuclustering``, ``gpupacking``, ``bestfit`` and ``fgd`` reproduce the
baselines of the FGD paper (Weng et al., USENIX ATC'23) as defined in the authors' simulator;
``DEFAULT_SCORER`` is the placement score the live scheduler uses unless told otherwise: FGD, the
best of them on every openb trace (benchmarks/fgd_openb.py). Like the reference, it expects ties to
go to the first node of a fixed order (e.g. by name), which packs equal-score nodes.
``fgd_plus`` is FGD with those ties broken towards the fuller node (best fit) first; it is a
candidate, not the default, until it beats the published FGD on every openb trace.
"""

from __future__ import annotations

from modelplane.scheduler.scores import (
    bestfit,
    dotprod,
    fgd,
    fgd_plus,
    gpuclustering,
    gpupacking,
    random_score,
)

DEFAULT_SCORER = "fgd"

__all__ = ["DEFAULT_SCORER", "bestfit", "dotprod", "fgd", "fgd_plus", "gpuclustering", "gpupacking", "random_score"]

"""``python -m modelplane.data.pipeline run SPEC.yaml [--lineage-url URL] [-- BEAM ARGS]``.

Prints the run report as one JSON object; a bad spec or a failed run exits 2 with the reason and
the fix on stderr (no traceback). Arguments after ``--`` go to Beam (``--runner=FlinkRunner``...).
"""

from __future__ import annotations

import argparse
import json
import sys

from modelplane.core.errors import ModelplaneError


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    beam_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, beam_args = args[:cut], args[cut + 1:]
    ap = argparse.ArgumentParser(prog="python -m modelplane.data.pipeline")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a pipeline to completion")
    r.add_argument("spec", nargs="?", help="pipeline YAML or Pipeline manifest; omit with --from-env")
    r.add_argument("--from-env", action="store_true", help="read the definition from $MODELPLANE_PIPELINE_SPEC")
    r.add_argument("--lineage-url", default=None, help="lineage DB URL (default: $MODELPLANE_LINEAGE_URL)")
    ns = ap.parse_args(args)

    from modelplane.data.pipeline import from_env, from_file
    from modelplane.data.pipeline.runner import run

    try:
        if ns.from_env == bool(ns.spec):
            raise ModelplaneError("give either SPEC.yaml or --from-env.", hint="e.g. run examples/pipeline.yaml")
        defn = from_env() if ns.from_env else from_file(ns.spec)

        def log(phase: str, info: dict[str, object]) -> None:
            if phase != "done":
                print(f"[pipeline {defn.name}] {phase}", file=sys.stderr, flush=True)

        report = run(defn, lineage_url=ns.lineage_url, beam_args=beam_args, progress=log)
    except ModelplaneError as exc:
        print(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`make bench`: what the guard costs per request, side by side with bare
Envoy, Envoy's native peers, Lua, ext_authz and a no-op Wasm filter, and how
it scales with keys and CIDRs. See bench/README.md for the method and the
choices made. Run through bench/run.sh (it installs wrk and valgrind and
builds the filters, tools and the ext_authz service).

  bench.py [OPTIONS]               the main run (`bench.py --help`)
  bench.py focus [ROUNDS]          the allow-path ladder, many rounds (default 16)
  bench.py scale-focus [ROUNDS]    the scale check, many rounds (default 16)
  bench.py metered [--smoke]       the metered path (token budgets, model rules)
                                   over the header-only path (`metered --help`)
  bench.py --report-from FILE      rebuild results.md and the chart from a results.json

The harness lives in bench/harness/: configs (every Envoy configuration,
from envoy/local/envoy.yaml.tmpl), envoy (processes), load (load
generators), plan (cases, bundles, sanity check, reloads), callgrind
(instruction counts, native decision), report (results.md, chart), run (the
main run), focus (the focused runs), metered (`bench.py metered`).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.focus import focus, scale_focus  # noqa: E402
from harness import metered  # noqa: E402
from harness.run import add_arguments, run  # noqa: E402

SUBCOMMANDS = {"focus": focus, "scale-focus": scale_focus}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "metered":
        ap = argparse.ArgumentParser(prog="bench.py metered", description=metered.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        metered.add_arguments(ap)
        metered.metered(ap.parse_args(sys.argv[2:]))
        return
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        ap = argparse.ArgumentParser(prog=f"bench.py {sys.argv[1]}", description=SUBCOMMANDS[sys.argv[1]].__doc__)
        ap.add_argument("rounds", type=int, nargs="?", default=16, help="interleaved rounds × 3 s (default 16)")
        args = ap.parse_args(sys.argv[2:])
        SUBCOMMANDS[sys.argv[1]](args.rounds)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    run(ap.parse_args())


if __name__ == "__main__":
    main()

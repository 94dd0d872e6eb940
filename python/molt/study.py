"""molt-study: study trained MOLTs (python -m molt.study SUBCOMMAND ..., or build/bin/molt-study).

    molt-study transforms RUN --data D --out DIR     per-transform dashboard (molt.dashboard)
    molt-study attribute ...                         attribution graphs (molt.attribution)
    molt-study residual --layer L --data D --out DIR residual (r, r) shards for its SAEs (molt.residual)
    molt-study graph GRAPH.json --out PAGE.html      an attribution graph's offline page (molt.graphview)

Each subcommand lives in its own module whose main(argv) returns the exit code; it is imported
only when asked for, so one subcommand's missing dependency does not break the others.
"""
import importlib
import sys

PROG = "molt-study"

# name -> (module, one-line summary)
SUBCOMMANDS = {
    "transforms": ("molt.dashboard", "a trained MOLT's transforms read through the data: rank, "
                                     "frequency, ‖UV‖_F, spectrum, top contexts; JSON + offline HTML"),
    "attribute": ("molt.attribution", "an attribution graph for a prompt whose edges name the "
                                      "transforms that carried them (circuit-tracer's JSON)"),
    "residual": ("molt.residual", "(r, r) shards of the residual stream at a block (entering "
                                  "its MLP norm, its output), to train the SAEs attribute needs"),
    "graph": ("molt.graphview", "an attribution graph's JSON as a self-contained offline HTML page"),
}


def _usage():
    lines = [f"usage: {PROG} SUBCOMMAND [options]   ({PROG} SUBCOMMAND --help for each)", "",
             "Study trained MOLTs (sparse mixtures of linear transforms).", "", "subcommands:"]
    width = max(map(len, SUBCOMMANDS))
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(_usage())
        return 0 if argv else 1
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"{PROG}: error: unknown subcommand {name!r} (one of {', '.join(SUBCOMMANDS)})",
              file=sys.stderr)
        return 1
    module_name = SUBCOMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"{PROG}: error: {name} is not available in this build ({module_name} is "
                  "missing)", file=sys.stderr)
        else:
            print(f"{PROG}: error: {name} needs the Python module {e.name} "
                  "(scripts/bootstrap installs it into build/.venv)", file=sys.stderr)
        return 1
    except ImportError as e:  # the compiled extension, typically
        print(f"{PROG}: error: {name}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

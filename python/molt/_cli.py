"""What the molt-study subcommands share as command lines: one-line errors and exit code 1 on
bad input (`PROG: error: cause`), never a traceback."""
import argparse
import sys

__all__ = ["StudyError", "Parser", "guarded"]


class StudyError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 1, as every molt tool
        raise StudyError(message)


def guarded(prog, body, argv):
    """Runs body(argv) and turns its failures into `prog: error: ...` and exit code 1."""
    try:
        body(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # --help
        return e.code or 0
    except StudyError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return 1
    return 0

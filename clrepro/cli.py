"""Command line for one experiment: `python -m clrepro run ...` and `python -m clrepro list`.

    python -m clrepro run --benchmark split_mnist --scenario class --method der --buffer-size 500 \\
        --lr 0.03 --batch-size 10 --epochs 1 --seeds 0 1 2

trains through clrepro.run.runner.run_experiments (the notebooks' path, with their run cache),
prints ACC / BWT / forgetting (mean ± 95% CI over seeds) and the accuracy matrix averaged over
seeds, and stores the tidy rows (clrepro.report.results) in a CSV.

The options are generated from the dataclasses the notebooks use (BenchmarkConfig, ModelConfig,
TrainConfig, and every method's Params), so there is no second list of parameters to keep in
step: a field added to one of them is an option here. Values left out keep the dataclass
defaults. Every value is checked by those dataclasses before anything trains, and a bad one is
reported as the same ConfigError naming the parameter, on one line, with exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from clrepro import metrics
from clrepro.config import (
    BENCHMARKS,
    SCENARIOS,
    SPLIT_BENCHMARKS,
    BenchmarkConfig,
    ConfigError,
    ModelConfig,
    TrainConfig,
)
from clrepro.experiment import Experiment
from clrepro.methods import available_methods, method_class
from clrepro.paths import REPO_ROOT
from clrepro.report.results import aggregate, store
from clrepro.run.profiles import PROFILES, get_profile, resolve_device

SCENARIO_NAMES = {"task": "Task-IL", "domain": "Domain-IL", "class": "Class-IL"}
# Where a config field's name would read badly as an option of its own.
RENAMES = {("benchmark", "name"): "benchmark", ("model", "kind"): "model"}


@dataclass(frozen=True)
class Option:
    """One command-line option generated from a dataclass field."""

    flag: str  # '--batch-size'
    dest: str  # 'train.batch_size' (the name ConfigErrors use)
    annotation: Any
    default: Any  # MISSING: required


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def config_options() -> list[Option]:
    """The options of the benchmark, model and schedule dataclasses."""
    options = []
    for group, cls in (("benchmark", BenchmarkConfig), ("model", ModelConfig), ("train", TrainConfig)):
        hints = _hints(cls)
        for f in fields(cls):
            name = RENAMES.get((group, f.name), f.name)
            options.append(Option("--" + name.replace("_", "-"), f"{group}.{f.name}", hints[f.name], _default(f)))
    return options


def method_parameters() -> dict[str, dict[str, tuple[Any, Any]]]:
    """method → parameter → (annotation, default), from each method's Params dataclass."""
    out = {}
    for name in available_methods():
        params = method_class(name).Params
        hints = _hints(params)
        out[name] = {f.name: (hints[f.name], _default(f)) for f in fields(params)}
    return out


# ------------------------------------------------------------------ values from strings

def _optional(annotation: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, True) or (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(_optional(annotation)[0]) is tuple


def _type_name(annotation: Any) -> str:
    inner, optional = _optional(annotation)
    if typing.get_origin(inner) is tuple:  # nargs="+" shows the repetition
        text = _type_name(typing.get_args(inner)[0])
    elif typing.get_origin(inner) is typing.Literal:
        text = "|".join(map(str, typing.get_args(inner)))
    else:
        text = getattr(inner, "__name__", str(inner)).upper()
    return f"{text}|none" if optional else text


def convert(value: str | list[str], annotation: Any, parameter: str) -> Any:
    """A command-line string (or list of strings, for a tuple) as the field's type; a bad one is a
    ConfigError naming the parameter, like every other bad value."""
    inner, optional = _optional(annotation)
    if optional and (value == "none" or value == ["none"]):
        return None
    if typing.get_origin(inner) is tuple:
        element = typing.get_args(inner)[0]
        return tuple(convert(v, element, parameter) for v in value)
    if typing.get_origin(inner) is typing.Literal or inner is str:
        return value  # the dataclass names the allowed values if this is not one
    try:
        return inner(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{parameter}: expected {_type_name(inner)}, got {value!r}") from None


# ------------------------------------------------------------------ the parser

class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, `error: ...`, exit code 2 (like a ConfigError)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _add(group, flag: str, dest: str, annotation: Any, help_text: str, required: bool = False) -> None:
    # SUPPRESS: an option not given is absent, so the dataclass default applies (not a copy of it)
    if _is_bool(annotation):
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_text)
    else:
        group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=_type_name(annotation),
                           nargs="+" if _is_tuple(annotation) else None, help=help_text, required=required)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "()"
    return "none" if value is None else str(value)


def methods_epilog() -> str:
    lines = ["methods (scenarios: parameters with their defaults):"]
    for name, params in method_parameters().items():
        scenarios = ", ".join(s for s in SCENARIOS if s in method_class(name).scenarios)
        values = ", ".join(f"{p}={_show(d)}" for p, (_, d) in params.items()) or "no parameters"
        lines.append(f"  {name} ({scenarios}): {values}")
    lines.append(f"benchmarks: {', '.join(BENCHMARKS)}")
    lines.append("An option of type X|none takes the word none (e.g. --epochs none --iterations 2000).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m clrepro", description="Continual-learning replications: one run from the "
                     "command line, with the notebooks' configuration and run cache.",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=methods_epilog())
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,list}")
    commands.add_parser("list", help="list the methods, benchmarks and notebooks")
    run = commands.add_parser("run", help="train one method on one benchmark over seeds",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=methods_epilog(),
                              description="Train one method on one benchmark over seeds (through the run "
                              "cache), print ACC / BWT / forgetting and the accuracy matrix, write a tidy CSV.")
    top = run.add_argument_group("experiment")
    top.add_argument("--method", dest="experiment.method", required=True, metavar="METHOD",
                     help=f"one of: {', '.join(available_methods())}")
    top.add_argument("--name", dest="experiment.name", default=None, metavar="NOTEBOOK/EXPERIMENT",
                     help="the experiment's name (default cli/<method>); a notebook's name and configuration "
                     "reuse that notebook's cached runs")
    groups = {g: run.add_argument_group(f"{g} ({cls.__name__})")
              for g, cls in (("benchmark", BenchmarkConfig), ("model", ModelConfig), ("train", TrainConfig))}
    for option in config_options():
        required = option.default is MISSING
        help_text = option.dest + (" (required)" if required else f" (default: {_show(option.default)})")
        if option.dest == "benchmark.name":
            help_text += f"; one of {', '.join(BENCHMARKS)}"
        _add(groups[option.dest.split(".")[0]], option.flag, option.dest, option.annotation, help_text, required)
    params_group = run.add_argument_group("method parameters (Params of the chosen method; defaults per method "
                                          "below)")
    settings = run.add_argument_group("run")
    settings.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                          help="seeds to run (default: the profile's, 0..n-1)")
    settings.add_argument("--profile", default="paper", metavar="|".join(PROFILES),
                          help="paper: the sizes given; smoke: every run shrunk to seconds (default: paper)")
    settings.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    settings.add_argument("--jobs", type=int, default=None,
                          help="parallel runs (default: one per core on CPU at the paper profile)")
    settings.add_argument("--out", type=Path, default=None,
                          help="tidy CSV of the runs' rows (default: build/cli/<method>-<benchmark>-<scenario>-"
                          "<profile>-<hash>.csv)")
    settings.add_argument("--quiet", action="store_true", help="no progress bars")
    # Every method's parameters; only those of the chosen method may be given. A name that is
    # already an option above gets a --param- prefix; where two methods annotate one name
    # differently the value is read as text and converted for the chosen method.
    taken = set(run._option_string_actions)
    by_name: dict[str, list[tuple[str, Any, Any]]] = {}
    for method, params in method_parameters().items():
        for p, (annotation, default) in params.items():
            by_name.setdefault(p, []).append((method, annotation, default))
    for p, owners in by_name.items():
        flag = "--" + p.replace("_", "-")
        flag = flag if flag not in taken else "--param-" + p.replace("_", "-")
        annotation = owners[0][1] if len({repr(a) for _, a, _ in owners}) == 1 else str
        _add(params_group, flag, f"method_params.{p}", annotation,
             "; ".join(f"{m}: {_show(d)}" for m, _, d in owners))
    return parser


# ------------------------------------------------------------------ from parsed options to an experiment

def experiment_from(values: dict[str, Any]) -> Experiment:
    """The Experiment the parsed options describe (dataclass defaults for everything not given);
    raises ConfigError naming the first bad parameter."""
    annotations = {o.dest: o.annotation for o in config_options()}
    parts: dict[str, dict[str, Any]] = {"benchmark": {}, "model": {}, "train": {}}
    for dest, value in values.items():
        group, _, name = dest.partition(".")
        if group in parts:
            parts[group][name] = value if isinstance(value, bool) else convert(value, annotations[dest], dest)
    method = values["experiment.method"]
    method_class(method)  # a ConfigError naming an unknown method
    own = method_parameters()[method]
    method_params = {}
    for dest, value in values.items():
        group, _, name = dest.partition(".")
        if group != "method_params":
            continue
        if name not in own:
            raise ConfigError(f"method_params.{name}: not a parameter of {method} (parameters: {sorted(own)})")
        annotation = own[name][0]
        if _is_bool(annotation) and not isinstance(value, bool):
            value = {"true": True, "false": False}.get(str(value).lower(), value)
            if not isinstance(value, bool):
                raise ConfigError(f"method_params.{name}: expected true or false, got {values[dest]!r}")
        method_params[name] = value if isinstance(value, bool) else convert(value, annotation, dest)
    name = values.get("experiment.name") or f"cli/{method}"
    return Experiment(name, BenchmarkConfig(**parts["benchmark"]), method, method_params,
                      ModelConfig(**parts["model"]), TrainConfig(**parts["train"]))


def default_out(experiment: Experiment, profile: str) -> Path:
    digest = hashlib.sha256(experiment.to_json().encode()).hexdigest()[:8]
    bench = experiment.benchmark
    return REPO_ROOT / "build" / "cli" / f"{experiment.method}-{bench.name}-{bench.scenario}-{profile}-{digest}.csv"


# ------------------------------------------------------------------ printing

def _fmt(mean: float, ci: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.2f}" if np.isnan(ci) else f"{mean:.2f} ± {ci:.2f}"


def matrix_text(R: np.ndarray) -> str:
    """R[t, i] as a table: rows 'after task t', columns 'task i' (1-based); · = not evaluated."""
    T = R.shape[1]
    lines = ["          " + "".join(f"{f'task {i + 1}':>9}" for i in range(T))]
    for t, row in enumerate(R):
        cells = "".join(f"{'·' if np.isnan(v) else f'{v:.2f}':>9}" for v in row)
        lines.append(f"after {t + 1:<4}" + cells)
    return "\n".join(lines)


def summary_text(rows, experiment: Experiment) -> str:
    """Metrics and mean matrix of every view of the runs: the scenario they were trained in and,
    for Class-IL runs, the same networks scored Task-IL (other tasks' units masked)."""
    out = []
    views = rows[["scenario", "trained_as"]].drop_duplicates()
    views = views.assign(own=views["scenario"] != views["trained_as"]).sort_values("own", kind="stable")
    for scenario, trained_as in zip(views["scenario"], views["trained_as"], strict=True):
        view = rows[(rows["scenario"] == scenario) & (rows["trained_as"] == trained_as)]
        table = aggregate(metrics.per_seed(view, ["acc", "bwt", "forgetting"]))
        by_metric = {m: (r["mean"], r["ci95"], int(r["n_seeds"])) for m, r in zip(
            table["metric"], table.to_dict("records"), strict=True)}
        n = by_metric["acc"][2]
        title = SCENARIO_NAMES[scenario]
        if scenario != trained_as:
            title += f" of the same {SCENARIO_NAMES[trained_as]}-trained networks (other tasks' units masked)"
        out.append(f"{title}, mean ± 95% CI over {n} seed{'s' * (n != 1)}:")
        out.append("  " + "   ".join(f"{label} {_fmt(*by_metric[m][:2])}"
                                     for m, label in (("acc", "ACC"), ("bwt", "BWT"), ("forgetting", "forgetting"))))
        out.append(f"accuracy matrix R[t, i] (% on task i after training task t), mean over {n} "
                   f"seed{'s' * (n != 1)}:")
        with warnings.catch_warnings():  # cells no seed evaluated stay NaN: meant, not a problem
            warnings.simplefilter("ignore", RuntimeWarning)
            R = metrics.mean_matrix(view)
        out.append(matrix_text(R))
        out.append("")
    diverged = rows[rows["kind"] == "diverged"]
    if len(diverged):
        out.append("diverged: " + ", ".join(f"seed {s} after task {t + 1}" for s, t in
                                            zip(diverged["seed"], diverged["after_task"], strict=True)))
    return "\n".join(out).rstrip()


def describe(experiment: Experiment) -> str:
    train = experiment.train
    schedule = f"{train.epochs} epoch(s)" if train.epochs is not None else f"{train.iterations} iterations"
    return (f"{experiment.name}: {experiment.method} {experiment.params_label()} on {experiment.benchmark.name} "
            f"({experiment.benchmark.scenario}, {experiment.benchmark.n_tasks} tasks), {train.optimizer} "
            f"lr {train.lr}, batch {train.batch_size}, {schedule}")


# ------------------------------------------------------------------ commands

def command_run(args: argparse.Namespace, echo: Callable[[str], None]) -> int:
    values = {k: v for k, v in vars(args).items() if "." in k}
    experiment = experiment_from(values)
    profile = get_profile(args.profile)
    device = resolve_device(args.device)
    shrunk = profile.apply(experiment)  # what will run (the paper profile changes nothing)
    seeds = profile.seeds if args.seeds is None else list(args.seeds)
    if any(s < 0 for s in seeds):
        raise ConfigError(f"seeds: must be >= 0, got {seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"jobs: must be at least 1, got {args.jobs}")
    out = args.out or default_out(shrunk, profile.name)
    echo(f"{describe(shrunk)}; profile {profile.name}, seeds {seeds}, device {device}")

    from clrepro.run.runner import run_experiments  # only now: nothing above may train

    rows = run_experiments(experiment, profile, device, seeds, progress=not args.quiet, jobs=args.jobs)
    store(rows, out)
    echo(summary_text(rows, shrunk))
    echo(f"rows: {out}")
    return 0


def notebook_titles() -> list[tuple[str, str]]:
    from clrepro.run.pipeline import notebooks

    found = []
    for path in notebooks():
        title = ""
        for cell in json.loads(path.read_text()).get("cells", []):
            if cell.get("cell_type") == "markdown":
                text = "".join(cell.get("source", "")).strip()
                title = text.splitlines()[0].lstrip("# ").strip() if text else ""
                break
        found.append((path.stem, title))
    return found


def command_list(echo: Callable[[str], None]) -> int:
    echo("methods (scenarios they support):")
    for name in available_methods():
        echo(f"  {name:<12} {', '.join(s for s in SCENARIOS if s in method_class(name).scenarios)}")
    echo(f"benchmarks (scenarios: {', '.join(SCENARIOS)}):")
    for name in BENCHMARKS:
        notes = ["at most 5 tasks of 2 classes"] if name in SPLIT_BENCHMARKS else []
        notes += ["--model resnet18"] if name == "seq_cifar10" else []
        echo(f"  {name:<20} {'; '.join(notes)}".rstrip())
    echo("notebooks (notebooks/<name>.ipynb):")
    for stem, title in notebook_titles():
        echo(f"  {stem:<13} {title}")
    echo("parameters and defaults: python -m clrepro run --help")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return command_list(print)
        return command_run(args, print)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

"""experiment start|log|list|show|compare|best|stop (coralfs.workflow.experiments)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from .app import app
from .common import JsonOpt, complete_ref, esc, open_repo, parse_kv

experiment_app = typer.Typer(help="Experiments: a branch exp/NAME for the checkpoints plus a record of params and "
                                  "metrics kept in the repository (pushed and cloned with it).",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")

ExpOpt = Annotated[str | None, typer.Option("--experiment", "-e", help="Experiment (default: the one HEAD is on)")]


def _num(v) -> str:
    return "-" if v is None else f"{v:.6g}" if isinstance(v, float) else esc(str(v))


def _when(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@experiment_app.command("start")
def start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Experiment name (its branch is exp/NAME)")],
    from_ref: Annotated[str | None, typer.Option("--from", help="Start from this revision (default HEAD)",
                                                 autocompletion=complete_ref)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A parameter KEY=VALUE (repeatable)")] = None,
) -> None:
    """Begin an experiment: branch exp/NAME, switch to it, record the params."""
    from ..workflow import experiments as ex
    exp = ex.start(open_repo(ctx), name, from_ref, parse_kv(param or [], "param"))
    typer.echo(f"Started experiment {esc(exp.name)} on branch {esc(exp.branch)} at {(exp.start_commit or '')[:12]}")


@experiment_app.command("log")
def log_cmd(
    ctx: typer.Context,
    metric: Annotated[str, typer.Argument(help="Metric name")],
    value: Annotated[str, typer.Argument(help="Its value (a number)")],
    step: Annotated[int | None, typer.Option("--step", help="Training step")] = None,
    experiment: ExpOpt = None,
    mount: Annotated[str | None, typer.Option("--mount", help="Through this writable mount of an experiment's branch "
                                              "(its daemon records it)")] = None,
) -> None:
    """Record a metric value at the experiment branch's current checkpoint."""
    from ..workflow import experiments as ex
    if mount:
        from ..objects.errors import CoralError
        from .staging_cmds import control
        if experiment:
            raise CoralError("--mount logs to the experiment of the mounted branch: drop --experiment")
        try:
            num = float(value)
        except ValueError:
            raise CoralError(f"metric {metric}: {value!r} is not a number") from None
        r = control(mount, {"op": "log-metric", "metric": metric, "value": num, "step": step})
        at = f" at {r['commit'][:12]}" if r.get("commit") else ""
        typer.echo(f"{esc(r['metric'])}={_num(r['value'])}" + (f" step {r['step']}" if r.get("step") is not None else "")
                   + at + f" ({esc(r['experiment'])})")
        return
    p = ex.log_metric(open_repo(ctx), metric, value, step, experiment=experiment)
    at = f" at {p.commit[:12]}" if p.commit else ""
    typer.echo(f"{esc(p.metric)}={_num(p.value)}" + (f" step {p.step}" if p.step is not None else "") + at)


@experiment_app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every experiment: status, branch, params, latest metrics."""
    from ..workflow import experiments as ex
    repo = open_repo(ctx)
    exps = [ex.load(repo, n) for n in ex.names(repo)]
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in exps], indent=2))
        return
    for e in exps:
        params = " ".join(f"{k}={_num(v)}" for k, v in e.params.items())
        metrics = " ".join(f"{k}={_num(v)}" for k, v in e.last().items())
        typer.echo(f"{esc(e.name):<20} {e.status:<8} {esc(e.branch):<24} {params}  {metrics}".rstrip())


@experiment_app.command("show")
def show(ctx: typer.Context, name: Annotated[str | None, typer.Argument(help="Experiment (default: HEAD's)")] = None,
         as_json: JsonOpt = False) -> None:
    """An experiment's params and every metric point, with the commit each belongs to."""
    from ..workflow import experiments as ex
    repo = open_repo(ctx)
    e = ex.load(repo, ex._pick(repo, name))
    if as_json:
        typer.echo(json.dumps(e.to_json(), indent=2))
        return
    typer.echo(f"experiment {esc(e.name)} ({e.status}), branch {esc(e.branch)}, started {_when(e.started)}"
               f" from {(e.start_commit or '')[:12]}")
    for k, v in e.params.items():
        typer.echo(f"  param  {esc(k)} = {_num(v)}")
    for p in e.points:
        step = f"step {p.step}" if p.step is not None else ("commit" if p.source == "commit" else "")
        typer.echo(f"  metric {esc(p.metric)} = {_num(p.value)}  {step:<10} {(p.commit or '')[:12]}  {_when(p.time)}")


@experiment_app.command("compare")
def compare(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Two or more experiments")],
    show_all: Annotated[bool, typer.Option("--all", help="Also the params and metrics that are equal")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Params and latest metrics side by side (only what differs, unless --all)."""
    from ..objects.errors import CoralError
    from ..workflow import experiments as ex
    if len(names) < 2:
        raise CoralError("compare takes two or more experiments")
    repo = open_repo(ctx)
    exps = [ex.load(repo, n) for n in names]
    rows = ex.compare(exps, show_all)
    if as_json:
        typer.echo(json.dumps([{"kind": k, "key": key, "values": dict(zip(names, vals))} for k, key, vals in rows],
                              indent=2))
        return
    width = max(12, *(len(n) for n in names)) + 2
    typer.echo(f"{'':<8}{'':<24}" + "".join(f"{esc(n):<{width}}" for n in names))
    for kind, key, vals in rows:
        typer.echo(f"{kind:<8}{esc(key):<24}" + "".join(f"{_num(v):<{width}}" for v in vals))
    if not rows:
        typer.echo("(no differences; --all shows everything)")


@experiment_app.command("best")
def best(
    ctx: typer.Context,
    metric: Annotated[str, typer.Option("--metric", "-m", help="Metric to rank by")],
    maximize: Annotated[bool, typer.Option("--max/--min", help="Highest (default) or lowest value wins")] = True,
    names: Annotated[list[str] | None, typer.Argument(help="Only these experiments (default: all)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The experiment and checkpoint commit with the best value of a metric."""
    from ..workflow import experiments as ex
    e, p = ex.best(open_repo(ctx), metric, maximize, names or None)
    if as_json:
        typer.echo(json.dumps({"experiment": e.name, **vars(p)}, indent=2))
        return
    step = f" step {p.step}" if p.step is not None else ""
    typer.echo(f"{esc(e.name)}: {esc(p.metric)}={_num(p.value)}{step} at {(p.commit or '?')[:12]}"
               + (f" (coralfs checkout {p.commit[:12]})" if p.commit else ""))


@experiment_app.command("stop")
def stop(ctx: typer.Context, name: Annotated[str | None, typer.Argument(help="Experiment (default: HEAD's)")] = None) -> None:
    """Mark an experiment finished (its branch and record stay)."""
    from ..workflow import experiments as ex
    e = ex.stop(open_repo(ctx), name)
    typer.echo(f"Stopped experiment {esc(e.name)} ({len(e.points)} metric points)")


# -- import from and export to other trackers (coralfs.integrations) --------------------
import_app = typer.Typer(help="Import runs of another tracker (MLflow, TensorBoard, Weights & Biases) as experiments; "
                              "a second import of a run adds only what is new.", no_args_is_help=True)
export_app = typer.Typer(help="Export experiments to another tracker (MLflow runs, TensorBoard scalars).",
                         no_args_is_help=True)
experiment_app.add_typer(import_app, name="import")
experiment_app.add_typer(export_app, name="export")

UriOpt = Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI (http://host:port, sqlite:///path, a directory)")]


def _report_imports(done: list, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([vars(d) for d in done], indent=2))
        return
    for d in done:
        what = {"new": f"imported {d.points} points", "updated": f"added {d.points} new points",
                "unchanged": "already imported, nothing new", "own": "exported from this repository, left as is"}[d.status]
        skipped = f" ({d.skipped} non-finite values skipped)" if d.skipped else ""
        typer.echo(f"{esc(d.name):<24} {what}{skipped}  [{esc(d.run)}]")
    if not done:
        typer.echo("nothing to import")


def _import_command(kind: str, source: tuple[str, object], which: tuple[str, object], function: str, doc: str) -> None:
    """Register `experiment import KIND`: its SOURCE (an argument or option, as (name,
    annotation)), an optional narrowing option and --json, handed to
    ``coralfs.integrations.KIND.FUNCTION(repo, source, which)`` (imported when it runs)."""
    import inspect

    def command(ctx: typer.Context, **values: object) -> None:
        import importlib
        module = importlib.import_module(f"coralfs.integrations.{kind}")
        done = getattr(module, function)(open_repo(ctx), values[source[0]], values[which[0]])
        _report_imports(done, bool(values["as_json"]))

    kw = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("ctx", kw, annotation=typer.Context),
              inspect.Parameter(source[0], kw, annotation=source[1]),
              inspect.Parameter(which[0], kw, annotation=which[1], default=None),
              inspect.Parameter("as_json", kw, annotation=JsonOpt, default=False)]
    command.__signature__ = inspect.Signature(params, return_annotation=None)
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    command.__name__ = command.__qualname__ = f"import_{kind}"
    command.__doc__ = doc
    import_app.command(kind)(command)


_import_command(
    "mlflow", ("tracking_uri", UriOpt),
    ("experiment", Annotated[str | None, typer.Option("--experiment", help="Only this MLflow experiment (default: all)")]),
    "import_runs", "Each MLflow run becomes an experiment: params, every metric's history (steps, times).")
_import_command(
    "tensorboard",
    ("logdir", Annotated[str, typer.Argument(help="A TensorBoard log directory (tfevents files; one experiment per run directory)")]),
    ("name", Annotated[str | None, typer.Option("--name", help="Experiment name (default: the directory's name)")]),
    "import_logdir", "Scalars of tfevents files become metric series (step, wall time).")
_import_command(
    "wandb",
    ("run_dir", Annotated[str, typer.Argument(help="An offline run directory (wandb/offline-run-...), or the wandb directory")]),
    ("name", Annotated[str | None, typer.Option("--name", help="Experiment name (default: the run's name)")]),
    "import_run_dir", "A Weights & Biases run: config as params, history as metric series, summary values.")


@export_app.command("mlflow")
def export_mlflow(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(help="Experiments to export")],
    tracking_uri: UriOpt,
    experiment: Annotated[str | None, typer.Option("--experiment", help="MLflow experiment (created if missing; default: Default)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A run per experiment: params, metric series, tags linking the coralfs commit."""
    from ..integrations import mlflow as ml
    done = ml.export_experiments(open_repo(ctx), names, tracking_uri, experiment)
    if as_json:
        typer.echo(json.dumps([vars(d) for d in done], indent=2))
        return
    for d in done:
        typer.echo(f"{esc(d.name):<24} run {d.run_id} ({d.status}, {d.points} points)")


@export_app.command("tensorboard")
def export_tensorboard(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Experiment to export")],
    dest: Annotated[str, typer.Argument(help="Directory for the tfevents file (created if missing)")],
) -> None:
    """Write the experiment's metric series as TensorBoard scalars."""
    from ..integrations import tensorboard as tb
    path, n = tb.export_experiment(open_repo(ctx), name, dest)
    typer.echo(f"wrote {n} scalars to {esc(path)}")

"""publish huggingface|mlflow|sagemaker: a commit into a model registry (coralfs.integrations),
recorded in the repository's registry mapping (coralfs.integrations.published)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import app
from .common import JsonOpt, complete_ref, esc, open_repo

publish_app = typer.Typer(help="Publish a commit to a model registry (Hugging Face Hub, MLflow, SageMaker); "
                               "which commit became which registry version is kept in the repository.",
                          no_args_is_help=True)
app.add_typer(publish_app, name="publish")

RefArg = Annotated[str, typer.Argument(help="Commit to publish (default HEAD)", autocompletion=complete_ref)]


@publish_app.command("huggingface")
def huggingface(
    ctx: typer.Context,
    repo_id: Annotated[str, typer.Argument(help="Hub repo id: NAME or NAMESPACE/NAME (created if missing)")],
    ref: RefArg = "HEAD",
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo private")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be uploaded and the card; upload nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The commit's files and a generated model card; only what changed since the last publish to REPO_ID."""
    from ..integrations import huggingface as hf
    repo = open_repo(ctx)
    if dry_run:
        p = hf.plan(repo, repo_id, ref)
        if as_json:
            typer.echo(json.dumps(p.to_json(), indent=2))
            return
        base = f" (since {p.base.commit[:12]}, Hub revision {p.base.version[:12]})" if p.base else ""
        typer.echo(f"would publish {p.commit[:12]} to {esc(repo_id)}{base}:")
        for o in p.operations:
            typer.echo(f"  {esc(o.line())}")
        if not p.operations:
            typer.echo("  nothing: the Hub repo has these files already")
        if p.unchanged:
            typer.echo(f"  {len(p.unchanged)} unchanged file{'s' if len(p.unchanged) != 1 else ''} not uploaded")
        typer.echo(f"--- {hf.CARD} ---")
        typer.echo(p.card, nl=False)
        return
    r = hf.publish(repo, repo_id, ref, private=private)
    if as_json:
        typer.echo(json.dumps({**r.plan.to_json(), "revision": r.revision}, indent=2))
        return
    if r.revision is None:
        typer.echo(f"{esc(repo_id)} is up to date with {r.plan.commit[:12]}: nothing uploaded")
        return
    n = sum(o.op == "add" for o in r.plan.operations)
    d = len(r.plan.operations) - n
    typer.echo(f"Published {r.plan.commit[:12]} to {esc(repo_id)} as revision {r.revision[:12]}: "
               f"{n} file{'s' if n != 1 else ''} uploaded" + (f", {d} deleted" if d else "")
               + f", {len(r.plan.unchanged)} unchanged")


@publish_app.command("mlflow")
def mlflow_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Registered model name (created if missing)")],
    ref: RefArg = "HEAD",
    tracking_uri: Annotated[str, typer.Option("--tracking-uri", help="MLflow tracking URI (http://host:port, sqlite:///path)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """A new model version: the commit's files as artifacts of a pyfunc model, tags for the coralfs commit."""
    from ..integrations import mlflow_registry as reg
    from ..objects.errors import CoralError
    if not tracking_uri:
        raise CoralError("say where the registry is: --tracking-uri http://host:port (or sqlite:///path)")
    r = reg.publish(open_repo(ctx), name, ref, tracking_uri)
    _report(r, as_json, f"{r.commit[:12]} is version {r.version} of {esc(name)} already: nothing registered",
            f"Registered {r.commit[:12]} as {esc(name)} version {r.version} ({esc(r.source)})")


def _report(r, as_json: bool, unchanged: str, new: str) -> None:
    if as_json:
        typer.echo(json.dumps(vars(r), indent=2))
    else:
        typer.echo(unchanged if r.status == "unchanged" else new)


@publish_app.command("sagemaker")
def sagemaker_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model package group (the registry entry); the Model is NAME-COMMIT12")],
    ref: RefArg = "HEAD",
    bucket: Annotated[str, typer.Option("--bucket", help="S3 bucket for model.tar.gz")] = "",
    role: Annotated[str, typer.Option("--role", help="IAM role ARN SageMaker runs the model with")] = "",
    image: Annotated[str | None, typer.Option("--image", help="Inference container image URI (default: SageMaker's "
                                              "PyTorch CPU inference image of the region)")] = None,
    code: Annotated[str | None, typer.Option("--code", help="Directory with inference.py (becomes code/ in the archive)")] = None,
    requirements: Annotated[str | None, typer.Option("--requirements", help="requirements.txt for code/")] = None,
    as_json: JsonOpt = False,
) -> None:
    """model.tar.gz (weights at the root, code/ when given) to S3, then a Model and a Model Package."""
    from ..integrations import sagemaker as sm
    from ..objects.errors import CoralError
    if not bucket or not role:
        raise CoralError("publish sagemaker needs --bucket BUCKET and --role ARN")
    r = sm.publish(open_repo(ctx), name, ref, bucket=bucket, role=role, image=image, code=code, requirements=requirements)
    _report(r, as_json, f"{r.commit[:12]} is in {esc(name)} already as {esc(r.model_package)}: nothing created",
            f"Published {r.commit[:12]}: {esc(r.s3)}, model {esc(r.model)}, model package {esc(r.model_package)}")

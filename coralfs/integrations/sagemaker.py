"""Publishing a commit to Amazon SageMaker: a ``model.tar.gz`` in S3, a Model, and a Model
Package in the model registry (a version in the model package group NAME), with boto3.

The archive is what SageMaker's framework containers expect: the commit's files at the
root (their tree paths), and with ``--code DIR`` that directory as ``code/``
(``code/inference.py`` with a ``model_fn``) plus ``--requirements FILE`` as
``code/requirements.txt``. Layout errors are the common reason an endpoint fails to start
long after the upload, so everything is checked before anything is uploaded: the code
directory has ``inference.py`` at its top, which parses and defines ``model_fn``; no link
in it points outside it; the commit has no ``code/`` of its own to collide with; the
requirements file is text, one requirement a line. The archive is then built (sorted,
owner 0, the commit's time), read back and checked again, uploaded to
``s3://BUCKET/coralfs/NAME/COMMIT12/model.tar.gz``, and the Model
(``NAME-COMMIT12``) and the Model Package are created, each tagged with the commit. A
failure after the upload removes what this publish created, so nothing is half-written.
"""

from __future__ import annotations

import ast
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass

from ..objects.errors import CoralError
from ..objects.ids import ObjectId, to_hex
from ..objects.repository import Repository
from . import need
from . import published as pub
from .huggingface import hub_files as commit_files

SYSTEM = "sagemaker"
TAG_COMMIT, TAG_RELEASE, TAG_REPO = "coralfs.commit", "coralfs.release", "coralfs.repository"
# SageMaker's PyTorch inference container (CPU) in the client's region, unless --image.
DEFAULT_IMAGE = "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-inference:2.5.1-cpu-py311-ubuntu22.04-sagemaker"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,49}$")     # 63 with "-" + 12 hex for the Model
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass
class Published:
    name: str
    commit: str
    model: str
    model_package: str
    s3: str
    status: str      # new, unchanged


def check_code(code: str | None, requirements: str | None) -> list[tuple[str, str]]:
    """(path in the archive, local file) of the code part, after the layout checks."""
    out: list[tuple[str, str]] = []
    if requirements and not code:
        raise CoralError("--requirements goes with --code: SageMaker reads code/requirements.txt next to code/inference.py")
    if not code:
        return out
    if not os.path.isdir(code):
        raise CoralError(f"--code {code}: not a directory (it becomes code/ in model.tar.gz, with inference.py at its top)")
    entry = os.path.join(code, "inference.py")
    if not os.path.isfile(entry):
        raise CoralError(f"--code {code} has no inference.py at its top: SageMaker loads code/inference.py")
    try:
        with open(entry, "rb") as f:
            tree = ast.parse(f.read(), entry)
    except (SyntaxError, ValueError) as e:
        raise CoralError(f"{entry} does not parse ({getattr(e, 'msg', e)}, line {getattr(e, 'lineno', '?')}): "
                         "fix it before publishing") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "model_fn" for n in tree.body):
        raise CoralError(f"{entry} defines no model_fn(model_dir): SageMaker's inference toolkit calls it to load the weights")
    root = os.path.realpath(code)
    for d, dirs, files in os.walk(code):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for x in dirs:
            if os.path.islink(os.path.join(d, x)):   # os.walk does not descend into it: its files would be left out
                raise CoralError(f"{os.path.join(d, x)} is a link to a directory in --code {code}: copy the files in instead")
        for name in sorted(files):
            p = os.path.join(d, name)
            real = os.path.realpath(p)
            if os.path.islink(p) and not real.startswith(root + os.sep):
                raise CoralError(f"{p} is a link out of --code {code}: copy the file in instead")
            if os.path.isfile(p):
                out.append(("code/" + os.path.relpath(p, code).replace(os.sep, "/"), p))
    if requirements:
        if any(a == "code/requirements.txt" for a, _ in out):
            raise CoralError(f"--code {code} has a requirements.txt already: drop --requirements or that file")
        try:
            with open(requirements, "rb") as f:
                text = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CoralError(f"--requirements {requirements}: {getattr(e, 'strerror', None) or e}") from None
        if "\0" in text:
            raise CoralError(f"--requirements {requirements} is not a text file (one requirement a line)")
        out.append(("code/requirements.txt", requirements))
    return sorted(out)


class _Blocks:
    """A file object over a stored file's blocks, for tarfile.addfile."""

    def __init__(self, it) -> None:
        self.it, self.buf = iter(it), b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.it)
            except StopIteration:
                break
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


def build_archive(repo: Repository, oid: ObjectId, code: list[tuple[str, str]], dest: str) -> list[str]:
    """Write model.tar.gz to ``dest``; the member names, read back from it."""
    files = commit_files(repo, oid)
    if code and any(p == "code" or p.startswith("code/") for p in files):
        raise CoralError("the commit has a code/ directory of its own: publish without --code, or move it in the commit")
    when = repo.read_commit(oid).time
    modes = {p: e.mode for p, e in repo.tree_of(oid).entries.items()}
    with tarfile.open(dest, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            f = repo.read_file(files[path])
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = f.size, when, 0o755 if modes.get(path, 0) & 0o111 else 0o644
            tar.addfile(info, _Blocks(repo.open_file(files[path]).iter_bytes()))
        for arc, local in code:
            with open(local, "rb") as fh:   # a link inside --code goes in as the file it names
                info = tar.gettarinfo(arcname=arc, fileobj=fh)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = when
                tar.addfile(info, fh)
    with tarfile.open(dest, "r:gz") as tar:
        names = tar.getnames()
    want = sorted(files) + [a for a, _ in code]
    if names != want or (code and "code/inference.py" not in names):
        raise CoralError(f"model.tar.gz came out with {names[:5]}..., not the layout asked for: nothing uploaded")
    return names


def _aws_error(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    err = resp.get("Error", {})
    return f"{err.get('Code', type(e).__name__)}: {err.get('Message', str(e))}".strip()


def publish(repo: Repository, name: str, ref: str, *, bucket: str, role: str, image: str | None = None,
            code: str | None = None, requirements: str | None = None) -> Published:
    """Upload ``ref`` as model.tar.gz and create its Model and Model Package (see above)."""
    if not _NAME.match(name or ""):
        raise CoralError(f"{name!r} is not a SageMaker name: letters, digits and '-', at most 50, starting with a letter or digit")
    if not _ROLE.match(role or ""):
        raise CoralError(f"--role {role!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    if not _BUCKET.match(bucket or ""):
        raise CoralError(f"--bucket {bucket!r} is not an S3 bucket name")
    oid = repo.resolve(ref)
    hx = to_hex(oid)
    parts = check_code(code, requirements)
    done = pub.already(repo, SYSTEM, name, oid)
    if done is not None:
        return Published(name, hx, f"{name}-{hx[:12]}", done.version, done.url or "", "unchanged")
    need("boto3", "SageMaker", "sagemaker")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError
    release = pub.release_of(repo, oid)
    model_name, key = f"{name}-{hx[:12]}", f"coralfs/{name}/{hx[:12]}/model.tar.gz"
    s3_url = f"s3://{bucket}/{key}"
    made: list[tuple[str, str]] = []
    s3 = sm = None
    try:
        session = boto3.session.Session()
        s3, sm = session.client("s3"), session.client("sagemaker")
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as e:
            raise CoralError(f"--bucket {bucket}: {_aws_error(e)} (create it, or check the credentials' access)") from None
        try:   # SageMaker refuses a second Model of a name: say so before uploading
            sm.describe_model(ModelName=model_name)
            raise CoralError(f"a SageMaker Model {model_name} exists already and this repository did not record publishing it: "
                             "delete it (aws sagemaker delete-model) or publish under another NAME")
        except ClientError:
            pass
        img = image or DEFAULT_IMAGE.format(region=session.region_name or "us-east-1")
        tags = [{"Key": TAG_COMMIT, "Value": hx}, {"Key": TAG_REPO, "Value": repo.path[:256]}]
        if release:
            tags.append({"Key": TAG_RELEASE, "Value": release})
        with tempfile.TemporaryDirectory(prefix="coralfs-sagemaker-") as tmp:
            archive = os.path.join(tmp, "model.tar.gz")
            build_archive(repo, oid, parts, archive)
            s3.upload_file(archive, bucket, key)
        made.append(("s3", key))
        container = {"Image": img, "ModelDataUrl": s3_url}
        sm.create_model(ModelName=model_name, PrimaryContainer={**container, "Environment": {"CORALFS_COMMIT": hx}},
                        ExecutionRoleArn=role, Tags=tags)
        made.append(("model", model_name))
        try:
            sm.create_model_package_group(ModelPackageGroupName=name, Tags=[{"Key": TAG_REPO, "Value": repo.path[:256]}])
        except ClientError as e:
            if "exist" not in _aws_error(e).lower():
                raise
        meta = {TAG_COMMIT: hx, **({TAG_RELEASE: release} if release else {})}
        pkg = sm.create_model_package(
            ModelPackageGroupName=name, ModelPackageDescription=(repo.read_commit(oid).message or hx)[:1000],
            InferenceSpecification={"Containers": [container], "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelApprovalStatus="PendingManualApproval", CustomerMetadataProperties=meta)
        arn = pkg["ModelPackageArn"]
    except (ClientError, BotoCoreError) as e:
        _undo(s3, sm, bucket, made)
        raise CoralError(f"SageMaker publish of {name}: {_aws_error(e)}" + ("; removed what it had created" if made else "")) from None
    except BaseException:
        if made:
            _undo(s3, sm, bucket, made)
        raise
    pub.record(repo, pub.Published(SYSTEM, name, hx, arn, release=release, url=s3_url))
    return Published(name, hx, model_name, arn, s3_url, "new")


def _undo(s3, sm, bucket: str, made: list[tuple[str, str]]) -> None:
    for kind, what in reversed(made):
        try:
            if kind == "s3":
                s3.delete_object(Bucket=bucket, Key=what)
            else:
                sm.delete_model(ModelName=what)
        except Exception:   # best effort: the error being reported is the first one
            pass

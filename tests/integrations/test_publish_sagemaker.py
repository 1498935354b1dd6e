"""publish sagemaker against moto in server mode (the S3 emulator tests/remote starts):
model.tar.gz in S3 with the weights at its root and code/, a Model and a Model Package,
the layout checked before anything is uploaded."""

from __future__ import annotations

import io
import json
import os
import tarfile

import boto3
import numpy as np
from safetensors.numpy import save_file

from tests.cli.test_cli import cli
from tests.conftest import fails, sha
from tests.conftest import head_of as head

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
INFERENCE = "import os\n\ndef model_fn(model_dir):\n    return os.listdir(model_dir)\n"


def _repo(tmp_path) -> tuple[str, str]:
    src = tmp_path / "w"
    (src / "tokenizer").mkdir(parents=True)
    save_file({"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}, str(src / "model.safetensors"))
    (src / "config.json").write_text('{"hidden": 64}')
    (src / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    repo = str(tmp_path / "repo")
    cli(None, "init", repo)
    cli(repo, "commit", str(src), "-m", "weights v1")
    return repo, str(src)


def _code(tmp_path, text: str = INFERENCE) -> str:
    d = tmp_path / "code"
    d.mkdir(exist_ok=True)
    (d / "inference.py").write_text(text)
    (d / "util.py").write_text("X = 1\n")
    return str(d)


def _clients():
    return boto3.client("s3"), boto3.client("sagemaker")


def _bucket(remote) -> str:
    return remote.url.split("/")[2]


def test_archive_model_and_model_package(tmp_path, s3_remote):
    repo, src = _repo(tmp_path)
    cli(repo, "release", "major")
    req = tmp_path / "requirements.txt"
    req.write_text("transformers>=4.40\n")
    bucket = _bucket(s3_remote)
    out = json.loads(cli(repo, "publish", "sagemaker", "tiny", "--bucket", bucket, "--role", ROLE, "--code", _code(tmp_path),
                         "--requirements", str(req), "--image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/infer:1",
                         "--json").output)
    c = head(repo)
    assert out["status"] == "new" and out["s3"] == f"s3://{bucket}/coralfs/tiny/{c[:12]}/model.tar.gz"
    s3, sm = _clients()
    body = s3.get_object(Bucket=bucket, Key=f"coralfs/tiny/{c[:12]}/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert tar.getnames() == ["config.json", "model.safetensors", "tokenizer/vocab.txt",
                                  "code/inference.py", "code/requirements.txt", "code/util.py"]
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        assert all(m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    (tmp_path / "got.safetensors").write_bytes(got["model.safetensors"])
    assert sha(tmp_path / "got.safetensors") == sha(os.path.join(src, "model.safetensors"))
    assert got["code/inference.py"].decode() == INFERENCE and got["code/requirements.txt"] == b"transformers>=4.40\n"

    model = sm.describe_model(ModelName=out["model"])
    assert out["model"] == f"tiny-{c[:12]}" and model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["ModelDataUrl"] == out["s3"]
    assert model["PrimaryContainer"]["Image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/infer:1"
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]}
    assert tags["coralfs.commit"] == c and tags["coralfs.release"] == "v1.0.0"
    pkg = sm.describe_model_package(ModelPackageName=out["model_package"])
    assert pkg["ModelPackageGroupName"] == "tiny" and pkg["CustomerMetadataProperties"]["coralfs.commit"] == c
    assert pkg["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == out["s3"]

    # the same commit again creates nothing; `show` and `releases` name the package
    again = cli(repo, "publish", "sagemaker", "tiny", "--bucket", bucket, "--role", ROLE).output
    assert "nothing created" in again
    assert [p["version"] for p in json.loads(cli(repo, "show", "--json").output)["published"]] == [out["model_package"]]
    assert out["model_package"] in cli(repo, "releases").output


def test_layout_and_input_errors_are_one_line_and_upload_nothing(tmp_path, s3_remote):
    repo, _ = _repo(tmp_path)
    bucket = _bucket(s3_remote)
    args = ["publish", "sagemaker", "tiny", "--bucket", bucket, "--role", ROLE]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no inference.py at its top" in fails(repo, *args, "--code", str(empty))
    assert "does not parse" in fails(repo, *args, "--code", _code(tmp_path, "def model_fn(:\n"))
    assert "defines no model_fn" in fails(repo, *args, "--code", _code(tmp_path, "def predict_fn(x, m):\n    return x\n"))
    code = _code(tmp_path)
    os.symlink("/etc/hostname", os.path.join(code, "leak.txt"))
    assert "is a link out of --code" in fails(repo, *args, "--code", code)
    os.unlink(os.path.join(code, "leak.txt"))
    assert "--requirements goes with --code" in fails(repo, *args, "--requirements", str(tmp_path / "r.txt"))
    assert "is not an IAM role ARN" in fails(repo, "publish", "sagemaker", "tiny", "--bucket", bucket, "--role", "admin")
    assert "--bucket no-such-bucket-here" in fails(repo, "publish", "sagemaker", "tiny", "--bucket", "no-such-bucket-here",
                                                   "--role", ROLE)
    assert "is not a SageMaker name" in fails(repo, "publish", "sagemaker", "bad_name", "--bucket", bucket, "--role", ROLE)
    assert "nope" in fails(repo, *args[:3], "nope", *args[3:])
    assert "needs --bucket" in fails(repo, "publish", "sagemaker", "tiny")
    s3, sm = _clients()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not [m for m in sm.list_models()["Models"] if m["ModelName"] == f"tiny-{head(repo)[:12]}"]
    assert not os.path.exists(os.path.join(repo, "published.json"))


def test_a_model_of_the_same_name_is_refused_before_the_upload(tmp_path, s3_remote):
    repo, _ = _repo(tmp_path)
    bucket = _bucket(s3_remote)
    s3, sm = _clients()
    taken = f"tiny-{head(repo)[:12]}"       # someone made a Model of that name already
    sm.create_model(ModelName=taken, PrimaryContainer={"Image": "x", "ModelDataUrl": "s3://other/m.tar.gz"},
                    ExecutionRoleArn=ROLE)
    line = fails(repo, "publish", "sagemaker", "tiny", "--bucket", bucket, "--role", ROLE)
    assert line == f"coralfs: error: a SageMaker Model {taken} exists already and this repository did not record " \
                   "publishing it: delete it (aws sagemaker delete-model) or publish under another NAME"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert sm.describe_model(ModelName=taken)["PrimaryContainer"]["ModelDataUrl"] == "s3://other/m.tar.gz"
    assert not os.path.exists(os.path.join(repo, "published.json"))

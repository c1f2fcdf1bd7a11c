"""Hugging Face hub-cache layouts: models--org--name folders, snapshots of symlinks into blobs/, revisions,
.bin shard indexes; a symlink resolving outside the cache repo is refused."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save
from typer.testing import CliRunner

import normaudit
from conftest import HEAVY, TM, probe
from normaudit.cli import app
from normaudit.errors import CorruptFile, NormauditError

pytestmark = pytest.mark.core
runner = CliRunner()

C1, C2 = "1" * 40, "2" * 40  # commit hashes
LLAMA = TM / "llama"


def llama_files(eps: float | None = None, shards: int = 2) -> dict[str, bytes]:
    """The test llama as a sharded HF folder (name -> bytes), optionally with another rms_norm_eps."""
    config = json.loads((LLAMA / "hf/config.json").read_text())
    if eps is not None:
        config["rms_norm_eps"] = eps
    tensors = load_file(str(LLAMA / "hf/model.safetensors"))
    names = sorted(tensors)
    files = {"config.json": json.dumps(config).encode()}
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = names[i::shards]
        files[fname] = save({k: tensors[k] for k in part})
        weight_map.update({k: fname for k in part})
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def add_snapshot(repo: Path, commit: str, files: dict[str, bytes]) -> Path:
    """snapshots/<commit>/<name> -> ../../blobs/<sha256>, as huggingface_hub lays them out."""
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / sha).write_bytes(data)
        (snap / name).symlink_to(f"../../blobs/{sha}")
    return snap


def set_ref(repo: Path, name: str, commit: str) -> None:
    (repo / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / name).write_text(commit)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """hub/models--org--llama with two snapshots: C1 (the real eps 1e-6) and C2 (eps 1e-5), refs/main -> C2."""
    r = tmp_path / "hub" / "models--org--llama"
    add_snapshot(r, C1, llama_files())
    add_snapshot(r, C2, llama_files(eps=1e-5))
    set_ref(r, "main", C2)
    set_ref(r, "v1", C1)
    return r


def test_cache_repo_loads_like_the_plain_folder(repo):
    plain = normaudit.load(LLAMA / "hf")
    cached = normaudit.load(repo, revision=C1)
    assert [n.id for n in cached.norms] == [n.id for n in plain.norms] and len(plain.norms) == 5
    for a, b in zip(plain.norms, cached.norms):
        assert a.eps == b.eps == float(np.float32(1e-6))
        np.testing.assert_array_equal(a.weight.load(), b.weight.load())
    assert cached.path == str(repo / "snapshots" / C1)
    assert any(f"revision {C1}" in note for note in cached.notes)


def test_refs_main_is_the_default_and_revision_picks_another(repo):
    main = normaudit.load(repo)
    assert {n.eps for n in main.norms} == {float(np.float32(1e-5))}
    assert any(f"refs/main -> {C2}" in note for note in main.notes)
    for rev in (C1, C1[:7], "v1"):
        assert {n.eps for n in normaudit.load(repo, revision=rev).norms} == {float(np.float32(1e-6))}, rev
    gguf = str(LLAMA / "llama-q8_0.gguf")
    assert runner.invoke(app, ["compare", str(repo), gguf, "--revision-a", "v1"]).exit_code == 0
    res = runner.invoke(app, ["compare", str(repo), gguf, "--json", "-"])
    assert res.exit_code == 1
    assert [f["check"] for f in json.loads(res.stdout)["findings"]] == ["eps_mismatch"]
    res = runner.invoke(app, ["inspect", str(repo), "--revision", C1[:10], "--json", "-"])
    assert res.exit_code == 0 and {n["eps"] for n in json.loads(res.stdout)["norms"]} == {float(np.float32(1e-6))}


def test_newest_snapshot_without_refs_main(repo):
    (repo / "refs" / "main").unlink()
    os.utime(repo / "snapshots" / C1, (2_000_000_000, 2_000_000_000))
    os.utime(repo / "snapshots" / C2, (1_000_000_000, 1_000_000_000))
    m = normaudit.load(repo)
    assert {n.eps for n in m.norms} == {float(np.float32(1e-6))}
    assert any("newest snapshot" in note and C1 in note for note in m.notes)


def test_snapshot_folder_named_directly(repo):
    m = normaudit.load(repo / "snapshots" / C1)
    assert len(m.norms) == 5 and {n.eps for n in m.norms} == {float(np.float32(1e-6))}


def test_unknown_revision_and_revision_on_other_paths(repo):
    res = runner.invoke(app, ["inspect", str(repo), "--revision", "nope"])
    assert res.exit_code == 2
    assert "revision 'nope' is not in the cache" in res.stderr and C1[:12] in res.stderr
    res = runner.invoke(app, ["inspect", str(LLAMA / "hf"), "--revision", "main"])
    assert res.exit_code == 2 and "--revision applies to a Hugging Face cache folder" in res.stderr
    res = runner.invoke(app, ["inspect", str(LLAMA / "llama-q8_0.gguf"), "--revision", "main"])
    assert res.exit_code == 2 and "not to a GGUF" in res.stderr


def test_hub_root_names_a_model_folder(repo):
    with pytest.raises(NormauditError) as exc:
        normaudit.load(repo.parent)
    assert "models--org--llama" in exc.value.hint


def test_hostile_ref_is_ignored(repo):
    set_ref(repo, "main", "../../../../etc")
    m = normaudit.load(repo)  # not a commit name: the newest snapshot instead
    assert any("newest snapshot" in note for note in m.notes)


@pytest.mark.parametrize("target", ["outside", "absolute"])
def test_symlink_outside_the_cache_repo_is_refused(repo, tmp_path, target):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shard = repo / "snapshots" / C1 / "model-00001-of-00002.safetensors"
    (outside / "shard.safetensors").write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to("../../../../elsewhere/shard.safetensors" if target == "outside"
                     else outside / "shard.safetensors")
    with pytest.raises(CorruptFile, match="resolves outside the model folder"):
        normaudit.load(repo, revision=C1)
    res = runner.invoke(app, ["inspect", str(repo), "--revision", C1])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1


def test_plain_folder_files_stay_inside(tmp_path):
    """Outside a cache the folder itself is the boundary: config.json and weights may not point out of it."""
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"rms_norm_eps": 1e-5}))
    for name, data in llama_files(shards=1).items():
        (folder / name).write_bytes(data)
    assert len(normaudit.load(folder).norms) == 5
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(secret)
    with pytest.raises(CorruptFile, match="config.json: config.json resolves outside the model folder"):
        normaudit.load(folder)
    (folder / "config.json").unlink()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: "../model-00001-of-00001.safetensors" for k in index["weight_map"]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptFile, match="is not a file name in the model folder"):
        normaudit.load(folder)


def _bin_shards(tmp_path: Path) -> dict[str, bytes]:
    import io

    import torch

    tensors = {k: torch.from_numpy(v) for k, v in load_file(str(LLAMA / "hf/model.safetensors")).items()}
    names = sorted(tensors)
    files = {"config.json": (LLAMA / "hf/config.json").read_bytes()}
    weight_map = {}
    for i in range(2):
        fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        buf = io.BytesIO()
        torch.save({k: tensors[k] for k in names[i::2]}, buf)
        files[fname] = buf.getvalue()
        weight_map.update({k: fname for k in names[i::2]})
    files["pytorch_model.bin.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


def test_bin_shard_index(tmp_path):
    torch = pytest.importorskip("torch")
    repo = tmp_path / "models--org--llama-bin"
    add_snapshot(repo, C1, _bin_shards(tmp_path))
    set_ref(repo, "main", C1)
    m = normaudit.load(repo)
    plain = normaudit.load(LLAMA / "hf")
    assert [n.id for n in m.norms] == [n.id for n in plain.norms]
    for a, b in zip(plain.norms, m.norms):
        assert a.eps == b.eps
        np.testing.assert_array_equal(a.weight.load(), b.weight.load())
    assert runner.invoke(app, ["compare", str(repo), str(LLAMA / "llama-f32.gguf")]).exit_code == 0
    # a shard that needs more than weights_only is refused (nothing unpickled)
    shard = next((repo / "snapshots" / C1).glob("pytorch_model-00002*.bin"))
    shard.unlink()
    torch.save({"x": torch.zeros(2), "obj": _Payload()}, str(tmp_path / "evil.bin"))
    (repo / "blobs" / "evil").write_bytes((tmp_path / "evil.bin").read_bytes())
    shard.symlink_to("../../blobs/evil")
    res = runner.invoke(app, ["inspect", str(repo)])
    assert res.exit_code == 2 and "refused to unpickle" in res.stderr


class _Payload:
    pass


def test_bin_shard_index_without_torch_names_the_extra(tmp_path):
    files = {"config.json": (LLAMA / "hf/config.json").read_bytes(), "pytorch_model-00001-of-00001.bin": b"PK\x03\x04",
             "pytorch_model.bin.index.json": json.dumps(
                 {"weight_map": {"model.norm.weight": "pytorch_model-00001-of-00001.bin"}}).encode()}
    repo = tmp_path / "models--org--bin"
    add_snapshot(repo, C1, files)
    out, err = probe("cli", ["inspect", str(repo)], hide=HEAVY)
    assert out["code"] == 2
    assert err.strip().endswith("reading a torch.save'd file needs torch, which is not installed "
                                "(hint: pip install 'normaudit[torch]')")
    assert "torch" not in out["loaded"]

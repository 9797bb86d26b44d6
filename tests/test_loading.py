"""Loading checkpoints: damaged or mismatched files are a ModelLoadError naming the file, with nothing printed;
max_length (with everything a kind adds around a pair) is checked against the checkpoint's position table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cached_reranker, fixture_path, golden_case

from autorerank import AutoReranker, InvalidOptionError, ModelLoadError
from autorerank.kinds.base import position_limit
from autorerank.models.minicpm_layerwise import load_layerwise_model
from autorerank.registry import kind_named
from autorerank.tokenization import load_tokenizer

ENC = "enc/bge-reranker-v2-m3"  # XLM-R: 514 positions, padding index 1 -> 512 tokens
BERT = "enc-bert/bge-reranker-base"  # BERT: 512 positions
LLM = "llm/bge-reranker-v2-gemma"  # 8192 positions
LAYERWISE = "layerwise/bge-reranker-v2-minicpm-layerwise"  # 2048 positions
LIGHTWEIGHT = "lightweight/bge-reranker-v2.5-gemma2-lightweight"  # 8192 positions
LONG = ("what is a panda? " * 3000, "The giant panda is a bear that eats bamboo. " * 3000)


def _copy(fixture: str, tmp_path: Path) -> Path:
    """A writable copy of a fixture checkpoint (the shared fixtures are read-only and never edited)."""
    folder = tmp_path / Path(fixture).name
    shutil.copytree(fixture_path(fixture), folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


def _load_fails_quietly(folder: Path, capfd: pytest.CaptureFixture[str], *names: str) -> str:
    """Loading ``folder`` raises ModelLoadError naming each of ``names``, and prints nothing."""
    capfd.readouterr()
    with pytest.raises(ModelLoadError) as caught:
        AutoReranker.from_finetuned(str(folder), devices="cpu")
    message = str(caught.value)
    for name in names:
        assert name in message
    assert capfd.readouterr() == ("", "")
    return message


# ----------------------------------------------------------------------------- broken checkpoints
@pytest.mark.parametrize("keep", [0.5, 0.0], ids=["truncated", "empty"])
def test_damaged_safetensors_name_the_file(tmp_path, capfd, keep):
    folder = _copy(ENC, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * keep)])
    message = _load_fails_quietly(folder, capfd, str(weights))
    assert "download or copy the checkpoint again" in message


def test_damaged_safetensors_of_a_native_model_name_the_file(tmp_path, capfd):
    folder = _copy(LAYERWISE, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    capfd.readouterr()
    with pytest.raises(ModelLoadError, match=str(weights)):
        load_layerwise_model(str(folder), dtype=torch.float32)
    assert capfd.readouterr() == ("", "")


def test_config_that_does_not_fit_the_weights_names_config_json(tmp_path, capfd):
    folder = _copy(ENC, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_size=128, intermediate_size=256)
    (folder / "config.json").write_text(json.dumps(config))
    message = _load_fails_quietly(folder, capfd, "config.json", str(folder))
    assert "weights (64,), config (128,)" in message  # what transformers' report table would have shown


def test_missing_weights_file_names_the_folder(tmp_path, capfd):
    folder = _copy(BERT, tmp_path)
    (folder / "model.safetensors").unlink()
    _load_fails_quietly(folder, capfd, str(folder), "model.safetensors")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "names no checkpoint"),
        ("  ", "names no checkpoint"),
        (None, "a string\\), not NoneType"),
        (3, "not int"),
        ("a b c", "neither a local folder nor a valid hub name"),
    ],
)
def test_what_cannot_name_a_checkpoint_is_a_model_load_error(name, message):
    """Checked before anything is read, and never sent to the hub: no download, no retry."""
    with pytest.raises(ModelLoadError, match=message):
        AutoReranker.from_finetuned(name, devices="cpu")


def test_a_file_in_a_checkpoint_is_named_as_a_file_not_a_missing_path():
    with pytest.raises(ModelLoadError, match=r"config\.json' is a file: pass the checkpoint folder"):
        AutoReranker.from_finetuned(fixture_path(BERT) + "/config.json", devices="cpu")


# ----------------------------------------------------------------------------- the position table
def test_position_limits_read_from_config_json():
    assert (
        position_limit({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1})
        == 512
    )
    assert (
        position_limit({"model_type": "xlm-roberta", "max_position_embeddings": 8194, "pad_token_id": 1})
        == 8192
    )
    assert (
        position_limit({"model_type": "roberta", "max_position_embeddings": 514}) == 512
    )  # default padding 1
    assert position_limit({"model_type": "bert", "max_position_embeddings": 512, "pad_token_id": 0}) == 512
    assert position_limit({"model_type": "minicpm", "max_position_embeddings": 2048}) == 2048
    assert position_limit({"model_type": "gpt2", "n_positions": 1024}) == 1024
    assert position_limit({"model_type": "bert"}) is None


@pytest.mark.parametrize(("fixture", "limit"), [(ENC, 512), (BERT, 512), (LAYERWISE, 2048), (LLM, 8192)])
def test_the_suggested_max_length_fills_the_position_table_exactly(fixture, limit):
    """The check counts what encode really makes: at the max_length it suggests, the longest input is exactly
    the checkpoint's limit; one more token of max_length is refused."""
    reranker = cached_reranker(fixture)
    with pytest.raises(
        InvalidOptionError, match=rf"holds at most {limit} .*max_length=(\d+) or less"
    ) as caught:
        reranker.compute_score([LONG], max_length=limit + 100)
    suggested = int(str(caught.value).split("pass max_length=")[1].split(" ")[0])
    kind = kind_named(reranker.info.kind)
    options = reranker.options.replace({"max_length": suggested})
    prepared = kind.prepare(load_tokenizer(fixture_path(fixture)), reranker.model)
    assert kind.encode(prepared, [LONG[0]], [LONG[1]], options).lengths.max() == limit
    assert np.isfinite(reranker.compute_score([LONG], max_length=suggested))
    with pytest.raises(InvalidOptionError, match=f"pass max_length={suggested} or less"):
        reranker.compute_score([LONG], max_length=suggested + 1)


def test_default_max_length_fits_every_fixture():
    for fixture in (ENC, BERT, LLM, LAYERWISE, LIGHTWEIGHT):
        assert np.all(np.isfinite(cached_reranker(fixture).compute_score([LONG, LONG[::-1]])))


@pytest.mark.parametrize(
    ("fixture", "max_length", "limit"),
    [(ENC, 600, 512), (BERT, 513, 512), (LLM, 9000, 8192), (LAYERWISE, 9000, 2048)],
)
def test_too_long_max_length_is_refused_at_construction(fixture, max_length, limit):
    with pytest.raises(InvalidOptionError, match=f"max_length={max_length} .* at most {limit}"):
        AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", max_length=max_length)


@pytest.mark.parametrize(
    ("fixture", "limit"), [(ENC, 512), (LLM, 8192), (LAYERWISE, 2048), (LIGHTWEIGHT, 8192)]
)
def test_too_long_max_length_is_refused_per_call(fixture, limit):
    with pytest.raises(InvalidOptionError, match=f"at most {limit}"):
        cached_reranker(fixture).compute_score([LONG], max_length=9000)


def test_the_message_names_the_padding_offset_and_the_prompt():
    with pytest.raises(
        InvalidOptionError, match="less 2 because xlm-roberta positions start after the padding"
    ):
        cached_reranker(ENC).compute_score([LONG], max_length=514)
    with pytest.raises(InvalidOptionError, match="separator and prompt tokens"):
        cached_reranker(LAYERWISE).compute_score([LONG], max_length=2048)


def test_a_longer_prompt_lowers_the_max_length_that_fits():
    """The prompt is counted per call: the same max_length fits with the default prompt, not with a long one."""
    reranker = cached_reranker(LAYERWISE)
    assert np.isfinite(reranker.compute_score([LONG], max_length=1950))
    with pytest.raises(InvalidOptionError, match="at most 2048"):
        reranker.compute_score([LONG], max_length=1950, prompt="Is passage B relevant to query A? " * 10)


def test_a_query_side_longer_than_max_length_counts_whole_passages():
    """When the query (with special tokens) fills max_length, passages are not cut (FlagEmbedding's rule), so
    the pair can outgrow max_length: the check says which option to lower."""
    with pytest.raises(InvalidOptionError, match="query_max_length below 396"):
        cached_reranker(ENC).compute_score([LONG], max_length=400, query_max_length=500)


def test_openvino_refuses_too_long_max_length_at_construction_and_per_call():
    pytest.importorskip("openvino")
    with pytest.raises(InvalidOptionError, match="at most 512"):
        AutoReranker.from_finetuned(fixture_path(ENC), devices="cpu", backend="openvino", max_length=600)
    reranker = cached_reranker(ENC, backend="openvino")
    with pytest.raises(InvalidOptionError, match="at most 512"):
        reranker.compute_score([LONG], max_length=600)
    expected = golden_case("enc-auto-default")
    np.testing.assert_allclose(
        reranker.compute_score(expected["pairs"]), expected["scores"], rtol=0, atol=1e-3
    )


def test_the_parent_of_a_multi_device_reranker_checks_before_starting_workers():
    with pytest.raises(InvalidOptionError, match="at most 512"):
        AutoReranker.from_finetuned(fixture_path(ENC), devices=["cpu", "cpu"], max_length=600)


# ----------------------------------------------------------------------------- loading in another dtype
def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize(
    "fixture, auto_class",
    [(LLM, "AutoModelForCausalLM"), (ENC, "AutoModelForSequenceClassification")],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_another_dtype_is_read_one_tensor_at_a_time_into_the_same_weights(fixture, auto_class, dtype):
    """The pread path (no memory map, so the float32 file does not count in the peak RSS) is taken, and it gives
    transformers' own weights bit for bit."""
    import transformers

    from autorerank import loading

    model_class, path = getattr(transformers, auto_class), str(fixture_path(fixture))
    assert loading._converted_weights(model_class, path, {"dtype": dtype}) is not None
    ours = loading.load_pretrained(model_class, path, kind="test", dtype=dtype)
    theirs = model_class.from_pretrained(path, dtype=dtype)
    ours_state, their_state = _state(ours), _state(theirs)
    assert ours_state.keys() == their_state.keys()
    for name, tensor in their_state.items():
        assert ours_state[name].dtype == tensor.dtype and torch.equal(ours_state[name], tensor), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_read_safetensors_gives_the_stored_weights_in_the_asked_dtype(monkeypatch, dtype):
    """Large tensors to convert are read in row blocks (a block of 1 KiB here, so every matrix is), same values;
    a file already in the dtype stays memory-mapped, also the same values."""
    from safetensors.torch import load_file

    from autorerank import loading

    monkeypatch.setattr(loading, "_BLOCK_BYTES", 1024)
    path = fixture_path(ENC)
    read = loading.read_safetensors(path, dtype)
    stored = load_file(str(Path(path) / "model.safetensors"))
    assert read is not None and read.keys() == stored.keys()
    for name, tensor in stored.items():
        assert read[name].dtype == dtype and torch.equal(read[name], tensor.to(dtype)), name


def test_a_sharded_checkpoint_is_read_from_every_shard(tmp_path):
    import transformers

    from autorerank import loading

    path = str(fixture_path(LLM))
    transformers.AutoModelForCausalLM.from_pretrained(path).save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(loading._local_safetensors(str(tmp_path))) > 1
    sharded = loading.load_pretrained(
        transformers.AutoModelForCausalLM, str(tmp_path), kind="test", dtype=torch.bfloat16
    )
    whole = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    for name, tensor in _state(whole).items():
        assert torch.equal(_state(sharded)[name], tensor), name


def test_transformers_own_path_serves_the_other_cases(tmp_path):
    import transformers

    from autorerank import loading

    auto, path = transformers.AutoModelForCausalLM, str(fixture_path(LLM))
    assert loading._converted_weights(auto, path, {"dtype": torch.float32}) is None  # stored as float32
    assert loading._converted_weights(auto, path, {}) is None
    assert (
        loading._converted_weights(auto, path, {"dtype": torch.bfloat16, "trust_remote_code": True}) is None
    )
    assert loading._converted_weights(auto, "org/not-local", {"dtype": torch.bfloat16}) is None
    assert loading._converted_weights(auto, str(tmp_path), {"dtype": torch.bfloat16}) is None  # no weights
    keeps_float32 = type("KeepsNorms", (transformers.GemmaForCausalLM,), {"_keep_in_fp32_modules": ["norm"]})
    assert loading._converted_weights(keeps_float32, path, {"dtype": torch.float16}) is None


@pytest.mark.parametrize("fixture", [LAYERWISE, LIGHTWEIGHT, "qwen3/Qwen3-Reranker-0.6B"])
def test_native_and_chat_models_load_the_same_weights_either_way(monkeypatch, fixture):
    """The kinds with autorerank's own model classes (and the Qwen3 chat reranker) take the converted-weights path
    in bf16 too, and it gives what transformers' path gives."""
    from autorerank import loading

    taken = []
    original = loading._converted_weights

    def recording(*args):
        taken.append(original(*args) is not None)
        return original(*args)

    monkeypatch.setattr(loading, "_converted_weights", recording)
    ours = AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", use_bf16=True)
    monkeypatch.setattr(loading, "_converted_weights", lambda *args: None)
    theirs = AutoReranker.from_finetuned(fixture_path(fixture), devices="cpu", use_bf16=True)
    assert taken and all(taken)
    ours_state, their_state = _state(ours.runtime.model), _state(theirs.runtime.model)
    assert ours_state.keys() == their_state.keys()
    for name, tensor in their_state.items():
        assert torch.equal(ours_state[name], tensor), name
